"""Seed list from in-memory significance maps of several datasets and correlation radii.

This is where pixel positions meet the sky: every map is searched on its own pixel grid
(:mod:`gpscat.core.detect`, :mod:`gpscat.core.shells`), and peaks, shells and seed
properties are combined in sky coordinates (the frame of the first map), so that
datasets with different pixel grids over the same region give one seed per source.
No file is opened here; :mod:`gpscat.stages.detect` reads and writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from astropy.table import Table

from gpscat.core.detect import find_peaks, merge_peaks, merge_unresolved, nesting
from gpscat.core.exclusion import circles_excluded, exclusion_mask, hysteresis_excluded
from gpscat.core.geom import Map, WcsGeom, angular_separation, to_frame
from gpscat.core.index_map import BandMaps, fit_power_law
from gpscat.core.localise import CountsImage, localise
from gpscat.core.moments import seed_moments, untruncated_sigma, windowed_centroid
from gpscat.core.shell_residuals import subtract_shells
from gpscat.core.shells import absorb_fragments, find_shells, merge_rings, ring_strength
from gpscat.io.seeds import empty_seed_table

__all__ = [
    "DetectParams",
    "SignificanceMaps",
    "detect_seeds",
    "detection_exclusion",
]

log = logging.getLogger(__name__)

#: optimal top-hat radius / Gaussian sigma for a source on a flat background
_TOPHAT_PER_SIGMA = 1.585
#: residual search: candidates within a shell's outer radius plus this (deg)
_SHELL_REACH = 0.3


@dataclass(frozen=True)
class DetectParams:
    """Detection settings in plain units (deg, sigma); see the ``detect`` config section."""

    threshold: float = 5.0
    min_separation: float = 0.1
    min_prominence: float = 2.5
    merge_distance: float = 0.1
    localise: bool = True
    size_level: float = 3.0
    size_max_radius: float = 1.0
    psf_sigma: float = 0.05
    extent_factor: float = 1.5
    hough: bool = True
    hough_radius: float = 0.1
    shell_r_min: float = 0.2
    shell_r_max: float = 0.8
    edge_level: float = 3.0
    canny_sigma: float = 0.04
    min_score: float = 0.5
    min_rim_significance: float = 4.0
    min_contrast: float = 1.0
    max_interior: float = 0.85
    min_coverage: float = 0.75
    faint_shells: bool = True
    shell_residuals: bool = True
    residual_threshold: float = 4.0
    min_rim_sqrt_ts: float = 6.0
    sector_level: float = 2.0
    min_sector_coverage: float = 0.9
    max_sector_gap: float = 4.0
    max_rim_gap: float = 8.0
    min_interior_ratio: float = 0.3
    max_candidates: int = 50
    absorb_tolerance: float = 0.3
    index_radius: float = 0.2
    e_ref: float = 1.0
    index_min_ts: float = 9.0
    index_init: float = 2.5
    excl_high: float = 5.0
    excl_low: float = 3.0
    excl_radius: float = 0.2
    excl_dilate: float = 0.1
    excl_size_factor: float = 2.0


@dataclass
class SignificanceMaps:
    """The 2D maps of one ``significance_r<r>.fits`` file (``None`` for absent HDUs)."""

    dataset: str
    radius: float  # deg
    geom: WcsGeom
    sqrt_ts: np.ndarray
    excess: np.ndarray | None = None
    background: np.ndarray | None = None
    counts: np.ndarray | None = None
    flux: np.ndarray | None = None
    exposure: np.ndarray | None = None
    counts_image: np.ndarray | None = None  # not correlated
    background_image: np.ndarray | None = None
    kernel_sampling: str = "fraction"  # of the top-hat (significance.kernel_sampling)
    model_image: np.ndarray | None = None  # known sources' counts in the correlated background, not in background_image

    @property
    def mask(self) -> np.ndarray:
        m = np.isfinite(self.sqrt_ts)
        if self.background is not None:
            m &= np.nan_to_num(self.background) > 0
        return m


def _nearest(items, radius: float):
    return min(items, key=lambda m: abs(m.radius - radius))


def _sample(geom: WcsGeom, image: np.ndarray | None, lon, lat, frame: str) -> np.ndarray:
    """Nearest-pixel values of ``image`` (…, ny, nx) at sky positions; NaN outside."""
    lon = np.atleast_1d(lon)
    if image is None:
        return np.full(lon.shape, np.nan)
    ix, iy, inside = geom.coord_to_idx(lon, np.atleast_1d(lat), frame)
    ix, iy = np.where(inside, ix, 0), np.where(inside, iy, 0)
    out = np.asarray(image, dtype=float)[..., iy, ix]
    return np.where(inside, out, np.nan)


def _position_angle(geom: WcsGeom, x, y, angle_pix) -> np.ndarray:
    """Pixel-space direction → position angle (deg, from +lat towards +lon, [0, 180))."""
    lon0, lat0 = geom.pix_to_coord(x, y)
    lon1, lat1 = geom.pix_to_coord(x + np.cos(angle_pix), y + np.sin(angle_pix))
    dlon = (lon1 - lon0 + 180.0) % 360.0 - 180.0
    pa = np.degrees(np.arctan2(dlon * np.cos(np.radians(lat0)), lat1 - lat0))
    return np.mod(pa, 180.0)


def detect_seeds(
    maps: Sequence[SignificanceMaps],
    params: DetectParams,
    *,
    psf_sigma: Mapping[str, float] | None = None,
    bands: Sequence[BandMaps] = (),
    energy_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Table:
    """Seeds from significance maps of any datasets and correlation radii.

    Parameters
    ----------
    maps : sequence of SignificanceMaps
        At least one; datasets may have different pixel grids.
    params : DetectParams
    psf_sigma : mapping, optional
        PSF Gaussian sigma (deg) per dataset; default ``params.psf_sigma``.
    bands : sequence of BandMaps
        Band maps for the per-seed ``Index``.
    energy_ranges : mapping, optional
        (e_min, e_max) TeV per dataset for ``Index_Datasets`` and ``Hardness``.

    Returns
    -------
    astropy.table.Table
        The :data:`gpscat.io.seeds.SEED_COLUMNS` schema, by decreasing ``Sqrt_TS``.
    """
    if not maps:
        raise ValueError("detect_seeds needs at least one significance map")
    psf = {m.dataset: params.psf_sigma for m in maps} | dict(psf_sigma or {})
    frame = maps[0].geom.frame
    names = list(dict.fromkeys(m.dataset for m in maps))
    radii = sorted({round(m.radius, 6) for m in maps})
    cell = {(m.dataset, round(m.radius, 6)): (names.index(m.dataset), radii.index(round(m.radius, 6))) for m in maps}

    # 1. peaks of every map, in sky coordinates
    plon, plat, pval, prad, pmap = _map_peaks(maps, params, frame)
    seed, anchor, lon, lat = _merge(plon, plat, pval, prad, pmap, params.merge_distance)

    # 2. significance of every seed in every map
    grid = _seed_grid(maps, cell, (len(names), len(radii)), lon, lat, frame, seed, pval, pmap)
    n_peaks = np.bincount(seed, minlength=anchor.size)

    # 3. shells, merged over datasets, absorbing the peak fragments on their rims
    shells = _find_shells(maps, params, psf, frame) if params.hough else []
    best_r = _best_radius(grid, radii)
    owner = absorb_fragments(
        lon, lat, best_r,
        np.array([s["lon"] for s in shells]), np.array([s["lat"] for s in shells]),
        np.array([s["radius"] + 0.5 * s["width"] for s in shells]),
        tolerance=params.absorb_tolerance,
    )
    owner[_outshine_rim(owner, grid, shells)] = -1
    keep = owner < 0

    # 3b. the search again, with the shells modelled: sources on their flanks
    rmaps = None
    residual = np.zeros(lon.size, dtype=bool)
    if params.shell_residuals and shells:
        rmaps, rlon, rlat, rgrid, rnp, rts = _shell_residual_search(
            maps, shells, params, psf, frame, cell, (len(names), len(radii)), lon[keep], lat[keep], best_r[keep])
        lon, lat, grid = np.concatenate([lon, rlon]), np.concatenate([lat, rlat]), np.concatenate([grid, rgrid])
        n_peaks, owner = np.concatenate([n_peaks, rnp]), np.concatenate([owner, np.full(rlon.size, -1)])
        keep, residual = np.concatenate([keep, np.ones(rlon.size, bool)]), np.concatenate([residual, np.ones(rlon.size, bool)])
    sh_grid = np.full((len(shells), len(names), len(radii)), np.nan)
    for j, s in enumerate(shells):
        mine = owner == j
        sh_grid[j] = np.nanmax(np.concatenate([grid[mine], s["grid"][None]]), axis=0) if mine.any() else s["grid"]
        s["n_absorbed"], s["n_peaks"] = int(mine.sum()), int(n_peaks[mine].sum())
        log.info("shell at (%.3f, %.3f), R = %.3f deg: absorbed %d peak seed(s)", s["lon"], s["lat"], s["radius"], s["n_absorbed"])

    t = empty_seed_table(names, radii, nrows=int(keep.sum()) + len(shells))
    npk = int(keep.sum())
    t["Type"][:npk] = "peak"
    t["Type"][npk:] = "shell"
    all_lon = np.concatenate([lon[keep], [s["lon"] for s in shells]])
    all_lat = np.concatenate([lat[keep], [s["lat"] for s in shells]])
    g = np.concatenate([grid[keep], sh_grid])
    t["Sqrt_TS_Grid"][:] = g
    flat = np.where(np.isfinite(g), g, -np.inf).reshape(len(t), len(names) * len(radii))
    kbest = np.argmax(flat, axis=1) if len(t) else np.zeros(0, int)
    d_best, r_best = np.unravel_index(kbest, (len(names), len(radii)))
    t["Sqrt_TS"][:] = flat[np.arange(len(t)), kbest]
    t["Dataset_Best"][:] = [names[i] for i in d_best]
    t["Radius_Best"][:] = np.asarray(radii)[r_best]
    t["N_Peaks"][:] = np.concatenate([n_peaks[keep], [s["n_peaks"] for s in shells]]).astype(int)
    res = residual[keep]
    t["Search"][:] = "maps"
    t["Search"][:npk][res] = "residual"
    if res.any():  # the joint fit's significance, where the maps are below it
        t["Sqrt_TS"][:npk][res] = np.fmax(np.asarray(t["Sqrt_TS"][:npk][res]), rts)

    # 4. sizes: moments for peaks, fitted radii for shells; extended seeds move to their
    # windowed centroid
    # (seeds of the residual search: measured on the maps with the shells modelled)
    passes = [(maps, ~res)] + ([(rmaps, res)] if res.any() else [])
    t["Position"][:npk] = "peak"
    t["Position"][npk:] = "shell"
    for mp, rows in passes:
        _peak_sizes(t, mp, params, psf, all_lon, all_lat, frame, npk, only=rows)
    t["Position"][:npk][res] = "likelihood"  # the joint fit that accepted them
    moved = _extended_positions(t, maps, psf, all_lon, all_lat, frame, npk, only=~res)
    t["Position"][:npk][moved] = "centroid"
    if params.localise:
        fitted = _compact_positions(t, maps, psf, all_lon, all_lat, frame, npk, only=~res)
        t["Position"][:npk][fitted] = "likelihood"

    cells = {cell[(m.dataset, round(m.radius, 6))]: m for m in maps}
    rcells = {cell[(m.dataset, round(m.radius, 6))]: m for m in rmaps} if res.any() else cells
    for i in range(len(t)):  # a few hundred seeds: excess and flux of each in its best map
        m = (rcells if i < npk and res[i] else cells).get((d_best[i], r_best[i]))
        if m is not None:
            t["Excess"][i] = _sample(m.geom, m.excess, all_lon[i], all_lat[i], frame)[0]
            t["Flux"][i] = _sample(m.geom, m.flux, all_lon[i], all_lat[i], frame)[0]
    for j, s in enumerate(shells):
        row = npk + j
        t["Shell_Radius"][row], t["Shell_Width"][row] = s["radius"], s["width"]
        t["Size"][row] = s["radius"] + 0.5 * s["width"]
        t["Extent"][row] = s["radius"] + s["width"]
        t["Hough_Score"][row], t["Rim_Sqrt_TS"][row], t["Rim_Contrast"][row] = s["score"], s["peak"], s["contrast"]
        t["Rim_Sqrt_TS_Sum"][row] = s["rim_sqrt_ts"]
        t["N_Absorbed"][row] = s["n_absorbed"]

    # 5. spectra
    _spectral_columns(t, maps, bands, params, energy_ranges or {}, all_lon, all_lat, frame)
    if res.any():
        idx = np.nonzero(res)[0]
        sub = t[idx]
        _spectral_columns(sub, rmaps, bands, params, energy_ranges or {}, all_lon[idx], all_lat[idx], frame)
        for col in ("Index", "Index_Err", "Index_Datasets", "Index_Datasets_Err", "Hardness"):
            t[col][idx] = sub[col]

    # 6. order, ids, coordinates, nesting
    order = np.argsort(-np.asarray(t["Sqrt_TS"]), kind="stable")
    t = t[order]
    all_lon, all_lat = all_lon[order], all_lat[order]
    t["ID"][:] = np.arange(1, len(t) + 1)
    t["GLON"][:], t["GLAT"][:] = to_frame(all_lon, all_lat, frame, "galactic")
    t["RA"][:], t["DEC"][:] = to_frame(all_lon, all_lat, frame, "icrs")
    parent, flag = nesting(all_lon, all_lat, np.asarray(t["Extent"]))
    t["Parent_ID"][:] = np.where(parent >= 0, parent + 1, 0)
    t["Nest_Flag"][:] = flag
    t.meta.update({"THRESH": params.threshold, "FRAME": frame, "NSEEDS": len(t), "NSHELLS": len(shells), "NRESID": int(res.sum())})
    if len(t) == 0:
        log.info("no seed above %.1f sigma in %d map(s)", params.threshold, len(maps))
    else:
        log.info("%d seeds (%d shells) from %d peaks in %d map(s)", len(t), len(shells), plon.size, len(maps))
    return t


def _map_peaks(maps, params: DetectParams, frame: str):
    """Peaks of every map in sky coordinates: lon, lat, value, map radius, map index."""
    plon, plat, pval, prad, pmap = [], [], [], [], []
    for k, m in enumerate(maps):
        sep = max(params.min_separation, m.radius) / m.geom.binsz
        p = find_peaks(m.sqrt_ts, params.threshold, min_separation=max(sep, 1.0), min_prominence=params.min_prominence, mask=m.mask)
        lon, lat = m.geom.pix_to_coord(p.x, p.y)
        lon, lat = to_frame(lon, lat, m.geom.frame, frame)
        plon.append(lon), plat.append(lat), pval.append(p.value)
        prad.append(np.full(len(p), m.radius)), pmap.append(np.full(len(p), k))
        log.info("dataset %s, r = %.2f deg: %d peaks above %.1f sigma", m.dataset, m.radius, len(p), params.threshold)
    return tuple(np.concatenate(a) for a in (plon, plat, pval, prad, pmap))


def _merge(plon, plat, pval, prad, pmap, link: float):
    """Peaks → seeds (merging on the sky): each peak's seed, the anchors, the seed positions."""
    seed, anchor = merge_peaks(plon, plat, pval, prad, link_distance=link)
    seed, anchor = merge_unresolved(seed, anchor, plon, plat, pval, prad, pmap)
    lon, lat = _seed_positions(plon, plat, pval, prad, seed, anchor, link)
    return seed, anchor, lon, lat


