"""Instrument response at a sky position, as the prediction needs it.

* :func:`psf_profile_at` — the radial PSF of a dataset's PSF map at a position, per
  true-energy bin, resampled on a fine grid (monotone cubic interpolation of the tabulated
  profile, truncated with a smooth taper at the ``containment`` radius), interpolated
  bilinearly between the coarse IRF pixels (:func:`irf_corners`, :func:`psf_profiles`,
  :func:`combine_profiles`): a continuous function of the position;
* :func:`point_response` — the fraction of a point source's flux in each pixel, with the
  PSF evaluated at the *exact* offset of sub-pixel centres from the source, so that the
  prediction is a smooth function of the source position below the pixel scale;
* :func:`psf_kernels` — the same at a pixel centre: convolution kernels for extended models;
* :func:`edisp_matrix_at` — the energy-dispersion matrix (true bin → reco bin) at a
  position, bilinear between coarse pixels;
* :func:`interp_exposure` — exposure at a point, bilinear in the pixel grid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
from scipy.interpolate import PchipInterpolator

from gpscat.core.geom import Map, WcsGeom, angular_separation

__all__ = [
    "PsfProfile",
    "cloud_in_cell",
    "combine_profiles",
    "edisp_matrix_at",
    "interp_exposure",
    "irf_corners",
    "nearest_valid_pixel",
    "oversample_for",
    "point_response",
    "psf_kernels",
    "psf_kernels_shared",
    "psf_profile_at",
    "psf_profiles",
    "psf_profiles_shared",
    "valid_pixels",
]

_MAX_OVERSAMPLE = 10
_MAX_SAMPLES = 4_000_000  # sub-pixels in one PSF box
_N_FINE = 2048
_TAPER_START = 0.8


@dataclass(frozen=True, eq=False)
class PsfProfile:
    """Radial PSF per true-energy bin on uniform grids ``r = k · dr[i]``, k < n.

    ``values`` (n_energy, n) are sr⁻¹, zero at and beyond ``rmax``; ``r68`` is the 68%
    containment radius (deg).  A zero ``rmax`` means no PSF (all flux at the position).
    """

    dr: np.ndarray
    values: np.ndarray
    rmax: np.ndarray
    r68: np.ndarray

    @property
    def n_energy(self) -> int:
        return self.values.shape[0]

    def __call__(self, i: int, r: np.ndarray) -> np.ndarray:
        """PSF (sr⁻¹) of energy bin ``i`` at radii ``r`` (deg)."""
        grid = np.arange(self.values.shape[1]) * self.dr[i]
        return np.interp(r, grid, self.values[i], right=0.0)


def valid_pixels(m: Map) -> np.ndarray:
    """Pixels (ny, nx) of an IRF map whose data are not all zero (inside some field of view)."""
    return np.abs(np.nan_to_num(m.data.reshape((-1,) + m.geom.shape))).sum(axis=0) > 0


def nearest_valid_pixel(m: Map, lon: float, lat: float, frame: str, *, valid: np.ndarray | None = None) -> tuple[int, int]:
    """(iy, ix) of the pixel of ``m`` nearest to the position whose data are not all zero."""
    x, y = m.geom.coord_to_pix(lon, lat, frame)
    return _nearest_valid(valid_pixels(m) if valid is None else valid, float(x), float(y))


def _nearest_valid(valid: np.ndarray, x: float, y: float) -> tuple[int, int]:
    ny, nx = valid.shape
    ix = int(np.clip(np.floor(x + 0.5), 0, nx - 1))
    iy = int(np.clip(np.floor(y + 0.5), 0, ny - 1))
    if valid[iy, ix]:
        return iy, ix
    cand = np.argwhere(valid)
    if cand.size == 0:
        raise ValueError("IRF map has no valid (non-zero) pixel")
    j = np.argmin((cand[:, 0] - y) ** 2 + (cand[:, 1] - x) ** 2)
    return int(cand[j, 0]), int(cand[j, 1])


def irf_corners(m: Map, lon: float, lat: float, frame: str, *, valid: np.ndarray | None = None):
    """Bilinear interpolation of a coarse IRF map at a position.

    Returns the 4 pixels ``[(iy, ix), ...]`` around the position (a pixel without data is
    replaced by the nearest one with data), their weights (sum 1), and the cell (the
    lower-left pixel) — the corners are the same everywhere inside one cell.
    """
    valid = valid_pixels(m) if valid is None else valid
    ny, nx = valid.shape
    x, y = (float(v) for v in m.geom.coord_to_pix(lon, lat, frame))
    x, y = float(np.clip(x, 0, nx - 1)), float(np.clip(y, 0, ny - 1))
    x0, y0 = min(int(np.floor(x)), max(nx - 2, 0)), min(int(np.floor(y)), max(ny - 2, 0))
    fx, fy = min(x - x0, 1.0), min(y - y0, 1.0)
    corners, weights = [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cy, cx = min(y0 + dy, ny - 1), min(x0 + dx, nx - 1)
            corners.append(_nearest_valid(valid, cx, cy) if not valid[cy, cx] else (cy, cx))
            weights.append(wx * wy)
    return corners, np.array(weights), (x0, y0)


def combine_profiles(profiles: list[PsfProfile], weights) -> PsfProfile:
    """Weighted sum of profiles on common grids (as made by :func:`psf_profiles`)."""
    values = np.tensordot(np.asarray(weights, dtype=float), np.stack([p.values for p in profiles]), axes=1)
    first = profiles[0]
    return PsfProfile(first.dr, values, first.rmax, first.r68)


def psf_profile_at(psf: Map, lon: float, lat: float, frame: str, *, containment: float = 0.999) -> PsfProfile:
    """Radial PSF of the PSF map ``psf`` (axes ``rad``, ``energy_true``) at (lon, lat),
    bilinearly interpolated between the coarse pixels around it."""
    corners, weights, _ = irf_corners(psf, lon, lat, frame)
    return combine_profiles(psf_profiles(psf, corners, containment=containment), weights)


def psf_profiles(psf: Map, pixels, *, containment: float = 0.999) -> list[PsfProfile]:
    """Radial PSFs of the coarse pixels ``[(iy, ix), ...]`` of ``psf``, on common grids.

    Per true-energy bin the grid runs to the largest ``containment`` radius of the pixels
    (the profiles are then linear in the weights of :func:`combine_profiles`); ``r68`` is
    the smallest 68% radius (it sets the sub-pixel sampling).
    """
    if not 0 < containment <= 1:
        raise ValueError(f"containment must be in (0, 1], got {containment}")
    rad = psf.axis("rad")
    nodes = rad.center
    ne = psf.data.shape[0]
    r_tab = np.linspace(0.0, rad.edges[-1], 4 * _N_FINE)
    npx = len(pixels)
    rmax_k, r68_k = np.zeros((npx, ne)), np.full((npx, ne), np.inf)
    interps = [[None] * ne for _ in range(npx)]
    for k, (iy, ix) in enumerate(pixels):
        table = np.asarray(psf.data[..., iy, ix], dtype=float)  # (n_energy, n_rad)
        for i in range(ne):  # loops over pixels and energy bins only; each step is vectorised
            v = np.clip(np.nan_to_num(table[i]), 0, None)
            if not np.any(v > 0):
                continue
            interp = _radial_interpolator(nodes, v)
            cont = _containment(r_tab, interp(r_tab))
            if cont[-1] <= 0:
                continue
            cont /= cont[-1]
            interps[k][i] = interp
            rmax_k[k, i] = max(float(np.interp(containment, cont, r_tab)), r_tab[1])
            r68_k[k, i] = max(float(np.interp(0.68, cont, r_tab)), r_tab[1] / 4)
    rmax = rmax_k.max(axis=0)
    r68 = np.where(np.isfinite(r68_k.min(axis=0)), r68_k.min(axis=0), 0.0)
    dr = np.where(rmax > 0, rmax / (_N_FINE - 1), 0.0)
    out = []
    for k in range(npx):
        values = np.zeros((ne, _N_FINE))
        for i in range(ne):
            if interps[k][i] is not None:
                grid = np.arange(_N_FINE) * dr[i]
                values[i] = interps[k][i](grid) * _taper(grid / rmax[i])
        out.append(PsfProfile(dr, values, rmax, r68))
    return out


#: PSF profiles and kernels shared between predictions (a group fit builds hundreds of
#: predictors — trial models, TS refits, flux points — at the same few positions), keyed by
#: content, bounded (a kernel list can weigh a few MB): the oldest entry goes first
_PROFILES: dict[str, list[PsfProfile]] = {}
_KERNELS: dict[tuple, list[np.ndarray]] = {}


def _remember(cache: dict, limit: int, key, make):
    if key not in cache:
        if len(cache) >= limit:
            del cache[next(iter(cache))]
        cache[key] = make()
    return cache[key]


def psf_profiles_shared(psf: Map, pixels, *, containment: float = 0.999) -> tuple[str, list[PsfProfile]]:
    """:func:`psf_profiles`, computed once per content: returns a key (a digest of the
    pixels' PSF tables, the ``rad`` axis and ``containment``) and the profiles, which the
    caller must not modify."""
    h = hashlib.sha1(np.asarray(psf.axis("rad").edges, dtype=float).tobytes())
    h.update(np.float64(containment).tobytes())
    for iy, ix in pixels:
        h.update(np.ascontiguousarray(psf.data[..., iy, ix], dtype=float).tobytes())
    key = h.hexdigest()
    return key, _remember(_PROFILES, 256, key, lambda: psf_profiles(psf, pixels, containment=containment))


def psf_kernels_shared(profiles_key: str, index: int, geom: WcsGeom, profile: PsfProfile) -> list[np.ndarray]:
    """:func:`psf_kernels` of profile ``index`` of the profiles ``profiles_key`` (from
    :func:`psf_profiles_shared`) on ``geom``, computed once; read-only arrays."""
    key = (profiles_key, index, geom.frame, geom.crval, geom.crpix, geom.binsz, geom.npix, geom.proj)

    def make():
        kernels = psf_kernels(geom, profile)
        for k in kernels:
            k.setflags(write=False)
        return kernels

    return _remember(_KERNELS, 32, key, make)


def _radial_interpolator(nodes: np.ndarray, v: np.ndarray):
    r = np.concatenate([[0.0], nodes]) if nodes[0] > 0 else nodes
    vv = np.concatenate([[v[0]], v]) if nodes[0] > 0 else v
    pchip = PchipInterpolator(r, vv, extrapolate=False)
    return lambda x: np.nan_to_num(np.clip(pchip(x), 0, None))


def _containment(r: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Cumulative ∫ 2π sin(r) P(r) dr (trapezoid), r in deg, P in sr⁻¹."""
    rr = np.radians(r)
    f = 2 * np.pi * np.sin(rr) * values
    return np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(rr))])


