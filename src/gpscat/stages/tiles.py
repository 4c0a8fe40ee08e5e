"""Stage ``tiles``: merge per-tile products into the survey-wide products of the untiled run.

With ``tiles.size`` set, stack → exclusion → background → significance → detect run per tile
on the tile's full region (core + margin).  These functions paste the **core** of every
tile into one survey-wide 2-D image (never a cube of the whole survey) or merge tables:

* :func:`merge_seeds` — ``results/seeds/seeds_detected.fits/.reg/.png``,
  ``results/maps/index_map.fits`` and ``results/maps/detection_exclusion.fits`` from the
  tiles' detections.  **Seam rule**: a seed is kept only by the tile whose core contains
  its position (each sky position is in exactly one core, see
  :meth:`gpscat.core.tiles.TileGrid.tile_of`); a seed found in the margin of a tile is the
  neighbour tile's, which sees it with a margin of its own.  The kept seeds are sorted by
  ``Sqrt_TS`` and renumbered, and the nesting is recomputed over the whole survey, as the
  untiled detection does.
* :func:`merge_exclusion` — ``results/maps/<dataset>/exclusion.fits`` (the aperture stage's
  exclusion mask) from the tiles' masks.
* :func:`merge_psf` — ``results/maps/<dataset>/psf.fits``: a dataset file holding only the
  survey's stacked PSF (and PSF exposure) on the survey's coarse IRF grid, read by detect,
  associate and group for the PSF size (the whole survey cube is never loaded for it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from gpscat.config import Config
from gpscat.core.dataset import MapDataset
from gpscat.core.detect import nesting
from gpscat.core.geom import Map
from gpscat.core.seeds import SignificanceMaps
from gpscat.core.tiles import TileGrid
from gpscat.io.dataset import write_dataset
from gpscat.io.maps import map_from_hdulist, write_maps
from gpscat.io.seeds import read_seeds, write_seed_regions, write_seeds
from gpscat.stages.detect import plot_seeds

__all__ = ["core_seeds", "merge_exclusion", "merge_images", "merge_psf", "merge_seeds"]

log = logging.getLogger(__name__)


def _grid(cfg: Config) -> TileGrid:
    grid = cfg.tiles
    if grid is None:
        raise ValueError("the survey is not tiled (config key tiles.size): nothing to merge")
    return grid


def _check(tiles: Sequence[str], files: Sequence, what: str) -> None:
    if len(tiles) != len(files):
        raise ValueError(f"{what}: {len(files)} file(s) for {len(tiles)} tile(s) {list(tiles)}; give one per tile, in tile order")


def merge_images(cfg: Config, tiles: Sequence[str], files: Sequence[str | os.PathLike],
                 names: Sequence[str] | None = None) -> tuple[dict[str, Map], fits.Header]:
    """Survey-wide maps pasted from the cores of the tiles' maps (one file per tile).

    Every image HDU of the first file (or ``names``) is merged; the survey grid is the
    survey of the map's pixel size.  Returns the maps by HDU name and the first file's
    primary header.  Memory: one survey-sized map per HDU plus one tile's file.
    """
    grid = _grid(cfg)
    _check(tiles, files, "merge")
    out: dict[str, Map] = {}
    header = fits.Header()
    for k, (tile, path) in enumerate(zip(tiles, files, strict=True)):
        with fits.open(path, memmap=False) as hl:
            if k == 0:
                header = hl[0].header.copy()
                if names is None:
                    names = [h.name for h in hl[1:] if h.is_image and h.data is not None]
            for name in names:
                m = map_from_hdulist(hl, name)
                survey = cfg.survey.geom(m.geom.binsz)
                if name not in out:
                    fill = False if m.data.dtype == bool else (0 if np.issubdtype(m.data.dtype, np.integer) else np.nan)
                    data = np.full(m.data.shape[:-2] + survey.shape, fill, dtype=m.data.dtype)
                    out[name] = Map(survey, data, m.axes, m.unit, dict(m.meta))
                grid.paste_core(m.data, m.geom, out[name].data, survey, tile)
    return out, header


def core_seeds(cfg: Config, table: Table, tile: str) -> Table:
    """The rows of a tile's seed table whose position is in the tile's core (the seam rule)."""
    grid = _grid(cfg)
    if len(table) == 0:
        return table
    survey = cfg.survey.geom(cfg.datasets[0].binsz)
    owner = grid.tile_of(survey, np.asarray(table["GLON"], float), np.asarray(table["GLAT"], float), "galactic")
    return table[owner == tile]


def merge_seeds(cfg: Config, *, tiles: Sequence[str], seed_files: Sequence[str | os.PathLike],
                index_maps: Sequence[str | os.PathLike], exclusions: Sequence[str | os.PathLike],
                seeds: str | os.PathLike, regions: str | os.PathLike, index_map: str | os.PathLike,
                exclusion: str | os.PathLike, plot_maps: Sequence[str | os.PathLike] = (),
                plot: str | os.PathLike | None = None) -> Table:
    """Merge the tiles' seed tables and maps (see the module docstring); returns the seeds."""
    _check(tiles, seed_files, "seeds")
    parts = []
    for tile, path in zip(tiles, seed_files, strict=True):
        t = read_seeds(path)
        kept = core_seeds(cfg, t, tile)
        log.info("tile %s: %d of %d seeds in its core", tile, len(kept), len(t))
        parts.append(kept)
    meta = dict(parts[0].meta) if parts else {}
    table = vstack(parts, metadata_conflicts="silent") if parts else Table()
    table.meta = meta
    order = np.argsort(-np.asarray(table["Sqrt_TS"], float), kind="stable")
    table = table[order]
    table["ID"][:] = np.arange(1, len(table) + 1)
    frame = str(meta.get("FRAME", "galactic"))
    lon, lat = (table["GLON"], table["GLAT"]) if frame == "galactic" else (table["RA"], table["DEC"])
    if len(table):
        parent, flag = nesting(np.asarray(lon, float), np.asarray(lat, float), np.asarray(table["Extent"], float))
        table["Parent_ID"][:] = np.where(parent >= 0, parent + 1, 0)
        table["Nest_Flag"][:] = flag
    is_shell = np.char.strip(np.asarray(table["Type"], dtype=str)) == "shell" if len(table) else np.zeros(0, bool)
    table.meta.update({"NSEEDS": len(table), "NSHELLS": int(is_shell.sum()), "NTILES": len(tiles)})
    write_seeds(seeds, table)
    write_seed_regions(regions, table)
    log.info("merged %d seeds of %d tiles into %s", len(table), len(tiles), seeds)

    idx, header = merge_images(cfg, tiles, index_maps)
    write_maps(index_map, idx, header={k: header[k] for k in ("E_REF",) if k in header})
    masks, _ = merge_images(cfg, tiles, exclusions)
    write_maps(exclusion, masks, header={"EXCLCONV": "1 = usable (not excluded)"})
    if plot is not None:
        _check(tiles, plot_maps, "plot maps")
        sig, header = merge_images(cfg, tiles, plot_maps, names=["SQRT_TS"])
        m = sig["SQRT_TS"]
        maps = SignificanceMaps(str(header.get("DATASET", "")), float(header.get("R_CORR", np.nan)), m.geom, np.asarray(m.data, float))
        plot_seeds(plot, [maps], table)
    return table


