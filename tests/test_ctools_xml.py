"""ctools XML → gammapy YAML: every model type, units and scales, failures, the GPS sky model."""

from __future__ import annotations

import json
import logging
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import xml_reference as xref
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from gpscat.cli import main
from gpscat.io.ctools_files import (
    light_curve_mean,
    phase_curve_mean,
    read_map_cube,
    read_phase_curve,
    read_sky_map,
)
from gpscat.io.ctools_xml import read_ctools_xml
from gpscat.io.models_yaml import read_models, write_models
from gpscat.models import spatial as spm
from gpscat.models import spectral as spc
from gpscat.models.extra import ConstantSpatialModel
from gpscat.stages import convert_xml


def _p(name, value, scale=1.0, free=0, lo=None, hi=None) -> str:
    bounds = (f' min="{lo}"' if lo is not None else "") + (f' max="{hi}"' if hi is not None else "")
    return f'<parameter name="{name}" value="{value}" scale="{scale}"{bounds} free="{free}"/>'


PL = '<spectrum type="PowerLaw">' + _p("Prefactor", 5.7, 1e-16, 1, 1e-7, 1e3) + _p("Index", 2.48, -1, 1, 0, 5) + _p("PivotEnergy", 0.3, 1e6) + "</spectrum>"
POINT = '<spatialModel type="PointSource">' + _p("RA", 83.63) + _p("DEC", 22.01) + "</spatialModel>"

SPECTRA = {
    "PowerLaw": (PL, spc.PowerLawSpectralModel),
    "PowerLawPhotonFlux": (
        '<spectrum type="PowerLaw">' + _p("PhotonFlux", 1.0, 1e-11, 1) + _p("Index", -2.1, 1, 1) + _p("LowerLimit", 1, 1e6) + _p("UpperLimit", 100, 1e6) + "</spectrum>",
        spc.PowerLaw2SpectralModel,
    ),
    "PowerLaw2": (
        '<spectrum type="PowerLaw2">' + _p("Integral", 2.0, 1e-12, 1) + _p("Index", 2.5, -1, 1) + _p("LowerLimit", 0.1, 1e6) + _p("UpperLimit", 10, 1e6) + "</spectrum>",
        spc.PowerLaw2SpectralModel,
    ),
    "ExponentialCutoffPowerLaw": (
        '<spectrum type="ExponentialCutoffPowerLaw">' + _p("Prefactor", 3.76, 1e-17, 1, 0) + _p("Index", 2.39, -1, 1)
        + _p("CutoffEnergy", 14.3, 1e6, 1, 0.01, 1000) + _p("PivotEnergy", 1, 1e6) + "</spectrum>",
        spc.ExpCutoffPowerLawSpectralModel,
    ),
    "ExpCutoff": (
        '<spectrum type="ExpCutoff">' + _p("Prefactor", 0.0754, 1e-16, 1) + _p("Index", 1.36, -1) + _p("Cutoff", 13.9, 1e6) + _p("Scale", 1, 1e6) + "</spectrum>",
        spc.ExpCutoffPowerLawSpectralModel,
    ),
    "SuperExponentialCutoffPowerLaw": (
        '<spectrum type="SuperExponentialCutoffPowerLaw">' + _p("Prefactor", 5.9, 1e-19) + _p("Index1", 1.4, -1) + _p("CutoffEnergy", 7, 1e6)
        + _p("Index2", 0.7) + _p("PivotEnergy", 1, 1e6) + "</spectrum>",
        spc.ExpCutoffPowerLawSpectralModel,
    ),
    "LogParabola": (
        '<spectrum type="LogParabola">' + _p("Prefactor", 1.2, 1e-17) + _p("Index", 2.3, -1) + _p("Curvature", 0.1, -1) + _p("PivotEnergy", 2, 1e6) + "</spectrum>",
        spc.LogParabolaSpectralModel,
    ),
    "BrokenPowerLaw": (
        '<spectrum type="BrokenPowerLaw">' + _p("Prefactor", 1.09, 1e-15) + _p("Index1", 2.05, -1) + _p("Index2", 2.79, -1) + _p("BreakEnergy", 1, 1e5) + "</spectrum>",
        spc.BrokenPowerLawSpectralModel,
    ),
    "SmoothBrokenPowerLaw": (
        '<spectrum type="SmoothBrokenPowerLaw">' + _p("Prefactor", 1.99e-13) + _p("Index1", 2.2, -1) + _p("Index2", 2.9, -1) + _p("PivotEnergy", 1, 1e4)
        + _p("BreakEnergy", 1, 58200) + _p("BreakSmoothness", 1, 0.1, 1, 0.1, 100) + "</spectrum>",
        spc.SmoothBrokenPowerLawSpectralModel,
    ),
    "SmoothBrokenPowerLawHardening": (
        '<spectrum type="SmoothBrokenPowerLaw">' + _p("Prefactor", 3e-13) + _p("Index1", 2.9, -1) + _p("Index2", 2.2, -1) + _p("PivotEnergy", 1, 1e4)
        + _p("BreakEnergy", 3, 1e6) + _p("BreakSmoothness", 0.3) + "</spectrum>",
        spc.SmoothBrokenPowerLawSpectralModel,
    ),
    "NodeFunction": (
        '<spectrum type="NodeFunction">'
        + "".join(f"<node>{_p('Energy', e, 1e6)}{_p('Intensity', v, 1e-17)}</node>" for e, v in [(0.1, 300.0), (0.5, 12.0), (2.0, 0.4)])
        + "</spectrum>",
        spc.TemplateSpectralModel,
    ),
    "FileFunction": ('<spectrum type="FileFunction" file="spec.txt">' + _p("Normalization", 2.0) + "</spectrum>", spc.TemplateSpectralModel),
    "Constant": ('<spectrum type="Constant">' + _p("Normalization", 5.7, 1e-19) + "</spectrum>", spc.ConstantSpectralModel),
    "Composite": (
        '<spectrum type="Composite">' + PL
        + '<spectrum type="SuperExponentialCutoffPowerLaw">' + _p("Prefactor", 5.9, 1e-19) + _p("Index1", 1.4, -1) + _p("CutoffEnergy", 7, 1e6)
        + _p("Index2", 1.0) + _p("PivotEnergy", 1, 1e6) + "</spectrum></spectrum>",
        spc.CompoundSpectralModel,
    ),
}

