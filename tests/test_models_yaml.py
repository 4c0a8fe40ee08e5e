"""gammapy model YAML: round trips, links, covariance, legacy files, gammapy both ways."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml

from gpscat.core.geom import Map, WcsGeom
from gpscat.io.models_yaml import models_from_yaml, models_to_yaml, read_models, write_models
from gpscat.models import spatial as sm
from gpscat.models import spectral as sp
from gpscat.models.sky import FoVBackgroundModel, Models, SkyModel


def _spatials(tmp_path):
    kw = dict(lon_0=1.2, lat_0=-0.3, frame="galactic")
    tmpl_geom = WcsGeom.create((1.0, 0.0), 1.0, 0.05, frame="galactic")
    tmpl = Map(tmpl_geom, np.outer(np.hanning(20), np.hanning(20)))
    return [
        sm.PointSpatialModel(**kw),
        sm.GaussianSpatialModel(sigma=0.2, e=0.5, phi=20.0, **kw),
        sm.DiskSpatialModel(r_0=0.3, edge_width=0.05, **kw),
        sm.ShellSpatialModel(radius=0.3, width=0.1, lon_0=83.6, lat_0=22.0, frame="icrs"),
        sm.Shell2SpatialModel(r_0=0.4, eta=0.3, **kw),
        sm.GeneralizedGaussianSpatialModel(r_0=0.15, eta=0.3, **kw),
        sm.TemplateSpatialModel(map=tmpl, filename=str(tmp_path / "template.fits")),
    ]


SPECTRALS = [
    sp.PowerLawSpectralModel(index=2.4, amplitude=3e-12),
    sp.PowerLaw2SpectralModel(amplitude=1e-11, index=2.2, emin=0.1, emax=10),
    sp.ExpCutoffPowerLawSpectralModel(index=1.8, amplitude=2e-12, lambda_=0.1),
    sp.LogParabolaSpectralModel(amplitude=2e-12, alpha=2.3, beta=0.15),
    sp.BrokenPowerLawSpectralModel(index1=1.7, index2=2.9, ebreak=2.0),
    sp.SmoothBrokenPowerLawSpectralModel(index1=1.7, index2=2.9, ebreak=2.0),
    sp.TemplateSpectralModel(energy=[0.1, 1.0, 10.0], values=[1e-10, 1e-12, 1e-14]),
    sp.CompoundSpectralModel(
        model1=sp.TemplateSpectralModel(energy=[0.1, 1.0, 10.0], values=[1e-10, 1e-12, 1e-14]),
        model2=sp.PowerLawNormSpectralModel(norm=2.0),
    ),
]


def _all_models(tmp_path) -> Models:
    models = Models()
    spatials = _spatials(tmp_path)
    for i, spec in enumerate(SPECTRALS):
        models.append(SkyModel(spec.copy(), spatials[i % len(spatials)].copy(), name=f"src{i}"))
    models.append(SkyModel(sp.PowerLawSpectralModel(), spatials[6], name="tmpl", datasets_names=["a"]))
    models["src0"].spectral_model.index.frozen = True
    models["src1"].spatial_model.lon_0.error = 0.01
    models["src1"].spatial_model.lat_0.min = -1.0
    models.append(FoVBackgroundModel("a"))
    models.append(FoVBackgroundModel("b"))
    models["b-bkg"].spectral_model.tilt.frozen = False
    return models


def _snapshot(models: Models):
    return [(m.name, type(m).__name__, [(p.name, p.value, p.unit, p.min, p.max, p.frozen, p.error) for p in m.parameters]) for m in models]


def test_round_trip_every_model(tmp_path):
    models = _all_models(tmp_path)
    path = tmp_path / "models.yaml"
    write_models(path, models)
    back = read_models(path)
    a, b = _snapshot(models), _snapshot(back)
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for (_, _, pa), (_, _, pb) in zip(a, b, strict=True):
        np.testing.assert_equal(pa, pb)
    assert back["src3"].spatial_model.frame == "icrs"
    assert back["tmpl"].datasets_names == ["a"]
    np.testing.assert_allclose(back["tmpl"].spatial_model.map.data, models["tmpl"].spatial_model.map.data)
    assert back["src6"].spectral_model(3.0) == pytest.approx(models["src6"].spectral_model(3.0))


def test_defaults_omitted_like_gammapy():
    models = Models([SkyModel(sp.PowerLawSpectralModel(), sm.PointSpatialModel(), name="s")])
    doc = yaml.safe_load(models_to_yaml(models))
    index = doc["components"][0]["spectral"]["parameters"][0]
    assert index == {"name": "index", "value": 2.0}
    full = yaml.safe_load(models_to_yaml(models, full_output=True))
    assert set(full["components"][0]["spectral"]["parameters"][0]) >= {"name", "value", "unit", "min", "max", "frozen", "error"}


def test_links_and_covariance_round_trip(tmp_path):
    a = SkyModel(sp.PowerLawSpectralModel(index=2.5), sm.PointSpatialModel(), name="a")
    b = SkyModel(sp.PowerLawSpectralModel(index=a.spectral_model.index), sm.PointSpatialModel(lon_0=1.0), name="b")
    models = Models([a, b])
    n = len(models.parameters)
    assert n == len(a.parameters) + len(b.parameters) - 1
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, n))
    models.covariance = x @ x.T
    write_models(tmp_path / "m.yaml", models)
    assert (tmp_path / "m_covariance.dat").exists()
    back = read_models(tmp_path / "m.yaml")
    assert back["a"].spectral_model.index is back["b"].spectral_model.index
    np.testing.assert_allclose(back.covariance, models.covariance, rtol=1e-12)
    assert back["a"].spectral_model.index.error == pytest.approx(np.sqrt(models.covariance[0, 0]))


def test_aliases_units_and_unknown_types(caplog):
    text = """