def _taper(x: np.ndarray) -> np.ndarray:
    """1 below ``_TAPER_START``, cosine roll-off to 0 at x = 1 (smooth truncation)."""
    t = np.clip((x - _TAPER_START) / (1 - _TAPER_START), 0, 1)
    return 0.5 * (1 + np.cos(np.pi * t))


def _local_scale(geom: WcsGeom, x: float, y: float) -> float:
    """Smallest angular size (deg) of one pixel step at pixel (x, y)."""
    lon, lat = geom.pix_to_coord(np.array([x, x + 1, x]), np.array([y, y, y + 1]))
    sx = angular_separation(lon[0], lat[0], lon[1], lat[1])
    sy = angular_separation(lon[0], lat[0], lon[2], lat[2])
    # near a CAR pole a pixel step in longitude shrinks to nothing: bound the box size
    return float(max(min(sx, sy), 0.05 * geom.binsz))


def oversample_for(profile: PsfProfile, binsz: float) -> np.ndarray:
    """Sub-pixels per pixel and axis per energy: the sub-pixel resolves r68/3."""
    with np.errstate(divide="ignore"):
        f = np.ceil(binsz / np.where(profile.r68 > 0, profile.r68 / 3, np.inf))
    return np.clip(f, 1, _MAX_OVERSAMPLE).astype(int)


