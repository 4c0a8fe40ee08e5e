"""Surface-overlap association of seeds with known sources: pure numerics.

Every seed and known source is a circle on the sky: its extent radius (68 % containment
for peaked shapes, the outer radius for shells; see :func:`extent_radius`) broadened by
the PSF, ``r = sqrt(extent² + psf68²)``.  A pair's *overlap fraction* is the area of the
intersection of the two circles divided by the area of the smaller one
(:func:`overlap_fraction`): 1 when the smaller circle lies inside the larger, 0 when they
are apart.  Pairs are found with a KD-tree on unit vectors (no loop over pairs), ranked
per seed by decreasing overlap — ties (a seed inside several large sources) by
decreasing intersection over the larger area, then by separation — and kept above a
threshold (:func:`associate`).

Circles are treated in the tangent plane with the great-circle separation as the
distance between centres: exact lens areas in the plane, with relative errors of order
r² (rad) on the sphere — below 1e-3 for radii under ~2°.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import gammaincinv

from gpscat.core.geom import angular_separation

__all__ = [
    "CONTAINMENT",
    "R68_PER_SIGMA",
    "Associations",
    "associate",
    "candidate_pairs",
    "circle_overlap_area",
    "extent_radius",
    "overlap_fraction",
    "weighted_extent",
]

#: Containment fraction that defines the extent of peaked shapes.
CONTAINMENT = 0.68
#: 68 % containment radius of a 2D Gaussian in units of its sigma: sqrt(-2 ln 0.32).
R68_PER_SIGMA = float(np.sqrt(-2.0 * np.log(1.0 - CONTAINMENT)))


def extent_radius(morphology, size, *, eta=None) -> np.ndarray:
    """Extent radius (deg) of sources of a morphology and size, vectorised.

    ======================  ==================================  ==========================
    morphology              ``size``                            extent radius
    ======================  ==================================  ==========================
    ``point``               (ignored)                           0
    ``gauss``               sigma                               1.5096 sigma (68 %)
    ``gauss-general``       r_0, with ``eta``                   r_0 · P⁻¹(2η, 0.68)^η (68 %)
    ``disk``                radius                              sqrt(0.68) radius (68 %)
    ``shell``               outer radius                        outer radius
    other (``template``…)   a 68 % radius already               size
    ======================  ==================================  ==========================

    ``P⁻¹`` is the inverse regularised lower incomplete gamma function: the profile
    exp(-(r/r_0)^(1/η)) contains the fraction P(2η, (R/r_0)^(1/η)) within R.
    NaN sizes give NaN.
    """
    morph = np.asarray(morphology, dtype=str)
    size = np.asarray(size, dtype=float)
    morph, size = np.broadcast_arrays(morph, size)
    out = np.array(size, dtype=float, copy=True)
    out[morph == "point"] = 0.0
    out[morph == "gauss"] *= R68_PER_SIGMA
    out[morph == "disk"] *= np.sqrt(CONTAINMENT)
    gg = morph == "gauss-general"
    if np.any(gg):
        eta_arr = np.broadcast_to(np.asarray(0.5 if eta is None else eta, dtype=float), morph.shape)[gg]
        out[gg] = size[gg] * gammaincinv(2.0 * eta_arr, CONTAINMENT) ** eta_arr
    return out


def weighted_extent(lon, lat, weights, *, fraction: float = CONTAINMENT) -> tuple[float, float, float]:
    """Flux-weighted centre (lon, lat, deg) and ``fraction`` containment radius of a map.

    ``lon``, ``lat``, ``weights`` are arrays of the same shape (e.g. pixel centres and
    brightness × solid angle); non-positive weights are ignored.
    """
    lon, lat, w = (np.ravel(np.asarray(a, dtype=float)) for a in (lon, lat, weights))
    good = np.isfinite(w) & (w > 0)
    if not np.any(good):
        raise ValueError("weighted_extent: no positive weight")
    lon, lat, w = lon[good], lat[good], w[good]
    lo, la = np.radians(lon), np.radians(lat)
    v = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)
    c = (v * w[:, None]).sum(axis=0)
    lon_c = float(np.degrees(np.arctan2(c[1], c[0])) % 360.0)
    lat_c = float(np.degrees(np.arctan2(c[2], np.hypot(c[0], c[1]))))
    sep = angular_separation(lon, lat, lon_c, lat_c)
    order = np.argsort(sep)
    cum = np.cumsum(w[order])
    k = int(np.searchsorted(cum, fraction * cum[-1]))
    return lon_c, lat_c, float(sep[order][min(k, sep.size - 1)])


def circle_overlap_area(d, r1, r2) -> np.ndarray:
    """Area of the intersection of two circles of radii ``r1``, ``r2`` whose centres are
    ``d`` apart (same units; area in units²), vectorised and exact in the plane."""
    d, r1, r2 = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (d, r1, r2)))
    if np.any(r1 < 0) or np.any(r2 < 0) or np.any(d < 0):
        raise ValueError("circle_overlap_area: radii and distances must be >= 0")
    rmin, rmax = np.minimum(r1, r2), np.maximum(r1, r2)
    out = np.where(d <= rmax - rmin, np.pi * rmin**2, 0.0)
    lens = (d > rmax - rmin) & (d < r1 + r2)
    if np.any(lens):
        dd, a, b = d[lens], r1[lens], r2[lens]
        ca = np.clip((dd**2 + a**2 - b**2) / (2 * dd * a), -1.0, 1.0)
        cb = np.clip((dd**2 + b**2 - a**2) / (2 * dd * b), -1.0, 1.0)
        kite = (-dd + a + b) * (dd + a - b) * (dd - a + b) * (dd + a + b)
        out[lens] = a**2 * np.arccos(ca) + b**2 * np.arccos(cb) - 0.5 * np.sqrt(np.clip(kite, 0.0, None))
    return out


def overlap_fraction(d, r1, r2) -> np.ndarray:
    """Intersection area over the area of the smaller circle, in [0, 1].

    A circle of radius 0 (a point) counts as fully overlapping when it lies inside (or on)
    the other circle.
    """
    d, r1, r2 = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (d, r1, r2)))
    rmin, rmax = np.minimum(r1, r2), np.maximum(r1, r2)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = circle_overlap_area(d, r1, r2) / (np.pi * rmin**2)
    return np.clip(np.where(rmin > 0, frac, (d <= rmax).astype(float)), 0.0, 1.0)


def _unit_vectors(lon, lat) -> np.ndarray:
    lo, la = np.radians(np.asarray(lon, float)), np.radians(np.asarray(lat, float))
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1).reshape(-1, 3)


def candidate_pairs(lon1, lat1, r1, lon2, lat2, r2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j) of circles of set 1 and set 2 that intersect (separation < r1 + r2).

    Positions and radii in deg, in one frame.  A KD-tree on unit vectors finds the pairs
    within the largest possible reach; exact separations then select them.

    Returns
    -------
    i, j : numpy.ndarray of int
        Indices into set 1 and set 2, sorted by i then j.
    separation : numpy.ndarray
        Great-circle separation of each pair (deg).
    """
    r1, r2 = np.atleast_1d(np.asarray(r1, float)), np.atleast_1d(np.asarray(r2, float))
    v1, v2 = _unit_vectors(lon1, lat1), _unit_vectors(lon2, lat2)
    empty = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    if len(v1) == 0 or len(v2) == 0:
        return empty
    reach = min(float(np.max(r1) + np.max(r2)), 180.0)
    chord = 2.0 * np.sin(np.radians(reach) / 2.0) * (1 + 1e-9) + 1e-12
    pairs = cKDTree(v1).sparse_distance_matrix(cKDTree(v2), chord, output_type="ndarray")
    i, j = pairs["i"].astype(int), pairs["j"].astype(int)
    lon1, lat1 = np.ravel(lon1), np.ravel(lat1)
    lon2, lat2 = np.ravel(lon2), np.ravel(lat2)
    sep = angular_separation(lon1[i], lat1[i], lon2[j], lat2[j])
    touching = (sep < r1[i] + r2[j]) | (sep == 0)
    i, j, sep = i[touching], j[touching], sep[touching]
    order = np.lexsort((j, i))
    return i[order], j[order], sep[order]