components:
- name: x
  type: SkyModel
  spectral:
    type: pl
    parameters:
    - {name: amplitude, value: 1.0e-11, unit: m-2 s-1 TeV-1}
    - {name: reference, value: 100, unit: GeV}
  spatial:
    type: disk
    frame: galactic
    parameters:
    - {name: lon_0, value: 0.01, unit: rad}
- name: y
  type: SkyModel
  spectral: {type: PowerLawSpectralModel, parameters: []}
  spatial: {type: point, frame: icrs, parameters: []}
  temporal: {type: ConstantTemporalModel, parameters: []}
- type: TemplateNPredModel
  name: z
"""
    with caplog.at_level(logging.WARNING):
        models = models_from_yaml(text)
    x = models["x"]
    assert x.spectral_model.amplitude.value == pytest.approx(1e-15)
    assert x.spectral_model.reference.value == pytest.approx(0.1)
    assert x.spatial_model.lon_0.value == pytest.approx(np.degrees(0.01))
    assert x.spatial_model.r_0.value == 1.0  # default, with a warning
    assert len(models) == 2
    assert "not supported" in caplog.text and "temporal" in caplog.text and "r_0" in caplog.text
    with pytest.raises(ValueError, match="unknown spectral"):
        models_from_yaml("components: [{name: q, type: SkyModel, spectral: {type: Nope, parameters: []}}]")
    with pytest.raises(ValueError, match="not compatible"):
        models_from_yaml(
            "components: [{name: q, type: SkyModel, spectral: {type: pl, parameters: [{name: index, value: 2, unit: deg}]}}]"
        )


@pytest.mark.realdata
def test_gps_prototype_legacy_file(shared_data, caplog):
    with caplog.at_level(logging.WARNING):
        models = read_models(shared_data / "cta-gps-prototype" / "SeedList_fitted_step1.yaml")
    assert len(models) == 526
    m = models["Seed_217"].spatial_model
    assert isinstance(m, sm.GeneralizedGaussianSpatialModel)
    assert m.r_0.value == pytest.approx(0.1918679943813554)
    kinds = {type(m.spatial_model).__name__ for m in models}
    assert kinds == {"PointSpatialModel", "GeneralizedGaussianSpatialModel", "Shell2SpatialModel"}
    assert "r_eff" in caplog.text and "ShellOutSpatialModel" in caplog.text


@pytest.mark.crosscheck
def test_gammapy_reads_ours_and_we_read_gammapys(tmp_path, monkeypatch):
    gm = pytest.importorskip("gammapy.modeling.models")
    monkeypatch.chdir(tmp_path)  # gammapy writes template maps relative to the working directory
    models = _all_models(tmp_path)
    models["src0"].spectral_model.index.error = 0.05
    write_models(tmp_path / "ours.yaml", models)
    theirs = gm.Models.read(tmp_path / "ours.yaml")
    assert theirs.names == models.names
    for m_ours in models:
        m_gp = theirs[m_ours.name]
        for p in m_ours.parameters:
            q = [x for x in m_gp.parameters if x.name == p.name and x.unit.is_equivalent(p.unit or "")]
            assert any(np.isclose(x.quantity.to_value(p.unit or ""), p.value, rtol=1e-12, equal_nan=True) for x in q), p
    # and back: gammapy writes (with covariance), we read identical parameters
    theirs.covariance = np.diag(np.arange(1, len(theirs.parameters.unique_parameters) + 1) * 1e-4)
    theirs.write(tmp_path / "theirs.yaml", overwrite=True, overwrite_templates=True)
    back = read_models(tmp_path / "theirs.yaml")
    assert back.names == models.names
    for m_ours in models:
        for p, q in zip(m_ours.parameters, back[m_ours.name].parameters, strict=True):
            assert (p.name, p.frozen) == (q.name, q.frozen)
            np.testing.assert_allclose(p.value, q.value, rtol=1e-12)
    np.testing.assert_allclose(np.diag(back.covariance), np.arange(1, len(back.parameters) + 1) * 1e-4)
