"""Seed detection on significance maps: peaks, their merging, sizes and nesting.

Pure functions on numpy arrays.  Positions are 0-based pixel coordinates ``(x, y)``
(``image[y, x]``) inside; sky coordinates appear only in :func:`merge_peaks` and
:func:`nesting`, which take longitudes/latitudes in degrees so that peaks found on
different pixel grids (datasets with different pixel sizes) can be merged.

The steps, in the order the detect stage uses them:

1. :func:`find_peaks` — local maxima above a threshold, at least ``min_separation``
   pixels apart, each with a *prominence* (topographic dynamic: how far the map must
   drop before a higher peak can be reached) of at least ``min_prominence``.  Noise
   bumps on the flank of a bright source have a small prominence; two real sources
   separated by a valley do not.  The test uses morphological reconstruction
   (:func:`skimage.morphology.h_maxima`), exact and vectorised.
2. :func:`merge_peaks` — one seed per physical peak across correlation radii and
   datasets, finest radius first: a peak at radius ``r`` joins the nearest seed within
   ``max(link_distance, r)``, otherwise it starts a new seed.  Two sources resolved at
   the smallest radius therefore stay two seeds even where a large correlation radius
   blends them into one peak between them; :func:`merge_unresolved` then joins seeds
   that no map resolves but one coarse peak covers (a broad source's fine peaks in two
   datasets).
3. Shell search in :mod:`gpscat.core.shells` (Hough circles) and absorption of the peak
   fragments on a ring (:func:`gpscat.core.shells.absorb_fragments`).
4. :mod:`gpscat.core.moments` — size, elongation, position angle and windowed centroids
   of the excess around each seed.
5. :func:`nesting` — which seed lies inside another's extent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.morphology import h_maxima

from gpscat.core.geom import angular_separation

__all__ = [
    "Peaks",
    "check_image",
    "check_mask",
    "find_peaks",
    "merge_peaks",
    "merge_unresolved",
    "nesting",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peaks:
    """Local maxima of an image, brightest first.

    Attributes
    ----------
    x, y : numpy.ndarray
        Sub-pixel position (0-based pixel coordinates; quadratic interpolation of the
        3×3 neighbourhood, at most half a pixel from the maximum pixel).
    ix, iy : numpy.ndarray
        Integer pixel of the maximum.
    value : numpy.ndarray
        Image value at the maximum pixel.
    """

    x: np.ndarray
    y: np.ndarray
    ix: np.ndarray
    iy: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return int(self.value.size)


def _disk_footprint(radius: float) -> np.ndarray:
    n = max(int(np.floor(radius)), 1)
    d = np.arange(-n, n + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= max(radius, 1.0) ** 2 + 1e-9


def check_image(image, name: str = "image") -> np.ndarray:
    """``image`` as a 2D float array; ValueError naming it otherwise."""
    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2D array, got shape {image.shape}")
    return image


def check_mask(mask, shape) -> np.ndarray:
    """A boolean mask of ``shape`` (all True for ``None``); ValueError on a shape mismatch."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {shape}")
    return mask


def find_peaks(
    image: np.ndarray,
    threshold: float,
    *,
    min_separation: float = 1.0,
    min_prominence: float = 0.0,
    mask: np.ndarray | None = None,
) -> Peaks:
    """Local maxima of ``image`` above ``threshold``.

    Parameters
    ----------
    image : numpy.ndarray
        2D map (e.g. a signed significance map); NaN pixels are never peaks.
    threshold : float
        Minimum value of a peak (inclusive).
    min_separation : float
        Pixels: a peak is the maximum of the disk of this radius around it, so two
        peaks are at least this far apart (>= 1).
    min_prominence : float
        Minimum topographic prominence, in image units (0 = no test).  Among peaks in
        the same "dome" (connected region within ``min_prominence`` of its top) only the
        highest survives.
    mask : numpy.ndarray, optional
        Boolean, True where peaks may be found; masked pixels also do not count as
        neighbours.

    Returns
    -------
    Peaks
        Sorted by decreasing value; empty arrays when nothing is found.
    """
    image = check_image(image)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if not (np.isfinite(min_separation) and min_separation >= 1):
        raise ValueError(f"min_separation must be >= 1 pixel, got {min_separation}")
    if not (np.isfinite(min_prominence) and min_prominence >= 0):
        raise ValueError(f"min_prominence must be >= 0, got {min_prominence}")
    usable = check_mask(mask, image.shape) & np.isfinite(image)
    if not usable.any():
        return _empty_peaks()
    floor = np.min(image[usable]) - min_prominence - 1.0
    filled = np.where(usable, image, floor)

    local_max = ndimage.maximum_filter(filled, footprint=_disk_footprint(min_separation), mode="constant", cval=floor)
    cand = usable & (filled >= local_max) & (filled >= threshold)
    if min_prominence > 0 and cand.any():
        cand &= h_maxima(filled, min_prominence).astype(bool)
    iy, ix = np.nonzero(cand)
    if iy.size == 0:
        return _empty_peaks()
    # one peak per plateau (equal-valued neighbouring maxima), and per prominence dome
    labels, _ = ndimage.label(cand, structure=np.ones((3, 3)))
    order = np.argsort(-filled[iy, ix], kind="stable")
    _, first = np.unique(labels[iy[order], ix[order]], return_index=True)
    keep = np.sort(order[first])
    keep = keep[np.argsort(-filled[iy[keep], ix[keep]], kind="stable")]
    iy, ix = iy[keep], ix[keep]
    keep = _suppress_ties(ix, iy, min_separation)
    iy, ix = iy[keep], ix[keep]
    x, y = _refine(filled, ix, iy)
    return Peaks(x=x, y=y, ix=ix, iy=iy, value=image[iy, ix])