SPATIAL = {
    "PointSource": (POINT, spm.PointSpatialModel),
    "SkyDirFunction": ('<spatialModel type="SkyDirFunction">' + _p("GLON", 359.94) + _p("GLAT", -0.05) + "</spatialModel>", spm.PointSpatialModel),
    "RadialGaussian": ('<spatialModel type="RadialGaussian">' + _p("RA", 154.13) + _p("DEC", -58.98) + _p("Sigma", 0.15, 1, 1, 2.778e-4) + "</spatialModel>",
                       spm.GaussianSpatialModel),
    "RadialDisk": ('<spatialModel type="RadialDisk">' + _p("GLON", 10.0) + _p("GLAT", 0.5) + _p("Radius", 0.2) + "</spatialModel>", spm.DiskSpatialModel),
    "RadialShell": ('<spatialModel type="RadialShell">' + _p("RA", 220.7) + _p("DEC", -62.4) + _p("Radius", 0.19) + _p("Width", 0.11) + "</spatialModel>",
                    spm.ShellSpatialModel),
    "EllipticalGaussian": ('<spatialModel type="EllipticalGaussian">' + _p("RA", 195.7) + _p("DEC", -63.18) + _p("PA", 147) + _p("MinorRadius", 0.145)
                           + _p("MajorRadius", 0.194) + "</spatialModel>", spm.GaussianSpatialModel),
    "EllipticalDisk": ('<spatialModel type="EllipticalDisk">' + _p("RA", 195.7) + _p("DEC", -63.18) + _p("PA", 20) + _p("MinorRadius", 0.3)
                       + _p("MajorRadius", 0.1) + "</spatialModel>", spm.DiskSpatialModel),
    "DiffuseMap": ('<spatialModel type="DiffuseMap" file="map.fits">' + _p("Normalization", 1.5) + "</spatialModel>", spm.TemplateSpatialModel),
    "DiffuseMapCube": ('<spatialModel type="DiffuseMapCube" file="cube.fits">' + _p("Normalization", 1.0) + "</spatialModel>", spm.TemplateSpatialModel),
    "DiffuseIsotropic": ('<spatialModel type="DiffuseIsotropic">' + _p("Value", 2.0) + "</spatialModel>", ConstantSpatialModel),
}
CUBE_SPECTRUM = '<spectrum type="Constant">' + _p("Normalization", 3.0) + "</spectrum>"

