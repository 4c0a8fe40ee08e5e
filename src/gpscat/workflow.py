"""Small helpers that the Snakefile calls at parse time (no science here).

* :func:`load_workflow_config` — validate Snakemake's ``config`` dict with the one schema;
* :func:`observation_ids` — the observation list (from the simulated pointing pattern or
  from the data store's obs-index with the configured selection), known before any job runs;
* :func:`stage_params` — the JSON of the config sections a stage reads, shell-quoted, so a
  rule reruns when (and only when) those sections change;
* :func:`tile_names`, :func:`tile_observations`, :func:`group_tile` — the survey tiles
  (``tiles``), the observations whose reduced cutout overlaps a tile, the tile of a group.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpscat.config import Config, validate_config
from gpscat.core.geom import to_frame
from gpscat.io.groups import read_groups
from gpscat.products import correlation_radii as _correlation_radii
from gpscat.products import output_paths as _significance_paths
from gpscat.stages.reduce import open_store, select_observations

__all__ = [
    "group_tile",
    "load_workflow_config",
    "observation_ids",
    "resources_for",
    "seed_plot_map",
    "significance_outputs",
    "stage_params",
    "stage_sections",
    "tile_names",
    "tile_observations",
]

#: config sections each stage reads (besides the always-passed ``run`` section)
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "simulate": ("simulation", "data"),
    "reduce": ("data", "survey", "datasets"),
    "stack": ("survey", "datasets", "tiles"),
    "exclusion": ("survey", "datasets", "background", "significance"),
    "background": ("survey", "datasets", "background"),
    "significance": ("survey", "datasets", "significance"),
    "detect": ("survey", "datasets", "significance", "detect"),
    "associate": ("survey", "datasets", "detect", "associate"),
    "classify": ("data", "survey", "datasets", "background", "significance", "detect", "associate", "classify", "simulation"),
    "group": ("survey", "datasets", "group"),
    "fit": ("survey", "datasets", "group", "fit", "tiles"),
    "aperture": ("data", "survey", "datasets", "aperture"),
    "catalog": ("survey", "datasets", "fit", "catalog", "associate", "tiles"),
    "tiles": ("survey", "datasets", "tiles"),
    "release": ("release",),
}


_VALIDATED: dict[str, dict] = {}


def _validated(config: Mapping[str, Any]) -> dict:
    """Validated copy of ``config`` (memoised on its JSON: the Snakefile asks many times)."""
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _VALIDATED:
        _VALIDATED[key] = validate_config(config, source="snakemake config")
    return copy.deepcopy(_VALIDATED[key])


def load_workflow_config(config: Mapping[str, Any]) -> Config:
    """Validate (again, with our unit checks) and wrap Snakemake's config dict."""
    return Config(_validated(config), source="snakemake config")


def stage_sections(config: Mapping[str, Any], stage: str) -> dict:
    """The sub-config a stage needs (validated, defaults filled)."""
    if stage not in STAGE_SECTIONS:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(STAGE_SECTIONS)}")
    data = _validated(config)
    keys = ("run", *STAGE_SECTIONS[stage])
    if _grid(config) is None:  # untiled: the same params (and no rerun) as without the section
        keys = tuple(k for k in keys if k != "tiles")
    return {k: data[k] for k in keys if k in data}


def stage_params(config: Mapping[str, Any], stage: str) -> str:
    """Shell-quoted JSON of :func:`stage_sections`, for ``gpscat <stage> --params {params.cfg}``."""
    return shlex.quote(json.dumps(stage_sections(config, stage), sort_keys=True, separators=(",", ":")))


def observation_ids(config: Mapping[str, Any]) -> list[int]:
    """Observation ids of the run, known at parse time.

    Simulated survey: the ids of the pointing pattern.  Real data: the data store's
    obs-index filtered by ``data.selection``.  An empty selection is an error that names
    the selection, not an empty workflow.
    """
    cfg = load_workflow_config(config)
    if cfg["simulation"].get("enabled"):
        ids = [p.obs_id for p in cfg.pointings()]
        sel = cfg["data"]["selection"]
        if sel.get("obs_ids"):
            ids = [i for i in ids if i in set(sel["obs_ids"])]
        ids = [i for i in ids if i not in set(sel.get("exclude_ids", ()))]
    else:
        ids = [int(i) for i in select_observations(cfg)]
    if not ids:
        raise ValueError(
            f"no observation selected from data store {cfg['data']['store']!r} "
            f"with data.selection = {dict(cfg['data']['selection'])}"
        )
    return ids


