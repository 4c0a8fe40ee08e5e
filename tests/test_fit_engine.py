"""The fit engine: Migrad/Hesse, frozen and linked parameters, joint fits, TS, Minos,
profiles, failures, WStat data, and the derived fluxes and position errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fit_sky import make_dataset, simulate

from gpscat.core.fit import Fit, compute_ts, fit
from gpscat.core.fluxes import (
    band_energy_flux,
    band_flux,
    position_error,
    propagate_error,
    source_npred,
)
from gpscat.core.geom import Map
from gpscat.models import spatial as sm
from gpscat.models import spectral as sp
from gpscat.models.sky import FoVBackgroundModel, Models, SkyModel


def _point(name="src", amplitude=1e-11, index=2.4, lon=0.011, lat=-0.006):
    return SkyModel(
        sp.PowerLawSpectralModel(index=index, amplitude=amplitude),
        sm.PointSpatialModel(lon_0=lon, lat_0=lat, frame="galactic"),
        name=name,
    )


@pytest.fixture(scope="module")
def sky():
    rng = np.random.default_rng(42)
    ds = make_dataset(npix=40, nreco=3, name="sim")
    truth = Models([_point(), FoVBackgroundModel("sim")])
    return simulate(ds, truth, rng), truth


def test_fit_recovers_the_truth_and_sets_errors(sky):
    ds, truth = sky
    models = Models([_point(amplitude=3e-12, index=2.0, lon=0.03, lat=0.02), FoVBackgroundModel("sim")])
    result = fit(ds, models)
    assert result.success, result.message
    assert result.covariance_success
    for p, q in zip(models.parameters.free, truth.parameters.free, strict=True):
        assert p.error > 0
        assert abs(p.value - q.value) < 4 * p.error, p
    assert result.labels == ["src.spectral.index", "src.spectral.amplitude", "src.spatial.lon_0", "src.spatial.lat_0", "sim-bkg.spectral.norm"]
    np.testing.assert_allclose(np.sqrt(np.diag(result.covariance)), [p.error for p in result.parameters])
    np.testing.assert_allclose(models.covariance_of(result.parameters), result.covariance)
    assert models["src"].spectral_model.reference.value == 1.0  # frozen stays


def test_bounds_are_respected(sky):
    ds, _ = sky
    models = Models([_point(), FoVBackgroundModel("sim")])
    models["src"].spectral_model.index.max = 2.2  # truth 2.4: the fit ends at the bound
    fit(ds, models, covariance=False)
    assert models["src"].spectral_model.index.value <= 2.2 + 1e-9


def test_joint_fit_with_shared_and_linked_parameters():
    rng = np.random.default_rng(7)
    low = make_dataset(npix=30, ereco=(0.1, 1.0), nreco=2, name="low")
    high = make_dataset(npix=30, ereco=(1.0, 30.0), nreco=2, name="high")
    src = _point(amplitude=2e-11)
    truth = Models([src, FoVBackgroundModel("low"), FoVBackgroundModel("high")])
    truth["high-bkg"].spectral_model.norm.value = 1.2
    low, high = simulate(low, truth, rng), simulate(high, truth, rng)
    # one source on both datasets; a second, fixed-position source per dataset sharing its index
    models = Models([_point(amplitude=5e-12, index=2.0), FoVBackgroundModel("low"), FoVBackgroundModel("high")])
    other_low = _point("other_low", amplitude=1e-14, lon=0.2, lat=0.2)
    other_low.datasets_names = ["low"]
    other_high = _point("other_high", amplitude=1e-14, lon=0.2, lat=0.2)
    other_high.datasets_names = ["high"]
    other_high.spectral_model.index = other_low.spectral_model.index
    for m in (other_low, other_high):
        m.spatial_model.freeze()
        m.spectral_model.amplitude.frozen = True
    models.extend([other_low, other_high])
    f = Fit([low, high], models)
    labels = f.free_parameters()[1]
    assert labels.count("other_low.spectral.index") == 1 and "other_high.spectral.index" not in labels
    result = f.run()
    assert result.success, result.message
    assert models["high-bkg"].spectral_model.norm.value == pytest.approx(1.2, abs=0.05)
    assert models["low-bkg"].spectral_model.norm.value == pytest.approx(1.0, abs=0.05)
    idx = models["src"].spectral_model.index
    assert abs(idx.value - 2.4) < 4 * idx.error


def test_ts_minos_and_profile(sky):
    ds, _ = sky
    models = Models([_point(), FoVBackgroundModel("sim")])
    f = Fit(ds, models)
    result = f.run(minos=["src.spectral.index"])
    lo, hi = result.minos["src.spectral.index"]
    err = models["src"].spectral_model.index.error
    assert lo < 0 < hi and -lo == pytest.approx(err, rel=0.2) and hi == pytest.approx(err, rel=0.2)
    before = [p.value for p in models.parameters]
    ts = f.ts("src")
    assert ts > 100
    assert [p.value for p in models.parameters] == before  # restored
    assert compute_ts(ds, models, "src") == pytest.approx(ts, rel=1e-3)
    idx = models["src"].spectral_model.index
    prof = f.stat_profile(idx, idx.value + np.array([-1.0, 0.0, 1.0]) * idx.error, reoptimize=True)
    d = prof["stat"] - prof["stat"][1]
    assert d[0] == pytest.approx(1.0, abs=0.3) and d[2] == pytest.approx(1.0, abs=0.3)
    assert idx.value == before[0]


def test_ts_of_an_absent_source_is_small():
    rng = np.random.default_rng(11)
    ds = make_dataset(npix=30, nreco=2)
    ds = simulate(ds, [FoVBackgroundModel("sim")], rng)
    models = Models([_point(amplitude=1e-13), FoVBackgroundModel("sim")])
    models["src"].spatial_model.freeze()
    models["src"].spectral_model.index.frozen = True
    models["src"].spectral_model.amplitude.min = 0
    f = Fit(ds, models)
    f.run()
    assert f.ts("src") < 9


def test_failures_are_flagged_not_raised(sky):
    ds, _ = sky
    models = Models([_point(amplitude=1e-13, index=1.5, lon=0.1), FoVBackgroundModel("sim")])
    result = fit(ds, models, max_nfev=5)
    assert not result.success and "call limit" in result.message

    class Broken(sp.PowerLawSpectralModel):
        def integral(self, emin, emax):
            raise RuntimeError("boom")

    bad = Models([SkyModel(Broken(), sm.PointSpatialModel(frame="galactic"), name="bad")])
    result = fit(ds, bad)
    assert not result.success and "boom" in result.message


def test_no_free_parameters(sky):
    ds, _ = sky
    models = Models([_point(), FoVBackgroundModel("sim")])
    models.freeze()
    result = fit(ds, models)
    assert result.success and np.isfinite(result.total_stat) and result.parameters == []


def test_wstat_dataset():
    rng = np.random.default_rng(5)
    ds = make_dataset(npix=30, nreco=2)
    truth = [_point(amplitude=2e-11)]
    signal = simulate(replace(ds, background=ds.background.copy(data=np.zeros(ds.background.data.shape))), truth, rng)
    alpha = 0.2
    mu_bkg = ds.background.data
    counts = signal.counts.data + rng.poisson(mu_bkg)
    on_off = replace(ds, counts=ds.counts.copy(data=counts))
    on_off.counts_off = Map(ds.geom, rng.poisson(mu_bkg / alpha).astype(float), ds.counts.axes)
    on_off.acceptance = Map(ds.geom, np.ones(counts.shape), ds.counts.axes)
    on_off.acceptance_off = Map(ds.geom, np.full(counts.shape, 1 / alpha), ds.counts.axes)
    models = Models([_point(amplitude=5e-12, index=2.0)])
    result = fit(on_off, models)
    assert result.success
    amp = models["src"].spectral_model.amplitude
    assert abs(amp.value - 2e-11) < 4 * amp.error


def test_band_fluxes_and_errors(sky):
    ds, _ = sky
    models = Models([_point(), FoVBackgroundModel("sim")])
    fit(ds, models)
    src = models["src"]
    flux, err = band_flux(src, models, np.array([0.1, 1.0]), np.array([1.0, 100.0]))
    np.testing.assert_allclose(flux, src.spectral_model.integral([0.1, 1.0], [1.0, 100.0]))
    # analytic gradient of a power-law integral w.r.t. (index, amplitude)
    m = src.spectral_model
    g_amp = flux / m.amplitude.value
    h = 1e-6
    m.index.value += h
    up = m.integral([0.1, 1.0], [1.0, 100.0])
    m.index.value -= 2 * h
    down = m.integral([0.1, 1.0], [1.0, 100.0])
    m.index.value += h
    g = np.stack([(up - down) / (2 * h), g_amp], axis=-1)
    cov = models.covariance_of([m.index, m.amplitude])
    np.testing.assert_allclose(err, np.sqrt(np.einsum("bi,ij,bj->b", g, cov, g)), rtol=1e-4)
    eflux, eerr = band_energy_flux(src, models, 1.0, 10.0)
    assert eflux == pytest.approx(m.energy_flux(1.0, 10.0)) and 0 < eerr < eflux
    assert propagate_error(lambda: np.array(2.0), [], np.zeros((0, 0)))[1] == 0
    npred = source_npred(ds, src)
    assert 0 < npred < ds.counts.data.sum()


def test_position_error_ellipse(sky):
    ds, _ = sky
    models = Models([_point(lat=0.05), FoVBackgroundModel("sim")])
    fit(ds, models)
    src = models["src"]
    pe = position_error(src, models)
    cosb = np.cos(np.radians(src.spatial_model.lat_0.value))
    assert pe.sigma_lon == pytest.approx(src.spatial_model.lon_0.error * cosb)
    assert pe.sigma_lat == pytest.approx(src.spatial_model.lat_0.error)
    assert pe.semi_minor <= min(pe.sigma_lon, pe.sigma_lat) + 1e-12
    assert pe.semi_major >= max(pe.sigma_lon, pe.sigma_lat) - 1e-12
    assert pe.r95 == pytest.approx(2.4477 * np.sqrt(pe.semi_major * pe.semi_minor), rel=1e-4)


def test_numerical_covariance_matches_hesse(sky):
    """The finite-difference fallback (used when Minuit's Hesse is inaccurate) gives the
    same errors and correlations as an accurate Hesse, and leaves the values alone."""
    ds, _ = sky
    models = Models([_point(amplitude=3e-12, index=2.0, lon=0.03, lat=0.02), FoVBackgroundModel("sim")])
    fitter = Fit(ds, models)
    result = fitter.run(covariance=True)
    assert result.covariance_success and result.covariance_method == "hesse"
    values = [p.value for p in result.parameters]
    cov = fitter.numerical_covariance(result.parameters)
    assert [p.value for p in result.parameters] == values
    err_h, err_n = np.sqrt(np.diag(result.covariance)), np.sqrt(np.diag(cov))
    np.testing.assert_allclose(err_n, err_h, rtol=0.05)
    corr_h = result.covariance / np.outer(err_h, err_h)
    corr_n = cov / np.outer(err_n, err_n)
    np.testing.assert_allclose(corr_n, corr_h, atol=0.05)


def test_numerical_covariance_steps_over_small_scale_ripples(sky):
    """Where the likelihood has structure on the scale of the physical steps (a shell's
    sampling), the Hessian there is not positive definite: coarser steps still give the
    curvature of the minimum (the errors of the smooth part)."""
    ds, _ = sky
    models = Models([_point(amplitude=3e-12, index=2.0, lon=0.03, lat=0.02), FoVBackgroundModel("sim")])
    fitter = Fit(ds, models)
    result = fitter.run(covariance=True)
    err_h = np.sqrt(np.diag(result.covariance))
    params = result.parameters
    x0 = np.array([p.value for p in params])
    lon = next(i for i, p in enumerate(params) if p.name == "lon_0")
    smooth = fitter.stat_sum
    height = 2.0 * (1e-3 / err_h[lon]) ** 2  # twice the smooth rise at one physical step

    def rippled():  # -2 ln L plus a narrow bump at the minimum
        return smooth() + height * np.exp(-0.5 * ((params[lon].value - x0[lon]) / 2e-4) ** 2)

    fitter.stat_sum = rippled
    physical = np.array([1e-3 if p.unit == "deg" else 0.01 * abs(v) for p, v in zip(params, x0, strict=True)])
    assert fitter._finite_difference_covariance(params, x0, fitter._inside_bounds(params, x0, physical)) is None
    for p, v in zip(params, x0, strict=True):  # (the private step leaves the last trial values)
        p.value = float(v)
    cov = fitter.numerical_covariance(params)
    assert cov is not None and [p.value for p in params] == list(x0)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), err_h, rtol=0.1)
