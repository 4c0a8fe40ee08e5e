"""Aperture ON/OFF spectra: extraction, stacking, WStat fits and flux points on synthetic data."""

import math

import numpy as np
import pytest

from gpscat.core.geom import MapAxis, angular_separation
from gpscat.core.instrument import builtin_irfs
from gpscat.core.reduce import energy_mask
from gpscat.core.sampling import offset_positions
from gpscat.core.simulation import make_setup, simulate_observation
from gpscat.core.spectrum import OnOffSpectrum, extract_spectrum, safe_energy_range, stack_spectra
from gpscat.core.spectrum_fit import SpectrumFit, fit_spectrum, flux_points, snap_edges
from gpscat.io.dl3 import GTI, EventList, Observation
from gpscat.models.sky import Models, SkyModel
from gpscat.models.spatial import PointSpatialModel
from gpscat.models.spectral import LogParabolaSpectralModel, PowerLawSpectralModel

TARGET = (83.63, 22.01)
E_RECO = MapAxis.from_energy_bounds(0.1, 100.0, per_decade=8, name="energy")
E_TRUE = MapAxis.from_energy_bounds(0.05, 200.0, per_decade=10, name="energy_true")
TRUTH = {"index": 2.4, "amplitude": 1e-11}


@pytest.fixture(scope="module")
def irfs():
    return builtin_irfs()


def observation(irfs, obs_id: int, pointing, events: dict | None, *, livetime: float = 1800.0) -> Observation:
    if events is None:
        ev = EventList(*(np.zeros(0) for _ in range(4)))
    else:
        ev = EventList(events["RA"].astype(float), events["DEC"].astype(float), events["ENERGY"].astype(float), events["TIME"].astype(float))
    gti = GTI(np.array([0.0]), np.array([livetime]), 51544.5)
    return Observation(obs_id, tuple(pointing), gti, livetime, events=ev, aeff=irfs["aeff"], psf=irfs["psf"], edisp=irfs["edisp"])


@pytest.fixture(scope="module")
def wobble(irfs):
    """Four 0.5 h wobble observations (0.7 deg) of a power-law point source over IRF background."""
    src = SkyModel(PowerLawSpectralModel(**TRUTH), PointSpatialModel(lon_0=TARGET[0], lat_0=TARGET[1], frame="icrs"), name="src")
    setup = make_setup([src], irfs, livetime=1800.0, energy_range=(0.1, 100.0), offset_max=3.0)
    obs = []
    for k in range(4):
        pnt = offset_positions(*TARGET, 0.7, math.radians(90.0 * k))
        ev = simulate_observation(setup, pointing=(float(pnt[0]), float(pnt[1])), tstart=0.0, rng=np.random.default_rng(10 + k))
        obs.append(observation(irfs, 100 + k, (float(pnt[0]), float(pnt[1])), ev))
    return obs


def extract(obs, **kw):
    opts = {"energy_axis": E_RECO, "energy_true_axis": E_TRUE, "safe_mask_methods": ("aeff-max",), "aeff_percent": 10.0}
    return extract_spectrum(obs, *TARGET, 0.12, **{**opts, **kw})


def test_extraction_matches_brute_force(wobble, irfs):
    obs = wobble[0]
    spec = extract(obs)
    ev = obs.events
    reg_lon, reg_lat = np.array(spec.meta["off_regions"][0]).T
    n_regions = spec.meta["n_off_regions"][0]
    assert n_regions == reg_lon.size > 5
    on = angular_separation(ev.ra, ev.dec, *TARGET) < 0.12
    off = (angular_separation(ev.ra[:, None], ev.dec[:, None], reg_lon[None, :], reg_lat[None, :]) < 0.12).any(axis=1)
    np.testing.assert_array_equal(spec.counts, np.histogram(ev.energy[on], E_RECO.edges)[0])
    np.testing.assert_array_equal(spec.counts_off, np.histogram(ev.energy[off], E_RECO.edges)[0])
    np.testing.assert_allclose(spec.alpha, 1.0 / n_regions)
    offset = spec.meta["offset"][0]
    assert offset == pytest.approx(0.7, abs=1e-9)
    et = E_TRUE.center
    expected = irfs["aeff"].evaluate(et, offset) * obs.livetime * irfs["psf"].containment(0.12, et, offset)
    np.testing.assert_allclose(spec.exposure, expected, rtol=1e-12)
    np.testing.assert_allclose(extract(obs, containment_correction=False).exposure, expected / irfs["psf"].containment(0.12, et, offset))
    np.testing.assert_allclose(spec.edisp, irfs["edisp"].kernel(E_TRUE, E_RECO, offset))
    emin, _ = safe_energy_range(obs, ("aeff-max",), offset=offset, aeff_percent=10.0)
    np.testing.assert_array_equal(spec.mask_safe, energy_mask(E_RECO, emin))
    # the background is flat in the FoV ring: OFF counts per circle ~ ON background
    tot = spec.totals()
    assert tot["excess"] > 100 and tot["sqrt_ts"] > 10