def significance_outputs(config: Mapping[str, Any], dataset: str, tile: str | None = None) -> list[str]:
    """Files the significance stage writes for ``dataset`` (and ``tile``; wildcard strings allowed)."""
    cfg = load_workflow_config(config)
    folder = f"results/maps/{dataset}" if tile is None else f"results/maps/{dataset}/tiles/{tile}"
    return [str(p) for p in _significance_paths(cfg, folder)]


# ------------------------------------------------------------------ tiles

_POINTINGS: dict[str, dict[int, tuple[float, float]]] = {}


def _grid(config: Mapping[str, Any]):
    return load_workflow_config(config).tiles


def tile_names(config: Mapping[str, Any]) -> list[str]:
    """Names of the survey tiles (``x<i>y<j>``); empty when the survey is one tile.

    Checks ``tiles.margin`` against the whole config (a ConfigError names the key).
    """
    cfg = load_workflow_config(config)
    cfg.check_tiles()
    grid = cfg.tiles
    return [] if grid is None else [t.name for t in grid.tiles]


def _pointings(config: Mapping[str, Any]) -> dict[int, tuple[float, float]]:
    """Observation id → pointing (RA, Dec) in deg, known at parse time (memoised).

    Simulated survey: the pointing pattern; real data: the obs-index (RA_PNT, DEC_PNT), the
    pointing the reduction centres its cutout on.
    """
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _POINTINGS:
        cfg = load_workflow_config(config)
        if cfg["simulation"].get("enabled"):
            pts = cfg.pointings()
            out = {}
            for p in pts:
                ra, dec = to_frame(p.lon, p.lat, p.frame, "icrs")
                out[p.obs_id] = (float(ra), float(dec))
        else:
            table = open_store(cfg).obs_table
            out = {int(i): (float(ra), float(dec)) for i, ra, dec in zip(table["OBS_ID"], table["RA_PNT"], table["DEC_PNT"], strict=True)}
        _POINTINGS[key] = out
    return _POINTINGS[key]


def tile_observations(config: Mapping[str, Any], dataset: str, tile: str) -> list[int]:
    """Observations of the run whose reduced cutout of ``dataset`` overlaps ``tile``'s full region.

    The cutout is the box the reduction cuts (``cutout_width`` around the pointing, on the
    dataset's survey grid), grown by one pixel against rounding of the pointing's frame
    conversion: an extra observation only adds nothing.
    """
    cfg = load_workflow_config(config)
    grid = cfg.tiles
    if grid is None:
        raise ValueError("tile_observations: the survey is not tiled (tiles.size)")
    survey = cfg.survey.geom(cfg.dataset(dataset).binsz)
    return [obs_id for obs_id, box in _cutout_boxes(config, dataset).items() if grid.overlaps(survey, tile, box)]


_BOXES: dict[tuple[str, str], dict[int, tuple[slice, slice] | None]] = {}


def _cutout_boxes(config: Mapping[str, Any], dataset: str) -> dict[int, tuple[slice, slice] | None]:
    """Observation id → the pixel box of its reduced cutout on ``dataset``'s survey grid (memoised)."""
    key = (json.dumps(config, sort_keys=True, default=str), dataset)
    if key not in _BOXES:
        cfg = load_workflow_config(config)
        d = cfg.dataset(dataset)
        survey = cfg.survey.geom(d.binsz)
        pointings = _pointings(config)
        _BOXES[key] = {i: survey.cutout_slices(*pointings[i], d.cutout_width + 2 * d.binsz, frame="icrs") for i in observation_ids(config)}
    return _BOXES[key]


