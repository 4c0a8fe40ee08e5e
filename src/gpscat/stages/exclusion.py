"""Stage ``exclusion``: the exclusion mask of one dataset's survey map.

Input: the stacked survey dataset ``results/maps/<dataset>/stacked.fits`` (counts and IRF
background).  Output: ``results/maps/<dataset>/exclusion.fits`` with

* ``EXCLUSION_MASK`` — int16 image, **1 = usable** for the background estimate, 0 =
  excluded (gammapy's convention: ``Map.read(...).data.astype(bool)`` is gammapy's
  ``exclusion_mask``);
* ``SQRT_TS`` — the first-pass significance used for the hysteresis threshold (only when
  ``background.exclusion.hysteresis.enabled``).

Excluded are: configured sky circles, DS9 region files, known-source catalogs (circles of
``size_factor × size + margin``), and — optionally — significant emission: the stacked
IRF background is scaled to the counts outside the exclusions found so far (one global
norm over the energy-summed image), the Cash significance is computed with a top-hat of
``hysteresis.correlation_radius``, thresholded with hysteresis (``high``/``low``) and
dilated by ``dilate``; this is repeated ``iterations`` times.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np
from astropy.table import Table
from regions import Regions

from gpscat.config import Config, quantity
from gpscat.core.convolve import disk_kernel
from gpscat.core.exclusion import (
    catalog_circles,
    circles_excluded,
    exclusion_mask,
    hysteresis_excluded,
    regions_excluded,
)
from gpscat.core.geom import Map, WcsGeom
from gpscat.core.significance import cash_maps
from gpscat.io.dataset import read_dataset
from gpscat.io.maps import write_maps

__all__ = ["known_sources_excluded", "run", "significant_excluded"]

log = logging.getLogger(__name__)


def known_sources_excluded(cfg: Config, geom: WcsGeom) -> np.ndarray:
    """Union of the configured circles, region files and catalog sources (True = excluded)."""
    ex = cfg["background"]["exclusion"]
    excluded = np.zeros(geom.shape, dtype=bool)
    for i, c in enumerate(ex["circles"]):
        key = f"background.exclusion.circles[{i}]"
        excluded |= circles_excluded(
            geom,
            quantity(c["lon"], "deg", key=f"{key}.lon"),
            quantity(c["lat"], "deg", key=f"{key}.lat"),
            quantity(c["radius"], "deg", key=f"{key}.radius"),
            frame=c.get("frame", "galactic"),
        )
    for path in ex["regions"]:
        p = cfg.path(path)
        try:
            shapes = Regions.read(str(p), format="ds9")
        except (OSError, ValueError) as exc:
            raise ValueError(f"background.exclusion.regions: cannot read DS9 region file {p}: {exc}") from exc
        part = regions_excluded(geom, shapes)
        log.info("region file %s: %d shapes, %d pixels excluded", p, len(shapes), int(part.sum()))
        excluded |= part
    for i, cat in enumerate(ex["catalogs"]):
        p = cfg.path(cat["path"])
        try:
            table = Table.read(str(p), hdu=1)
        except (OSError, ValueError) as exc:
            raise ValueError(f"background.exclusion.catalogs[{i}].path: cannot read catalog {p}: {exc}") from exc
        margin = quantity(cat.get("margin", "0.3 deg"), "deg", key=f"background.exclusion.catalogs[{i}].margin")
        lon, lat, radius, frame = catalog_circles(table, margin=margin, size_factor=float(cat.get("size_factor", 1.0)))
        part = circles_excluded(geom, lon, lat, radius, frame=frame)
        log.info("catalog %s: %d sources, %d pixels excluded", p, len(lon), int(part.sum()))
        excluded |= part
    return excluded


def significant_excluded(
    counts: np.ndarray,
    background: np.ndarray,
    mask: np.ndarray,
    known_excluded: np.ndarray,
    *,
    binsz: float,
    settings: Mapping,
) -> tuple[np.ndarray, np.ndarray]:
    """Hysteresis exclusion of significant emission on energy-summed images.

    Parameters
    ----------
    counts, background : numpy.ndarray
        ``(ny, nx)`` images (summed in the safe mask).
    mask : numpy.ndarray of bool
        ``(ny, nx)`` pixels with data.
    known_excluded : numpy.ndarray of bool
        Already excluded pixels (not used for the normalisation).
    binsz : float
        Pixel size, deg.
    settings : mapping
        The ``background.exclusion.hysteresis`` config section.

    Returns
    -------
    excluded, sqrt_ts : numpy.ndarray
        The significant regions (True = excluded) and the last first-pass significance.
    """
    key = "background.exclusion.hysteresis"
    r_corr = quantity(settings["correlation_radius"], "deg", key=f"{key}.correlation_radius")
    dilate = quantity(settings["dilate"], "deg", key=f"{key}.dilate")
    kernel = disk_kernel(r_corr / binsz)
    excluded = np.zeros(counts.shape, dtype=bool)
    sqrt_ts = np.full(counts.shape, np.nan)
    for it in range(int(settings["iterations"])):
        use = mask & ~known_excluded & ~excluded
        b_sum = float(background[use].sum())
        norm = float(counts[use].sum()) / b_sum if b_sum > 0 else 1.0
        sqrt_ts = cash_maps(counts, norm * background, kernel=kernel, mask=mask)["sqrt_ts"]
        new = hysteresis_excluded(
            sqrt_ts, high=float(settings["high"]), low=float(settings["low"]), dilate=dilate / binsz, mask=mask
        )
        log.info("first pass %d: background norm %.4f, %d pixels above the hysteresis thresholds", it + 1, norm, int(new.sum()))
        if np.array_equal(new, excluded):
            break
        excluded = new
    return excluded, sqrt_ts


def run(cfg: Config, *, dataset: str, stacked: str | os.PathLike, output: str | os.PathLike) -> None:
    """Build and write the exclusion mask of ``dataset``.

    Parameters
    ----------
    cfg : Config
        Reads ``background.exclusion``.
    dataset : str
        Dataset name (for logs and the file header).
    stacked : path
        Stacked survey dataset (``results/maps/<dataset>/stacked.fits``).
    output : path
        ``results/maps/<dataset>/exclusion.fits``.
    """
    ds = read_dataset(stacked)
    geom = ds.geom
    known = known_sources_excluded(cfg, geom)
    log.info("%s: known sources exclude %d of %d pixels", dataset, int(known.sum()), known.size)
    maps: dict[str, Map] = {}
    parts = [known]
    hyst = cfg["background"]["exclusion"]["hysteresis"]
    if hyst["enabled"]:
        if ds.counts is None or ds.background is None:
            raise ValueError(f"{stacked}: the hysteresis exclusion needs COUNTS and BACKGROUND maps")
        safe = ds.mask_safe.data.astype(bool) if ds.mask_safe is not None else np.ones(ds.counts.data.shape, bool)
        counts = np.where(safe, ds.counts.data, 0.0).reshape((-1, *geom.shape)).sum(axis=0)
        background = np.where(safe, ds.background.data, 0.0).reshape((-1, *geom.shape)).sum(axis=0)
        mask = safe.reshape((-1, *geom.shape)).any(axis=0) & (background > 0)
        significant, sqrt_ts = significant_excluded(counts, background, mask, known, binsz=geom.binsz, settings=hyst)
        parts.append(significant)
        maps["sqrt_ts"] = Map(geom, sqrt_ts.astype(np.float32), unit="")
    usable = exclusion_mask(geom.shape, *parts)
    log.info("%s: %d of %d pixels excluded in total", dataset, int((~usable).sum()), usable.size)
    maps = {"exclusion_mask": Map(geom, usable, unit=""), **maps}
    write_maps(output, maps, header={"DATASET": dataset, "EXCLCONV": "1 = usable (not excluded)"})