TEMPORAL = {
    "Constant": '<temporal type="Constant">' + _p("Normalization", 0.5) + "</temporal>",
    "LightCurve": '<temporal type="LightCurve" file="lc.fits">' + _p("Normalization", 2.0) + "</temporal>",
    "PhaseCurve": '<temporal type="PhaseCurve" file="pc.fits">' + _p("Normalization", 1.0) + _p("MJD", 51544.5) + _p("Phase", 0)
    + _p("F0", 1e-6) + _p("F1", 0) + _p("F2", 0) + "</temporal>",
    "PhaseCurveRaw": '<temporal type="PhaseCurve" file="pc.fits" normalize="0">' + _p("Normalization", 1.0) + _p("MJD", 51544.5) + _p("Phase", 0)
    + _p("F0", 1e-6) + _p("F1", 0) + _p("F2", 0) + "</temporal>",
}


def _source(name, spectrum, spatial, temporal="") -> str:
    return f'<source name="{name}" type="ExtendedSource">{spectrum}{spatial}{temporal}</source>'


def _write_files(folder: Path) -> None:
    e = np.geomspace(1e5, 3e7, 30)  # MeV
    np.savetxt(folder / "spec.txt", np.column_stack([e, 1e-17 * (e / 1e6) ** -2.3 * np.exp(-e / 2e7)]))
    w = WCS(naxis=2)
    w.wcs.ctype, w.wcs.crval, w.wcs.crpix, w.wcs.cdelt = ["RA---TAN", "DEC--TAN"], [83.6, 22.0], [10.5, 8.5], [-0.05, 0.05]
    y, x = np.mgrid[0:16, 0:20]
    img = np.exp(-0.5 * ((x - 9.5) ** 2 + (y - 7.0) ** 2) / 9.0)
    img[0, 0] = -1.0  # negative pixels carry no flux
    fits.PrimaryHDU(img, header=w.to_header()).writeto(folder / "map.fits")
    energies = np.geomspace(2e4, 2e8, 9)  # MeV, log-uniform as ctools cubes
    cube = np.stack([img.clip(0) * 1e-12 * (ek / 1e6) ** -2.5 * (1 + 0.1 * k) for k, ek in enumerate(energies)])
    h = w.to_header()
    hl = fits.HDUList([fits.PrimaryHDU(cube, header=h), fits.BinTableHDU.from_columns([fits.Column("Energy", "D", unit="MeV", array=energies)], name="ENERGIES")])
    hl.writeto(folder / "cube.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([
        fits.Column("TIME", "D", array=[0.0, 100.0, 300.0, 400.0]), fits.Column("NORM", "D", array=[0.2, 1.0, 0.6, 0.2])])]).writeto(folder / "lc.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([
        fits.Column("PHASE", "D", array=[0.1, 0.4, 0.4, 0.8]), fits.Column("NORM", "D", array=[0.1, 0.9, 0.5, 0.3])])]).writeto(folder / "pc.fits")


def _all_types_xml(folder: Path) -> tuple[Path, dict[str, type], dict[str, type]]:
    """An XML with every spectral, spatial and temporal type; returns the expected classes."""
    _write_files(folder)
    sources, spec_cls, spat_cls = [], {}, {}
    for kind, (xml, cls) in SPECTRA.items():
        sources.append(_source(f"spec {kind}", xml, POINT))
        spec_cls[f"spec {kind}"] = cls
    for kind, (xml, cls) in SPATIAL.items():
        spectrum = CUBE_SPECTRUM if kind == "DiffuseMapCube" else PL
        sources.append(_source(f"spat {kind}", spectrum, xml))
        spat_cls[f"spat {kind}"] = cls
    for kind, xml in TEMPORAL.items():
        sources.append(_source(f"temp {kind}", PL, POINT, xml))
    path = folder / "models.xml"
    path.write_text('<?xml version="1.0"?>\n<source_library title="test">\n' + "\n".join(sources) + "\n</source_library>\n")
    return path, spec_cls, spat_cls