def test_closure_fit_recovers_the_injected_spectrum(wobble):
    stacked = stack_spectra([extract(o) for o in wobble])
    model = PowerLawSpectralModel(index=2.0, amplitude=1e-12)
    res = fit_spectrum(stacked, model, fit_range=(0.3, 50.0))
    assert res.success and res.ts > 400
    assert abs(model.index.value - TRUTH["index"]) < 3 * model.index.error
    assert abs(model.amplitude.value - TRUTH["amplitude"]) < 3 * model.amplitude.error
    assert model.amplitude.error / model.amplitude.value < 0.1
    # a joint fit of the four observations gives the same answer within a fraction of sigma
    joint = PowerLawSpectralModel(index=2.0, amplitude=1e-12)
    spectra = [extract(o, name=f"o{i}") for i, o in enumerate(wobble)]
    assert fit_spectrum(spectra, joint, fit_range=(0.3, 50.0)).success
    assert abs(joint.index.value - model.index.value) < 0.3 * model.index.error
    # flux points scatter around the model
    fp = flux_points(stacked, model, energy_edges=np.geomspace(0.3, 30, 5), fit_range=(0.3, 50.0))
    ok = fp["success"] & ~fp["is_ul"]
    assert ok.sum() >= 3
    pull = (fp["norm"][ok] - 1.0) / fp["norm_err"][ok]
    assert np.all(np.abs(pull) < 3.5)
    assert np.all(fp["norm_ul"][ok] > fp["norm"][ok] + fp["norm_errp"][ok])
    np.testing.assert_allclose(fp["dnde"], fp["norm"] * model(fp["e_ref"]))


def synthetic_spectrum(irfs, rng, *, offset=0.5, livetime=3600.0, alpha=0.1, bkg_scale=30.0, model=None) -> OnOffSpectrum:
    """ON/OFF spectrum drawn from known expectations: source through the IRFs, power-law background."""
    exposure = irfs["aeff"].evaluate(E_TRUE.center, offset) * livetime
    edisp = irfs["edisp"].kernel(E_TRUE, E_RECO, offset)
    mask = energy_mask(E_RECO, 0.3, 50.0)
    base = OnOffSpectrum(E_RECO, E_TRUE, np.zeros(E_RECO.nbin), np.zeros(E_RECO.nbin), np.full(E_RECO.nbin, alpha), exposure, edisp, mask)
    model = model or PowerLawSpectralModel(**TRUTH)
    mu_sig = base.npred_signal(model.integral(E_TRUE.lo, E_TRUE.hi))
    mu_off = bkg_scale * (E_RECO.center / 0.3) ** -1.7 / alpha * np.diff(np.log(E_RECO.edges))
    counts = rng.poisson(mu_sig + alpha * mu_off).astype(float)
    off = rng.poisson(mu_off).astype(float)
    return OnOffSpectrum(E_RECO, E_TRUE, counts, off, base.alpha, exposure, edisp, mask, livetime=livetime, name="syn")


def test_pulls_over_realisations(irfs):
    rng = np.random.default_rng(42)
    pulls = {"index": [], "amplitude": []}
    for _ in range(60):
        spec = synthetic_spectrum(irfs, rng, livetime=900.0)
        model = PowerLawSpectralModel(index=2.0, amplitude=1e-12)
        res = fit_spectrum(spec, model)
        assert res.success
        for name in pulls:
            p = getattr(model, name)
            pulls[name].append((p.value - TRUTH[name]) / p.error)
    for name, values in pulls.items():
        v = np.array(values)
        assert abs(v.mean()) < 0.4, name
        assert 0.7 < v.std() < 1.35, name


def test_curved_model_and_joint_fit_class(irfs):
    truth = LogParabolaSpectralModel(amplitude=3e-11, reference=1.0, alpha=2.2, beta=0.15)
    spec = synthetic_spectrum(irfs, np.random.default_rng(7), livetime=20 * 3600.0, model=truth)
    model = LogParabolaSpectralModel(amplitude=1e-12, reference=1.0, alpha=2.5, beta=0.05)
    res = fit_spectrum(spec, model)
    assert res.success
    assert abs(model.beta.value - 0.15) < 3 * model.beta.error
    assert set(res.names) == {"amplitude", "alpha", "beta"} and res.covariance.shape == (3, 3)
    # the engine's TS of the source equals the null-hypothesis difference
    fitter = SpectrumFit(spec, res.models)
    assert fitter.ts(res.models[0].name) == pytest.approx(res.ts, rel=1e-3)


