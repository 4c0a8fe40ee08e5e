"""Small helpers that the Snakefile calls at parse time (no science here).

* :func:`load_workflow_config` — validate Snakemake's ``config`` dict with the one schema;
* :func:`observation_ids` — the observation list (from the simulated pointing pattern or
  from the data store's obs-index with the configured selection), known before any job runs;
* :func:`stage_params` — the JSON of the config sections a stage reads, shell-quoted, so a
  rule reruns when (and only when) those sections change.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from gpscat.config import Config, validate_config

__all__ = ["load_workflow_config", "stage_params", "stage_sections"]

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
    "classify": ("survey", "datasets", "significance", "detect", "associate", "classify", "simulation"),
    "group": ("survey", "datasets", "group"),
    "fit": ("survey", "datasets", "fit"),
    "catalog": ("survey", "datasets", "fit", "catalog"),
    "release": ("release",),
}


def load_workflow_config(config: Mapping[str, Any]) -> Config:
    """Validate (again, with our unit checks) and wrap Snakemake's config dict."""
    return Config(validate_config(config, source="snakemake config"), source="snakemake config")


def stage_sections(config: Mapping[str, Any], stage: str) -> dict:
    """The sub-config a stage needs (validated, defaults filled)."""
    if stage not in STAGE_SECTIONS:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(STAGE_SECTIONS)}")
    data = validate_config(config, source="snakemake config")
    keys = ("run", *STAGE_SECTIONS[stage])
    return {k: data[k] for k in keys if k in data}


def stage_params(config: Mapping[str, Any], stage: str) -> str:
    """Shell-quoted JSON of :func:`stage_sections`, for ``gpscat <stage> --params {params.cfg}``."""
    return shlex.quote(json.dumps(stage_sections(config, stage), sort_keys=True, separators=(",", ":")))