@pytest.fixture
def all_types(tmp_path):
    return _all_types_xml(tmp_path)


def test_ls5039_example(tmp_path):
    xml = _source("LS 5039", '<spectrum type="ExponentialCutoffPowerLaw">' + _p("Prefactor", 2.48, 1e-18, 1, 1e-7, 1000) + _p("Index", 2.2, -1, 1, 0, 5)
                  + _p("CutoffEnergy", 6.6, 1e6, 1, 0.01, 1000) + _p("PivotEnergy", 1, 1e6) + "</spectrum>",
                  '<spatialModel type="PointSource">' + _p("RA", 276.5625) + _p("DEC", -14.825) + "</spatialModel>")
    path = tmp_path / "ls5039.xml"
    path.write_text(f"<source_library>{xml}</source_library>")
    models, report = read_ctools_xml(path)
    m = models["LS 5039"].spectral_model
    assert isinstance(m, spc.ExpCutoffPowerLawSpectralModel) and not report.failed
    assert m.index.value == pytest.approx(2.2, rel=1e-12)
    assert m.lambda_.quantity.to_value("TeV-1") == pytest.approx(1 / 6.6, rel=1e-12)
    assert m.amplitude.quantity.to_value("cm-2 s-1 MeV-1") == pytest.approx(2.48e-18, rel=1e-12)
    assert m.reference.quantity.to_value("TeV") == pytest.approx(1.0)
    assert m.alpha.value == 1.0
    # bounds: Cutoff 0.01..1000 TeV → lambda_ 1e-3..100 TeV-1; Index 0..5 (scale -1) → index 0..5
    assert (m.lambda_.min, m.lambda_.max) == pytest.approx((1e-3, 100.0))
    assert (m.index.min, m.index.max) == pytest.approx((0.0, 5.0))
    assert not m.amplitude.frozen and m.reference.frozen
    sp = models["LS 5039"].spatial_model
    assert isinstance(sp, spm.PointSpatialModel) and sp.frame == "icrs" and sp.position == pytest.approx((276.5625, -14.825))


def test_every_type_converts_with_the_expected_class(all_types):
    path, spec_cls, spat_cls = all_types
    models, report = read_ctools_xml(path)
    assert report.failed == [] and len(models) == report.n_sources == len(SPECTRA) + len(SPATIAL) + len(TEMPORAL)
    for name, cls in spec_cls.items():
        assert type(models[name].spectral_model) is cls, name
    for name, cls in spat_cls.items():
        assert type(models[name].spatial_model) is cls, name
    s = report.summary()
    assert s["approximations"] == {"light curve → time-averaged spectrum": 1, "phase curve → phase-averaged spectrum": 2}
    assert s["types"]["temporal"] == {"Constant": 1, "LightCurve": 1, "PhaseCurve": 2}
    assert s["types"]["spectral"]["Composite.SuperExponentialCutoffPowerLaw"] == 1


def test_integral_fluxes_match_the_xml_definitions(all_types):
    path, _, _ = all_types
    models, _ = read_ctools_xml(path)
    for src, model in zip(ET.parse(path).getroot().findall("source"), models, strict=True):
        ref = xref.source_flux(src, path.parent, 1e6, 1e8)
        assert float(model.spectral_model.integral(1.0, 100.0)) == pytest.approx(ref, rel=1e-3), model.name


