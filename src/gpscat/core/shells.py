"""Shell (ring) detection with the circular Hough transform, and absorption of ring fragments.

Peak finding splits a shell into fragments along its rim.  The shell search works on a
significance map in pixel units:

1. **Edges** (:func:`ring_edges`): the Canny edges (:func:`skimage.feature.canny`) of the
   region above ``level`` σ — the contours of the significant emission, smoothed and one
   pixel wide.  Working on the thresholded region makes the edge thresholds independent
   of the map's units and noise: noise fluctuations above ``level`` are small blobs whose
   contours cannot cover a large circle.
2. **Hough candidates** (:func:`hough_candidates`): :func:`skimage.transform.hough_circle`
   over the configured radii, normalised so that the accumulator is the fraction of the
   circle covered by edges, and :func:`skimage.transform.hough_circle_peaks`.
3. **Verification and refinement** (:func:`refine_rings`): a contour is at the *edge* of
   the emission, not on the rim, and filled blobs have circular contours too.  Around each
   candidate centre (searched on a small grid of offsets) the azimuthally averaged profile
   of the significance gives the rim radius (the profile maximum), its half-width, the
   brightness contrast of the rim over the interior (a limb-brightened shell has a
   positive contrast, a blob or a disk does not) and the fraction of azimuthal sectors
   where the rim is above ``level`` (the ring is closed, not one bright spot).
   A faint shell's rim is only a few σ per pixel, so per-pixel levels miss most of its
   sectors; with the correlated excess and counts, :func:`rim_sectors` integrates each
   sector and tests the ring as a whole: its integrated significance, the sectors'
   significances, the deepest gap below the rim's median level, and the interior
   emission a projected shell must have (a ring of separate sources has none).
4. :func:`absorb_fragments` assigns the peak seeds lying on an accepted ring, or seen at
   a large correlation radius inside it, to the shell.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.feature import canny
from skimage.transform import hough_circle, hough_circle_peaks

from gpscat.core.convolve import correlate, disk_kernel
from gpscat.core.geom import angular_separation

__all__ = [
    "Rings",
    "absorb_fragments",
    "find_shells",
    "fit_shell_profile",
    "merge_rings",
    "hough_candidates",
    "refine_rings",
    "rim_sectors",
    "ring_edges",
    "ring_strength",
]

log = logging.getLogger(__name__)

_N_SECTORS = 12


@dataclass(frozen=True)
class Rings:
    """Ring candidates or accepted shells, pixel units, by decreasing ``score``.

    ``score`` is the Hough accumulator (fraction of the circle covered by edges);
    ``peak`` the mean significance on the rim; ``contrast`` the rim minus the mean
    interior (r < radius / 2) significance; ``coverage`` the fraction of azimuthal
    sectors whose rim is above the edge level; ``width`` the full width of the rim
    profile at half its maximum (pixels, NaN when not measurable).

    From the integrated sectors (:func:`rim_sectors`; NaN when not measured):
    ``rim_sqrt_ts`` the significance of the whole rim's excess, ``sector_coverage`` the
    fraction of sectors whose own significance reaches the sector level, ``gap`` the
    deepest deficit of a sector below the rim's median excess level (σ, <= 0), and
    ``interior_ratio`` the interior's (r < radius / 2) excess per pixel over the rim's.
    """

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    score: np.ndarray
    peak: np.ndarray
    contrast: np.ndarray
    coverage: np.ndarray
    width: np.ndarray
    rim_sqrt_ts: np.ndarray
    sector_coverage: np.ndarray
    gap: np.ndarray
    interior_ratio: np.ndarray

    def __len__(self) -> int:
        return int(self.x.size)

    def select(self, keep: np.ndarray) -> Rings:
        return Rings(**{k: getattr(self, k)[keep] for k in self.__dataclass_fields__})


def _empty_rings() -> Rings:
    return Rings(*(np.zeros(0) for _ in Rings.__dataclass_fields__))


def _nan_fields(n: int) -> dict[str, np.ndarray]:
    """The integrated-sector fields, unmeasured."""
    return {k: np.full(n, np.nan) for k in ("rim_sqrt_ts", "sector_coverage", "gap", "interior_ratio")}


def ring_edges(
    significance: np.ndarray,
    *,
    level: float,
    sigma: float = 1.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Canny edges (bool) of the region where ``significance >= level``.

    ``sigma`` (pixels, > 0) is the Gaussian smoothing of Canny.  Masked and NaN pixels
    count as below the level.
    """
    significance = np.asarray(significance, dtype=float)
    if significance.ndim != 2:
        raise ValueError(f"significance must be 2D, got shape {significance.shape}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be > 0 pixels, got {sigma}")
    region = np.nan_to_num(significance, nan=-np.inf) >= level
    if mask is not None:
        region &= np.asarray(mask, dtype=bool)
    if not region.any():
        return np.zeros(region.shape, dtype=bool)
    # canny's gradient is a Sobel of the smoothed image; scale the binary image so that
    # a straight smoothed step has a peak gradient of ~1, then thresholds are fractions
    peak = 8.0 / (np.sqrt(2.0 * np.pi) * max(sigma, 0.5))
    return canny(region.astype(float) / peak, sigma=sigma, low_threshold=0.2, high_threshold=0.4)


