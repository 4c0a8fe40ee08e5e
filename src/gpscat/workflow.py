"""Small helpers that the Snakefile calls at parse time (no science here).

* :func:`load_workflow_config` — validate Snakemake's ``config`` dict with the one schema;
* :func:`observation_ids` — the observation list (from the simulated pointing pattern or
  from the data store's obs-index with the configured selection), known before any job runs;
* :func:`stage_params` — the JSON of the config sections a stage reads, shell-quoted, so a
  rule reruns when (and only when) those sections change.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Mapping
from typing import Any

from gpscat.config import Config, validate_config
from gpscat.products import output_paths as _significance_paths
from gpscat.stages.reduce import select_observations

__all__ = [
    "load_workflow_config",
    "observation_ids",
    "resources_for",
    "significance_outputs",
    "stage_params",
    "stage_sections",
]

#: config sections each stage reads (besides the always-passed ``run`` section)
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "simulate": ("simulation", "data"),
    "reduce": ("data", "survey", "datasets"),
    "stack": ("survey", "datasets"),
    "exclusion": ("survey", "datasets", "background", "significance"),
    "background": ("survey", "datasets", "background"),
    "significance": ("survey", "datasets", "significance"),
    "detect": ("survey", "datasets", "significance", "detect"),
    "associate": ("survey", "datasets", "detect", "associate"),
    "classify": ("data", "survey", "datasets", "background", "significance", "detect", "associate", "classify", "simulation"),
    "group": ("survey", "datasets", "group"),
    "fit": ("survey", "datasets", "group", "fit"),
    "aperture": ("data", "survey", "datasets", "aperture"),
    "catalog": ("survey", "datasets", "fit", "catalog", "associate"),
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


def significance_outputs(config: Mapping[str, Any], dataset: str) -> list[str]:
    """Files the significance stage writes for ``dataset`` (wildcard strings allowed)."""
    cfg = load_workflow_config(config)
    return [str(p) for p in _significance_paths(cfg, f"results/maps/{dataset}")]


# ------------------------------------------------------------------ resources

_MB = 1024.0**2


def _dataset_sizes(cfg: Config, name: str) -> dict[str, float]:
    d = cfg.dataset(name)
    survey = cfg.survey.geom(d.binsz)
    ny, nx = survey.shape
    cut = min(int(d.cutout_width / d.binsz) + 2, nx) * min(int(d.cutout_width / d.binsz) + 2, ny)
    return {
        "survey_pix": float(nx * ny),
        "cutout_pix": float(cut),
        "ne": float(d.energy_axis.nbin),
        "net": float(d.energy_axis_true.nbin),
    }


def _estimate(cfg: Config, stage: str, dataset: str | None) -> tuple[int, int]:
    """(mem_mb, runtime_min) of one job, from the pixel and bin counts it handles."""
    names = [dataset] if dataset else [d.name for d in cfg.datasets]
    mem, runtime = 0.0, 0.0
    for name in names:
        s = _dataset_sizes(cfg, name)
        if stage == "reduce":
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

    Functions of the wildcards (the dataset decides the map sizes), estimated from the
    number of pixels and energy bins a job holds in memory.
    """
    cfg = load_workflow_config(config)

    def mem_mb(wildcards, attempt=1):
        return _estimate(cfg, stage, getattr(wildcards, "dataset", None))[0] * attempt

    def runtime(wildcards, attempt=1):
        return _estimate(cfg, stage, getattr(wildcards, "dataset", None))[1] * attempt

    return {"mem_mb": mem_mb, "runtime": runtime}
