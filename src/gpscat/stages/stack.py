"""Stage ``stack``: per-observation datasets of one dataset → the survey mosaic.

Observations are read one at a time (memory: the mosaic plus one observation).  Every
per-observation cutout is pixel-aligned with the survey grid, so stacking is array
slicing.  As gammapy's ``MapDataset.stack``:

* counts and background are summed inside each observation's safe mask (the
  background optionally times a per-observation norm, e.g. a FoV normalisation);
* exposure is summed where the observation's safe-mask image (any energy bin) is set;
* the safe mask is the union of the observations' masks;
* PSF and energy-dispersion kernels are exposure-weighted means on the coarse IRF grid;
  the weight of an observation in a coarse pixel is its exposure there times the
  fraction of the coarse pixel covered by its safe-mask image.

Skipped observations (``meta["skipped"]``, see :mod:`gpscat.stages.reduce`) and the
observations used are recorded in a provenance JSON file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from gpscat.config import Config
from gpscat.core.dataset import MapDataset
from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.io.atomic import write_text_atomic
from gpscat.io.dataset import read_dataset, write_dataset

__all__ = ["coverage_fraction", "run", "stack_datasets"]

log = logging.getLogger(__name__)


def coverage_fraction(mask_image: np.ndarray, geom: WcsGeom, coarse: WcsGeom) -> np.ndarray:
    """Fraction of each ``coarse`` pixel's area covered by the True pixels of ``mask_image``.

    ``mask_image`` lives on ``geom`` (fine pixels, same frame); fine pixels are assigned
    to the coarse pixel containing their centre.  Shape ``coarse.shape``.
    """
    lon, lat = geom.get_coord()
    ix, iy, inside = coarse.coord_to_idx(lon, lat)
    flat = np.ravel_multi_index((iy[inside], ix[inside]), coarse.shape)
    n = coarse.shape[0] * coarse.shape[1]
    area = geom.solid_angle()[inside]
    covered = np.bincount(flat, weights=area * mask_image[inside], minlength=n)
    total = np.bincount(flat, weights=area, minlength=n)
    return np.divide(covered, total, out=np.zeros(n), where=total > 0).reshape(coarse.shape)


class _Mosaic:
    """Running sums of the stacked maps."""

    def __init__(self, geom, energy_axis, energy_true_axis, irf_geom, rad_axis):
        self.geom, self.irf_geom = geom, irf_geom
        self.energy_axis, self.energy_true_axis, self.rad_axis = energy_axis, energy_true_axis, rad_axis
        ne, nt = energy_axis.nbin, energy_true_axis.nbin
        self.counts = np.zeros((ne, *geom.shape))
        self.background = np.zeros((ne, *geom.shape))
        self.exposure = np.zeros((nt, *geom.shape))
        self.mask = np.zeros((ne, *geom.shape), dtype=bool)
        self.kernels: dict[str, list[np.ndarray]] = {}

    def add(self, ds: MapDataset, norm: float, path: Path) -> None:
        g = ds.geom
        if not g.is_aligned(self.geom):
            raise ValueError(f"{path}: dataset grid is not pixel-aligned with the survey grid")
        if ds.counts.axis("energy") != self.energy_axis or ds.exposure.axis("energy_true") != self.energy_true_axis:
            raise ValueError(f"{path}: energy axes differ from the dataset configuration")
        mask = ds.mask_safe.data.astype(bool) if ds.mask_safe is not None else np.ones(ds.counts.data.shape, bool)
        image = mask.any(axis=0)
        psl, ssl = g.slices_in(self.geom)
        pc, sc = (..., *psl), (..., *ssl)
        self.counts[pc] += np.where(mask, ds.counts.data, 0.0)[sc]
        self.background[pc] += np.where(mask, norm * ds.background.data, 0.0)[sc]
        self.exposure[pc] += np.where(image, ds.exposure.data, 0.0)[sc]
        self.mask[pc] |= mask[sc]
        if self.irf_geom is None:
            return
        for name in ("psf", "edisp"):
            kernel, weight = getattr(ds, name), getattr(ds, f"{name}_exposure")
            if kernel is None or weight is None:
                continue
            if not kernel.geom.is_aligned(self.irf_geom):
                raise ValueError(f"{path}: {name.upper()} grid is not pixel-aligned with the survey IRF grid")
            w = weight.data * coverage_fraction(image, g, kernel.geom)
            if name not in self.kernels:
                self.kernels[name] = [np.zeros(kernel.data.shape[:2] + self.irf_geom.shape), np.zeros(w.shape[:2] + self.irf_geom.shape), kernel.axes, weight.axes]
            num, den = self.kernels[name][:2]
            if num.shape[:2] != kernel.data.shape[:2]:
                raise ValueError(f"{path}: {name.upper()} axes differ from the first observation's")
            kp, ks = kernel.geom.slices_in(self.irf_geom)
            num[(..., *kp)] += (kernel.data * w)[(..., *ks)]
            den[(..., *kp)] += w[(..., *ks)]

    def dataset(self, name: str, meta: dict, gti) -> MapDataset:
        g = self.geom
        maps = {
            "counts": Map(g, self.counts, (self.energy_axis,)),
            "exposure": Map(g, self.exposure, (self.energy_true_axis,), "m2 s"),
            "background": Map(g, self.background, (self.energy_axis,)),
            "mask_safe": Map(g, self.mask, (self.energy_axis,)),
        }
        for kname, (num, den, axes, waxes) in self.kernels.items():
            value = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            maps[kname] = Map(self.irf_geom, value, axes, "sr-1" if kname == "psf" else "")
            maps[f"{kname}_exposure"] = Map(self.irf_geom, den, waxes, "m2 s")
        return MapDataset(name=name, gti=gti, meta=meta, **maps)


def stack_datasets(
    paths: Iterable[str | os.PathLike],
    *,
    geom: WcsGeom,
    energy_axis: MapAxis,
    energy_true_axis: MapAxis,
    irf_geom: WcsGeom | None = None,
    rad_axis: MapAxis | None = None,
    norms: Mapping[int, float] | None = None,
    name: str = "stacked",
) -> tuple[MapDataset, dict]:
    """Stack per-observation dataset files into a survey mosaic.

    Parameters
    ----------
    paths : iterable of path
        Per-observation dataset files (read one at a time).
    geom, energy_axis, energy_true_axis
        Survey grid and energy axes.
    irf_geom, rad_axis : optional
        Survey coarse IRF grid (PSF/EDISP kernels are stacked when given).
    norms : mapping obs_id → float, optional
        Background norms per observation (default 1).
    name : str
        Name of the stacked dataset.

    Returns
    -------
    dataset : MapDataset
        The mosaic; ``meta`` has ``obs_ids``, ``livetime`` (sum), ``n_skipped``.
    provenance : dict
        ``{"used": [...], "skipped": [...]}`` with obs id, file and reason / livetime.
    """
    mosaic = _Mosaic(geom, energy_axis, energy_true_axis, irf_geom, rad_axis)
    used, skipped, gtis = [], [], []
    livetime = 0.0
    mjdref = None
    for path in map(Path, paths):
        ds = read_dataset(path)
        obs_id = int(ds.meta.get("obs_id", -1))
        if ds.meta.get("skipped"):
            skipped.append({"obs_id": obs_id, "file": str(path), "reason": ds.meta.get("reason", "")})
            log.warning("obs %d skipped by the reduction: %s", obs_id, ds.meta.get("reason", ""))
            continue
        norm = 1.0 if norms is None else float(norms.get(obs_id, 1.0))
        mosaic.add(ds, norm, path)
        livetime += ds.livetime
        if ds.gti is not None:
            ref = float(ds.meta.get("mjdref", 51544.0))
            mjdref = ref if mjdref is None else mjdref
            gtis.append(ds.gti + (ref - mjdref) * 86400.0)
        used.append({"obs_id": obs_id, "file": str(path), "livetime": ds.livetime, "norm": norm})
        log.info("stacked obs %d (%d of the survey)", obs_id, len(used))
    if not used:
        log.warning("no usable observation to stack for %s (%d skipped)", name, len(skipped))
    meta = {
        "obs_ids": [u["obs_id"] for u in used],
        "livetime": livetime,
        "n_skipped": len(skipped),
        "mjdref": mjdref if mjdref is not None else 51544.0,
    }
    gti = np.concatenate(gtis) if gtis else None
    return mosaic.dataset(name, meta, gti), {"used": used, "skipped": skipped}


def run(
    cfg: Config,
    *,
    dataset: str,
    inputs: Iterable[str | os.PathLike],
    output: str | os.PathLike,
    provenance: str | os.PathLike | None = None,
    tile: str | None = None,
) -> MapDataset:
    """Stack the per-observation files of ``dataset`` into ``output`` (and write provenance).

    With ``tile`` (a name of the ``tiles`` grid) the mosaic is the tile's full region
    (core + margin, a pixel-aligned sub-grid of the survey grid) and its coarse IRF grid
    one coarse pixel wider; ``meta["tile"]`` records the tile.
    """
    d = cfg.dataset(dataset)
    rad_axis = MapAxis("rad", np.linspace(0.0, d.psf_max_radius, d.psf_nbins + 1), "deg", "lin")
    geom, irf_geom = cfg.survey.geom(d.binsz), cfg.survey.geom(d.irf_binsz)
    if tile is not None:
        grid = cfg.tiles
        if grid is None:
            raise ValueError(f"stack --tile {tile}: the survey is not tiled (config key tiles.size)")
        geom = grid.full_geom(geom, tile)
        irf_geom = grid.full_geom(irf_geom, tile, extra=d.irf_binsz)
        log.info("tile %s: %s pixels of the survey grid, IRF grid %s", tile, geom.npix, irf_geom.npix)
    stacked, prov = stack_datasets(
        inputs,
        geom=geom,
        energy_axis=d.energy_axis,
        energy_true_axis=d.energy_axis_true,
        irf_geom=irf_geom,
        rad_axis=rad_axis,
        name=dataset,
    )
    stacked.meta["dataset"] = dataset
    if tile is not None:
        stacked.meta["tile"] = tile
    write_dataset(output, stacked)
    if provenance is not None:
        write_text_atomic(provenance, json.dumps({"dataset": dataset, **prov}, indent=2))
    log.info("dataset %s: %d observations stacked, %d skipped", dataset, len(prov["used"]), len(prov["skipped"]))
    return stacked