def test_round_trip_of_every_type(all_types, tmp_path):
    path, _, _ = all_types
    models, _ = read_ctools_xml(path)
    out = tmp_path / "out" / "models.yaml"
    for m in models.sky_models:
        if isinstance(m.spatial_model, spm.TemplateSpatialModel):
            m.spatial_model.filename = f"tmpl/{m.name.replace(' ', '_')}.fits"
    write_models(out, models, write_covariance=False)
    back = read_models(out)
    assert back.names == models.names
    for a, b in zip(models, back, strict=True):
        assert type(a.spectral_model) is type(b.spectral_model) and type(a.spatial_model) is type(b.spatial_model), a.name
        for pa, pb in zip(a.parameters, b.parameters, strict=True):
            assert pa.name == pb.name and pa.frozen == pb.frozen, a.name
            np.testing.assert_allclose([pa.value, pa.min, pa.max, pa.error], [pb.value, pb.min, pb.max, pb.error], rtol=1e-12, err_msg=a.name)
        np.testing.assert_allclose(b.spectral_model.integral(1.0, 100.0), a.spectral_model.integral(1.0, 100.0), rtol=1e-12)
        if isinstance(a.spatial_model, spm.TemplateSpatialModel):
            np.testing.assert_allclose(b.spatial_model.map.data, a.spatial_model.map.data, rtol=1e-12)


def test_signs_scales_and_conventions(all_types):
    path, _, _ = all_types
    models, _ = read_ctools_xml(path)
    lp = models["spec LogParabola"].spectral_model
    assert (lp.alpha.value, lp.beta.value, lp.reference.value) == pytest.approx((2.3, 0.1, 2.0))
    sec = models["spec SuperExponentialCutoffPowerLaw"].spectral_model
    assert (sec.index.value, sec.alpha.value, sec.lambda_.value) == pytest.approx((1.4, 0.7, 1 / 7))
    p2 = models["spec PowerLawPhotonFlux"].spectral_model
    assert p2.integral(1.0, 100.0) == pytest.approx(1e-11) and p2.index.value == pytest.approx(2.1)
    bpl = models["spec BrokenPowerLaw"].spectral_model
    assert bpl.ebreak.value == pytest.approx(0.1) and bpl.amplitude.value == pytest.approx(1.09e-9)
    assert isinstance(models["spat SkyDirFunction"].spatial_model, spm.PointSpatialModel)
    assert models["spat SkyDirFunction"].spatial_model.frame == "galactic"
    disk = models["spat RadialDisk"].spatial_model
    assert disk.r_0.value == 0.2 and disk.edge_width.value == 0.0
    shell = models["spat RadialShell"].spatial_model
    assert (shell.radius.value, shell.width.value) == (0.19, 0.11)
    # isotropic: gammapy writes no value for ConstantSpatialModel, so Value goes into the spectrum
    iso = models["spat DiffuseIsotropic"]
    assert iso.spatial_model.value.value == 1.0
    assert iso.spectral_model.amplitude.value == pytest.approx(2 * 5.7e-10)
    # phase curve with steps (repeated phase 0.4), wrapped: mean by hand
    nodes = [(-0.2, 0.3), (0.1, 0.1), (0.4, 0.9), (0.4, 0.5), (0.8, 0.3), (1.1, 0.1)]
    segs = [(max(x0, 0), min(x1, 1), y0, y1, x0, x1) for (x0, y0), (x1, y1) in zip(nodes, nodes[1:], strict=False) if x1 > x0]
    by_hand = sum((b - a) * (y0 + (y1 - y0) * ((a + b) / 2 - x0) / (x1 - x0)) for a, b, y0, y1, x0, x1 in segs if b > a)
    assert phase_curve_mean(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0.1, 0.9, 0.5, 0.3])) == pytest.approx(by_hand, rel=1e-12)