def hough_candidates(
    edges: np.ndarray,
    radii: np.ndarray,
    *,
    min_score: float = 0.5,
    min_distance: int = 3,
    max_candidates: int = 50,
) -> Rings:
    """Circle candidates from the Hough transform of an edge image.

    Parameters
    ----------
    edges : numpy.ndarray
        2D bool edge image.
    radii : numpy.ndarray
        Trial radii, pixels (integers >= 2).
    min_score : float
        Minimum fraction of the circle covered by (1-pixel dilated) edges, in (0, 1].
    min_distance : int
        Minimum distance between candidate centres, pixels.
    max_candidates : int
        At most this many candidates, best first.

    Returns
    -------
    Rings
        Only ``x, y, radius, score`` are filled (the rest NaN).
    """
    edges = np.asarray(edges, dtype=bool)
    radii = np.unique(np.round(np.atleast_1d(radii)).astype(np.int64))
    if radii.size == 0 or radii.min() < 2:
        raise ValueError(f"Hough radii must be >= 2 pixels, got {radii}")
    if not 0 < min_score <= 1:
        raise ValueError(f"min_score must be in (0, 1], got {min_score}")
    if not edges.any():
        return _empty_rings()
    # a one-pixel dilation makes the coverage of a true circle ~1 despite discretisation
    thick = ndimage.binary_dilation(edges, structure=np.ones((3, 3), bool))
    rows = []
    for iy, ix in _tiles(thick, 2 * int(radii.max()) + 1):
        # the accumulator is (n_radii, ny, nx) floats: only the tiles around the edges
        acc = hough_circle(thick[iy, ix], radii, normalize=True)
        score, cx, cy, rad = hough_circle_peaks(
            acc,
            radii,
            min_xdistance=int(min_distance),
            min_ydistance=int(min_distance),
            threshold=min_score,
            total_num_peaks=int(max_candidates),
        )
        rows += list(zip(score, np.asarray(cx) + ix.start, np.asarray(cy) + iy.start, rad, strict=True))
    rows.sort(key=lambda r: -r[0])
    score, cx, cy, rad = (np.array([r[k] for r in rows[: int(max_candidates)]], dtype=float) for k in range(4))
    nan = np.full(score.size, np.nan)
    return Rings(cx, cy, rad, np.minimum(score, 1.0), nan, nan.copy(), nan.copy(), nan.copy(), **_nan_fields(score.size))


def _tiles(mask: np.ndarray, margin: int) -> list[tuple[slice, slice]]:
    """Disjoint boxes covering every True pixel of ``mask`` with ``margin`` pixels around.

    Every circle of radius <= margin / 2 through an edge pixel lies in that pixel's box,
    so a Hough transform per box finds what one over the whole map would, with memory
    set by the emission, not by the survey's size.
    """
    grow = np.zeros(mask.shape, dtype=bool)
    ny, nx = mask.shape
    for iy, ix in ndimage.find_objects(ndimage.label(mask, structure=np.ones((3, 3)))[0]):
        grow[max(iy.start - margin, 0) : min(iy.stop + margin, ny), max(ix.start - margin, 0) : min(ix.stop + margin, nx)] = True
    return [sl for sl in ndimage.find_objects(ndimage.label(grow)[0]) if sl is not None]


