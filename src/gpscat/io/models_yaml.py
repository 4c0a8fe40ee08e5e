"""Read and write gammapy's model YAML (``Models.read`` / ``Models.write``).

Layout::

    components:
    -   name: src
        type: SkyModel
        spectral: {type: PowerLawSpectralModel, parameters: [{name, value, unit, error, min, max, frozen}, ...]}
        spatial:  {type: PointSpatialModel, frame: galactic, parameters: [...]}
    -   type: FoVBackgroundModel
        datasets_names: [stacked]
        spectral: {type: PowerLawNormSpectralModel, parameters: [...]}
    covariance: models_covariance.dat
    metadata: {creator: ..., date: ..., origin: null}

Like gammapy, the writer omits fields that equal the class default (unless
``full_output``), writes a ``link`` label on parameters shared between models and puts the
covariance in a fixed-width ASCII table next to the YAML file.  The reader accepts both
tags of every type (``PointSpatialModel`` / ``point``), converts units to the canonical
ones, and maps legacy names (``r_eff`` → ``r_0``; the GPS prototype's
``ShellOutSpatialModel`` → ``Shell2SpatialModel``) with a logged warning.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import uuid
from collections import Counter
from pathlib import Path

import astropy.units as u
import numpy as np
import yaml
from astropy.table import Table

from gpscat import __version__
from gpscat.io.atomic import atomic_path, write_text_atomic
from gpscat.io.maps import read_map, write_maps
from gpscat.models.parameters import Parameter
from gpscat.models.registry import LEGACY_PARAMETERS, LEGACY_SPATIAL, get_spatial, get_spectral
from gpscat.models.sky import FoVBackgroundModel, Models, SkyModel
from gpscat.models.spatial import TemplateSpatialModel
from gpscat.models.spectral import CompoundSpectralModel, TemplateSpectralModel

__all__ = [
    "models_from_dict",
    "models_from_yaml",
    "models_to_dict",
    "models_to_yaml",
    "read_models",
    "write_models",
]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- reading


def read_models(path: str | os.PathLike) -> Models:
    """Read a model YAML file (and its covariance file, if it names one)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise type(exc)(f"{path}: cannot read model YAML: {exc}") from exc
    models = models_from_dict(data, base_path=path.parent)
    cov_name = (data or {}).get("covariance")
    if cov_name:
        cov_path = Path(cov_name) if Path(cov_name).is_absolute() else path.parent / cov_name
        if cov_path.exists():
            _read_covariance(models, cov_path)
        else:
            log.warning("%s: covariance file %s not found; using parameter errors only", path, cov_path)
    return models


def models_from_yaml(text: str, *, base_path: str | os.PathLike | None = None) -> Models:
    """Models from a YAML string."""
    return models_from_dict(yaml.safe_load(text), base_path=base_path)


def models_from_dict(data: dict, *, base_path: str | os.PathLike | None = None) -> Models:
    """Models from the parsed YAML (a dict with ``components``)."""
    if not isinstance(data, dict) or "components" not in data:
        raise ValueError("model YAML must be a mapping with a 'components' list")
    links: dict = {"legacy": Counter()}  # link label → Parameter, plus a tally of legacy names
    models = Models()
    for i, comp in enumerate(data["components"] or []):
        kind = comp.get("type", "SkyModel")
        if kind in ("SkyModel", "sky-model"):
            models.append(_sky_model_from_dict(comp, links, base_path))
        elif kind in ("FoVBackgroundModel", "fov-bkg"):
            names = comp.get("datasets_names") or []
            if len(names) != 1:
                raise ValueError(f"component {i}: FoVBackgroundModel needs exactly one datasets_names entry, got {names}")
            if comp.get("spatial") is not None:
                log.warning("component %d: spatial part of FoVBackgroundModel ignored", i)
            spec = _spectral_from_dict(comp["spectral"], links, name=f"{names[0]}-bkg")
            models.append(FoVBackgroundModel(dataset_name=names[0], spectral_model=spec))
        else:
            log.warning("component %d (%s): model type %r not supported, skipped", i, comp.get("name"), kind)
    for what, n in links["legacy"].items():
        log.warning("legacy model YAML: %s (%d times)", what, n)
    return models


def _sky_model_from_dict(comp: dict, links: dict, base_path) -> SkyModel:
    name = comp.get("name", "")
    spectral = _spectral_from_dict(comp["spectral"], links, name=name)
    spatial = _spatial_from_dict(comp["spatial"], links, name=name, base_path=base_path) if comp.get("spatial") else None
    if comp.get("temporal"):
        log.warning("model %s: temporal model ignored (not supported)", name)
    return SkyModel(spectral, spatial, name=name, datasets_names=comp.get("datasets_names"))


