"""Read a ctools/GammaLib XML sky model into gpscat models (gammapy tags and units).

Every ``<source>`` converts to a :class:`~gpscat.models.sky.SkyModel` or is reported
with the reason it could not be (background models, missing files, unsupported types).
A model with no exact gammapy equivalent gets the closest one and an entry in the
report's approximations, e.g. a phase curve → the phase-averaged spectrum.

Units and scales: an XML value is ``value × scale`` (bounds and error too; a negative
scale swaps the bounds).  Energies are MeV → TeV, intensities ph cm⁻² s⁻¹ MeV⁻¹ →
cm⁻² s⁻¹ TeV⁻¹, GammaLib's signed indices γ → gammapy's ``index = -γ``, cut-off energies
E_c → ``lambda_ = 1 / E_c``.  The mapping of every type is documented in
``docs/ctools_xml.md``.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpscat.io.ctools_files import (
    cube_template,
    light_curve_mean,
    map_template,
    phase_curve_mean,
    read_file_function,
    read_light_curve,
    read_phase_curve,
)
from gpscat.models import spatial as spm
from gpscat.models import spectral as spc
from gpscat.models.extra import ConstantSpatialModel
from gpscat.models.parameters import Parameter
from gpscat.models.sky import Models, SkyModel

__all__ = ["BACKGROUND_TYPES", "ConversionReport", "read_ctools_xml", "scale_spectrum"]

log = logging.getLogger(__name__)

#: ctools source types that describe the instrumental background, not the sky.
BACKGROUND_TYPES = ("CTAIrfBackground", "CTABackground", "CTACubeBackground", "CTAAeffBackground", "RadialAcceptance")

_TEV_IN_MEV = 1e6


class _Unsupported(ValueError):
    """A source that cannot be converted; the message says why."""


@dataclass
class ConversionReport:
    """What happened to every source of an XML file.

    ``failed`` and ``approximated`` are lists of ``{"index", "name", "reason"}`` /
    ``{"name", "kind", "detail"}``; ``types`` counts the XML spectral / spatial / temporal
    types of the converted sources.
    """

    path: str
    n_sources: int = 0
    converted: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    approximated: list[dict] = field(default_factory=list)
    renamed: list[dict] = field(default_factory=list)
    types: dict[str, Counter] = field(default_factory=lambda: {"spectral": Counter(), "spatial": Counter(), "temporal": Counter()})

    def approximate(self, name: str, kind: str, detail: str) -> None:
        self.approximated.append({"name": name, "kind": kind, "detail": detail})
        log.warning("%s: approximated: %s (%s)", name, kind, detail)

    def summary(self) -> dict:
        """JSON-ready summary: counts per type and per approximation, failures with reasons."""
        return {
            "input": self.path,
            "n_sources": self.n_sources,
            "n_converted": len(self.converted),
            "n_failed": len(self.failed),
            "n_approximated": len({a["name"] for a in self.approximated}),
            "types": {k: dict(sorted(v.items())) for k, v in self.types.items()},
            "approximations": dict(sorted(Counter(a["kind"] for a in self.approximated).items())),
            "failed": self.failed,
            "approximated": self.approximated,
            "renamed": self.renamed,
        }


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class _XPar:
    """One XML parameter with its scale applied."""

    value: float
    min: float
    max: float
    error: float
    free: bool


def _num(elem: ET.Element, key: str, default: float, where: str) -> float:
    text = elem.get(key)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise _Unsupported(f"{where}: parameter {elem.get('name')!r} has a non-numeric {key}={text!r}") from None


def _find(elem: ET.Element, names: tuple[str, ...], where: str, *, required: bool = True) -> tuple[str, _XPar] | None:
    """The first parameter of ``names`` present in ``elem``, scaled."""
    for name in names:
        p = elem.find(f"parameter[@name='{name}']")
        if p is None:
            continue
        scale = _num(p, "scale", 1.0, where)
        value = _num(p, "value", np.nan, where) * scale
        if not np.isfinite(value):
            raise _Unsupported(f"{where}: parameter {name!r} has no finite value")
        lo, hi = _num(p, "min", np.nan, where) * scale, _num(p, "max", np.nan, where) * scale
        if scale < 0:
            lo, hi = hi, lo
        free = p.get("free", "0").strip() in ("1", "true", "True")
        return name, _XPar(value, lo, hi, abs(_num(p, "error", 0.0, where) * scale), free)
    if required:
        raise _Unsupported(f"{where}: parameter {' or '.join(repr(n) for n in names)} missing")
    return None


def _apply(p: Parameter, x: _XPar, factor: float = 1.0, *, inverse: bool = False) -> None:
    """Set ``p`` from ``x`` mapped by ``v → factor·v`` (or ``factor / v``): value, bounds, error, frozen."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if inverse:
            if x.value <= 0:
                raise _Unsupported(f"parameter {p.name}: {x.value} must be > 0 to invert")
            f = lambda v: factor / v  # noqa: E731
            err = factor * x.error / x.value**2
            decreasing = factor > 0
        else:
            f = lambda v: factor * v  # noqa: E731
            err = abs(factor) * x.error
            decreasing = factor < 0
        lo, hi = f(x.min), f(x.max)
    if decreasing:
        lo, hi = hi, lo
    p.value = float(f(x.value))
    if np.isfinite(x.min) or np.isfinite(x.max):  # else the model's default bounds stay
        p.min = float(lo) if np.isfinite(lo) else np.nan
        p.max = float(hi) if np.isfinite(hi) else np.nan
    p.error = float(err)
    p.frozen = not x.free


