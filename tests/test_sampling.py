"""Event sampling: distributions against the IRFs and models they come from (seeded, known answers)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.integrate import quad

from gpscat.core.fov import sky_to_fov
from gpscat.core.geom import MapAxis, angular_separation
from gpscat.core.instrument import builtin_irfs
from gpscat.core.irf import PSF3Gauss, PSFTable
from gpscat.core.sampling import (
    EventSample,
    background_table,
    exposure_table,
    grid_reach,
    offset_positions,
    power_law_inverse_cdf,
    predicted_counts,
    sample_background_events,
    sample_migra,
    sample_psf_radius,
    sample_source_events,
    source_grid,
)
from gpscat.core.simulation import make_setup, simulate_observation
from gpscat.models.sky import SkyModel
from gpscat.models.spatial import (
    DiskSpatialModel,
    GaussianSpatialModel,
    PointSpatialModel,
    ShellSpatialModel,
    position_angle,
)
from gpscat.models.spectral import PowerLawSpectralModel

PNT = (266.40, -28.94)  # RA, Dec of the pointing (the Galactic centre)


@pytest.fixture(scope="module")
def irfs():
    return builtin_irfs()


@pytest.fixture(scope="module")
def table(irfs):
    return exposure_table(irfs["aeff"], livetime=1800.0, energy_edges=np.geomspace(0.02, 200, 161), offset_max=5.0)


def _ks(samples: np.ndarray, cdf_values: np.ndarray, at: np.ndarray) -> float:
    """Largest difference between the empirical CDF at ``at`` and ``cdf_values``."""
    emp = np.searchsorted(np.sort(samples), at, side="right") / samples.size
    return float(np.max(np.abs(emp - cdf_values)))


def _point(lon=0.5, lat=0.0, amplitude=1e-11, index=2.5, name="src"):
    return SkyModel(PowerLawSpectralModel(index=index, amplitude=amplitude), PointSpatialModel(lon_0=lon, lat_0=lat, frame="galactic"), name=name)


def test_offset_positions_exact():
    rng = np.random.default_rng(3)
    lon, lat = rng.uniform(0, 360, 500), rng.uniform(-80, 80, 500)
    r, pa = rng.uniform(0, 3, 500), rng.uniform(0, 2 * np.pi, 500)
    lon2, lat2 = offset_positions(lon, lat, r, pa)
    assert np.allclose(angular_separation(lon, lat, lon2, lat2), r, atol=1e-9)
    got = np.mod(position_angle(lon, lat, lon2, lat2), 2 * np.pi)
    assert np.allclose(np.angle(np.exp(1j * (got - pa))), 0, atol=1e-7)


def test_power_law_inverse_cdf():
    u = np.linspace(0, 1, 5)
    assert np.allclose(power_law_inverse_cdf(1.0, 10.0, 1.0, u), 10**u)  # log-uniform limit
    e = power_law_inverse_cdf(1.0, 100.0, 2.5, np.random.default_rng(1).uniform(size=200_000))
    assert e.min() >= 1 and e.max() <= 100
    at = np.array([1.5, 3.0, 10.0, 30.0])
    cdf = (1 - at**-1.5) / (1 - 100**-1.5)
    assert _ks(e, cdf, at) < 0.005


def test_sample_migra_matches_the_table(irfs):
    edisp = irfs["edisp"]
    rng = np.random.default_rng(2)
    for energy, offset in ((0.05, 0.3), (0.137, 1.1), (1.0, 2.2), (20.0, 0.0)):
        mu = sample_migra(edisp, np.full(100_000, energy), offset, rng=rng)
        at = np.linspace(0.3, 2.5, 40)
        cdf = np.interp(at, edisp.migra.edges, edisp.cdf(energy, offset))
        assert _ks(mu, cdf, at) < 0.01, energy
    # empty table → NaN
    empty = replace(edisp, data=np.zeros(edisp.data.shape))
    assert np.all(np.isnan(sample_migra(empty, [1.0, 2.0], 0.5, rng=rng)))


def test_sample_psf_radius_3gauss_and_table(irfs):
    psf = irfs["psf"]
    rng = np.random.default_rng(4)
    for energy, offset in ((0.1, 0.5), (1.0, 1.7), (30.0, 3.2)):
        r = sample_psf_radius(psf, np.full(100_000, energy), offset, rng=rng)
        at = psf.containment_radius(np.array([0.2, 0.5, 0.68, 0.9, 0.99]), energy, offset)
        assert _ks(r, psf.containment(at, energy, offset), at) < 0.01
    rad = MapAxis("rad", np.linspace(0, 1.0, 201), "deg", "lin")
    e, o = psf.energy_true, psf.offset
    table = PSFTable(e, o, rad, psf.evaluate(rad.center[None, None, :], e.center[:, None, None], o.center[None, :, None]))
    r = sample_psf_radius(table, np.full(100_000, 0.8), 1.3, rng=rng)
    at = table.containment_radius(np.array([0.3, 0.68, 0.95]), 0.8, 1.3)
    assert _ks(r, table.containment(at, 0.8, 1.3), at) < 0.01
    with pytest.raises(TypeError, match="PSF3Gauss or PSFTable"):
        sample_psf_radius(object(), [1.0], 0.0, rng=rng)


def test_point_source_counts_match_flux_times_exposure(irfs, table):
    """npred = 1e4 · livetime · ∫ flux · A_eff dE, and the sample is Poisson around it."""
    model = _point(lon=0.2, lat=-0.9)
    grid = source_grid(model.spatial_model)
    mu = predicted_counts(model, grid, table, pointing=PNT).sum()
    src = model.spatial_model.position_in("icrs")
    off = float(angular_separation(*src, *PNT))
    integrand = lambda e: model.spectral_model(e) * irfs["aeff"].evaluate(e, off)  # noqa: E731
    expected = 1e4 * 1800.0 * sum(quad(integrand, lo, hi)[0] for lo, hi in [(0.02, 0.1), (0.1, 1), (1, 10), (10, 200)])
    assert mu == pytest.approx(expected, rel=0.01)
    counts = [len(sample_source_events(model, grid, table, pointing=PNT, psf=irfs["psf"], edisp=irfs["edisp"], rng=np.random.default_rng(s))) for s in range(20)]
    assert np.mean(counts) == pytest.approx(mu, abs=4 * np.sqrt(mu / 20))


def test_point_source_reproduces_psf_containment(irfs):
    """Narrow-band point-source events: R68 of the reconstructed offsets within 5% of the IRF's."""
    tab = exposure_table(irfs["aeff"], livetime=1800.0, energy_edges=np.geomspace(0.95, 1.05, 5), offset_max=5.0)
    model = _point(lon=1.0, lat=0.5)
    grid = source_grid(model.spatial_model)
    ev = sample_source_events(model, grid, tab, pointing=PNT, psf=irfs["psf"], edisp=irfs["edisp"], rng=np.random.default_rng(5), n_events=20_000)
    ra, dec = model.spatial_model.position_in("icrs")
    r68 = np.quantile(angular_separation(ev.ra, ev.dec, ra, dec), 0.68)
    off = float(angular_separation(ra, dec, *PNT))
    assert r68 == pytest.approx(float(irfs["psf"].containment_radius(0.68, 1.0, off)), rel=0.05)
    # reco energies scatter around the true ones as the dispersion says
    assert np.median(ev.energy / ev.energy_true) == pytest.approx(1 + (-0.015), abs=0.01)


