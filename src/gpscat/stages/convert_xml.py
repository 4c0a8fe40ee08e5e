"""Convert a ctools/GammaLib XML sky model to gammapy model YAML: ``gpscat convert-xml``.

Reads the XML with :func:`gpscat.io.ctools_xml.read_ctools_xml`, writes the models with
the package's YAML writer (no covariance file: nothing was fitted), the template maps
into ``<output stem>_templates/`` next to the YAML (referenced relative to it, so the
folder can move as a whole), and a JSON summary: counts per type and per
approximation, and every source that did not convert with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from gpscat.config import Config
from gpscat.io.atomic import write_text_atomic
from gpscat.io.ctools_xml import read_ctools_xml
from gpscat.io.models_yaml import write_models
from gpscat.models.sky import Models
from gpscat.models.spatial import TemplateSpatialModel

__all__ = ["run", "summary_path"]

log = logging.getLogger(__name__)


def summary_path(output: str | os.PathLike) -> Path:
    """Default summary file of an output YAML: ``<output>.summary.json``."""
    output = Path(output)
    return output.with_name(output.name + ".summary.json")


def _retarget_templates(models: Models, output: Path) -> int:
    """Point template models at ``<stem>_templates/<source>.fits`` (relative to the YAML)."""
    folder = f"{output.stem}_templates"
    n = 0
    for m in models.sky_models:
        if isinstance(m.spatial_model, TemplateSpatialModel):
            safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", m.name).strip("_") or "template"
            m.spatial_model.filename = f"{folder}/{safe}.fits"
            n += 1
    return n


def run(
    cfg: Config | None,
    *,
    input: str | os.PathLike,
    output: str | os.PathLike,
    summary: str | os.PathLike | None = None,
) -> dict:
    """Convert ``input`` (XML) to ``output`` (YAML) and write the summary.

    Parameters
    ----------
    cfg : Config or None
        Unused (the conversion has no settings); kept for the stage signature.
    input, output : path-like
        ctools XML model file; gammapy model YAML to write.
    summary : path-like, optional
        JSON summary; default :func:`summary_path` of ``output``.

    Returns
    -------
    dict
        The summary (also written): ``n_sources``, ``n_converted``, ``n_failed``,
        ``types``, ``approximations``, ``failed``, ``approximated``, ``renamed``.
    """
    output = Path(output)
    models, report = read_ctools_xml(input)
    n_templates = _retarget_templates(models, output)
    write_models(output, models, write_covariance=False, overwrite_templates=True)
    info = report.summary()
    info["output"] = str(output)
    info["n_templates"] = n_templates
    spath = Path(summary) if summary is not None else summary_path(output)
    write_text_atomic(spath, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    log.info("wrote %d models to %s (%d templates), summary %s", len(models), output, n_templates, spath)
    for kind, n in info["approximations"].items():
        log.info("approximation: %s: %d sources", kind, n)
    for f in info["failed"]:
        log.warning("not converted: source #%d %r: %s", f["index"], f["name"], f["reason"])
    return info