def point_response(
    geom: WcsGeom,
    lon: float,
    lat: float,
    profile: PsfProfile,
    *,
    oversample: np.ndarray | None = None,
    coord_cache: dict | None = None,
) -> np.ndarray:
    """Fraction of a point source's flux in each pixel of ``geom``: (n_energy, ny, nx).

    ``lon, lat`` are in the frame of ``geom``.  For every true-energy bin the PSF is
    integrated over each pixel within its ``rmax`` of the source on an ``oversample``
    sub-grid, using the exact angular distance of every sub-pixel centre, and normalised
    to a total of 1.  Bins without a PSF put the flux in the pixels around the source with
    bilinear (cloud-in-cell) weights, which is still continuous in the position.
    ``coord_cache`` (a dict owned by the caller, tied to ``geom``) keeps sub-pixel
    coordinates between calls.
    """
    ne = profile.n_energy
    out = np.zeros((ne,) + geom.shape)
    f_all = oversample_for(profile, geom.binsz) if oversample is None else np.asarray(oversample)
    x, y = (float(v) for v in geom.coord_to_pix(lon, lat))
    scale = _local_scale(geom, x, y)
    cache = {} if coord_cache is None else coord_cache
    nx, ny = geom.npix
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    # half-size (pixels) of each energy's PSF box; the whole box (also beyond the grid) is
    # normalised, then its overlap with the grid is kept
    ks = np.where(profile.rmax > 0, np.ceil(profile.rmax / scale).astype(int) + 1, 0)
    v0 = _unit_vector(np.radians(lon), np.radians(lat))
    for i in np.flatnonzero(profile.rmax <= 0):
        out[i] = cloud_in_cell(geom.shape, x, y)
    for f_set in np.unique(f_all[profile.rmax > 0]):  # one distance computation per sampling
        sel = np.flatnonzero((f_all == f_set) & (profile.rmax > 0))
        kmax = int(ks[sel].max())
        f = int(max(1, min(f_set, np.sqrt(_MAX_SAMPLES) / (2 * kmax + 1))))  # memory bound (degenerate boxes)
        vec = _subpixel_vectors(geom, ix - kmax, ix + kmax + 1, iy - kmax, iy + kmax + 1, f, cache)
        chord = np.sqrt(np.sum((vec - v0[:, None, None]) ** 2, axis=0))
        r = np.degrees(2 * np.arcsin(np.clip(0.5 * chord, 0, 1)))
        for i in sel:
            k = int(ks[i])
            o = (kmax - k) * f
            n = (2 * k + 1) * f
            vals = profile(i, r[o : o + n, o : o + n]).reshape(2 * k + 1, f, 2 * k + 1, f).mean(axis=(1, 3))
            vals *= _box_solid_angle(geom, ix, iy, k, cache)
            total = vals.sum()
            x0, x1 = max(ix - k, 0), min(ix + k + 1, nx)
            y0, y1 = max(iy - k, 0), min(iy + k + 1, ny)
            if total > 0 and x1 > x0 and y1 > y0:
                out[i, y0:y1, x0:x1] = vals[y0 - (iy - k) : y1 - (iy - k), x0 - (ix - k) : x1 - (ix - k)] / total
    return out