# transforms: (factor, inverse)
_FLUX = (_TEV_IN_MEV, False)  # ph cm-2 s-1 MeV-1 → cm-2 s-1 TeV-1
_ENERGY = (1.0 / _TEV_IN_MEV, False)  # MeV → TeV
_INV_ENERGY = (_TEV_IN_MEV, True)  # cut-off energy MeV → lambda_ TeV-1
_NEG = (-1.0, False)  # GammaLib's signed index → gammapy index
_ONE = (1.0, False)

_AMP = (("Prefactor", _FLUX), ("norm", _FLUX))
_PIVOT = (("PivotEnergy", _ENERGY), ("Scale", _ENERGY), ("Eb", _ENERGY))

#: XML spectral type → (class, {gammapy parameter: ((XML name, transform), ...)}); the first XML name present is used
_SPECTRA: dict[str, tuple[type, dict]] = {
    "PowerLaw": (spc.PowerLawSpectralModel, {"amplitude": _AMP, "index": (("Index", _NEG),), "reference": _PIVOT}),
    "PowerLaw2": (
        spc.PowerLaw2SpectralModel,
        {
            "amplitude": (("PhotonFlux", _ONE), ("Integral", _ONE)),
            "index": (("Index", _NEG),),
            "emin": (("LowerLimit", _ENERGY),),
            "emax": (("UpperLimit", _ENERGY),),
        },
    ),
    "ExponentialCutoffPowerLaw": (
        spc.ExpCutoffPowerLawSpectralModel,
        {"amplitude": _AMP, "index": (("Index", _NEG),), "lambda_": (("CutoffEnergy", _INV_ENERGY), ("Cutoff", _INV_ENERGY)), "reference": _PIVOT},
    ),
    "SuperExponentialCutoffPowerLaw": (
        spc.ExpCutoffPowerLawSpectralModel,
        {
            "amplitude": _AMP,
            "index": (("Index1", _NEG),),
            "lambda_": (("CutoffEnergy", _INV_ENERGY), ("Cutoff", _INV_ENERGY)),
            "alpha": (("Index2", _ONE),),
            "reference": _PIVOT,
        },
    ),
    "LogParabola": (
        spc.LogParabolaSpectralModel,
        {"amplitude": _AMP, "alpha": (("Index", _NEG), ("alpha", _ONE)), "beta": (("Curvature", _NEG), ("beta", _ONE)), "reference": _PIVOT},
    ),
    "BrokenPowerLaw": (
        spc.BrokenPowerLawSpectralModel,
        {"amplitude": _AMP, "index1": (("Index1", _NEG),), "index2": (("Index2", _NEG),), "ebreak": (("BreakEnergy", _ENERGY), ("BreakValue", _ENERGY))},
    ),
    "SmoothBrokenPowerLaw": (
        spc.SmoothBrokenPowerLawSpectralModel,
        {
            "amplitude": _AMP,
            "index1": (("Index1", _NEG),),
            "index2": (("Index2", _NEG),),
            "ebreak": (("BreakEnergy", _ENERGY), ("BreakValue", _ENERGY)),
            "reference": _PIVOT,
            "beta": (("BreakSmoothness", _ONE),),
        },
    ),
    "Constant": (spc.ConstantSpectralModel, {"const": (("Normalization", _FLUX), ("Value", _FLUX))}),
}
_SPECTRA["ExpCutoff"] = _SPECTRA["ExponentialCutoffPowerLaw"]
_SPECTRA["ConstantValue"] = _SPECTRA["Constant"]