def _seed_grid(maps, cell, shape, lon, lat, frame, seed, pval, pmap) -> np.ndarray:
    """(n_seeds, n_datasets, n_radii) significance: the map at the seed, or its own peak there."""
    ns = lon.size
    grid = np.full((ns, *shape), np.nan)
    for k, m in enumerate(maps):
        d, r = cell[(m.dataset, round(m.radius, 6))]
        grid[:, d, r] = np.fmax(grid[:, d, r], _sample(m.geom, m.sqrt_ts, lon, lat, frame))
        own = pmap == k
        best = np.full(ns, -np.inf)
        np.maximum.at(best, seed[own], pval[own])
        grid[:, d, r] = np.where(np.isfinite(best), np.fmax(grid[:, d, r], best), grid[:, d, r])
    return grid


def _shell_residual_search(maps, shells, params: DetectParams, psf, frame, cell, shape, klon, klat, krad):
    """New seeds of the maps with the shells modelled (:mod:`gpscat.core.shell_residuals`).

    1. The shells are fitted with the kept seeds' disks (``max(merge_distance, r_best)``)
       left out, and the maps recomputed with them in the background.
    2. Candidates are the peaks of those maps above ``residual_threshold`` within 0.3° of
       a shell's outer edge (elsewhere the maps did not change and were searched) and
       farther than that from every kept seed.
    3. The shells are fitted again with the candidates' disks also left out (a source on
       the flank would otherwise pull the rim towards it and lose part of its excess to
       it), and the maps recomputed.
    4. Each candidate is fitted jointly over the datasets' counts
       (:func:`gpscat.core.localise.localise`) and kept when the fit converges with
       ``sqrt(TS) >= threshold``: a source beside a shell is often below the threshold in
       each dataset's map but not in all of them together.

    Returns the recomputed maps (``None`` when no shell was modelled) and, for the kept
    candidates, lon, lat (fitted), significance grid, peak count and joint ``sqrt(TS)``.
    """
    none = (np.zeros(0), np.zeros(0), np.zeros((0, *shape)), np.zeros(0, int), np.zeros(0))
    kr = np.maximum(krad, params.merge_distance)
    rmaps = subtract_shells(maps, shells, psf, frame, avoid=(klon, klat, kr))
    if rmaps is None:
        return (None, *none)
    low = replace(params, threshold=params.residual_threshold)
    plon, plat, pval, prad, pmap = _map_peaks(rmaps, low, frame)
    seed, anchor, lon, lat = _merge(plon, plat, pval, prad, pmap, params.merge_distance)
    n_peaks = np.bincount(seed, minlength=anchor.size)
    # near a shell only (elsewhere the maps are unchanged and were searched), and not at
    # a kept seed
    slon, slat = np.array([x["lon"] for x in shells]), np.array([x["lat"] for x in shells])
    reach = np.array([x["radius"] + x["width"] for x in shells]) + _SHELL_REACH
    new = np.any(angular_separation(lon[:, None], lat[:, None], slon[None, :], slat[None, :]) < reach[None, :], axis=1)
    if klon.size and lon.size:
        d = angular_separation(lon[:, None], lat[:, None], klon[None, :], klat[None, :])
        new &= ~np.any(d < kr[None, :], axis=1)
    images = _counts_images(rmaps, psf)
    if not new.any() or not images:
        log.info("residual search with the shells modelled: no candidate above %.1f sigma", params.residual_threshold)
        return (rmaps, *none)
    grid = _seed_grid(rmaps, cell, shape, lon, lat, frame, seed, pval, pmap)
    rb = _best_radius(grid, sorted({round(m.radius, 6) for m in rmaps}))[new]
    lon, lat, n_peaks = lon[new], lat[new], n_peaks[new]
    psf_min = min(psf.values())
    size0 = np.sqrt(np.clip((rb / _TOPHAT_PER_SIGMA) ** 2 - psf_min**2, 0.0, None))
    crad = np.maximum.reduce([rb, np.full(rb.size, params.merge_distance), 2.0 * np.hypot(size0, psf_min)])
    again = subtract_shells(maps, shells, psf, frame, avoid=(np.concatenate([klon, lon]), np.concatenate([klat, lat]), np.concatenate([kr, crad])))
    rmaps = again if again is not None else rmaps
    images = _counts_images(rmaps, psf)
    nn = lon.size
    fits = localise(
        images, np.concatenate([lon, klon]), np.concatenate([lat, klat]), size=np.concatenate([size0, np.full(klon.size, np.nan)]),
        max_shift=np.concatenate([np.maximum(rb, params.merge_distance), np.zeros(klon.size)]), frame=frame,
        fit=np.concatenate([np.ones(nn, bool), np.zeros(klon.size, bool)]),
    )
    sqrt_ts = np.sqrt(np.nan_to_num(fits.ts[:nn]))
    ok = fits.done[:nn] & (sqrt_ts >= params.threshold)
    log.info("residual search with the shells modelled: %d candidate(s) above %.1f sigma, %d with a joint sqrt(TS) >= %.1f",
             nn, params.residual_threshold, int(ok.sum()), params.threshold)
    flon, flat = fits.lon[:nn][ok], fits.lat[:nn][ok]
    nothing = np.zeros(0, int)
    fgrid = _seed_grid(rmaps, cell, shape, flon, flat, frame, nothing, np.zeros(0), nothing)
    return rmaps, flon, flat, fgrid, n_peaks[ok], sqrt_ts[ok]