def merge_exclusion(cfg: Config, *, dataset: str, tiles: Sequence[str], inputs: Sequence[str | os.PathLike],
                    output: str | os.PathLike) -> None:
    """``results/maps/<dataset>/exclusion.fits`` from the cores of the tiles' exclusion masks."""
    maps, _ = merge_images(cfg, tiles, inputs)
    mask = maps.pop("EXCLUSION_MASK")
    out = {"exclusion_mask": mask, **{k.lower(): v for k, v in maps.items()}}
    write_maps(output, out, header={"DATASET": dataset, "EXCLCONV": "1 = usable (not excluded)", "NTILES": len(tiles)})
    log.info("%s: exclusion mask of %d tiles, %d of %d pixels excluded", dataset, len(tiles), int((mask.data == 0).sum()), mask.data.size)


def merge_psf(cfg: Config, *, dataset: str, tiles: Sequence[str], inputs: Sequence[str | os.PathLike],
              output: str | os.PathLike) -> None:
    """``results/maps/<dataset>/psf.fits``: the survey's stacked PSF from the tiles' stacked files.

    Only the PSF and PSF_EXPOSURE HDUs are read.  A coarse pixel's PSF is the
    exposure-weighted mean over the observations that reach it — the same numbers in the
    tile whose core holds it as in the untiled mosaic, since the margin covers them.
    """
    names = None
    with fits.open(inputs[0], memmap=False) as hl:
        present = {h.name for h in hl}
        names = [n for n in ("PSF", "PSF_EXPOSURE") if n in present]
    maps: dict[str, Map] = {}
    if names:
        maps, _ = merge_images(cfg, tiles, inputs, names=names)
    ds = MapDataset(name=dataset, psf=maps.get("PSF"), psf_exposure=maps.get("PSF_EXPOSURE"),
                    meta={"dataset": dataset, "content": "stacked PSF of the survey (merged tiles)", "tiles": list(tiles)})
    write_dataset(output, ds)
    log.info("%s: PSF of %d tiles -> %s", dataset, len(tiles), Path(output))