def seed_plot_map(config: Mapping[str, Any], tile: str) -> str:
    """The significance file of ``tile`` that the seed PNG shows, as the untiled detect
    chooses it: the dataset of the finest pixels, the smallest correlation radius."""
    cfg = load_workflow_config(config)
    d = min(cfg.datasets, key=lambda x: x.binsz)
    r = min(_correlation_radii(cfg))
    return f"results/maps/{d.name}/tiles/{tile}/significance_r{r:.2f}.fits"


def group_tile(config: Mapping[str, Any], groups: str, group_id: int) -> str:
    """The tile whose core contains the centre of group ``group_id`` (groups.fits of the checkpoint)."""
    cfg = load_workflow_config(config)
    grid = cfg.tiles
    if grid is None:
        raise ValueError("group_tile: the survey is not tiled (tiles.size)")
    _, table, _ = read_groups(groups)
    rows = table[np.asarray(table["Group_ID"]) == int(group_id)]
    if len(rows) != 1:
        raise ValueError(f"group {group_id} not in {groups}")
    survey = cfg.survey.geom(cfg.datasets[0].binsz)
    return str(grid.tile_of(survey, float(rows[0]["GLON"]), float(rows[0]["GLAT"]), "galactic"))


# ------------------------------------------------------------------ resources

_MB = 1024.0**2


def _dataset_sizes(cfg: Config, name: str, tile: str | None = None) -> dict[str, float]:
    d = cfg.dataset(name)
    survey = cfg.survey.geom(d.binsz)
    grid = cfg.tiles
    if tile is not None and grid is not None:  # a tile's job holds the tile's full region only
        survey = grid.full_geom(survey, tile)
    ny, nx = survey.shape
    cut = min(int(d.cutout_width / d.binsz) + 2, nx) * min(int(d.cutout_width / d.binsz) + 2, ny)
    return {
        "survey_pix": float(nx * ny),
        "cutout_pix": float(cut),
        "ne": float(d.energy_axis.nbin),
        "net": float(d.energy_axis_true.nbin),
    }


def _estimate(cfg: Config, stage: str, dataset: str | None, tile: str | None = None) -> tuple[int, int]:
    """(mem_mb, runtime_min) of one job, from the pixel and bin counts it handles."""
    names = [dataset] if dataset else [d.name for d in cfg.datasets]
    mem, runtime = 0.0, 0.0
    for name in names:
        s = _dataset_sizes(cfg, name, tile)
        if stage == "merge":
            # survey-wide 2-D images (one per HDU) plus one tile's 2-D maps
            nbytes = s["survey_pix"] * 8 * 8
            minutes = 2 + s["survey_pix"] / 5e6
        elif stage == "reduce":
            # a few float64 cubes of the cutout in reco and true energy, plus the events
            nbytes = s["cutout_pix"] * (4 * s["ne"] + 3 * s["net"]) * 8
            minutes = 1 + s["cutout_pix"] * (s["ne"] + s["net"]) / 2e7
        else:
            # survey-sized cubes: stacked maps, one observation at a time, FFT work copies
            nbytes = s["survey_pix"] * (6 * s["ne"] + 3 * s["net"]) * 8
            minutes = 2 + s["survey_pix"] * (s["ne"] + s["net"]) / 5e6
        mem = max(mem, 400 + 2.0 * nbytes / _MB)
        runtime = max(runtime, minutes)
    return int(mem), int(runtime)


def resources_for(config: Mapping[str, Any], stage: str) -> dict:
    """``resources:`` of a rule: ``mem_mb`` and ``runtime`` (minutes) per job.

    Functions of the wildcards (the dataset and, with tiles, the tile decide the map
    sizes), estimated from the number of pixels and energy bins a job holds in memory.
    """
    cfg = load_workflow_config(config)

    def _est(wildcards):
        return _estimate(cfg, stage, getattr(wildcards, "dataset", None), getattr(wildcards, "tile", None))

    def mem_mb(wildcards, attempt=1):
        return _est(wildcards)[0] * attempt

    def runtime(wildcards, attempt=1):
        return _est(wildcards)[1] * attempt

    return {"mem_mb": mem_mb, "runtime": runtime}