def _counts_images(maps, psf) -> dict:
    """Uncorrelated counts images per dataset (from its smallest-radius file that has them)."""
    images = {}
    for m in sorted(maps, key=lambda m: m.radius):
        if m.counts_image is not None and m.background_image is not None and m.dataset not in images:
            images[m.dataset] = CountsImage(m.geom, m.counts_image, m.background_image, psf[m.dataset], m.model_image)
    return list(images.values())


def _seed_positions(plon, plat, pval, prad, seed, anchor, link) -> tuple[np.ndarray, np.ndarray]:
    """Position of each seed: its brightest member peak that no other seed could claim.

    For an extended source the peak at a large correlation radius is both the most
    significant and the best localised; but where a large radius blends two seeds, its
    peak lies between them, within linking distance of the other seed's anchor, and is
    not used.  Anchors are never ambiguous, so every seed has a candidate.
    """
    if seed.size == 0:
        return np.zeros(0), np.zeros(0)
    d = angular_separation(plon[:, None], plat[:, None], plon[anchor][None, :], plat[anchor][None, :])
    near = d < np.maximum(link, prad)[:, None]
    near[np.arange(seed.size), seed] = False
    value = np.where(near.any(axis=1), -np.inf, pval)
    order = np.lexsort((-value, seed))
    _, first = np.unique(seed[order], return_index=True)
    pick = order[first]
    return plon[pick], plat[pick]