def test_extended_positions_follow_the_model(irfs, table):
    """With a negligible PSF, event positions reproduce the Gaussian and shell profiles."""
    tiny = PSF3Gauss(irfs["psf"].energy_true, irfs["psf"].offset, *(np.full(irfs["psf"].sigma_1.shape, 1e-5) for _ in range(3)), np.zeros(irfs["psf"].sigma_1.shape), np.zeros(irfs["psf"].sigma_1.shape))
    rng = np.random.default_rng(6)
    gauss = SkyModel(PowerLawSpectralModel(), GaussianSpatialModel(lon_0=0.3, lat_0=0.2, sigma=0.2, frame="galactic"), name="g")
    ev = sample_source_events(gauss, source_grid(gauss.spatial_model), table, pointing=PNT, psf=tiny, edisp=irfs["edisp"], rng=rng, n_events=50_000)
    d = angular_separation(ev.ra, ev.dec, *gauss.spatial_model.position_in("icrs"))
    assert np.quantile(d, 0.68) == pytest.approx(0.2 * np.sqrt(-2 * np.log(0.32)), rel=0.02)
    shell = SkyModel(PowerLawSpectralModel(), ShellSpatialModel(lon_0=-0.4, lat_0=0.0, radius=0.4, width=0.1, frame="galactic"), name="s")
    ev = sample_source_events(shell, source_grid(shell.spatial_model), table, pointing=PNT, psf=tiny, edisp=irfs["edisp"], rng=rng, n_events=50_000)
    d = angular_separation(ev.ra, ev.dec, *shell.spatial_model.position_in("icrs"))
    assert d.max() < 0.51
    # projected uniform shell: fraction within the inner radius = 1 - (ro² - ri²)^{3/2} / (ro³ - ri³)
    ro, ri = 0.5, 0.4
    frac_inner = 1 - (ro**2 - ri**2) ** 1.5 / ro**3 / (1 - (ri / ro) ** 3)
    assert np.mean(d < ri) == pytest.approx(frac_inner, abs=0.01)