def test_elliptical_orientation_matches_the_position_angle(all_types):
    """Along PA the brightness at the major radius equals that at the minor radius 90° away."""
    path, _, _ = all_types
    models, _ = read_ctools_xml(path)
    g = models["spat EllipticalGaussian"].spatial_model
    assert g.sigma.value == pytest.approx(0.194) and g.phi.value == pytest.approx(147.0)
    assert g.e.value == pytest.approx(np.sqrt(1 - (0.145 / 0.194) ** 2))
    c = SkyCoord(195.7, -63.18, unit="deg")
    major = c.directional_offset_by(147 * u.deg, 0.194 * u.deg)
    minor = c.directional_offset_by(237 * u.deg, 0.145 * u.deg)
    off = c.directional_offset_by(237 * u.deg, 0.194 * u.deg)
    v = g([major.ra.deg, minor.ra.deg, off.ra.deg], [major.dec.deg, minor.dec.deg, off.dec.deg])
    assert v[0] == pytest.approx(v[1], rel=1e-3) and v[2] < 0.7 * v[0]
    d = models["spat EllipticalDisk"].spatial_model  # Minor > Major in the XML: axes swapped, PA + 90
    assert (d.r_0.value, d.phi.value, d.edge_width.value) == pytest.approx((0.3, 110.0, 0.0))


def test_templates_keep_gammalib_normalisation(all_types):
    path, _, _ = all_types
    models, _ = read_ctools_xml(path)
    t = models["spat DiffuseMap"]
    data = t.spatial_model.map.data
    assert np.sum(data * t.spatial_model.map.geom.solid_angle()) == pytest.approx(1.0, rel=1e-12)
    assert data.min() == 0.0 and not t.spatial_model.normalize
    cube = models["spat DiffuseMapCube"]
    tm, sm = cube.spatial_model, cube.spectral_model
    with fits.open(path.parent / "cube.fits") as hl:
        raw, energy = hl[0].data, hl["ENERGIES"].data["Energy"] / 1e6
    np.testing.assert_allclose(tm.map.axes[0].center, energy, rtol=1e-10)
    # spectrum × plane = 3 × cube at every node (per TeV instead of per MeV)
    product = sm(energy)[:, None, None] * tm.map.data
    np.testing.assert_allclose(product, 3.0 * raw.clip(0) * 1e6, rtol=1e-10, atol=1e-30)


def test_template_files_wcs_variants_and_errors(tmp_path):
    w = WCS(naxis=2)
    w.wcs.ctype, w.wcs.crval, w.wcs.crpix = ["GLON-CAR", "GLAT-CAR"], [10.0, 0.0], [3.0, 2.0]
    h = w.to_header()
    h["CD1_1"], h["CD2_2"] = -0.1, 0.1  # a diagonal CD matrix instead of CDELT
    del h["CDELT1"], h["CDELT2"]
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((3, 5)), header=h)]).writeto(tmp_path / "cd.fits")
    geom, data = read_sky_map(tmp_path / "cd.fits")  # the image in the first extension, as ic443_map.fits
    assert geom.frame == "galactic" and geom.binsz == pytest.approx(0.1) and data.shape == (3, 5)
    h["CD1_2"] = 0.01
    fits.PrimaryHDU(np.ones((3, 5)), header=h).writeto(tmp_path / "rot.fits")
    with pytest.raises(ValueError, match="rot.fits.*rotated"):
        read_sky_map(tmp_path / "rot.fits")
    fits.PrimaryHDU(np.ones((2, 3, 5)), header=w.to_header()).writeto(tmp_path / "noenergies.fits")
    with pytest.raises(ValueError, match="ENERGIES"):
        read_map_cube(tmp_path / "noenergies.fits")
    with pytest.raises(OSError, match="missing.fits"):
        read_sky_map(tmp_path / "missing.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([
        fits.Column("PHASE", "D", array=[0.5, 0.2]), fits.Column("NORM", "D", array=[1.0, 1.0])])]).writeto(tmp_path / "pc.fits")
    with pytest.raises(ValueError, match="pc.fits.*non-decreasing"):
        read_phase_curve(tmp_path / "pc.fits")
    # a triangle light curve averages to half its peak; a constant phase curve to itself
    assert light_curve_mean(np.array([0.0, 5.0, 10.0]), np.array([0.0, 1.0, 0.0])) == pytest.approx(0.5)
    assert phase_curve_mean(np.array([0.3]), np.array([0.7])) == pytest.approx(0.7)