def _spectral_from_dict(d: dict, links: dict, *, name: str):
    cls = get_spectral(d["type"])
    if cls is CompoundSpectralModel:
        m1 = _spectral_from_dict(d["model1"], links, name=name)
        m2 = _spectral_from_dict(d["model2"], links, name=name)
        return CompoundSpectralModel(model1=m1, model2=m2, operator=d.get("operator", "mul"))
    if cls is TemplateSpectralModel:
        energy = u.Quantity(d["energy"]["data"], d["energy"].get("unit", "TeV")).to_value("TeV")
        values = u.Quantity(d["values"]["data"], d["values"].get("unit", "cm-2 s-1 TeV-1"))
        return TemplateSpectralModel(energy=energy, values=values.to_value("cm-2 s-1 TeV-1"))
    return cls(**_parameters_from_list(cls, d.get("parameters") or [], links, where=f"{name}.spectral"))


def _spatial_from_dict(d: dict, links: dict, *, name: str, base_path):
    tag = d["type"]
    renames: dict[str, str] = {}
    if tag in LEGACY_SPATIAL:
        cls, renames = LEGACY_SPATIAL[tag]
        links["legacy"][f"spatial type {tag} read as {cls.tag[0]}"] += 1
    else:
        cls = get_spatial(tag)
        renames = LEGACY_PARAMETERS.get(cls, {})
    plist = []
    for p in d.get("parameters") or []:
        if p.get("name") in renames:
            links["legacy"][f"{cls.tag[0]} parameter {p['name']!r} read as {renames[p['name']]!r}"] += 1
            p = {**p, "name": renames[p["name"]]}
        plist.append(p)
    kwargs = _parameters_from_list(cls, plist, links, where=f"{name}.spatial")
    for key in d:
        if key not in ("type", "frame", "parameters", "filename", "normalize", "unit"):
            log.debug("model %s: spatial key %r ignored", name, key)
    if cls is TemplateSpatialModel:
        filename = d["filename"]
        fpath = Path(filename)
        if not fpath.is_absolute() and not fpath.exists() and base_path is not None:
            fpath = Path(base_path) / fpath
        m = read_map(fpath)
        return TemplateSpatialModel(map=m, filename=str(filename), normalize=d.get("normalize", True), **kwargs)
    return cls(frame=d.get("frame", "icrs"), **kwargs)


def _parameters_from_list(cls, plist: list, links: dict, *, where: str) -> dict:
    given = {p["name"]: p for p in plist}
    out = {}
    for default in cls.default_parameters():
        d = given.pop(default.name, None)
        if d is None:
            log.warning("%s: parameter %r not in the file, using default %g %s", where, default.name, default.value, default.unit)
            out[default.name] = default
            continue
        label = d.get("link")
        if label and label in links:
            out[default.name] = links[label]
            continue
        p = _parameter_from_dict(default, d, where=where)
        if label:
            links[label] = p
        out[default.name] = p
    for extra in given:
        log.warning("%s: unknown parameter %r ignored", where, extra)
    return out


def _parameter_from_dict(default: Parameter, d: dict, *, where: str) -> Parameter:
    unit = d.get("unit", default.unit)
    unit = "" if unit is None else str(unit)
    try:
        scale = u.Unit(unit or "").to(u.Unit(default.unit or ""))
    except (ValueError, u.UnitConversionError) as exc:
        raise ValueError(f"{where}.{default.name}: unit {unit!r} is not compatible with {default.unit!r}") from exc
    p = default.copy()
    p.value = _num(d.get("value", default.value)) * scale
    p.min = _num(d.get("min", default.min)) * scale
    p.max = _num(d.get("max", default.max)) * scale
    p.error = _num(d.get("error", 0.0)) * abs(scale)
    p.frozen = bool(d.get("frozen", default.frozen))
    return p


def _num(v) -> float:
    if v is None:
        return math.nan
    return float(v)


def _read_covariance(models: Models, path: Path) -> None:
    try:
        t = Table.read(path, format="ascii.fixed_width")
        t.remove_column("Parameters")
        cov = np.array([list(row) for row in t], dtype=float)
        models.covariance = cov
    except (ValueError, KeyError, OSError) as exc:
        log.warning("%s: cannot use covariance (%s); using parameter errors only", path, exc)


# ----------------------------------------------------------------------------- writing