def _parametric(cls: type, spec: dict, elem: ET.Element, where: str):
    model = cls()
    for pname, alternatives in spec.items():
        xml_name, x = _find(elem, tuple(a[0] for a in alternatives), where)
        factor, inverse = dict(alternatives)[xml_name]
        try:
            _apply(getattr(model, pname), x, factor, inverse=inverse)
        except _Unsupported as exc:
            raise _Unsupported(f"{where}: {exc}") from None
    return model


# ----------------------------------------------------------------------------- spectra


def _spectrum(elem: ET.Element, base: Path, where: str):
    """The spectral model of a ``<spectrum>`` element (absolute flux units)."""
    kind = elem.get("type", "")
    w = f"{where} spectrum {kind}"
    if kind == "PowerLaw" and (elem.find("parameter[@name='PhotonFlux']") is not None or elem.find("parameter[@name='Integral']") is not None):
        kind = "PowerLaw2"
    if kind in _SPECTRA:
        cls, spec = _SPECTRA[kind]
        model = _parametric(cls, spec, elem, w)
        if kind == "SmoothBrokenPowerLaw":
            # gammapy flips beta's sign with sign(index2 - index1); GammaLib uses it as given
            s = np.sign(model.index2.value - model.index1.value)
            if s < 0:
                b = model.beta
                b.value, b.min, b.max = -b.value, -b.max, -b.min
        return model
    if kind == "NodeFunction":
        nodes = elem.findall("node")
        if not nodes:
            raise _Unsupported(f"{w}: no <node> elements")
        e = np.array([_find(n, ("Energy",), w)[1].value for n in nodes]) / _TEV_IN_MEV
        v = np.array([_find(n, ("Intensity",), w)[1].value for n in nodes]) * _TEV_IN_MEV
        order = np.argsort(e)
        if len(e) == 1:
            return spc.ConstantSpectralModel(const=float(v[0]))
        return _template_spectrum(e[order], v[order], w)
    if kind == "FileFunction":
        path = _resolve(elem.get("file"), base, w)
        energy, values = read_file_function(path)
        norm = _find(elem, ("Normalization", "Prefactor"), w)[1].value
        return _template_spectrum(energy / _TEV_IN_MEV, values * norm * _TEV_IN_MEV, w)
    if kind == "Composite":
        parts = [_spectrum(sub, base, where) for sub in elem.findall("spectrum")]
        if not parts:
            raise _Unsupported(f"{w}: no sub-spectra")
        model = parts[0]
        for part in parts[1:]:
            model = spc.CompoundSpectralModel(model1=model, model2=part, operator="add")
        return model
    raise _Unsupported(f"{w}: spectral type {kind!r} not supported")


def _template_spectrum(energy: np.ndarray, values: np.ndarray, where: str) -> spc.TemplateSpectralModel:
    if np.any(np.diff(energy) <= 0):
        raise _Unsupported(f"{where}: node energies must be distinct")
    try:
        return spc.TemplateSpectralModel(energy=energy, values=values)
    except ValueError as exc:
        raise _Unsupported(f"{where}: {exc}") from None


def scale_spectrum(model, factor: float):
    """Multiply a spectral model's flux by ``factor`` in place (its normalisation parameter)."""
    if factor == 1.0:
        return model
    if isinstance(model, spc.CompoundSpectralModel):
        scale_spectrum(model.model1, factor)
        if model.operator == "add":
            scale_spectrum(model.model2, factor)
    elif isinstance(model, spc.TemplateSpectralModel):
        model.values = model.values * factor
    else:
        name = next((n for n in ("amplitude", "const", "norm") if n in model.parameter_names()), None)
        if name is None:
            raise ValueError(f"cannot scale spectral model {type(model).__name__}")
        p = getattr(model, name)
        p.value, p.min, p.max, p.error = p.value * factor, p.min * factor, p.max * factor, p.error * abs(factor)
    return model


# ----------------------------------------------------------------------------- spatial


def _position(model, elem: ET.Element, where: str) -> None:
    if elem.find("parameter[@name='RA']") is not None:
        model.frame, names = "icrs", ("RA", "DEC")
    elif elem.find("parameter[@name='GLON']") is not None:
        model.frame, names = "galactic", ("GLON", "GLAT")
    else:
        raise _Unsupported(f"{where}: no RA/DEC or GLON/GLAT parameters")
    for pname, xname in zip(("lon_0", "lat_0"), names, strict=True):
        _apply(getattr(model, pname), _find(elem, (xname,), where)[1])