def refine_rings(
    image: np.ndarray,
    candidates: Rings,
    *,
    r_min: float,
    r_max: float,
    level: float,
    search: int = 2,
    mask: np.ndarray | None = None,
    excess: np.ndarray | None = None,
    kernel_radius: float = 0.0,
    psf_sigma: float = 0.0,
) -> Rings:
    """Rim radius, width, contrast and coverage around each candidate centre.

    For each candidate, centres on a ``(2 search + 1)²`` grid of pixel offsets are tried;
    the one whose azimuthal profile has the brightest maximum in ``[r_min, r_max]`` wins.
    The maximum of a smoothed profile lies inside the shell (the projected interior
    emission and the curvature of the rim pull it in by up to ~30 % for a correlation
    radius of half the shell radius), so when ``excess`` is given the shell's inner
    radius and width are then fitted to the excess profile with
    :func:`fit_shell_profile`; otherwise ``radius`` is the profile maximum and ``width``
    its full width at half maximum.

    Parameters
    ----------
    image : numpy.ndarray
        2D significance map.
    candidates : Rings
        From :func:`hough_candidates`.
    r_min, r_max : float
        Radius range of the rim, pixels.
    level : float
        Rim level for the sector coverage.
    search : int
        Half size of the centre search grid, pixels.
    mask : numpy.ndarray, optional
        True for usable pixels.
    excess : numpy.ndarray, optional
        Correlated excess map on the same grid, for the shell fit.
    kernel_radius, psf_sigma : float
        Top-hat correlation radius and Gaussian PSF sigma of ``excess``, pixels.

    Returns
    -------
    Rings
        Same order as ``candidates`` with all fields filled.
    """
    image = np.asarray(image, dtype=float)
    if not 0 < r_min < r_max:
        raise ValueError(f"need 0 < r_min < r_max, got {r_min}, {r_max}")
    usable = np.isfinite(image) if mask is None else np.asarray(mask, bool) & np.isfinite(image)
    rows = [
        _refine_one(image, usable, cx, cy, r_min, r_max, level, int(search))
        for cx, cy in zip(candidates.x, candidates.y, strict=True)
    ]
    if not rows:
        return _empty_rings()
    x, y, radius, peak, contrast, coverage, width = (np.array(v, dtype=float) for v in zip(*rows, strict=True))
    if excess is not None:
        ok = np.isfinite(radius)
        for i in np.nonzero(ok)[0]:  # a handful of candidates
            radius[i], width[i] = fit_shell_profile(
                excess, x[i], y[i], r_guess=radius[i], r_max=r_max,
                kernel_radius=kernel_radius, psf_sigma=psf_sigma, mask=usable,
            )
    kept = {k: getattr(candidates, k).copy() for k in _nan_fields(0)}  # measured by rim_sectors, if at all
    return Rings(x, y, radius, candidates.score.copy(), peak, contrast, coverage, width, **kept)


def _radial_profile(image, usable, cx, cy, nbin):
    """Median and pixel count of ``image`` in 1-pixel annuli around integer pixel (cx, cy).

    The median, not the mean: a compact source on or beside the rim fills a small part of
    each annulus it crosses, and would pull a mean profile (and the fitted width) outwards.
    """
    ny, nx = image.shape
    x0, x1 = max(int(cx) - nbin, 0), min(int(cx) + nbin + 1, nx)
    y0, y1 = max(int(cy) - nbin, 0), min(int(cy) + nbin + 1, ny)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    ok = usable[y0:y1, x0:x1]
    rbin = np.floor(np.hypot(xx - cx, yy - cy)[ok]).astype(np.int64)
    val = image[y0:y1, x0:x1][ok]
    good = rbin < nbin
    rbin, val = rbin[good], val[good]
    cnt = np.bincount(rbin, minlength=nbin)
    order = np.lexsort((val, rbin))  # by annulus, then value
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    lo, hi = start + (cnt - 1) // 2, start + cnt // 2  # the middle one or two of each annulus
    med = np.full(nbin, np.nan)
    has = cnt > 0
    ranked = val[order]
    med[has] = 0.5 * (ranked[lo[has]] + ranked[hi[has]])
    return med, cnt.astype(float)