def _best_radius(grid: np.ndarray, radii) -> np.ndarray:
    if grid.shape[0] == 0:
        return np.zeros(0)
    flat = np.where(np.isfinite(grid), grid, -np.inf).max(axis=1)
    return np.asarray(radii)[np.argmax(flat, axis=1)]


def _outshine_rim(owner: np.ndarray, grid: np.ndarray, shells: list[dict]) -> np.ndarray:
    """Seeds on a rim that are too bright to be fragments of it (bool).

    A fragment of a shell is a noise maximum of its rim: a few σ above the rim's mean
    significance.  A seed whose significance, in every map where the shell was found,
    exceeds twice the rim mean plus 3 σ is a source of its own on the rim (a point source
    on a faint shell), not a fragment, and stays a seed.
    """
    out = np.zeros(owner.size, dtype=bool)
    for j, s in enumerate(shells):  # a handful of shells
        cells = np.isfinite(s["grid"])
        mine = np.nonzero(owner == j)[0]
        if mine.size and cells.any():
            out[mine] = np.all(grid[mine][:, cells] > 2.0 * s["grid"][cells] + 3.0, axis=1)
    return out


def _find_shells(maps, params: DetectParams, psf, frame) -> list[dict]:
    """Hough shells of each dataset (its map nearest ``hough_radius``), merged on the sky.

    Across datasets (:func:`~gpscat.core.shells.merge_rings`): a shell lying inside a
    stronger one is one of its parts, and the same shell seen in several datasets is kept
    from the dataset where its rim is sharpest; the merged shell keeps every dataset's rim
    significance.
    """
    names = list(dict.fromkeys(m.dataset for m in maps))
    radii = sorted({round(m.radius, 6) for m in maps})
    found = []
    for name in names:
        m = _nearest([x for x in maps if x.dataset == name], params.hough_radius)
        b = m.geom.binsz
        r_min = max(params.shell_r_min / b, 2.0)
        if params.shell_r_max / b <= r_min:
            continue
        rings = find_shells(
            m.sqrt_ts, r_min=r_min, r_max=params.shell_r_max / b, level=params.edge_level,
            canny_sigma=max(params.canny_sigma / b, 0.5), min_score=params.min_score,
            min_peak=params.min_rim_significance, min_contrast=params.min_contrast, max_interior=params.max_interior,
            min_coverage=params.min_coverage, max_candidates=params.max_candidates, mask=m.mask,
            excess=m.excess, kernel_radius=m.radius / b, psf_sigma=psf[m.dataset] / b,
            counts=m.counts if params.faint_shells else None, min_rim_sqrt_ts=params.min_rim_sqrt_ts,
            sector_level=params.sector_level, min_sector_coverage=params.min_sector_coverage, max_gap=params.max_sector_gap, min_interior_ratio=params.min_interior_ratio,
            max_rim_gap=params.max_rim_gap,
        )
        lon, lat = m.geom.pix_to_coord(rings.x, rings.y)
        lon, lat = to_frame(lon, lat, m.geom.frame, frame)
        for i in range(len(rings)):
            g = np.full((len(names), len(radii)), np.nan)
            g[names.index(name), radii.index(round(m.radius, 6))] = rings.peak[i]
            found.append(dict(lon=float(lon[i]), lat=float(lat[i]), radius=rings.radius[i] * b, width=np.nan_to_num(rings.width[i]) * b,
                              score=rings.score[i], peak=rings.peak[i], contrast=rings.contrast[i], grid=g,
                              rim_sqrt_ts=rings.rim_sqrt_ts[i]))
    if not found:
        return []
    lon, lat = np.array([s["lon"] for s in found]), np.array([s["lat"] for s in found])
    dist = angular_separation(lon[:, None], lat[:, None], lon[None, :], lat[None, :])
    radius, width, peak, rim_ts = (np.array([s[k] for s in found]) for k in ("radius", "width", "peak", "rim_sqrt_ts"))
    parent = merge_rings(dist, radius, peak, ring_strength(rim_ts, peak), width=width)
    for i in np.nonzero(parent >= 0)[0]:
        root = i
        while parent[root] >= 0:  # a chain of merges ends at a kept shell
            root = parent[root]
        found[root]["grid"] = np.fmax(found[root]["grid"], found[i]["grid"])
        found[root]["rim_sqrt_ts"] = np.fmax(found[root]["rim_sqrt_ts"], found[i]["rim_sqrt_ts"])
    return sorted((s for s, p in zip(found, parent, strict=True) if p < 0), key=lambda s: -s["peak"])