def _unit_vector(lon, lat) -> np.ndarray:
    """Cartesian unit vector(s) of (lon, lat) in radians: shape (3, ...)."""
    cl = np.cos(lat)
    return np.array([cl * np.cos(lon), cl * np.sin(lon), np.sin(lat)])


def _subpixel_vectors(geom: WcsGeom, x0: int, x1: int, y0: int, y1: int, f: int, cache: dict) -> np.ndarray:
    """Unit vectors (3, ny·f, nx·f) of the sub-pixel centres of a box; cached per box."""
    key = ("vec", x0, x1, y0, y1, f)
    if key not in cache:
        lon, lat = _subpixel_coords(geom, x0, x1, y0, y1, f, cache)
        cache[key] = _unit_vector(np.radians(lon), np.radians(lat))
    return cache[key]


def _box_solid_angle(geom: WcsGeom, ix: int, iy: int, k: int, cache: dict) -> np.ndarray:
    key = ("omega", ix, iy, k)
    if key not in cache:
        box = replace(geom, crpix=(geom.crpix[0] - (ix - k), geom.crpix[1] - (iy - k)), npix=(2 * k + 1, 2 * k + 1))
        cache[key] = box.solid_angle()
    return cache[key]


def cloud_in_cell(shape, x: float, y: float) -> np.ndarray:
    """Image with unit flux shared among the 4 pixels around pixel position (x, y)."""
    img = np.zeros(shape)
    ix, iy = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - ix, y - iy
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            if 0 <= iy + dy < shape[0] and 0 <= ix + dx < shape[1]:
                img[iy + dy, ix + dx] += wy * wx
    return img