_RADIAL: dict[str, tuple[type, dict]] = {
    "PointSource": (spm.PointSpatialModel, {}),
    "RadialGaussian": (spm.GaussianSpatialModel, {"sigma": (("Sigma", _ONE),)}),
    "RadialDisk": (spm.DiskSpatialModel, {"r_0": (("Radius", _ONE),)}),
    "RadialShell": (spm.ShellSpatialModel, {"radius": (("Radius", _ONE),), "width": (("Width", _ONE),)}),
    "EllipticalGaussian": (spm.GaussianSpatialModel, {"sigma": (("MajorRadius", _ONE),)}),
    "EllipticalDisk": (spm.DiskSpatialModel, {"r_0": (("MajorRadius", _ONE),)}),
}
_RADIAL["SkyDirFunction"] = _RADIAL["PointSource"]


@dataclass
class _Spatial:
    model: object
    factor: float = 1.0  # multiplies the spectrum (map / isotropic normalisations)
    cube_spectrum: spc.TemplateSpectralModel | None = None  # DiffuseMapCube: the cube's own spectrum


def _spatial(elem: ET.Element, base: Path, where: str) -> _Spatial:
    kind = elem.get("type", "")
    w = f"{where} spatialModel {kind}"
    if kind in _RADIAL:
        cls, spec = _RADIAL[kind]
        model = _parametric(cls, spec, elem, w)
        _position(model, elem, w)
        if isinstance(model, spm.DiskSpatialModel):
            model.edge_width.value = 0.0  # ctools disks have a sharp edge
        if kind.startswith("Elliptical"):
            _elongate(model, elem, w)
        return _Spatial(model)
    norm = _find(elem, ("Normalization", "Prefactor", "Value"), w, required=False)
    factor = norm[1].value if norm else 1.0
    if kind in ("DiffuseMap", "SpatialMap"):
        path = _resolve(elem.get("file"), base, w)
        normalize = elem.get("normalize", "1").strip() not in ("0", "false", "False")
        return _Spatial(map_template(path, normalize=normalize), factor)
    if kind in ("DiffuseMapCube", "MapCubeFunction"):
        path = _resolve(elem.get("file"), base, w)
        tmpl, energy, flux = cube_template(path)
        return _Spatial(tmpl, factor, _template_spectrum(energy, flux, w))
    if kind in ("DiffuseIsotropic", "ConstantValue"):
        return _Spatial(ConstantSpatialModel(), factor)
    raise _Unsupported(f"{w}: spatial type {kind!r} not supported")


def _elongate(model, elem: ET.Element, where: str) -> None:
    """Elongation and position angle from MinorRadius / MajorRadius / PA (north through east)."""
    major = model.sigma if isinstance(model, spm.GaussianSpatialModel) else model.r_0  # set from MajorRadius
    minor = _find(elem, ("MinorRadius",), where)[1].value
    pa = _find(elem, ("PA",), where)[1].value
    if minor > major.value:  # the XML's "major" axis is the shorter one: swap the axes
        major.value, minor = minor, major.value
        pa += 90.0
    if not major.value > 0:
        raise _Unsupported(f"{where}: MajorRadius must be > 0")
    model.e.value = float(np.sqrt(max(0.0, 1.0 - (minor / major.value) ** 2)))
    model.phi.value = float((pa + 180.0) % 360.0 - 180.0)


def _relative_factor(elem: ET.Element, where: str):
    """DiffuseMapCube spectra are relative scalings: a number, or a PowerLawNorm model."""
    kind = elem.get("type", "")
    w = f"{where} spectrum {kind}"
    if kind in ("Constant", "ConstantValue"):
        return _find(elem, ("Normalization", "Value"), w)[1].value
    if kind == "PowerLaw":
        model = spc.PowerLawNormSpectralModel()
        _apply(model.norm, _find(elem, ("Prefactor",), w)[1])
        _apply(model.tilt, _find(elem, ("Index",), w)[1], -1.0)
        _apply(model.reference, _find(elem, ("PivotEnergy", "Scale"), w)[1], 1.0 / _TEV_IN_MEV)
        return model
    raise _Unsupported(f"{w}: a {kind} scaling of a DiffuseMapCube is not supported (Constant or PowerLaw)")


# ----------------------------------------------------------------------------- temporal