@dataclass(frozen=True)
class Associations:
    """Ranked association candidates: one entry per (seed, source) pair kept.

    ``seed`` and ``source`` index the inputs; ``rank`` is 1 for each seed's best
    candidate; ``seed_radius`` and ``source_radius`` are the PSF-broadened circles
    compared.  Entries are sorted by seed, then rank.
    """

    seed: np.ndarray
    source: np.ndarray
    overlap: np.ndarray
    separation: np.ndarray
    rank: np.ndarray
    seed_radius: np.ndarray
    source_radius: np.ndarray

    def __len__(self) -> int:
        return int(self.seed.size)


def associate(
    seed_lon,
    seed_lat,
    seed_extent,
    source_lon,
    source_lat,
    source_extent,
    *,
    psf_r68=0.0,
    min_overlap: float,
    max_candidates: int | None = None,
) -> Associations:
    """Associate seeds with sources whose PSF-broadened circles overlap enough.

    Each pair compares the circles ``sqrt(seed_extent² + psf²)`` and
    ``sqrt(source_extent² + psf²)``, with the PSF 68 % radius ``psf`` of the seed.

    Parameters
    ----------
    seed_lon, seed_lat, seed_extent : array-like
        Seed centres and extent radii (deg).
    source_lon, source_lat, source_extent : array-like
        Known-source centres (deg, in the seeds' frame) and extent radii (deg).
    psf_r68 : float or array-like
        PSF 68 % containment radius (deg): one value, or one per seed.
    min_overlap : float
        Keep pairs with overlap fraction >= this, in [0, 1] (0 keeps every touching pair).
    max_candidates : int, optional
        Keep at most this many candidates per seed (the best ranked).

    Returns
    -------
    Associations
    """
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}")
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
    se, ce = np.atleast_1d(np.asarray(seed_extent, float)), np.atleast_1d(np.asarray(source_extent, float))
    psf = np.broadcast_to(np.asarray(psf_r68, float), se.shape)
    for name, r in (("seed_extent", se), ("source_extent", ce), ("psf_r68", psf)):
        if np.any(~np.isfinite(r)) or np.any(r < 0):
            raise ValueError(f"{name} must be finite and >= 0")
    r_seed = np.hypot(se, psf)
    reach = np.hypot(ce, psf.max() if psf.size else 0.0)  # widest source circle any seed can see
    i, j, sep = candidate_pairs(seed_lon, seed_lat, r_seed, source_lon, source_lat, reach)
    r_src = np.hypot(ce[j], psf[i])
    frac = overlap_fraction(sep, r_seed[i], r_src)
    keep = frac >= min_overlap
    # ties (e.g. the seed inside several large sources) go to the closest size, then the nearest
    similarity = frac * (np.minimum(r_seed[i], r_src) / np.maximum(np.maximum(r_seed[i], r_src), 1e-300)) ** 2
    order = np.lexsort((sep[keep], -similarity[keep], -frac[keep], i[keep]))
    i, j, sep, frac, r_src = (a[keep][order] for a in (i, j, sep, frac, r_src))
    rank = np.arange(i.size) - np.searchsorted(i, i, side="left") + 1
    keep = rank <= (max_candidates or np.inf)
    return Associations(i[keep], j[keep], frac[keep], sep[keep], rank[keep], r_seed[i][keep], r_src[keep])