def test_stacking_rules(wobble, irfs):
    spectra = [extract(o) for o in wobble]
    # a different safe range per observation, and one observation unusable (no OFF circle)
    spectra[1] = extract(wobble[1], aeff_percent=40.0)
    spectra[3] = extract(observation(irfs, 103, TARGET, None))
    assert not spectra[3].mask_safe.any()
    st = stack_spectra(spectra)
    m = np.array([s.mask_safe for s in spectra])
    np.testing.assert_array_equal(st.counts, sum(s.counts * k for s, k in zip(spectra, m, strict=True)))
    np.testing.assert_array_equal(st.counts_off, sum(s.counts_off * k for s, k in zip(spectra, m, strict=True)))
    bkg = sum(s.alpha * s.counts_off * k for s, k in zip(spectra, m, strict=True))
    has_off = st.counts_off > 0
    np.testing.assert_allclose(st.background[has_off], bkg[has_off])
    np.testing.assert_array_equal(st.mask_safe, m.any(axis=0))
    assert st.meta["obs_ids"] == [100, 101, 102] and st.meta["obs_ids_unused"] == [103]
    assert st.livetime == pytest.approx(3 * 1800.0)
    # the stacked prediction is the sum of the predictions inside each safe mask
    flux = PowerLawSpectralModel(**TRUTH).integral(E_TRUE.lo, E_TRUE.hi)
    np.testing.assert_allclose(st.npred_signal(flux), sum(s.npred_signal(flux) * s.mask_safe for s in spectra), rtol=1e-10)
    with pytest.raises(ValueError, match="at least one"):
        stack_spectra([])
    other = OnOffSpectrum(E_RECO.squash(), E_TRUE, [0], [0], [1], spectra[0].exposure, spectra[0].edisp[:, :1], [True])
    with pytest.raises(ValueError, match="energy axes"):
        stack_spectra([spectra[0], other])


def test_empty_and_zero_count_cases(irfs, wobble):
    # an observation without events
    empty = extract(observation(irfs, 7, wobble[0].pointing, None))
    assert empty.counts.sum() == 0 and empty.counts_off.sum() == 0 and empty.mask_safe.any()
    tot = empty.totals()
    assert tot["counts"] == 0 and tot["sqrt_ts"] == 0.0
    res = fit_spectrum(empty, PowerLawSpectralModel())  # must not raise
    assert np.isfinite(res.fit.total_stat)
    fp = flux_points(empty, PowerLawSpectralModel(), energy_edges=[1.0, 10.0])
    assert fp["e_ref"].size == 1 and fp["is_ul"].all()
    # pointing on the target: no OFF circle, nothing safe, nothing stacked
    on_target = extract(observation(irfs, 8, TARGET, None))
    assert on_target.meta["n_off_regions"] == [0] and not on_target.mask_safe.any()
    st = stack_spectra([on_target])
    assert not st.mask_safe.any() and st.livetime == 0 and math.isnan(st.totals()["alpha"])
    # flux points with no safe bin in range: NaN, not fitted
    fp = flux_points(extract(wobble[0]), PowerLawSpectralModel(), energy_edges=[0.1, 0.12])
    assert not fp["success"].any() and np.isnan(fp["norm"]).all()


def test_snap_edges_and_errors(wobble):
    np.testing.assert_allclose(snap_edges(E_RECO, [1.0, 1.05, 10.0]), E_RECO.edges[[8, 16]])
    with pytest.raises(ValueError, match="events and the aeff"):
        extract(Observation(1, (0.0, 0.0), GTI(np.zeros(1), np.ones(1), 0.0), 1.0))
    with pytest.raises(ValueError, match="event_offsets"):
        extract(wobble[0], event_offsets=np.zeros(3))
    ev = wobble[0].events
    given = extract(wobble[0], event_offsets=angular_separation(ev.ra, ev.dec, *wobble[0].pointing))
    np.testing.assert_array_equal(given.counts_off, extract(wobble[0]).counts_off)
    with pytest.raises(ValueError, match="unknown safe-mask"):
        extract(wobble[0], safe_mask_methods=("offset-max",))
    with pytest.raises(ValueError, match="counts has shape"):
        OnOffSpectrum(E_RECO, E_TRUE, [1.0], [1.0], [1.0], np.ones(E_TRUE.nbin), np.ones((E_TRUE.nbin, E_RECO.nbin)), np.ones(E_RECO.nbin))
    with pytest.raises(ValueError, match="names must be unique"):
        SpectrumFit([extract(wobble[0]), extract(wobble[0])], Models([]))