@functools.lru_cache(maxsize=8)
def _sphere_profiles(rho_max: float, nbin: int, kernel_radius: float, psf_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Radial profiles (1-pixel bins) of projected uniform spheres, correlated with the
    top-hat and the Gaussian PSF (unit emissivity), for radii ``rho`` on a half-pixel
    grid from 1 to ``rho_max`` pixels.  Returns ``(rho, profiles)``, read-only.

    They depend on the kernel only, not on the data: cached (a handful of maps per run
    share them), keyed by plain numbers.
    """
    rho = np.arange(1.0, rho_max + 0.25, 0.5)
    pad = int(np.ceil(kernel_radius + 3 * psf_sigma)) + 1
    half = nbin + pad
    ov = 3  # sub-pixel sampling of the sphere edges
    s = (np.arange(ov) + 0.5) / ov - 0.5
    d = np.arange(-half, half + 1, dtype=float)
    dd = (d[:, None] + s[None, :]).ravel()
    r2 = dd[:, None] ** 2 + dd[None, :] ** 2  # oversampled grid
    n = d.size
    img = np.empty((rho.size, n, n))
    for k, rk in enumerate(rho):  # ~100 radii; one oversampled image at a time
        img[k] = np.sqrt(np.clip(rk**2 - r2, 0.0, None)).reshape(n, ov, n, ov).mean(axis=(1, 3))
    if kernel_radius > 0:
        img = correlate(img, disk_kernel(kernel_radius))
    if psf_sigma > 0:
        img = ndimage.gaussian_filter(img, (0, psf_sigma, psf_sigma), mode="constant")
    rbin = np.floor(np.hypot(d[:, None], d[None, :])).astype(np.int64).ravel()
    good = rbin < nbin
    cnt = np.bincount(rbin[good], minlength=nbin)
    flat = img.reshape(rho.size, -1)[:, good]
    prof = np.stack([np.bincount(rbin[good], weights=f, minlength=nbin) for f in flat]) / np.maximum(cnt, 1)
    rho.setflags(write=False)
    prof.setflags(write=False)
    return rho, prof


def fit_shell_profile(
    excess: np.ndarray,
    x: float,
    y: float,
    *,
    r_guess: float,
    r_max: float,
    kernel_radius: float = 0.0,
    psf_sigma: float = 0.0,
    mask: np.ndarray | None = None,
) -> tuple[float, float]:
    """Inner radius and width (pixels) of a projected uniform shell fitted to a profile.

    The azimuthal profile of ``excess`` around pixel ``(x, y)`` is compared, by weighted
    least squares with a free non-negative amplitude, with projected shells of inner
    radius ``R`` and width ``w`` (the difference of two projected spheres, the model of
    gammapy's ``ShellSpatialModel``) correlated with the top-hat of ``kernel_radius`` and
    a Gaussian of ``psf_sigma`` pixels.  ``R`` and ``R + w`` run over a half-pixel grid
    from ``r_guess / 2`` to ``1.6 r_max``, with ``w <= R``; the profile is fitted out to
    ``1.5 r_guess`` plus the kernel.
    """
    excess = np.asarray(excess, dtype=float)
    usable = np.isfinite(excess) if mask is None else np.asarray(mask, bool) & np.isfinite(excess)
    if not (np.isfinite(r_guess) and 0 < r_guess <= r_max):
        raise ValueError(f"need 0 < r_guess <= r_max, got r_guess={r_guess}, r_max={r_max}")
    nbin = int(np.ceil(1.6 * r_max)) + 1
    rho, prof = _sphere_profiles(round(1.6 * r_max, 3), nbin, round(kernel_radius, 3), round(psf_sigma, 3))
    window = int(np.ceil(min(1.6 * r_max, 1.5 * r_guess + kernel_radius + 2 * psf_sigma))) + 1
    data, cnt = _radial_profile(excess, usable, int(round(x)), int(round(y)), window)
    ok = cnt > 0
    prof = prof[:, :window][:, ok]
    i, j = np.triu_indices(rho.size, k=1)
    keep = ((rho[j] - rho[i]) <= rho[i]) & (rho[i] >= 0.5 * r_guess)
    i, j = i[keep], j[keep]
    model = prof[j] - prof[i]
    c, dat = cnt[ok], data[ok]
    mm = model**2 @ c
    md = model @ (c * dat)
    amp = np.clip(md / np.where(mm > 0, mm, np.inf), 0.0, None)
    chi2 = -(2 * amp * md - amp**2 * mm)  # up to the constant sum(c * dat**2)
    k = int(np.argmin(chi2))
    return float(rho[i[k]]), float(rho[j[k]] - rho[i[k]])


def _refine_one(image, usable, cx, cy, r_min, r_max, level, search):
    ny, nx = image.shape
    half = int(np.ceil(1.5 * r_max)) + search + 1
    x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, nx)
    y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, ny)
    sub = image[y0:y1, x0:x1]
    ok = usable[y0:y1, x0:x1].ravel()
    yy, xx = np.indices(sub.shape)
    xx, yy, val = xx.ravel()[ok] + x0, yy.ravel()[ok] + y0, sub.ravel()[ok]
    off = np.arange(-search, search + 1)
    ox, oy = (a.ravel() for a in np.meshgrid(off, off))
    nbin = int(np.ceil(1.5 * r_max)) + 1
    # radial profiles (1-pixel bins) for all trial centres at once: (n_offsets, nbin)
    dist = np.hypot(xx[None, :] - (cx + ox)[:, None], yy[None, :] - (cy + oy)[:, None])
    rbin = np.floor(dist).astype(np.int64)
    good = rbin < nbin
    flat = (np.arange(ox.size)[:, None] * nbin + rbin)[good]
    vals = np.broadcast_to(val, dist.shape)[good]
    num = np.bincount(flat, weights=vals, minlength=ox.size * nbin).reshape(ox.size, nbin)
    cnt = np.bincount(flat, minlength=ox.size * nbin).reshape(ox.size, nbin)
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = num / cnt
    rc = np.arange(nbin) + 0.5
    window = (rc >= r_min) & (rc <= r_max)
    pw = np.where(window[None, :] & (cnt > 0), prof, -np.inf)
    k_off, k_r = np.unravel_index(np.argmax(pw), pw.shape)
    p = prof[k_off]
    radius, rim = rc[k_r], p[k_r]
    if not np.isfinite(rim):
        return (cx, cy, np.nan, np.nan, np.nan, np.nan, np.nan)
    interior = np.nanmean(p[rc < 0.5 * radius]) if np.any(rc < 0.5 * radius) else np.nan
    width = _half_max_width(p, k_r)
    bx, by = cx + ox[k_off], cy + oy[k_off]
    # sector coverage: mean on the rim (|r - R| <= half a rim width, >= 1 px) per sector
    d = dist[k_off]
    tol = max(1.0, 0.5 * (width if np.isfinite(width) else 2.0))
    on_rim = np.abs(d - radius) <= tol
    phi = np.arctan2(yy[on_rim] - by, xx[on_rim] - bx)
    sector = np.floor((phi + np.pi) / (2 * np.pi) * _N_SECTORS).astype(np.int64) % _N_SECTORS
    s_num = np.bincount(sector, weights=val[on_rim], minlength=_N_SECTORS)
    s_cnt = np.bincount(sector, minlength=_N_SECTORS)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_mean = s_num / s_cnt
    coverage = float(np.mean(s_mean >= level))
    return (bx, by, radius, rim, rim - interior, coverage, width)


def rim_sectors(
    excess: np.ndarray,
    counts: np.ndarray,
    x: float,
    y: float,
    radius: float,
    *,
    half_width: float,
    kernel_radius: float,
    mask: np.ndarray | None = None,
    n_sectors: int = _N_SECTORS,
) -> tuple[np.ndarray, float, float, float]:
    """Integrated significance of a ring's sectors, from correlated excess and counts maps.

    The rim is the annulus ``|d - radius| <= half_width`` around pixel ``(x, y)``, cut into
    ``n_sectors`` azimuthal sectors.  For a region ``S`` the sum of the correlated excess
    over ``S`` is ``Σ_y e_y w(y)`` with ``w`` the region correlated with the top-hat
    (``e_y`` the uncorrelated excess per pixel), so its variance is ``Σ_y λ_y w(y)²``,
    with the expected counts per pixel ``λ`` estimated by the correlated counts over the
    top-hat's area.  A sector's significance is its excess sum over the square root of that
    variance; so is the whole rim's and the interior's (r < radius / 2, and at least a
    pixel inside the rim annulus).

    Returns
    -------
    z_sectors : numpy.ndarray
        Significance of each sector (NaN for an empty one).
    z_rim : float
        Significance of the whole rim.
    gap : float
        Deepest deficit of a sector below the median excess level of the rim's sectors
        (per pixel), in units of that sector's error; <= 0 unless every sector is above.
    interior_ratio : float
        Interior excess per pixel over the rim's.
    """
    excess = np.asarray(excess, dtype=float)
    counts = np.asarray(counts, dtype=float)
    if excess.shape != counts.shape or excess.ndim != 2:
        raise ValueError(f"excess and counts must be 2D maps of one shape, got {excess.shape} and {counts.shape}")
    if not (radius > 0 and half_width > 0 and kernel_radius > 0):
        raise ValueError(f"need radius, half_width, kernel_radius > 0, got {radius}, {half_width}, {kernel_radius}")
    kernel = disk_kernel(kernel_radius)
    ny, nx = excess.shape
    half = int(np.ceil(radius + half_width + kernel_radius)) + 2
    x0, x1 = max(int(round(x)) - half, 0), min(int(round(x)) + half + 1, nx)
    y0, y1 = max(int(round(y)) - half, 0), min(int(round(y)) + half + 1, ny)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    ok = np.isfinite(excess[y0:y1, x0:x1]) & np.isfinite(counts[y0:y1, x0:x1])
    if mask is not None:
        ok &= np.asarray(mask, bool)[y0:y1, x0:x1]
    ex = np.where(ok, excess[y0:y1, x0:x1], 0.0)
    lam = np.where(ok, np.clip(counts[y0:y1, x0:x1], 0.0, None), 0.0) / kernel.sum()
    d = np.hypot(xx - x, yy - y)
    rim = ok & (np.abs(d - radius) <= half_width)
    sector = np.floor((np.arctan2(yy - y, xx - x) + np.pi) / (2 * np.pi) * n_sectors).astype(np.int64) % n_sectors
    interior = ok & (d < min(0.5 * radius, radius - half_width - 1.0))
    regions = np.stack([rim & (sector == k) for k in range(n_sectors)] + [rim, interior]).astype(float)
    weights = correlate(regions, kernel)  # (n_sectors + 2) small cutouts
    total = (regions * ex).sum(axis=(1, 2))
    var = (weights**2 * lam).sum(axis=(1, 2))
    npix = regions.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = total / np.sqrt(var)
        z[npix == 0] = np.nan
        level = total / npix  # excess per pixel
        sec = slice(0, n_sectors)
        med = np.nanmedian(level[sec]) if np.isfinite(level[sec]).any() else np.nan
        gap = float(np.nanmin((total[sec] - med * npix[sec]) / np.sqrt(var[sec]))) if np.isfinite(med) else np.nan
        ratio = float(level[-1] / level[-2])
    return z[sec], float(z[-2]), gap, ratio


def _half_max_width(profile: np.ndarray, k: int) -> float:
    """Full width (bins) at half the value of ``profile[k]`` (floor 0), NaN if no crossing."""
    half = 0.5 * profile[k]
    below = ~(profile >= half)
    outer = np.nonzero(below[k:])[0]
    inner = np.nonzero(below[: k + 1][::-1])[0]
    if outer.size == 0:
        return np.nan
    hw_out = float(outer[0])
    hw_in = float(inner[0]) if inner.size else hw_out
    return hw_in + hw_out


def find_shells(
    significance: np.ndarray,
    *,
    r_min: float,
    r_max: float,
    r_step: float = 1.0,
    level: float = 3.0,
    canny_sigma: float = 1.0,
    min_score: float = 0.5,
    min_peak: float = 4.0,
    min_contrast: float = 1.0,
    max_interior: float = 0.85,
    min_coverage: float = 0.75,
    max_candidates: int = 50,
    mask: np.ndarray | None = None,
    excess: np.ndarray | None = None,
    kernel_radius: float = 0.0,
    psf_sigma: float = 0.0,
    counts: np.ndarray | None = None,
    min_rim_sqrt_ts: float = 6.0,
    sector_level: float = 2.0,
    min_sector_coverage: float = 0.9,
    max_gap: float = 4.0,
    min_interior_ratio: float = 0.3,
    max_rim_gap: float = np.inf,
) -> Rings:
    """Shells in a significance map: Hough candidates, verified, fitted and deduplicated.

    Parameters
    ----------
    significance : numpy.ndarray
        2D significance map.
    r_min, r_max, r_step : float
        Trial rim radii, pixels (``r_min >= 2``).
    level : float
        Significance of the emission contours (edges) and of the rim sectors.
    canny_sigma : float
        Canny smoothing, pixels.
    min_score : float
        Minimum Hough accumulator (covered fraction of the circle).
    min_peak : float
        Minimum mean rim significance.
    min_contrast : float
        Minimum rim-minus-interior significance.
    max_interior : float
        Maximum ratio of the interior to the rim significance.  Limb-brightened shells
        have 0.5–0.83 (the significance compresses bright parts: thick, bright shells
        sit at the top, e.g. 0.80 for a 34σ shell of width 0.22 R); a bright blob seen
        off-centre, or with a noise dip at its top, ~0.9.
    min_coverage : float
        Minimum fraction of azimuthal sectors with the rim above ``level``.
    max_candidates : int
        Hough candidates examined.
    mask : numpy.ndarray, optional
        True for usable pixels.
    excess, kernel_radius, psf_sigma
        Correlated excess map and its kernel (pixels) for the radius fit, see
        :func:`refine_rings`.  A fitted width reaching the fit's bound (``w ≈ R``:
        the profile is that of a filled source) rejects the ring.
    counts : numpy.ndarray, optional
        Correlated counts (same kernel as ``excess``).  With ``excess`` and a kernel, a
        candidate that fails the per-pixel tests (``min_peak``, ``min_coverage`` of sectors
        above ``level``: the rim of a faint shell is only a few σ per pixel) is accepted
        on its integrated sectors (:func:`rim_sectors`): whole rim ``>= min_rim_sqrt_ts``,
        ``min_sector_coverage`` of the sectors ``>= sector_level`` (a ring drawn through
        parts of separate sources leaves a few sectors short), no sector more than
        ``max_gap`` σ below the rim's median level (a ring through separate sources has
        gaps).  ``min_contrast`` and ``max_interior`` apply to both, and so does, when the
        sectors are measured, an interior excess per pixel ``>= min_interior_ratio`` × the
        rim's: a projected shell fills its interior; a ring of separate sources — which
        can cover every sector and pass the per-pixel tests — does not.
    max_rim_gap : float
        When the sectors are measured, a ring accepted by either test is rejected if a
        sector lies more than this many σ below the rim's median level: a bright ring drawn
        through separate sources passes the per-pixel tests (their flanks cover the
        sectors above ``level``) but leaves a sector empty.  Measured on 140 simulated
        skies of the demo configuration (173 Hough seeds): true shells -1 to -7σ (the
        deficit grows with the rim's brightness), rings of separate sources -3 to -20σ
        (6 of 11 below -8σ).

    Returns
    -------
    Rings
        Accepted shells by decreasing rim mean significance, merged by
        :func:`merge_rings` (before and after the radius fit): a ring inside a stronger
        one (integrated rim significance where measured, else the rim mean) joins it, and
        of one ring found from several centres the sharpest (highest rim mean) is kept.
    """
    if not (np.isfinite(r_min) and 2 <= r_min < r_max):
        raise ValueError(f"need 2 <= r_min < r_max pixels, got r_min={r_min}, r_max={r_max}")
    if not r_step > 0:
        raise ValueError(f"r_step must be > 0 pixels, got {r_step}")
    radii = np.arange(r_min, r_max + 0.5 * r_step, max(r_step, 1.0))
    edges = ring_edges(significance, level=level, sigma=canny_sigma, mask=mask)
    cand = hough_candidates(
        edges, radii, min_score=min_score, min_distance=max(2, int(r_min // 2)), max_candidates=max_candidates
    )
    if len(cand) == 0:
        return cand
    # the contour lies outside the rim, and a smoothed rim peaks inside the shell radius:
    # look for the profile maximum down to half the smallest radius
    rings = refine_rings(significance, cand, r_min=max(1.0, 0.5 * r_min), r_max=r_max, level=level, mask=mask)
    shaped = (
        np.isfinite(rings.radius)
        & (rings.contrast >= min_contrast)
        & (rings.peak - rings.contrast <= max_interior * rings.peak)
    )
    ok = shaped & (rings.peak >= min_peak) & (rings.coverage >= min_coverage)
    if excess is not None and counts is not None and kernel_radius > 0:
        for i in np.nonzero(shaped)[0]:  # a few dozen candidates, small cutouts
            # the rim annulus: half the profile's width, at most the top-hat radius (a faint
            # rim's profile is broad and noisy, and the annulus must not reach the interior)
            tol = max(1.0, min(0.5 * (rings.width[i] if np.isfinite(rings.width[i]) else 2.0), kernel_radius))
            z, rings.rim_sqrt_ts[i], rings.gap[i], rings.interior_ratio[i] = rim_sectors(
                excess, counts, rings.x[i], rings.y[i], rings.radius[i], half_width=tol, kernel_radius=kernel_radius, mask=mask,
            )
            rings.sector_coverage[i] = np.mean(z >= sector_level)
        with np.errstate(invalid="ignore"):
            ok |= shaped & (
                (rings.rim_sqrt_ts >= min_rim_sqrt_ts) & (rings.sector_coverage >= min_sector_coverage) & (rings.gap >= -max_gap)
            )
            # a projected shell fills its interior, a ring of separate sources does not
            # (measured: shells of 0.25-0.75 deg 0.45-1.0, rings of 4-8 points < 0.2)
            ok &= rings.interior_ratio >= min_interior_ratio
            ok &= ~(rings.gap < -max_rim_gap)  # NaN (not measured) passes
    rings = rings.select(ok)
    rings = rings.select(merge_rings(_distances(rings), rings.radius, rings.peak, _strength(rings)) < 0)
    rings = rings.select(np.argsort(-rings.peak, kind="stable"))
    if excess is not None and len(rings):
        rings = refine_rings(
            significance, rings, r_min=max(1.0, 0.5 * r_min), r_max=r_max, level=level, mask=mask,
            search=0, excess=excess, kernel_radius=kernel_radius, psf_sigma=psf_sigma,
        )
    ok = (rings.radius >= 0.5 * r_min) & (rings.radius <= r_max)
    if excess is not None:
        ok &= ~(rings.width >= 0.95 * rings.radius)
    rings = rings.select(ok)
    # the fitted radii can bring two rings onto one shell: merge again, on the fitted rims
    fitted_width = rings.width if excess is not None else None
    rings = rings.select(merge_rings(_distances(rings), rings.radius, rings.peak, _strength(rings), width=fitted_width) < 0)
    log.debug("Hough: %d candidates, %d shells", len(cand), len(rings))
    return rings


def merge_rings(dist: np.ndarray, radius: np.ndarray, peak: np.ndarray, strength: np.ndarray, width: np.ndarray | None = None) -> np.ndarray:
    """Which ring each ring merges into (-1: kept), from pairwise centre distances.

    Two rules, in this order:

    1. a ring lying inside a stronger one (``d + r <= 1.25 R``; circles tangent to the
       inside of a rim collect its edges and interior emission), unless it is the same
       ring (rule 2), merges into the strongest such ring;
    2. of rings with the same centre and radius, the one with the highest rim mean
       significance is kept: the sharpest view of the shell (e.g. the dataset with the
       narrower PSF), not necessarily the most significant one.  Without ``width``: centres
       within 0.3 × R and radii within 25 %.  With the fitted ``width`` (NaN: 0) the rims'
       mid radii ``m = r + w / 2`` are compared: centres within 0.5 × the larger ``m`` and
       ``m`` within 25 %.  A rim fitted as thin at R 0.43° and as thick at R 0.30°, W 0.25°
       is one rim of mid radius ~0.44°, and the centres of the rings one shell gives
       scatter by up to half its radius (on the classifier's 100 training skies, second
       rings of a true shell were 14 of the 21 spurious Hough seeds; this rule merges 9 of
       them).  Two distinct shells that close would overlap over most of their rims.

    ``strength`` orders rule 1 (integrated rim significance where measured), ``peak``
    rule 2.  Units of ``dist``, ``radius`` and ``width`` must agree.
    """
    n = radius.size
    parent = np.full(n, -1, dtype=np.int64)
    if width is None:
        same = (dist < 0.3 * radius[None, :]) & (np.abs(radius[:, None] / radius[None, :] - 1) < 0.25)  # [i, k]: i same as k
    else:
        mid = radius + 0.5 * np.nan_to_num(np.asarray(width, dtype=float))
        same = (dist < 0.5 * np.maximum(mid[:, None], mid[None, :])) & (np.abs(mid[:, None] / mid[None, :] - 1) < 0.25)
    same |= same.T
    inside = dist + radius[:, None] <= 1.25 * radius[None, :]  # [i, k]: i inside k
    for i in np.argsort(-strength, kind="stable"):  # a handful of rings
        if parent[i] >= 0:
            continue
        victims = inside[:, i] & ~same[:, i] & (parent < 0) & (strength < strength[i])
        parent[victims] = i
    for i in np.argsort(-peak, kind="stable"):
        if parent[i] >= 0:
            continue
        victims = same[:, i] & (parent < 0) & (np.arange(n) != i)
        parent[victims] = i
    return parent


def _distances(rings: Rings) -> np.ndarray:
    return np.hypot(rings.x[:, None] - rings.x[None, :], rings.y[:, None] - rings.y[None, :])


def ring_strength(rim_sqrt_ts, peak) -> np.ndarray:
    """Ordering key of shells for :func:`merge_rings`: the integrated rim significance
    where measured, else the rim mean."""
    rim_sqrt_ts, peak = np.asarray(rim_sqrt_ts, float), np.asarray(peak, float)
    return np.where(np.isfinite(rim_sqrt_ts), rim_sqrt_ts, peak)


def _strength(rings: Rings) -> np.ndarray:
    return ring_strength(rings.rim_sqrt_ts, rings.peak)


def absorb_fragments(
    seed_lon: np.ndarray,
    seed_lat: np.ndarray,
    seed_scale: np.ndarray,
    shell_lon: np.ndarray,
    shell_lat: np.ndarray,
    shell_radius: np.ndarray,
    *,
    tolerance: float = 0.3,
    min_tolerance: float = 0.05,
) -> np.ndarray:
    """Shell that absorbs each peak seed, or -1.

    A seed is a fragment of a shell of rim radius ``R`` when it lies on the rim
    (``|d - R| <= max(min_tolerance, tolerance × R)``), or inside the rim while being
    most significant at a correlation radius ``seed_scale >= R / 2`` (a large top-hat
    sees the whole shell, or a large part of its rim, as one blob: its peak can lie
    anywhere inside).  A compact source inside a shell, best seen at a small radius,
    stays a seed of its own.  A fragment of several shells goes to the one whose rim
    it is closest to.

    Parameters
    ----------
    seed_lon, seed_lat, seed_scale : numpy.ndarray
        Peak seed positions (deg) and the correlation radius of their best significance
        (deg).
    shell_lon, shell_lat, shell_radius : numpy.ndarray
        Shell centres and rim radii, deg.
    tolerance : float
        Fraction of the shell radius.
    min_tolerance : float
        Deg.

    Returns
    -------
    numpy.ndarray
        Index of the absorbing shell for each seed, -1 for none.
    """
    seed_lon, seed_lat, seed_scale = (np.atleast_1d(np.asarray(a, float)) for a in (seed_lon, seed_lat, seed_scale))
    shell_lon, shell_lat, shell_radius = (np.atleast_1d(np.asarray(a, float)) for a in (shell_lon, shell_lat, shell_radius))
    if not tolerance >= 0 or not min_tolerance >= 0:
        raise ValueError(f"tolerances must be >= 0, got {tolerance}, {min_tolerance}")
    owner = np.full(seed_lon.size, -1, dtype=np.int64)
    if seed_lon.size == 0 or shell_lon.size == 0:
        return owner
    d = angular_separation(seed_lon[:, None], seed_lat[:, None], shell_lon[None, :], shell_lat[None, :])
    tol = np.maximum(min_tolerance, tolerance * shell_radius)[None, :]
    off_rim = np.abs(d - shell_radius[None, :])
    on_rim = off_rim <= tol
    blob = (d <= shell_radius[None, :]) & (seed_scale[:, None] >= 0.5 * shell_radius[None, :])
    hit = on_rim | blob
    cost = np.where(hit, np.where(on_rim, off_rim, d), np.inf)
    best = np.argmin(cost, axis=1)
    found = np.isfinite(cost[np.arange(seed_lon.size), best])
    owner[found] = best[found]
    return owner