def _suppress_ties(ix: np.ndarray, iy: np.ndarray, min_separation: float) -> np.ndarray:
    """Keep peaks (sorted brightest first) not within ``min_separation`` of a kept one.

    The maximum filter already separates unequal maxima; this only resolves exact ties
    (equal maxima closer than the separation), which both pass the filter.
    """
    keep = np.ones(ix.size, dtype=bool)
    pairs = cKDTree(np.column_stack([ix, iy])).query_pairs(min_separation, output_type="ndarray")
    for i, j in pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))] if pairs.size else ():  # ties are rare
        if keep[i]:
            keep[j] = False
    return keep


def _empty_peaks() -> Peaks:
    e = np.zeros(0)
    ei = np.zeros(0, dtype=np.int64)
    return Peaks(x=e, y=e.copy(), ix=ei, iy=ei.copy(), value=e.copy())


def _refine(image: np.ndarray, ix: np.ndarray, iy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel maximum from a parabola through 3 pixels along each axis."""
    ny, nx = image.shape

    def offset(c, lo, hi):
        curv = lo - 2.0 * c + hi
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(curv < 0, 0.5 * (lo - hi) / curv, 0.0)
        return np.clip(np.nan_to_num(d), -0.5, 0.5)

    c = image[iy, ix]
    inner_x = (ix > 0) & (ix < nx - 1)
    inner_y = (iy > 0) & (iy < ny - 1)
    xl, xr = np.clip(ix - 1, 0, nx - 1), np.clip(ix + 1, 0, nx - 1)
    yl, yr = np.clip(iy - 1, 0, ny - 1), np.clip(iy + 1, 0, ny - 1)
    dx = np.where(inner_x, offset(c, image[iy, xl], image[iy, xr]), 0.0)
    dy = np.where(inner_y, offset(c, image[yl, ix], image[yr, ix]), 0.0)
    return ix + dx, iy + dy


def merge_peaks(
    lon: np.ndarray,
    lat: np.ndarray,
    value: np.ndarray,
    radius: np.ndarray,
    *,
    link_distance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Group peaks found at several correlation radii and in several datasets.

    Peaks are visited by increasing correlation radius, then decreasing value.  A peak
    joins the nearest existing seed closer than ``max(link_distance, radius)``;
    otherwise it starts a new seed and becomes that seed's *anchor*.

    Parameters
    ----------
    lon, lat : numpy.ndarray
        Peak positions, deg, all in the same frame.
    value : numpy.ndarray
        Peak significance.
    radius : numpy.ndarray
        Correlation radius (deg) of the map each peak was found in.
    link_distance : float
        Minimum linking distance, deg (> 0).

    Returns
    -------
    seed : numpy.ndarray
        Seed index (0..n_seeds-1) of each peak; seeds are numbered by decreasing value
        of their brightest member.
    anchor : numpy.ndarray
        Index of the anchor peak of each seed (the first member visited: the smallest
        radius, the highest value at that radius).
    """
    lon, lat, value, radius = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (lon, lat, value, radius))
    if not (lon.shape == lat.shape == value.shape == radius.shape and lon.ndim == 1):
        raise ValueError(f"lon, lat, value, radius must be 1D of the same length, got {lon.shape}, {lat.shape}, {value.shape}, {radius.shape}")
    if not (np.isfinite(link_distance) and link_distance > 0):
        raise ValueError(f"link_distance must be > 0 deg, got {link_distance}")
    n = lon.size
    seed = np.full(n, -1, dtype=np.int64)
    anchors: list[int] = []
    for i in np.lexsort((-value, radius)):  # loop over peaks (a few hundred), not pixels
        if anchors:
            a = np.asarray(anchors)
            d = angular_separation(lon[a], lat[a], lon[i], lat[i])
            j = int(np.argmin(d))
            if d[j] < max(link_distance, radius[i]):
                seed[i] = j
                continue
        seed[i] = len(anchors)
        anchors.append(int(i))
    if n == 0:
        return seed, np.zeros(0, dtype=np.int64)
    # renumber seeds by decreasing brightest member
    best = np.full(len(anchors), -np.inf)
    np.maximum.at(best, seed, value)
    order = np.argsort(-best, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[seed], np.asarray(anchors, dtype=np.int64)[order]


def merge_unresolved(
    seed: np.ndarray,
    anchor: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    value: np.ndarray,
    radius: np.ndarray,
    source: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Join seeds that no map resolves but one coarse peak covers.

    :func:`merge_peaks` links peaks within ``max(link_distance, r)``; the finest peaks of
    a broad source in two datasets (or radii) can lie farther apart than that, by noise,
    and start two seeds.  Two seeds are joined when a member peak of either, found at
    radius ``r_c``, lies within ``r_c`` of both anchors (one coarse peak sees them as one)
    and no map (``source``: the map index of each peak) has a peak in both (no map
    resolves them).  Two sources resolved in any map stay two seeds.

    Parameters
    ----------
    seed, anchor : numpy.ndarray
        Output of :func:`merge_peaks`.
    lon, lat, value, radius : numpy.ndarray
        The peaks, as given to :func:`merge_peaks`.
    source : numpy.ndarray
        Integer id of the map each peak was found in.

    Returns
    -------
    seed, anchor : numpy.ndarray
        Relabelled as :func:`merge_peaks` labels them.
    """
    seed = np.asarray(seed, dtype=np.int64).copy()
    n = anchor.size
    if n < 2:
        return seed, anchor
    alon, alat = lon[anchor], lat[anchor]
    d_anchor = angular_separation(alon[:, None], alat[:, None], alon[None, :], alat[None, :])
    # for every peak, the anchors it covers (within its own radius)
    covers = angular_separation(lon[:, None], lat[:, None], alon[None, :], alat[None, :]) < radius[:, None]
    group = np.arange(n)
    maps = [set(source[seed == k].tolist()) for k in range(n)]
    pairs = [(d_anchor[a, b], a, b) for a in range(n) for b in range(a + 1, n) if d_anchor[a, b] < radius.max()]
    for _, a, b in sorted(pairs):  # a handful of close pairs
        ga, gb = group[a], group[b]
        if ga == gb or maps[ga] & maps[gb]:
            continue
        members = (seed == a) | (seed == b)
        if not np.any(covers[members, a] & covers[members, b]):
            continue
        keep, drop = min(ga, gb), max(ga, gb)  # labels only: anchors are chosen again below
        group[group == drop] = keep
        maps[keep] |= maps[drop]
    seed = group[seed]
    labels, seed = np.unique(seed, return_inverse=True)
    anchor = _first_members(seed, labels.size, radius, value)
    best = np.full(labels.size, -np.inf)
    np.maximum.at(best, seed, value)
    order = np.argsort(-best, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[seed], anchor[order]


def _first_members(seed: np.ndarray, n: int, radius: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Anchor of each seed: the member at the smallest radius, highest value there."""
    order = np.lexsort((-value, radius, seed))
    _, first = np.unique(seed[order], return_index=True)
    return order[first]


def nesting(lon: np.ndarray, lat: np.ndarray, extent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which seed lies inside another's extent.

    Seed *j* is nested in seed *i* when their separation is below ``extent[i]`` and
    ``extent[i] > extent[j]``; its parent is the smallest such *i* (innermost).

    Parameters
    ----------
    lon, lat : numpy.ndarray
        Seed positions, deg.
    extent : numpy.ndarray
        Radius of each seed's extent, deg (>= 0; NaN counts as 0).

    Returns
    -------
    parent : numpy.ndarray
        Index of the parent seed, -1 for none.
    flag : numpy.ndarray
        Bit flags: 1 = nested in another seed, 2 = contains at least one other seed.
    """
    lon, lat, extent = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (lon, lat, extent))
    if not (lon.shape == lat.shape == extent.shape and lon.ndim == 1):
        raise ValueError(f"lon, lat, extent must be 1D of the same length, got {lon.shape}, {lat.shape}, {extent.shape}")
    ext = np.nan_to_num(extent, nan=0.0)
    if np.any(ext < 0):
        raise ValueError(f"extent must be >= 0 deg, got minimum {ext.min()}")
    n = lon.size
    parent = np.full(n, -1, dtype=np.int64)
    flag = np.zeros(n, dtype=np.int16)
    if n < 2:
        return parent, flag
    sep = angular_separation(lon[:, None], lat[:, None], lon[None, :], lat[None, :])  # [i, j]
    inside = (sep < ext[:, None]) & (ext[:, None] > ext[None, :])
    cand = np.where(inside, ext[:, None], np.inf)
    i_best = np.argmin(cand, axis=0)
    has = np.isfinite(cand[i_best, np.arange(n)])
    parent[has] = i_best[has]
    flag[has] |= 1
    flag[np.unique(parent[has])] |= 2
    return parent, flag