def models_to_dict(models: Models, *, full_output: bool = False) -> dict:
    """The YAML document (without covariance and metadata) as plain Python data."""
    labels = _link_labels(models)
    comps = []
    for m in models:
        if isinstance(m, FoVBackgroundModel):
            comps.append(
                {"type": "FoVBackgroundModel", "datasets_names": [m.dataset_name], "spectral": _spectral_to_dict(m.spectral_model, labels, full_output)}
            )
            continue
        d: dict = {"name": m.name, "type": "SkyModel"}
        if m.datasets_names is not None:
            d["datasets_names"] = list(m.datasets_names)
        d["spectral"] = _spectral_to_dict(m.spectral_model, labels, full_output)
        if m.spatial_model is not None:
            d["spatial"] = _spatial_to_dict(m.spatial_model, labels, full_output)
        comps.append(d)
    return {"components": comps}


def models_to_yaml(models: Models, *, full_output: bool = False) -> str:
    return _dump(models_to_dict(models, full_output=full_output))


def write_models(
    path: str | os.PathLike,
    models: Models,
    *,
    full_output: bool = False,
    write_covariance: bool = True,
    overwrite_templates: bool = False,
) -> None:
    """Write ``models`` to ``path`` (atomically), the covariance to ``<stem>_covariance.dat``.

    Template maps are written to their ``filename`` (relative to the YAML folder) when the
    file does not exist yet or ``overwrite_templates`` is set.
    """
    path = Path(path)
    data = models_to_dict(models, full_output=full_output)
    if write_covariance and models.parameters:
        cov_name = f"{path.stem}_covariance.dat"
        _write_covariance(models, path.parent / cov_name)
        data["covariance"] = cov_name
    data["metadata"] = {
        "creator": f"gpscat {__version__}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "origin": None,
    }
    for m in models.sky_models:
        sp = m.spatial_model
        if isinstance(sp, TemplateSpatialModel):
            if not sp.filename:
                raise ValueError(f"model {m.name}: template spatial model has no filename to write to")
            tpath = Path(sp.filename) if Path(sp.filename).is_absolute() else path.parent / sp.filename
            if overwrite_templates or not tpath.exists():
                write_maps(tpath, {"primary": sp.map})
    write_text_atomic(path, _dump(data))


def _write_covariance(models: Models, path: Path) -> None:
    cov = models.covariance
    t = Table()
    t["Parameters"] = models.parameter_labels()
    for i in range(cov.shape[0]):
        t[str(i)] = cov[i]
    with atomic_path(path) as tmp:
        t.write(tmp, format="ascii.fixed_width")


def _link_labels(models: Models) -> dict[int, str]:
    """Labels ``<name>@<random>`` for parameters that appear in more than one place."""
    count: dict[int, int] = {}
    first: dict[int, Parameter] = {}
    for m in models:
        for p in m.parameters:
            count[id(p)] = count.get(id(p), 0) + 1
            first.setdefault(id(p), p)
    return {k: f"{first[k].name}@{uuid.uuid4().hex[:6]}" for k, n in count.items() if n > 1}


def _spectral_to_dict(model, labels: dict, full_output: bool) -> dict:
    if isinstance(model, CompoundSpectralModel):
        return {
            "type": "CompoundSpectralModel",
            "model1": _spectral_to_dict(model.model1, labels, full_output),
            "model2": _spectral_to_dict(model.model2, labels, full_output),
            "operator": model.operator,
        }
    d = {"type": model.tag[0], "parameters": _parameters_to_list(model, labels, full_output)}
    if isinstance(model, TemplateSpectralModel):
        d["energy"] = {"data": [float(x) for x in model.energy], "unit": "TeV"}
        d["values"] = {"data": [float(x) for x in model.values], "unit": "1 / (TeV s cm2)"}
    return d


def _spatial_to_dict(model, labels: dict, full_output: bool) -> dict:
    d = {"type": model.tag[0], "frame": model.frame, "parameters": _parameters_to_list(model, labels, full_output)}
    if isinstance(model, TemplateSpatialModel):
        d["filename"] = model.filename
        d["normalize"] = bool(model.normalize)
        d["unit"] = model.unit
    return d


def _parameters_to_list(model, labels: dict, full_output: bool) -> list[dict]:
    out = []
    for p, default in zip(model.parameters, model.default_parameters(), strict=True):
        d: dict = {"name": default.name, "value": float(p.value)}
        if full_output or default.unit:
            d["unit"] = _fits_unit(p.unit)
        for key in ("error", "min", "max"):
            v, dv = getattr(p, key), getattr(default, key)
            if full_output or not (v == dv or (math.isnan(v) and math.isnan(dv))):
                d[key] = float(v)
        if full_output or p.frozen != default.frozen:
            d["frozen"] = bool(p.frozen)
        if id(p) in labels:
            d["link"] = labels[id(p)]
        out.append(d)
    return out


def _fits_unit(unit: str) -> str:
    return u.Unit(unit).to_string("fits") if unit else ""


def _dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, indent=4, width=80, default_flow_style=False)