def test_background_sample_follows_the_irf(irfs):
    bkg = irfs["bkg"]
    tab = background_table(bkg, energy_edges=np.geomspace(0.1, 100, 61), offset_max=4.0)
    ev = sample_background_events(tab, pointing=PNT, ontime=4000.0, rng=np.random.default_rng(7))
    assert len(ev) == pytest.approx(tab.total_rate * 4000.0, abs=5 * np.sqrt(tab.total_rate * 4000.0))
    assert np.all(np.isnan(ev.energy_true))
    fx, fy = sky_to_fov(ev.ra, ev.dec, *PNT)
    assert angular_separation(fx, fy, 0.0, 0.0).max() < 4.0
    # counts in (energy band × FoV box) against the IRF integral
    for (lo, hi), (x0, x1, y0, y1) in (((0.1, 0.3), (-1, 1, -1, 1)), ((1, 10), (0.5, 2.5, -2, 0)), ((0.3, 3), (-2, -1, 1, 2.5))):
        sel = (ev.energy >= lo) & (ev.energy < hi) & (fx >= x0) & (fx < x1) & (fy >= y0) & (fy < y1)
        xs, ys = np.linspace(x0, x1, 41), np.linspace(y0, y1, 41)
        xc, yc = 0.5 * (xs[1:] + xs[:-1]), 0.5 * (ys[1:] + ys[:-1])
        omega = np.radians(xs[1] - xs[0]) * (np.sin(np.radians(ys[1:])) - np.sin(np.radians(ys[:-1])))
        rate = bkg.integrate([lo, hi], xc[:, None], yc[None, :])[0] * omega[None, :]
        expected = rate.sum() * 4000.0
        assert sel.sum() == pytest.approx(expected, abs=4 * np.sqrt(expected) + 0.01 * expected), (lo, hi)
    # the fov_lat gradient of the built-in background is visible
    assert np.mean(fy > 0) > 0.5


def test_same_seed_same_events(irfs, table):
    model = _point()
    grid = source_grid(model.spatial_model)
    kw = dict(pointing=PNT, psf=irfs["psf"], edisp=irfs["edisp"])
    a = sample_source_events(model, grid, table, rng=np.random.default_rng(11), **kw)
    b = sample_source_events(model, grid, table, rng=np.random.default_rng(11), **kw)
    c = sample_source_events(model, grid, table, rng=np.random.default_rng(12), **kw)
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b, strict=True))
    assert len(a) != len(c) or not np.array_equal(a.ra, c.ra)