def _subpixel_coords(geom: WcsGeom, x0: int, x1: int, y0: int, y1: int, f: int, cache: dict):
    key = (x0, x1, y0, y1, f)
    if key not in cache:
        if len(cache) > 64:
            cache.clear()
        sx = x0 - 0.5 + (np.arange((x1 - x0) * f) + 0.5) / f
        sy = y0 - 0.5 + (np.arange((y1 - y0) * f) + 0.5) / f
        gx, gy = np.meshgrid(sx, sy)
        cache[key] = geom.pix_to_coord(gx, gy)
    return cache[key]


def psf_kernels(geom: WcsGeom, profile: PsfProfile, *, oversample: np.ndarray | None = None) -> list[np.ndarray]:
    """Convolution kernel per true-energy bin (odd-sized, centred, sum 1) for a PSF
    centred on the central pixel of ``geom`` (use a cutout of the dataset grid)."""
    ix, iy = (n // 2 for n in geom.npix)
    lon, lat = geom.pix_to_coord(ix, iy)
    resp = point_response(geom, float(lon), float(lat), profile, oversample=oversample)
    kernels = []
    for img in resp:
        nz = np.argwhere(img > 0)
        k = int(np.max(np.abs(nz - [iy, ix]))) if nz.size else 0
        kern = img[max(iy - k, 0) : iy + k + 1, max(ix - k, 0) : ix + k + 1]
        if kern.shape != (2 * k + 1, 2 * k + 1):
            raise ValueError(f"PSF kernel of half-size {k} px does not fit in the {geom.npix} geometry")
        kernels.append(kern / kern.sum() if kern.sum() > 0 else kern)
    return kernels


def edisp_matrix_at(edisp: Map, lon: float, lat: float, frame: str, *, valid: np.ndarray | None = None) -> np.ndarray:
    """Energy-dispersion matrix (n_true, n_reco) at (lon, lat), bilinear between coarse pixels."""
    names = [a.name for a in edisp.axes]
    if names != ["energy", "energy_true"]:
        raise ValueError(f"edisp map must have axes ('energy', 'energy_true'), got {names}")
    corners, weights, _ = irf_corners(edisp, lon, lat, frame, valid=valid)
    mats = np.stack([np.nan_to_num(np.asarray(edisp.data[..., iy, ix], dtype=float)) for iy, ix in corners])
    return np.tensordot(weights, mats, axes=1)


def interp_exposure(exposure: np.ndarray, x: float, y: float) -> np.ndarray:
    """Bilinear value of a (n, ny, nx) exposure cube at pixel (x, y); 0 outside the grid."""
    ny, nx = exposure.shape[-2:]
    ix, iy = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - ix, y - iy
    out = np.zeros(exposure.shape[:-2])
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            jx, jy = ix + dx, iy + dy
            if 0 <= jy < ny and 0 <= jx < nx and wx * wy > 0:
                out += wx * wy * exposure[..., jy, jx]
    return out
