"""Predicted counts: flux bookkeeping, energy dispersion, smoothness, caches, gammapy."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fit_sky import make_dataset

from gpscat.core.geom import Map
from gpscat.core.npred import DatasetEvaluator, npred, npred_source
from gpscat.models import spatial as sm
from gpscat.models import spectral as sp
from gpscat.models.sky import FoVBackgroundModel, SkyModel


def _flat_exposure(ds, value=1e10):
    return replace(ds, exposure=ds.exposure.copy(data=np.full(ds.exposure.data.shape, value)))


@pytest.mark.parametrize(
    "spatial",
    [
        sm.PointSpatialModel(lon_0=0.003, lat_0=-0.002, frame="galactic"),
        sm.GaussianSpatialModel(lon_0=0.003, lat_0=-0.002, sigma=0.05, frame="galactic"),
        sm.DiskSpatialModel(lon_0=0.0, lat_0=0.0, r_0=0.08, frame="galactic"),
        sm.ShellSpatialModel(lon_0=0.0, lat_0=0.0, radius=0.06, width=0.03, frame="galactic"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_total_counts_are_exposure_times_flux(spatial):
    ds = _flat_exposure(make_dataset(npix=100, binsz=0.02, nreco=2, edisp=False))
    model = SkyModel(sp.PowerLawSpectralModel(index=2.0, amplitude=1e-11), spatial, name="s")
    counts = npred_source(ds, model).data
    et = ds.energy_axis_true
    expected = 1e4 * 1e10 * model.spectral_model.integral(et.lo, et.hi)
    np.testing.assert_allclose(counts.sum(axis=(1, 2)), expected, rtol=2e-3)


def test_energy_dispersion_redistributes_counts():
    ds = _flat_exposure(make_dataset(npix=60, nreco=4, ereco=(0.5, 20.0), etrue=(0.1, 100.0), ntrue=30))
    model = SkyModel(sp.PowerLawSpectralModel(index=2.5, amplitude=1e-11), sm.PointSpatialModel(frame="galactic"), name="s")
    counts = npred_source(ds, model).data.sum(axis=(1, 2))
    et = ds.energy_axis_true
    matrix = ds.edisp.data[..., 0, 0]  # (n_true, n_reco)
    expected = 1e4 * 1e10 * model.spectral_model.integral(et.lo, et.hi) @ matrix
    np.testing.assert_allclose(counts, expected, rtol=1e-3)


def test_background_model_norm_and_tilt():
    ds = make_dataset(npix=20, nreco=3)
    bkg = FoVBackgroundModel("sim")
    bkg.spectral_model.norm.value = 1.3
    bkg.spectral_model.tilt.value = 0.5
    m = npred(ds, [bkg]).data
    scale = 1.3 * ds.energy_axis.center ** -0.5
    np.testing.assert_allclose(m, ds.background.data * scale[:, None, None])


def test_point_source_prediction_is_smooth_below_the_pixel_scale():
    ds = make_dataset(npix=40, binsz=0.02, nreco=2)
    model = SkyModel(sp.PowerLawSpectralModel(amplitude=1e-11), sm.PointSpatialModel(frame="galactic"), name="s")
    ev = DatasetEvaluator(ds, [model])
    rng = np.random.default_rng(0)
    counts = rng.poisson(ev.npred() + 0.5)
    lons = np.linspace(-0.01, 0.01, 81)  # one pixel in 1/80 steps
    stat = []
    for lon in lons:
        model.spatial_model.lon_0.value = lon
        mu = ev.npred() + 0.5
        stat.append(2 * np.sum(mu - counts * np.log(mu)))
    d2 = np.diff(stat, 2)
    # a smooth function: the curvature is nearly constant at this scale, no kinks at
    # pixel centres or edges (a kink would show as a spike in the second difference)
    assert np.all(d2 > 0)
    assert np.abs(np.diff(d2)).max() < 0.02 * d2.mean()


def test_cutout_recentring_does_not_change_the_prediction():
    ds = make_dataset(npix=80, binsz=0.02, nreco=2)
    spatial = sm.GaussianSpatialModel(lon_0=0.0, lat_0=0.0, sigma=0.04, frame="galactic")
    model = SkyModel(sp.PowerLawSpectralModel(amplitude=1e-11), spatial, name="s")
    ev = DatasetEvaluator(ds, [model])
    first = ev.npred_source(model)
    spatial.lon_0.value = 0.5  # far: forces a new cutout
    ev.npred_source(model)
    spatial.lon_0.value = 0.0
    np.testing.assert_allclose(ev.npred_source(model), first, rtol=1e-10, atol=1e-12)


def test_spectral_change_reuses_the_spatial_response(monkeypatch):
    ds = make_dataset(npix=40, nreco=2)
    model = SkyModel(sp.PowerLawSpectralModel(amplitude=1e-11), sm.GaussianSpatialModel(sigma=0.05, frame="galactic"), name="s")
    ev = DatasetEvaluator(ds, [model])
    base = ev.npred_source(model)
    src = ev._evaluators[id(model)]
    calls = []
    original = type(src)._compute_response
    monkeypatch.setattr(type(src), "_compute_response", lambda self, *a: calls.append(1) or original(self, *a))
    checks = []
    original_check = type(src)._needs_setup
    monkeypatch.setattr(type(src), "_needs_setup", lambda self, *a: checks.append(1) or original_check(self, *a))
    model.spectral_model.amplitude.value = 2e-11
    np.testing.assert_allclose(ev.npred_source(model), 2 * base, rtol=1e-12)
    assert not calls
    assert not checks  # the cutout depends on the spatial parameters only: no re-check either
    model.spatial_model.sigma.value = 0.06
    ev.npred_source(model)
    assert len(calls) == 1


def test_spatial_model_of_another_type_with_the_same_values_is_recomputed():
    # ShellSpatialModel (lon_0, lat_0, radius, width) and Shell2SpatialModel (lon_0, lat_0,
    # r_0, eta) have parameter tuples of the same length: the cache key must tell them apart
    ds = make_dataset(npix=60, nreco=1)
    model = SkyModel(sp.PowerLawSpectralModel(amplitude=1e-11), sm.ShellSpatialModel(radius=0.2, width=0.1, frame="galactic"), name="s")
    ev = DatasetEvaluator(ds, [model])
    ev.npred_source(model)
    model.spatial_model = sm.Shell2SpatialModel(r_0=0.2, eta=0.1, frame="galactic")
    fresh = DatasetEvaluator(ds, [model]).npred_source(model)
    np.testing.assert_allclose(ev.npred_source(model), fresh, rtol=1e-12)


def test_source_outside_the_map_predicts_nothing():
    ds = make_dataset(npix=20, nreco=1)
    model = SkyModel(sp.PowerLawSpectralModel(amplitude=1e-11), sm.PointSpatialModel(lon_0=30.0, frame="galactic"), name="s")
    assert npred_source(ds, model).data.sum() == 0.0


@pytest.mark.parametrize("kind", ["point", "gauss"])
def test_source_beyond_the_edge_within_psf_reach(kind):
    """Sources just outside the map, where the cutout box lies in the PSF padding beyond the
    edge (a tile's neighbours in the catalog's residual maps): no error, flux only on the map
    side, falling with the distance."""
    ds = make_dataset(npix=20, binsz=0.02, nreco=1, edisp=False)  # map |l| <= 0.2 deg
    totals = []
    for lon in np.linspace(0.25, 2.5, 46):
        spatial = (sm.PointSpatialModel(lon_0=lon, lat_0=0.0, frame="galactic") if kind == "point"
                   else sm.GaussianSpatialModel(lon_0=lon, lat_0=0.0, sigma=0.05, frame="galactic"))
        model = SkyModel(sp.PowerLawSpectralModel(amplitude=1e-11), spatial, name="s")
        data = npred_source(ds, model).data
        assert np.all(np.isfinite(data)) and data.min() >= 0.0
        totals.append(data.sum())
    assert totals[-1] == 0.0 and np.all(np.diff(totals) <= 1e-12 * max(totals[0], 1.0))


def test_dataset_without_edisp_needs_matching_axes():
    ds = make_dataset(npix=20, nreco=2)
    with pytest.raises(ValueError, match="edisp"):
        npred(replace(ds, edisp=None), [SkyModel(sp.PowerLawSpectralModel(), sm.PointSpatialModel(frame="galactic"))])


@pytest.mark.crosscheck
@pytest.mark.parametrize("kind", ["point-cic", "point", "gauss", "disk"])
def test_prediction_matches_gammapy(tmp_path, kind):
    datasets = pytest.importorskip("gammapy.datasets")
    gm = pytest.importorskip("gammapy.modeling.models")
    import astropy.units as u

    from gpscat.io.dataset import write_dataset

    ds = make_dataset(npix=60, binsz=0.02, nreco=3)
    ds = replace(ds, counts=Map(ds.geom, np.zeros(ds.counts.data.shape), ds.counts.axes))
    write_dataset(tmp_path / "ds.fits", ds)
    gds = datasets.MapDataset.read(tmp_path / "ds.fits")
    pos = dict(lon_0=0.013, lat_0=-0.007, frame="galactic")
    shape = {"point-cic": {}, "point": {}, "gauss": {"sigma": 0.1}, "disk": {"r_0": 0.15}}[kind]
    cls = {"point-cic": "PointSpatialModel", "point": "PointSpatialModel", "gauss": "GaussianSpatialModel", "disk": "DiskSpatialModel"}[kind]
    ours = SkyModel(sp.PowerLawSpectralModel(amplitude=1e-11), getattr(sm, cls)(**pos, **shape), name="s")
    gkw = {k: (v * u.deg if k != "frame" else v) for k, v in {**pos, **shape}.items()}
    theirs = gm.SkyModel(gm.PowerLawSpectralModel(amplitude="1e-11 cm-2 s-1 TeV-1"), getattr(gm, cls)(**gkw), name="s")
    gds.models = [theirs]
    g = gds.npred_signal().data
    o = DatasetEvaluator(ds, [ours], point_method="cic" if kind == "point-cic" else "exact").npred_source(ours)
    np.testing.assert_allclose(o.sum(axis=(1, 2)), g.sum(axis=(1, 2)), rtol=5e-3)
    # per pixel: the cic point response and extended models agree with gammapy; the exact
    # point response is sharper than gammapy's (bilinear weights broaden it)
    tol = 0.12 if kind == "point" else 0.03
    assert np.abs(o - g).max() < tol * g.max()


def test_energy_dependent_template():
    ds = _flat_exposure(make_dataset(npix=60, binsz=0.02, nreco=2, edisp=False))
    et = ds.energy_axis_true
    tgeom = ds.geom.cutout(0.0, 0.0, 0.6)
    lon, lat = tgeom.get_coord()
    lon = (lon + 180) % 360 - 180
    # a Gaussian blob whose width shrinks with energy: each plane normalised separately
    widths = np.array([0.12, 0.05])
    planes = np.exp(-0.5 * (lon**2 + lat**2)[None] / widths[:, None, None] ** 2)
    tmpl = sm.TemplateSpatialModel(map=Map(tgeom, planes, (et,), ""), filename="t.fits")
    model = SkyModel(sp.PowerLawSpectralModel(amplitude=1e-11), tmpl, name="t")
    counts = npred_source(ds, model).data
    expected = 1e4 * 1e10 * model.spectral_model.integral(et.lo, et.hi)
    np.testing.assert_allclose(counts.sum(axis=(1, 2)), expected, rtol=0.02)
    sep = ds.geom.separation(0.0, 0.0)
    inner = [counts[i][sep < 0.06].sum() / counts[i].sum() for i in range(2)]
    assert inner[1] > inner[0] + 0.2


@pytest.mark.parametrize("kind", ["point", "gauss"])
def test_shared_psf_cache_follows_the_psf_content(kind):
    """PSF profiles and kernels are shared between predictors by content (core.response):
    a dataset whose PSF tables differ (same pixels, same geometry) gets its own, and the
    prediction equals a fresh computation either way."""
    from gpscat.core import response

    ds = make_dataset(npix=40, binsz=0.02, nreco=2, edisp=False)
    rad = ds.psf.axis("rad").center
    wide = ds.psf.copy(data=np.exp(-0.5 * (rad / 0.15) ** 2)[None, :, None, None] * np.ones(ds.psf.data.shape))
    spatial = sm.PointSpatialModel(frame="galactic") if kind == "point" else sm.GaussianSpatialModel(sigma=0.04, frame="galactic")
    model = SkyModel(sp.PowerLawSpectralModel(index=2.0, amplitude=1e-11), spatial, name="s")

    def core_fraction(dataset):
        img = npred_source(dataset, model).data.sum(axis=0)
        return img[18:22, 18:22].sum() / img.sum()

    narrow_first = core_fraction(ds)
    wide_first = core_fraction(replace(ds, psf=wide))
    assert wide_first < 0.5 * narrow_first  # not the narrow PSF's cached profiles
    assert core_fraction(ds) == narrow_first  # from the cache: identical
    response._PROFILES.clear()
    response._KERNELS.clear()
    assert core_fraction(replace(ds, psf=wide)) == wide_first