def _peak_sizes(t, maps, params, psf, lon, lat, frame, npk, only=None) -> None:
    """Size, elongation and angle of the peak seeds (in place).

    Measured in the finest map (smallest radius) of each seed's best dataset: second
    moments of the positive excess in the seed's watershed basin above ``size_level``,
    corrected for the truncation at the basin's edge and deconvolved (top-hat and PSF).
    ``only`` (bool, ``npk``) restricts the moments to some peak seeds.
    """
    if npk == 0:
        return
    rb = np.asarray(t["Radius_Best"][:npk], dtype=float)
    for name in dict.fromkeys(m.dataset for m in maps):
        mine = np.nonzero((np.asarray(t["Dataset_Best"][:npk]) == name) & _rows(only, npk))[0]
        m = min((x for x in maps if x.dataset == name), key=lambda x: x.radius)
        if mine.size == 0 or m.excess is None:
            continue
        b = m.geom.binsz
        x, y = m.geom.coord_to_pix(lon[:npk], lat[:npk], frame)
        inside = np.isfinite(x) & np.isfinite(y) & m.geom.contains(lon[:npk], lat[:npk], frame)
        xi, yi = x[inside], y[inside]
        mo = seed_moments(m.excess, m.sqrt_ts, xi, yi, level=params.size_level, max_radius=params.size_max_radius / b, mask=m.mask)
        # undo the truncation at the basin's edge (area → equivalent radius)
        geo = np.sqrt(mo.sigma_major * mo.sigma_minor)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = untruncated_sigma(geo, np.sqrt(mo.area / np.pi)) / geo
        scale = np.where(np.isfinite(scale), scale, 1.0)
        idx = np.nonzero(inside)[0]
        sel = np.isin(idx, mine)
        rows = idx[sel]
        kvar = (m.radius / b) ** 2 / 4.0 + (psf[name] / b) ** 2  # top-hat r²/4 per axis, PSF
        maj = np.sqrt(np.clip((scale * mo.sigma_major)[sel] ** 2 - kvar, 0.0, None)) * b
        mnr = np.sqrt(np.clip((scale * mo.sigma_minor)[sel] ** 2 - kvar, 0.0, None)) * b
        t["Size_Moments"][rows] = np.sqrt(maj * mnr)
        with np.errstate(invalid="ignore", divide="ignore"):
            t["Elongation"][rows] = np.where(maj > 0, 1.0 - mnr / maj, np.nan)
        t["Angle"][rows] = _position_angle(m.geom, x[rows], y[rows], mo.angle[sel])
    psf_best = np.array([psf[d] for d in t["Dataset_Best"][:npk]])
    s_rad = np.sqrt(np.clip((rb / _TOPHAT_PER_SIGMA) ** 2 - psf_best**2, 0.0, None))
    t["Size_Radius"][:npk] = s_rad
    # the significance-vs-radius curve brackets the size: the optimal top-hat radius
    # (1.585 sigma) lies between the geometric means of the best radius and its
    # neighbours.  This keeps a pedestal (diffuse emission, a neighbour in the basin)
    # from inflating the moments of a compact seed.
    lo, hi = _size_bounds(t, maps, rb, psf_best)
    sm = np.asarray(t["Size_Moments"][:npk])
    t["Size"][:npk] = np.where(np.isfinite(sm), np.clip(sm, lo, hi), s_rad)
    t["Extent"][:npk] = np.maximum(params.extent_factor * np.asarray(t["Size"][:npk]), rb)


