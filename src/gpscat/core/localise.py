"""Poisson likelihood localisation of compact seeds on uncorrelated counts images.

The peak of a correlated significance map is a coarse position for a faint compact
source: the top-hat flattens the top of the peak (for a 0.1° radius much wider than the
PSF) and noise moves its maximum by a good fraction of the radius.  A fit of a
PSF-broadened Gaussian to the uncorrelated counts uses every event with its proper weight
(a matched filter) and finds the position the grouped fit will find.

For each seed the fit is joint over every dataset whose image covers it: counts ``n``
in a cutout of half-width ``3 σ + 0.1°`` (``σ² = σ_psf² + s²``) are modelled as

    μ = β_k b + m + A_k Ω G(x − x₀, y − y₀; σ_psf,k² + s²)

with ``G`` a normalised 2D Gaussian, ``Ω`` the pixel solid angle and free position
(x₀, y₀), size ``s ≥ 0`` (shared), and amplitude ``A_k`` and background norm ``β_k``
per dataset (the norm absorbs a local pedestal of diffuse emission); ``m`` are known
sources' counts (the detected shells, for the residual search), added unscaled.  The statistic is
Cash's.  Pixels nearer to another seed than to this one are left out, and the spill of a
neighbouring peak seed into the cutout is modelled by a Gaussian of its size at its
position with a free amplitude, so a bright neighbour does not pull the fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from iminuit import Minuit

from gpscat.core.geom import WcsGeom, angular_separation, to_frame

__all__ = ["CountsImage", "SourceFits", "localise"]

_DEG2_PER_SR = (180.0 / np.pi) ** 2


@dataclass(frozen=True)
class CountsImage:
    """Uncorrelated counts and background of one dataset, summed over energy (2D)."""

    geom: WcsGeom
    counts: np.ndarray
    background: np.ndarray
    psf_sigma: float  # deg
    model: np.ndarray | None = None  # known sources' counts: added as they are, not scaled

    def __post_init__(self):
        shape = self.geom.shape
        for name in ("counts", "background", "model"):
            a = getattr(self, name)
            if a is not None and np.shape(a) != tuple(shape):
                raise ValueError(f"CountsImage {name} has shape {np.shape(a)}, expected the geometry's {tuple(shape)}")
        if not (np.isfinite(self.psf_sigma) and self.psf_sigma > 0):
            raise ValueError(f"CountsImage psf_sigma must be > 0 deg, got {self.psf_sigma}")


@dataclass
class _Cutout:
    counts: np.ndarray  # 1D over usable pixels
    background: np.ndarray
    model: np.ndarray  # known sources (0 for none)
    omega: np.ndarray  # deg²
    dx: np.ndarray  # deg, tangent-plane offsets from the start position
    dy: np.ndarray
    psf_sigma: float
    templates: np.ndarray  # (n_neighbours, n_pixels): neighbours' unit-amplitude Gaussians


def _gauss(dx, dy, var, omega):
    return np.exp(-0.5 * (dx * dx + dy * dy) / var) * (omega / (2 * np.pi * var))


def _offsets(plon, plat, lon, lat):
    return ((plon - lon + 180.0) % 360.0 - 180.0) * np.cos(np.radians(lat)), plat - lat


def _cutout(img: CountsImage, lon: float, lat: float, half: float, frame: str, others: np.ndarray) -> _Cutout | None:
    """Usable pixels within ``half`` of (lon, lat) and not nearer to one of ``others``
    (rows lon, lat, size; a finite size adds that neighbour's template)."""
    sl = img.geom.cutout_slices(lon, lat, 2 * half, frame)
    if sl is None:
        return None
    ys, xs = sl
    yy, xx = np.mgrid[ys, xs]
    plon, plat = img.geom.pix_to_coord(xx.astype(float), yy.astype(float))
    plon, plat = to_frame(plon, plat, img.geom.frame, frame)
    c, b = img.counts[ys, xs], img.background[ys, xs]
    d_own = angular_separation(plon, plat, lon, lat)
    ok = np.isfinite(c) & np.isfinite(b) & (b > 0) & (d_own <= half)
    for olon, olat, _ in others:  # a few neighbours at most
        ok &= angular_separation(plon, plat, olon, olat) > d_own
    if ok.sum() < 9:
        return None
    dx, dy = _offsets(plon[ok], plat[ok], lon, lat)
    omega = img.geom.solid_angle()[ys, xs][ok] * _DEG2_PER_SR
    templates = [  # neighbours whose 2 σ circle reaches into the cutout
        _gauss(*_offsets(plon[ok], plat[ok], olon, olat), img.psf_sigma**2 + osize**2, omega)
        for olon, olat, osize in others
        if np.isfinite(osize) and angular_separation(olon, olat, lon, lat) < half + 2 * np.hypot(img.psf_sigma, osize)
    ]
    templates = np.array(templates) if templates else np.zeros((0, dx.size))
    known = np.zeros(int(ok.sum())) if img.model is None else np.nan_to_num(img.model[ys, xs][ok])
    return _Cutout(c[ok], b[ok], known, omega, dx, dy, img.psf_sigma, templates)


def _fit_one(cuts: list[_Cutout], size0: float, max_shift: float) -> tuple[float, float, float, float] | None:
    """(x₀, y₀, s) deg of the joint Cash fit and its TS, or ``None`` when it fails.

    TS is twice the log-likelihood ratio against no source (the amplitudes 0, the
    background norms and neighbours refitted)."""
    # parameters: x0, y0, s, then per dataset: background norm, amplitude, neighbour amplitudes
    first = np.cumsum([3] + [2 + c.templates.shape[0] for c in cuts])

    def cash(p):
        x0, y0, s = p[0], p[1], p[2]
        total = 0.0
        for k, c in enumerate(cuts):
            j = first[k]
            mu = p[j] * c.background + c.model + p[j + 1] * _gauss(c.dx - x0, c.dy - y0, c.psf_sigma**2 + s * s, c.omega)
            if c.templates.shape[0]:
                mu = mu + p[j + 2 : first[k + 1]] @ c.templates
            mu = np.maximum(mu, 1e-30)
            total += 2.0 * np.sum(mu - c.counts * np.log(mu))
        return total

    start = [0.0, 0.0, size0]
    for c in cuts:
        excess = max(float(c.counts.sum() - c.background.sum()), 1.0)
        start += [1.0, excess] + [excess] * c.templates.shape[0]
    m = Minuit(cash, start)
    m.errordef = Minuit.LEAST_SQUARES  # Cash = 2 ln L: Δ = 1 for 1 σ
    m.limits[0] = m.limits[1] = (-1.5 * max_shift, 1.5 * max_shift)
    m.limits[2] = (0.0, 1.0)
    m.errors[0] = m.errors[1] = m.errors[2] = 0.01
    for k in range(len(cuts)):
        j = first[k]
        m.limits[j] = (0.1, 10.0)
        m.limits[j + 1] = (-1e6, 1e9)
        for i in range(j + 1, first[k + 1]):
            m.errors[i] = max(0.1 * start[i], 1.0)
        for i in range(j + 2, first[k + 1]):
            m.limits[i] = (0.0, 1e9)
    m.strategy = 1
    m.migrad()
    if not m.valid:
        return None
    x0, y0, s = (float(v) for v in m.values[:3])
    amplitude = sum(float(m.values[first[k] + 1]) for k in range(len(cuts)))
    if not amplitude > 0 or np.hypot(x0, y0) > max_shift:
        return None
    best = float(m.fval)
    for i in range(3):
        m.fixed[i] = True
    for k in range(len(cuts)):
        m.values[first[k] + 1] = 0.0
        m.fixed[first[k] + 1] = True
    m.migrad()
    return x0, y0, s, max(float(m.fval) - best, 0.0)


@dataclass(frozen=True)
class SourceFits:
    """Per seed: position (deg), intrinsic Gaussian sigma (deg), TS against no source, and
    whether the fit was used (position, size and TS NaN or unchanged where not)."""

    lon: np.ndarray
    lat: np.ndarray
    size: np.ndarray
    ts: np.ndarray
    done: np.ndarray


def localise(
    images: Sequence[CountsImage],
    lon: np.ndarray,
    lat: np.ndarray,
    *,
    size: np.ndarray,
    max_shift: np.ndarray,
    frame: str,
    fit: np.ndarray | None = None,
) -> SourceFits:
    """Joint likelihood positions of the seeds selected by ``fit``.

    Parameters
    ----------
    images : sequence of CountsImage
        One per dataset (any pixel grids).
    lon, lat : numpy.ndarray
        Positions of every seed, deg in ``frame`` (all seeds mask their neighbours'
        pixels; only those with ``fit`` are moved).
    size : numpy.ndarray
        Size (deg, intrinsic Gaussian sigma) per seed: the start of a fitted seed, the
        template of a neighbour; NaN for a seed (a shell) whose pixels are only masked.
    max_shift : numpy.ndarray
        Largest accepted move per seed, deg (a fit farther away is not used).
    frame : str
        Frame of ``lon``, ``lat``.
    fit : numpy.ndarray of bool, optional
        Seeds to localise (default all).

    Returns
    -------
    SourceFits
        New positions (unchanged where not fitted or where the fit failed), fitted sizes
        and TS (NaN there), and ``done``: the seeds whose position comes from the fit.
    """
    lon = np.array(lon, dtype=float, copy=True)
    lat = np.array(lat, dtype=float, copy=True)
    n = lon.size
    size = np.array(np.broadcast_to(np.asarray(size, dtype=float), (n,)))
    max_shift = np.broadcast_to(np.asarray(max_shift, dtype=float), (n,))
    fit = np.ones(n, dtype=bool) if fit is None else np.asarray(fit, dtype=bool)
    if lat.size != n or fit.size != n:
        raise ValueError(f"localise: lon ({n}), lat ({lat.size}) and fit ({fit.size}) differ in length")
    done = np.zeros(n, dtype=bool)
    fitted_size, ts = np.full(n, np.nan), np.full(n, np.nan)
    start_lon, start_lat = lon.copy(), lat.copy()
    for i in np.nonzero(fit)[0]:  # a few hundred seeds, each a small cutout
        s0 = float(size[i]) if np.isfinite(size[i]) and size[i] > 0 else 0.0
        cuts = []
        for img in images:
            half = 3.0 * float(np.hypot(img.psf_sigma, s0)) + 0.1
            near = angular_separation(start_lon, start_lat, start_lon[i], start_lat[i]) < 2 * half
            near[i] = False
            c = _cutout(img, start_lon[i], start_lat[i], half, frame, np.column_stack([start_lon[near], start_lat[near], size[near]]))
            if c is not None:
                cuts.append(c)
        if not cuts or not (np.isfinite(max_shift[i]) and max_shift[i] > 0):
            continue
        res = _fit_one(cuts, s0, float(max_shift[i]))
        if res is None:
            continue
        x0, y0, fitted_size[i], ts[i] = res
        lat[i] = start_lat[i] + y0
        lon[i] = (start_lon[i] + x0 / np.cos(np.radians(start_lat[i]))) % 360.0
        done[i] = True
    return SourceFits(lon, lat, fitted_size, ts, done)