def test_edge_cases(irfs, table):
    model = _point(lon=30.0, lat=0.0)  # far outside the field of view
    grid = source_grid(model.spatial_model)
    ev = sample_source_events(model, grid, table, pointing=PNT, psf=irfs["psf"], edisp=irfs["edisp"], rng=np.random.default_rng(0))
    assert isinstance(ev, EventSample) and len(ev) == 0
    with pytest.raises(ValueError, match="n_events"):
        sample_source_events(_point(), source_grid(_point().spatial_model), table, pointing=PNT, psf=irfs["psf"], edisp=irfs["edisp"], rng=np.random.default_rng(0), n_events=-1)
    with pytest.raises(ValueError, match="energy_edges"):
        exposure_table(irfs["aeff"], livetime=1.0, energy_edges=[1.0, 0.5], offset_max=3.0)
    with pytest.raises(ValueError, match="ontime"):
        sample_background_events(background_table(irfs["bkg"], energy_edges=[1, 10], offset_max=2.0), pointing=PNT, ontime=-1, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    "spatial",
    [
        PointSpatialModel(lon_0=1.0, lat_0=-0.5, frame="galactic"),
        GaussianSpatialModel(lon_0=1.0, lat_0=-0.5, sigma=0.3, e=0.6, phi=30.0, frame="galactic"),
        DiskSpatialModel(lon_0=1.0, lat_0=60.0, r_0=1.2, frame="galactic"),
        ShellSpatialModel(lon_0=200.0, lat_0=-80.0, radius=0.5, width=0.2, frame="galactic"),
    ],
    ids=["point", "gauss", "disk-high-lat", "shell-near-pole"],
)
def test_grid_reach_bounds_the_grid(spatial):
    grid = source_grid(spatial)
    d = angular_separation(grid.lon, grid.lat, *spatial.position)
    reach = grid_reach(spatial)
    assert d.max() <= reach + 1e-9
    if not spatial.is_point:  # a bound, not a gross overestimate: the grid fills the model's circle
        assert reach < 1.5 * d.max() + 0.05


def test_observation_skips_sources_outside_the_field(irfs):
    """A source whose grid cannot reach the field of view is neither gridded nor sampled, and the
    events are exactly those of the survey without it (skipping draws no random number)."""
    near = SkyModel(PowerLawSpectralModel(amplitude=5e-12), GaussianSpatialModel(lon_0=0.4, lat_0=0.1, sigma=0.2, frame="galactic"), name="near")
    edge = SkyModel(PowerLawSpectralModel(amplitude=5e-12), DiskSpatialModel(lon_0=3.5, lat_0=0.0, r_0=0.8, frame="galactic"), name="edge")
    far = SkyModel(PowerLawSpectralModel(amplitude=5e-12), ShellSpatialModel(lon_0=9.0, lat_0=0.0, radius=0.4, width=0.1, frame="galactic"), name="far")
    kw = dict(livetime=1800.0, offset_max=3.0, per_decade=20)
    with_far = make_setup([near, far, edge], irfs, **kw)
    without = make_setup([near, edge], irfs, **kw)
    assert [with_far.reaches(i, PNT) for i in range(3)] == [True, False, True]
    a = simulate_observation(with_far, pointing=PNT, tstart=0.0, rng=np.random.default_rng(5))
    b = simulate_observation(without, pointing=PNT, tstart=0.0, rng=np.random.default_rng(5))
    assert 1 not in with_far.grids._grids  # the far shell's grid was never built
    assert np.sum(a["MC_ID"] == 3) > 10  # the disk straddling the FoV edge (a 0.2° sliver inside) was sampled
    b["MC_ID"][b["MC_ID"] == 2] = 3  # the disk is MC_ID 3 in the first list, 2 in the second
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