def _extended_positions(t, maps, psf, lon, lat, frame, npk, only=None) -> np.ndarray:
    """Move extended, unblended peak seeds to their windowed excess centroid (in place).

    A seed most significant above its dataset's smallest radius is extended: the peak of
    a broad source in a correlated map sits on a flat top that noise moves around.  A
    Gaussian-windowed centroid (:func:`gpscat.core.detect.windowed_centroid`) of the
    excess of the dataset's finest map, with the window the best radius suggests, uses
    the whole source and keeps the resolution (on simulated Gaussians of 0.1–0.3° it
    halves the worst offsets of the peak, and of a centroid in the best map, which
    blurs neighbours in).  A compact seed keeps its peak (a pedestal of diffuse emission
    would pull a centroid); so does a seed with another seed within its best radius (that
    map blends them); a centroid farther than half the best radius from the peak is not
    used.  Returns the peak seeds moved (bool).
    """
    moved = np.zeros(npk, dtype=bool)
    if npk == 0:
        return moved
    rb = np.asarray(t["Radius_Best"][:npk], dtype=float)
    names = np.asarray(t["Dataset_Best"][:npk])
    finest = {d: min((m for m in maps if m.dataset == d), key=lambda m: m.radius) for d in set(names)}
    d = angular_separation(lon[:, None], lat[:, None], lon[None, :npk], lat[None, :npk])
    d[np.arange(npk), np.arange(npk)] = np.inf
    blended = np.any(d < rb[None, :], axis=0)
    for name, m in finest.items():
        sel = np.nonzero((names == name) & (rb > m.radius + 1e-6) & ~blended & _rows(only, npk))[0]
        if sel.size == 0 or m.excess is None:
            continue
        b = m.geom.binsz
        x, y = m.geom.coord_to_pix(lon[sel], lat[sel], frame)
        window = np.sqrt(np.asarray(t["Size_Radius"][sel]) ** 2 + psf[name] ** 2 + m.radius**2 / 4) / b
        cx, cy = windowed_centroid(m.excess, x, y, sigma=window, mask=m.mask)
        cl, cb = m.geom.pix_to_coord(cx, cy)
        cl, cb = to_frame(cl, cb, m.geom.frame, frame)
        ok = np.isfinite(cx) & (angular_separation(cl, cb, lon[sel], lat[sel]) <= 0.5 * rb[sel])
        lon[sel[ok]], lat[sel[ok]] = cl[ok], cb[ok]
        moved[sel[ok]] = True
    return moved