def _temporal(elem: ET.Element | None, base: Path, where: str, name: str, report: ConversionReport) -> float:
    """The factor by which the temporal model scales the spectrum (its time or phase average)."""
    if elem is None:
        return 1.0
    kind = elem.get("type", "")
    w = f"{where} temporal {kind}"
    norm = _find(elem, ("Normalization",), w, required=False)
    n0 = norm[1].value if norm else 1.0
    if kind == "Constant":
        return n0
    if kind == "PhaseCurve":
        phase, values = read_phase_curve(_resolve(elem.get("file"), base, w))
        normalize = elem.get("normalize", "1").strip() not in ("0", "false", "False")
        mean = 1.0 if normalize else phase_curve_mean(phase, values)
        report.approximate(name, "phase curve → phase-averaged spectrum", f"mean normalisation {n0 * mean:.6g}")
        return n0 * mean
    if kind == "LightCurve":
        time, values = read_light_curve(_resolve(elem.get("file"), base, w))
        mean = light_curve_mean(time, values)
        report.approximate(name, "light curve → time-averaged spectrum", f"mean normalisation {n0 * mean:.6g} over {time[-1] - time[0]:.6g} s")
        return n0 * mean
    raise _Unsupported(f"{w}: temporal type {kind!r} not supported")


# ----------------------------------------------------------------------------- sources


def _resolve(filename: str | None, base: Path, where: str) -> Path:
    if not filename:
        raise _Unsupported(f"{where}: no file attribute")
    p = Path(os.path.expandvars(filename))
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise _Unsupported(f"{where}: referenced file {p} not found")
    return p


def _convert(src: ET.Element, base: Path, name: str, report: ConversionReport) -> SkyModel:
    where = f"source {name!r}"
    stype = src.get("type", "")
    if stype in BACKGROUND_TYPES:
        raise _Unsupported(f"{where}: {stype} is an instrumental background model, not a sky source (skipped)")
    spec_el = src.find("spectrum")
    spat_el = src.find("spatialModel")
    if spec_el is None or spat_el is None:
        raise _Unsupported(f"{where}: needs a <spectrum> and a <spatialModel> (source type {stype!r})")
    temp_el = src.find("temporal")
    if temp_el is None:
        temp_el = src.find("temporalModel")
    sp = _spatial(spat_el, base, where)
    if sp.cube_spectrum is not None:
        rel = _relative_factor(spec_el, where)
        if isinstance(rel, spc.SpectralModel):
            spectral = spc.CompoundSpectralModel(model1=sp.cube_spectrum, model2=rel, operator="mul")
        else:
            spectral = scale_spectrum(sp.cube_spectrum, rel)
    else:
        spectral = _spectrum(spec_el, base, where)
    factor = sp.factor * _temporal(temp_el, base, where, name, report)
    scale_spectrum(spectral, factor)
    report.types["spectral"][spec_el.get("type", "")] += 1
    for sub in spec_el.findall("spectrum"):
        report.types["spectral"][f"Composite.{sub.get('type', '')}"] += 1
    report.types["spatial"][spat_el.get("type", "")] += 1
    if temp_el is not None:
        report.types["temporal"][temp_el.get("type", "")] += 1
    return SkyModel(spectral, sp.model, name=name)


def read_ctools_xml(path: str | os.PathLike) -> tuple[Models, ConversionReport]:
    """Convert every source of a ctools XML model file.

    Parameters
    ----------
    path : path-like
        The XML file; relative file names in it are relative to its folder.

    Returns
    -------
    models : Models
        One :class:`SkyModel` per converted source, in file order; templates carry the
        base name of their source file as ``filename``.
    report : ConversionReport
        Failures with reasons, approximations, renamed sources, type counts.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ValueError(f"{path}: cannot parse XML: {exc}") from exc
    if root.tag != "source_library":
        raise ValueError(f"{path}: root element is <{root.tag}>, expected <source_library>")
    sources = root.findall("source")
    report = ConversionReport(str(path), n_sources=len(sources))
    models = Models()
    seen: Counter = Counter()
    for i, src in enumerate(sources, start=1):
        raw = (src.get("name") or "").strip()
        name = raw or f"source_{i}"
        seen[name] += 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        try:
            model = _convert(src, path.parent, name, report)
        except (_Unsupported, OSError, ValueError) as exc:
            report.failed.append({"index": i, "name": raw, "reason": str(exc)})
            log.warning("source #%d %r not converted: %s", i, raw, exc)
            continue
        if name != raw:
            report.renamed.append({"index": i, "name": raw, "new_name": name})
            log.warning("source #%d %r renamed %r (names must be unique and non-empty)", i, raw, name)
        models.append(model)
        report.converted.append(name)
    log.info("%s: %d of %d sources converted, %d failed, %d approximated", path, len(report.converted),
             report.n_sources, len(report.failed), len({a["name"] for a in report.approximated}))
    return models, report
