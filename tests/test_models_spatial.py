"""Spatial models: normalisation on the sky, pixel integration, gammapy's definitions."""

from __future__ import annotations

import numpy as np
import pytest

from gpscat.core.geom import Map, WcsGeom
from gpscat.models import spatial as sm

CENTER = (10.0, 1.0)


def _models():
    kw = dict(lon_0=CENTER[0] + 0.013, lat_0=CENTER[1] - 0.007, frame="galactic")
    return {
        "gauss": sm.GaussianSpatialModel(sigma=0.2, **kw),
        "gauss-elongated": sm.GaussianSpatialModel(sigma=0.25, e=0.8, phi=30.0, **kw),
        "gauss-small": sm.GaussianSpatialModel(sigma=0.01, **kw),
        "disk": sm.DiskSpatialModel(r_0=0.3, **kw),
        "disk-elongated": sm.DiskSpatialModel(r_0=0.4, e=0.6, phi=-40.0, edge_width=0.1, **kw),
        "gauss-general": sm.GeneralizedGaussianSpatialModel(r_0=0.15, eta=0.7, **kw),
        "gauss-general-disklike": sm.GeneralizedGaussianSpatialModel(r_0=0.3, eta=0.1, e=0.5, phi=60, **kw),
        "shell": sm.ShellSpatialModel(radius=0.3, width=0.1, **kw),
        "shell2": sm.Shell2SpatialModel(r_0=0.4, eta=0.3, **kw),
        "point": sm.PointSpatialModel(**kw),
    }


MODELS = _models()
GEOM = WcsGeom.create(CENTER, 4.0, 0.02, frame="galactic")


@pytest.mark.parametrize("name", list(MODELS))
def test_integral_over_big_map_is_one(name):
    frac = sm.integrate_geom(MODELS[name], GEOM)
    # Laplace-like profiles (eta=0.7) have ~1e-3 beyond the 4° map; elsewhere 1e-3 is sampling
    assert frac.sum() == pytest.approx(1.0, abs=2e-3)
    assert np.all(frac >= 0)


@pytest.mark.parametrize("name", ["gauss", "disk", "shell", "gauss-general"])
def test_same_integral_in_another_frame(name):
    model = MODELS[name]
    geom_icrs = WcsGeom.create((271.6, -19.7), 4.0, 0.02, frame="icrs")  # (l, b) ≈ (10, 1)
    frac = sm.integrate_geom(model, geom_icrs)
    assert frac.sum() == pytest.approx(1.0, abs=2e-3)


def test_oversampling_converges():
    model = sm.GaussianSpatialModel(lon_0=0.004, lat_0=0.0, sigma=0.015, frame="galactic")
    geom = WcsGeom.create((0.0, 0.0), 0.5, 0.02, frame="galactic")
    fine = sm.integrate_geom(model, geom, oversample=16)
    auto = sm.integrate_geom(model, geom)
    assert np.abs(auto - fine).max() < 0.01 * fine.max()


def test_disk_pixel_integral_is_smooth_in_radius():
    geom = WcsGeom.create((0.0, 0.0), 1.0, 0.02, frame="galactic")
    radii = 0.2 + np.linspace(0, 0.004, 21)
    sums = []
    for r in radii:
        # fixed sampling, as in a fit (the prediction keeps it per cutout)
        frac = sm.integrate_geom(sm.DiskSpatialModel(r_0=r, frame="galactic"), geom, oversample=2)
        sums.append(frac[25, 35:].sum())  # a row crossing the edge
    # no steps as sub-pixel centres cross the edge: the curvature itself varies smoothly
    d2, d3 = np.diff(sums, 2), np.diff(sums, 3)
    assert np.abs(d3).max() < 0.2 * np.abs(d2).max()


def test_elongation_orientation():
    # phi = 0: major axis along latitude (north); phi = 90: along +longitude (east)
    geom = WcsGeom.create((0.0, 0.0), 2.0, 0.02, frame="galactic")
    lon, lat = geom.get_coord()
    lon = (lon + 180) % 360 - 180
    for phi, along_lat in ((0.0, True), (90.0, False)):
        frac = sm.integrate_geom(sm.GaussianSpatialModel(sigma=0.3, e=0.9, phi=phi, frame="galactic"), geom)
        var_lat = np.sum(frac * lat**2) / frac.sum()
        var_lon = np.sum(frac * lon**2) / frac.sum()
        assert (var_lat > 3 * var_lon) == along_lat


def test_template_normalised_and_shifted():
    geom = WcsGeom.create((0.0, 0.0), 1.0, 0.05, frame="galactic")
    data = np.zeros(geom.shape)
    data[8:12, 9:11] = 1.0
    tmpl = sm.TemplateSpatialModel(map=Map(geom, data), filename="t.fits")
    assert tmpl.lon_0.value == pytest.approx(0.0) and tmpl.lat_0.frozen
    big = WcsGeom.create((0.0, 0.0), 2.0, 0.01, frame="galactic")
    frac = sm.integrate_geom(tmpl, big)
    assert frac.sum() == pytest.approx(1.0, rel=0.02)
    tmpl.lat_0.value = 0.3
    lon, lat = big.get_coord()
    frac2 = sm.integrate_geom(tmpl, big)
    assert np.sum(frac2 * lat) / frac2.sum() - np.sum(frac * lat) / frac.sum() == pytest.approx(0.3, abs=0.01)


def test_parameter_defaults_match_gammapy_yaml_names():
    assert sm.DiskSpatialModel.parameter_names() == ["lon_0", "lat_0", "r_0", "e", "phi", "edge_width"]
    assert sm.GeneralizedGaussianSpatialModel.parameter_names() == ["lon_0", "lat_0", "r_0", "eta", "e", "phi"]
    d = sm.DiskSpatialModel.default_parameters()
    assert d["edge_width"].value == 0.01 and d["edge_width"].frozen and d["r_0"].min == 0
    with pytest.raises(ValueError, match="frame"):
        sm.PointSpatialModel(frame="fk4")


@pytest.mark.crosscheck
@pytest.mark.parametrize("name", [n for n in MODELS if n != "point"])
def test_surface_brightness_matches_gammapy(name):
    gm = pytest.importorskip("gammapy.modeling.models")
    import astropy.units as u

    model = MODELS[name]
    kw = {p.name: u.Quantity(p.value, p.unit or "") for p in model.parameters}
    g = getattr(gm, type(model).__name__)(frame=model.frame, **kw)
    lon = CENTER[0] + np.linspace(-0.6, 0.6, 41)
    lat = CENTER[1] + 0.11 * np.ones_like(lon)
    ours = model(lon, lat)
    theirs = g(lon * u.deg, lat * u.deg).to_value("sr-1")
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * theirs.max())