def _compact_positions(t, maps, psf, lon, lat, frame, npk, only=None) -> np.ndarray:
    """Fit the positions of compact peak seeds to the uncorrelated counts (in place).

    A seed most significant at its dataset's smallest correlation radius takes the
    position of a joint Poisson likelihood fit of a PSF-broadened Gaussian over every
    dataset (:func:`gpscat.core.localise.localise`); a fit that moves it farther than
    its best radius is not used.  On a simulated strip this brings faint (7–8σ) point
    sources from 0.04–0.06° to 0.01–0.02° of the truth.  Returns the seeds moved (bool);
    none when the significance files carry no uncorrelated images.
    """
    fitted = np.zeros(npk, dtype=bool)
    images = _counts_images(maps, psf)
    if npk == 0 or not images:
        return fitted
    rb = np.asarray(t["Radius_Best"][:npk], dtype=float)
    names = np.asarray(t["Dataset_Best"][:npk])
    finest = {d: min(m.radius for m in maps if m.dataset == d) for d in set(names)}
    compact = (rb <= np.array([finest[d] for d in names]) + 1e-6) & (t["Position"][:npk] == "peak") & _rows(only, npk)
    size = np.nan_to_num(np.asarray(t["Size"], dtype=float))
    size[npk:] = np.nan  # shells: their pixels are masked, not modelled
    fits = localise(
        images, lon, lat, size=size,
        max_shift=np.concatenate([rb, np.zeros(lon.size - npk)]), frame=frame,
        fit=np.concatenate([compact, np.zeros(lon.size - npk, dtype=bool)]),
    )
    lon[:npk], lat[:npk] = fits.lon[:npk], fits.lat[:npk]
    fitted[:] = fits.done[:npk]
    log.info("%d of %d compact peak seeds localised on the counts", int(fitted.sum()), int(compact.sum()))
    return fitted


def _rows(only, npk: int) -> np.ndarray:
    return np.ones(npk, dtype=bool) if only is None else np.asarray(only, dtype=bool)


def _size_bounds(t, maps, rb, psf_best) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper size (deg) allowed by the radii around each seed's best radius."""
    lo, hi = np.zeros(rb.size), np.full(rb.size, np.inf)
    for i, d in enumerate(t["Dataset_Best"][: rb.size]):
        radii = np.array(sorted(m.radius for m in maps if m.dataset == d))
        below, above = radii[radii < rb[i] - 1e-6], radii[radii > rb[i] + 1e-6]
        if below.size:
            lo[i] = np.sqrt(max(below[-1] * rb[i] / _TOPHAT_PER_SIGMA**2 - psf_best[i] ** 2, 0.0))
        if above.size:
            hi[i] = np.sqrt(max(above[0] * rb[i] / _TOPHAT_PER_SIGMA**2 - psf_best[i] ** 2, 0.0))
    return lo, hi