def test_failures_are_reported_with_the_reason(tmp_path, caplog):
    bad = [
        _source("no prefactor", '<spectrum type="PowerLaw">' + _p("Index", 2, -1) + _p("PivotEnergy", 1, 1e6) + "</spectrum>", POINT),
        _source("gauss spectrum", '<spectrum type="Gaussian">' + _p("Normalization", 1) + "</spectrum>", POINT),
        _source("missing map", PL, '<spatialModel type="DiffuseMap" file="nope.fits">' + _p("Normalization", 1) + "</spatialModel>"),
        '<source name="Background" type="CTAIrfBackground" instrument="CTA">' + PL + "</source>",
        _source("", PL, POINT),
        _source("twin", PL, POINT),
        _source("twin", PL, POINT),
    ]
    path = tmp_path / "bad.xml"
    path.write_text("<source_library>" + "".join(bad) + "</source_library>")
    with caplog.at_level(logging.WARNING):
        models, report = read_ctools_xml(path)
    reasons = {f["name"]: f["reason"] for f in report.failed}
    assert "'Prefactor'" in reasons["no prefactor"] and "no prefactor" in reasons["no prefactor"]
    assert "'Gaussian' not supported" in reasons["gauss spectrum"]
    assert "nope.fits not found" in reasons["missing map"]
    assert "background" in reasons["Background"]
    assert models.names == ["source_5", "twin", "twin_2"]
    assert [r["new_name"] for r in report.renamed] == ["source_5", "twin_2"]
    assert "not converted" in caplog.text
    (tmp_path / "other.xml").write_text("<models/>")
    with pytest.raises(ValueError, match="other.xml"):
        read_ctools_xml(tmp_path / "other.xml")


def test_cli_writes_yaml_templates_and_summary(all_types, tmp_path):
    path, _, _ = all_types
    out = tmp_path / "res" / "sky.yaml"
    assert main(["convert-xml", str(path), str(out)]) == 0
    summary = json.loads(convert_xml.summary_path(out).read_text())
    assert summary["n_sources"] == summary["n_converted"] == len(SPECTRA) + len(SPATIAL) + len(TEMPORAL)
    assert summary["n_templates"] == 2 and summary["n_failed"] == 0
    assert sorted(p.name for p in (tmp_path / "res" / "sky_templates").iterdir()) == ["spat_DiffuseMap.fits", "spat_DiffuseMapCube.fits"]
    assert not list((tmp_path / "res").glob("*covariance*"))
    back = read_models(out)
    assert len(back) == summary["n_converted"]


@pytest.mark.realdata
def test_cta_gps_sky_model(shared_data, tmp_path):
    """1638 sources: all convert except the absent template and the IRF background; fluxes to 1 %."""
    path = shared_data / "cta-gps-skymodel" / "models_gps.xml"
    models, report = read_ctools_xml(path)
    s = report.summary()
    assert s["n_sources"] == 1638 and s["n_converted"] + s["n_failed"] == 1638
    assert sorted(f["index"] for f in s["failed"]) == [97, 1638]
    reasons = " ".join(f["reason"] for f in s["failed"])
    assert "hessj1825_map.fits not found" in reasons and "CTAIrfBackground" in reasons
    assert s["approximations"] == {"phase curve → phase-averaged spectrum": 195}
    assert s["types"]["spectral"]["FileFunction"] == 1099 and s["types"]["spatial"]["RadialDisk"] == 1106
    failed = {f["index"] for f in s["failed"]}
    sources = [src for i, src in enumerate(ET.parse(path).getroot().findall("source"), start=1) if i not in failed]
    ref = np.array([xref.source_flux(src, path.parent, 1e6, 1e8, n=4001) for src in sources])
    got = np.array([float(m.spectral_model.integral(1.0, 100.0)) for m in models])
    rel = np.abs(got / ref - 1)
    assert rel.max() < 0.01, f"worst: {models.names[int(rel.argmax())]} {rel.max():.3g}"


# ----------------------------------------------------------------------------- gammapy


def _gammapy_models(path: Path):
    gmodels = pytest.importorskip("gammapy.modeling.models")
    with warnings.catch_warnings():
        # sharp-edged disks (edge_width 0, as ctools') make gammapy divide by zero in its unit check
        warnings.filterwarnings("ignore", message="divide by zero", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="invalid value", category=RuntimeWarning)
        return gmodels.Models.read(path)