def _spectral_columns(t, maps, bands, params, energy_ranges, lon, lat, frame) -> None:
    """Index (band maps), Index_Datasets and Hardness (datasets' energy ranges)."""
    if len(t) == 0:
        return
    rb = np.asarray(t["Radius_Best"], dtype=float)
    if bands:
        n, b, x, lo, hi = _sample_bands(bands, rb, lon, lat, frame)
        if n is not None:
            fit = fit_power_law(n, b, x, lo, hi, e_ref=params.e_ref, index_init=params.index_init, min_ts=params.index_min_ts)
            t["Index"][:], t["Index_Err"][:] = fit.index, fit.index_err
    ranged = [d for d in dict.fromkeys(m.dataset for m in maps) if d in energy_ranges]
    if len(ranged) < 2:
        return
    ranged.sort(key=lambda d: energy_ranges[d][0])
    cols = {k: [] for k in ("counts", "background", "exposure", "flux")}
    for d in ranged:
        for k in cols:
            cols[k].append(_per_seed(maps, d, k, rb, lon, lat, frame))
    lo = np.array([energy_ranges[d][0] for d in ranged])
    hi = np.array([energy_ranges[d][1] for d in ranged])
    if np.all(lo[1:] >= hi[:-1] * (1 - 1e-6)):  # disjoint ranges only: no event counted twice
        fit = fit_power_law(np.array(cols["counts"]), np.array(cols["background"]), np.array(cols["exposure"]), lo, hi,
                            e_ref=params.e_ref, index_init=params.index_init, min_ts=params.index_min_ts)
        t["Index_Datasets"][:], t["Index_Datasets_Err"][:] = fit.index, fit.index_err
    with np.errstate(invalid="ignore", divide="ignore"):
        t["Hardness"][:] = np.asarray(cols["flux"][-1]) / np.asarray(cols["flux"][0])


def _per_seed(maps, dataset, attr, rb, lon, lat, frame) -> np.ndarray:
    """Value of ``attr`` at each seed in ``dataset``'s map of radius nearest its best radius."""
    own = [m for m in maps if m.dataset == dataset]
    out = np.full(rb.size, np.nan)
    for m in own:
        use = np.array([_nearest(own, r) is m for r in rb])
        if use.any():
            out[use] = _sample(m.geom, getattr(m, attr), lon[use], lat[use], frame)
    return out


def _sample_bands(bands, rb, lon, lat, frame):
    """(K, n_seeds) counts, background, exposure of the bands nearest each seed's radius."""
    per = {}
    for bm in bands:
        per.setdefault(bm.dataset, []).append(bm)
    parts, edges = [], []
    for _name, own in sorted(per.items(), key=lambda kv: kv[1][0].e_lo.min()):
        lo, hi = own[0].e_lo, own[0].e_hi
        if edges and lo.min() < edges[-1][1].max() * (1 - 1e-6):
            log.warning("band maps of dataset %s overlap in energy with another dataset: not used", own[0].dataset)
            continue
        arr = np.full((3, lo.size, rb.size), np.nan)
        for bm in own:
            use = np.array([_nearest(own, r) is bm for r in rb])
            if use.any():
                for q, a in enumerate((bm.counts, bm.background, bm.exposure)):
                    arr[q][:, use] = _sample(bm.geom, a, lon[use], lat[use], frame)
        parts.append(arr)
        edges.append((lo, hi))
    if not parts or sum(p.shape[1] for p in parts) < 2:
        return None, None, None, None, None
    a = np.concatenate(parts, axis=1)
    return a[0], a[1], a[2], np.concatenate([e[0] for e in edges]), np.concatenate([e[1] for e in edges])


def detection_exclusion(maps: Sequence[SignificanceMaps], seeds: Table, params: DetectParams) -> dict[str, Map]:
    """Exclusion mask per dataset (True = usable for the background, gammapy's convention).

    Excluded: the hysteresis regions (``excl_high``/``excl_low``) of the dataset's map
    nearest ``excl_radius``, dilated by ``excl_dilate``, and around every seed a disk of
    ``excl_size_factor × Extent + excl_dilate``.
    """
    out = {}
    radius = params.excl_size_factor * np.nan_to_num(np.asarray(seeds["Extent"], dtype=float)) + params.excl_dilate
    for name in dict.fromkeys(m.dataset for m in maps):
        m = _nearest([x for x in maps if x.dataset == name], params.excl_radius)
        hyst = hysteresis_excluded(m.sqrt_ts, high=params.excl_high, low=params.excl_low,
                                   dilate=params.excl_dilate / m.geom.binsz, mask=m.mask)
        parts = [hyst]
        if len(seeds):
            parts.append(circles_excluded(m.geom, np.asarray(seeds["GLON"]), np.asarray(seeds["GLAT"]), radius, frame="galactic"))
        usable = exclusion_mask(m.geom.shape, *parts)
        log.info("detection exclusion %s: %.1f %% of the map excluded", name, 100.0 * (1 - usable.mean()))
        out[name] = Map(m.geom, usable, meta={"RADIUS": m.radius})
    return out