def _compare_with_gammapy(out: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="divide by zero", category=RuntimeWarning)
        _compare(out)


def _compare(out: Path) -> None:
    ours, theirs = read_models(out), _gammapy_models(out)
    assert theirs.names == ours.names
    for a, b in zip(ours, theirs, strict=True):
        assert type(b.spectral_model).__name__ == type(a.spectral_model).__name__, a.name
        assert type(b.spatial_model).__name__ == type(a.spatial_model).__name__, a.name
        flux = b.spectral_model.integral(1 * u.TeV, 100 * u.TeV).to_value("cm-2 s-1")
        assert float(flux) == pytest.approx(float(a.spectral_model.integral(1.0, 100.0)), rel=1e-4), a.name
        sp = a.spatial_model
        if isinstance(sp, (spm.PointSpatialModel, ConstantSpatialModel)):
            continue
        if isinstance(sp, spm.TemplateSpatialModel):
            lon, lat = sp.map.geom.get_coord()
            lon, lat = lon[::3, ::3].ravel(), lat[::3, ::3].ravel()
        else:
            c = SkyCoord(*sp.position, unit="deg", frame=sp.frame)
            pts = c.directional_offset_by(np.linspace(0, 330, 12) * u.deg, np.linspace(0.02, 0.3, 12) * u.deg)
            lon, lat = pts.spherical.lon.deg, pts.spherical.lat.deg
        mine = sp(lon, lat)
        if isinstance(sp, spm.TemplateSpatialModel) and sp.energy_nodes is not None:
            e = sp.energy_nodes[3]
            mine = sp(lon, lat, np.array([e]))[0]
            gp = b.spatial_model(lon * u.deg, lat * u.deg, energy=e * u.TeV).to_value("sr-1")
        else:
            gp = b.spatial_model(lon * u.deg, lat * u.deg).to_value("sr-1")
        big = mine > 1e-2 * mine.max()
        np.testing.assert_allclose(np.ravel(gp)[big], mine[big], rtol=2e-3, err_msg=a.name)
    # and back: what gammapy writes, we read
    theirs.write(out.parent / "gammapy_written.yaml", write_covariance=False)
    again = read_models(out.parent / "gammapy_written.yaml")
    for a, b in zip(ours, again, strict=True):
        assert [p.value for p in a.parameters] == pytest.approx([p.value for p in b.parameters], rel=1e-12, nan_ok=True), a.name
        assert float(b.spectral_model.integral(1.0, 100.0)) == pytest.approx(float(a.spectral_model.integral(1.0, 100.0)), rel=1e-12)


@pytest.mark.crosscheck
def test_converted_yaml_loads_in_gammapy(all_types, tmp_path):
    path, _, _ = all_types
    out = tmp_path / "res" / "sky.yaml"
    convert_xml.run(None, input=path, output=out)
    _compare_with_gammapy(out)


@pytest.mark.crosscheck
@pytest.mark.realdata
def test_gps_sky_model_types_load_in_gammapy(shared_data, tmp_path):
    """One source of every (spectrum, spatial, temporal) combination of the GPS sky model."""
    path = shared_data / "cta-gps-skymodel" / "models_gps.xml"
    keep, seen = [], set()
    for src in ET.parse(path).getroot().findall("source"):
        key = tuple(None if e is None else e.get("type") for e in (src.find("spectrum"), src.find("spatialModel"), src.find("temporal")))
        if key in seen:
            continue
        seen.add(key)
        for e in src.iter():
            if e.get("file"):
                e.set("file", str(path.parent / e.get("file")))
        keep.append(ET.tostring(src, encoding="unicode"))
    sub = tmp_path / "subset.xml"
    sub.write_text("<source_library>" + "".join(keep) + "</source_library>")
    out = tmp_path / "res" / "gps.yaml"
    info = convert_xml.run(None, input=sub, output=out)
    assert info["n_converted"] >= 15 and info["n_converted"] + info["n_failed"] == len(keep)
    _compare_with_gammapy(out)
