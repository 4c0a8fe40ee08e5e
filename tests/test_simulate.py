"""Simulated surveys: DL3 store layout, determinism, truth, and closure through the reduction."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from gpscat.cli import main as cli_main
from gpscat.config import ConfigError, load_config
from gpscat.core.convolve import disk_kernel
from gpscat.core.geom import MapAxis, WcsGeom
from gpscat.core.npred import DatasetEvaluator
from gpscat.core.reduce import make_counts, pixel_offsets
from gpscat.core.significance import cash_maps
from gpscat.io.dl3 import DataStore
from gpscat.io.models_yaml import read_models
from gpscat.io.simulation import TRUTH_COLUMNS, read_truth
from gpscat.stages.reduce import reduce_observation
from gpscat.stages.simulate import events_path, load_models, run_obs, simulate_survey

MODELS = """
components:
- name: pt
  type: SkyModel
  spectral: {type: PowerLawSpectralModel, parameters: [{name: index, value: 2.4}, {name: amplitude, value: 3.0e-12, unit: cm-2 s-1 TeV-1}, {name: reference, value: 1, unit: TeV}]}
  spatial: {type: PointSpatialModel, frame: galactic, parameters: [{name: lon_0, value: -0.6, unit: deg}, {name: lat_0, value: 0.3, unit: deg}]}
- name: gauss
  type: SkyModel
  spectral: {type: LogParabolaSpectralModel, parameters: [{name: amplitude, value: 4.0e-12, unit: cm-2 s-1 TeV-1}, {name: reference, value: 1, unit: TeV}, {name: alpha, value: 2.3}, {name: beta, value: 0.1}]}
  spatial: {type: GaussianSpatialModel, frame: galactic, parameters: [{name: lon_0, value: 0.5, unit: deg}, {name: lat_0, value: -0.3, unit: deg}, {name: sigma, value: 0.2, unit: deg}, {name: e, value: 0}, {name: phi, value: 0, unit: deg}]}
- name: shell
  type: SkyModel
  spectral: {type: ExpCutoffPowerLawSpectralModel, parameters: [{name: index, value: 2.0}, {name: amplitude, value: 3.0e-12, unit: cm-2 s-1 TeV-1}, {name: reference, value: 1, unit: TeV}, {name: lambda_, value: 0.05, unit: TeV-1}, {name: alpha, value: 1}]}
  spatial: {type: ShellSpatialModel, frame: galactic, parameters: [{name: lon_0, value: 0.2, unit: deg}, {name: lat_0, value: 0.6, unit: deg}, {name: radius, value: 0.3, unit: deg}, {name: width, value: 0.1, unit: deg}]}
"""
TWO_POINTINGS = {"list": [["-0.5 deg", "0 deg"], ["0.5 deg", "0 deg"]]}


@pytest.fixture(scope="module")
def models_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "models.yaml"
    path.write_text(MODELS)
    return path


@pytest.fixture(scope="module")
def survey(models_file, tmp_path_factory):
    cfg = {"simulation": {"models": str(models_file), "pointings": TWO_POINTINGS, "energy": ["0.01 TeV", "1000 TeV"], "truth": {"n_mc": 500}}}
    return simulate_survey(cfg, tmp_path_factory.mktemp("store"), seed=1)


def test_store_layout_and_headers(survey):
    store = survey.store
    for name in ("irf.fits", "obs-index.fits.gz", "hdu-index.fits.gz", "truth/truth.fits", "truth/models.yaml"):
        assert (store / name).is_file(), name
    assert survey.obs_ids == [1, 2]
    ds = DataStore.from_dir(store)
    assert list(ds.obs_ids) == [1, 2]
    obs = ds.load(1)
    assert set(np.unique(obs.events.mc_id)) == {0, 1, 2, 3}
    assert obs.livetime == pytest.approx(1800.0) and obs.ontime == pytest.approx(1800.0 / 0.98)
    assert obs.aeff is not None and obs.psf is not None and obs.edisp is not None and obs.bkg is not None
    with fits.open(events_path(store, 1)) as hl:
        h = hl["EVENTS"].header
        for key in ("OBS_ID", "RA_PNT", "DEC_PNT", "LIVETIME", "ONTIME", "DEADC", "TSTART", "TSTOP", "MJDREFI", "MJDREFF", "DATE-OBS", "TIME-OBS", "HDUCLASS", "HDUCLAS1"):
            assert key in h, key
        assert "DATE" not in h and "CHECKSUM" not in h
        assert h["MMN00001"] == "pt" and h["MID00003"] == 3
        assert list(hl["EVENTS"].columns.names) == ["EVENT_ID", "TIME", "RA", "DEC", "ENERGY", "MC_ID"]
        t = hl["EVENTS"].data["TIME"]
        assert np.all(np.diff(t) >= 0) and t[0] >= h["TSTART"] and t[-1] <= h["TSTOP"]
        assert h["TSTOP"] - h["TSTART"] == pytest.approx(h["ONTIME"])
    # observation 2 starts after observation 1
    assert ds.obs_info(2)["TSTART"] > ds.obs_info(1)["TSTOP"]


def test_truth_table(survey, models_file):
    t = read_truth(survey.store / "truth" / "truth.fits")
    assert t.colnames == list(TRUTH_COLUMNS)
    assert t.meta["bands"] == [(0.1, 1.0), (1.0, 100.0)]
    assert list(t["Name"]) == ["pt", "gauss", "shell"] and list(t["MC_ID"]) == [1, 2, 3]
    assert list(t["Spatial_Model"]) == ["PointSpatialModel", "GaussianSpatialModel", "ShellSpatialModel"]
    assert t["Size"][1] == pytest.approx(0.2) and t["Size"][2] == pytest.approx(0.3) and t["Shell_Width"][2] == pytest.approx(0.1)
    assert t["R68_Model"][0] == 0 and t["R68_Model"][1] == pytest.approx(0.2 * 1.51, rel=0.03)
    assert t["GLON"][0] == pytest.approx(359.4) and t["GLAT"][0] == pytest.approx(0.3)
    assert t["Flux_1_100TeV"][0] == pytest.approx(3e-12 / 1.4 * (1 - 100**-1.4), rel=1e-6)
    assert np.all(t["N_Obs"] == 2) and np.all(t["Sqrt_TS"] > 10)
    # the truth's expected counts are what was simulated (all energies kept in this survey)
    ds = DataStore.from_dir(survey.store)
    mc = np.concatenate([ds.load_events(i).mc_id for i in survey.obs_ids])
    for row in t:
        n = np.sum(mc == row["MC_ID"])
        assert n == pytest.approx(row["Npred"], abs=4 * np.sqrt(row["Npred"]) + 0.01 * row["Npred"]), row["Name"]
    # the injected models round-trip in gammapy's format
    assert read_models(survey.store / "truth" / "models.yaml").names == ["pt", "gauss", "shell"]


def test_same_seed_byte_identical(survey, tmp_path):
    cfg = survey.config
    irf = survey.store / "irf.fits"
    run_obs(cfg, obs_id=2, irf=irf, output=tmp_path / "a.fits")
    assert (tmp_path / "a.fits").read_bytes() == events_path(survey.store, 2).read_bytes()
    other = load_config(overrides={**cfg.to_dict(), "simulation": {**cfg.to_dict()["simulation"], "seed": 2}})
    run_obs(other, obs_id=2, irf=irf, output=tmp_path / "b.fits")
    assert (tmp_path / "b.fits").read_bytes() != (tmp_path / "a.fits").read_bytes()
    with pytest.raises(ValueError, match="obs_id 7"):
        run_obs(cfg, obs_id=7, irf=irf, output=tmp_path / "c.fits")


def _reduce(obs, geom, *, offset_max=2.5):
    eax = MapAxis.from_energy_bounds(0.1, 100, per_decade=4, name="energy")
    etax = MapAxis.from_energy_bounds(0.05, 200, per_decade=8, name="energy_true")
    irf_geom = WcsGeom.create(geom.center_coord, (geom.width[0] + 1, geom.width[1] + 1), 0.5, frame=geom.frame)
    rad = MapAxis("rad", np.linspace(0, 0.66, 67), "deg", "lin")
    return reduce_observation(obs, geom=geom, energy_axis=eax, energy_true_axis=etax, irf_geom=irf_geom, rad_axis=rad, offset_max=offset_max)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_closure_counts_match_predicted(models_file, tmp_path, seed):
    """simulate → reduce → counts around each source = npred (gpscat.core.npred) within Poisson errors."""
    cfg = {"simulation": {"models": str(models_file), "pointings": TWO_POINTINGS, "energy": ["0.1 TeV", "100 TeV"]}}
    s = simulate_survey(cfg, tmp_path, seed=seed, truth=False)
    store = DataStore.from_dir(s.store)
    models = list(read_models(models_file))
    geom = WcsGeom.create((0, 0), (4, 3), 0.02, frame="galactic")
    n_src = {m.name: 0.0 for m in models}
    mu_src = dict.fromkeys(n_src, 0.0)
    n_tot, mu_tot = dict(n_src), dict(n_src)
    for oid in s.obs_ids:
        obs = store.load(oid)
        ds = _reduce(obs, geom)
        ev = DatasetEvaluator(ds, models)
        total = ev.npred()
        for i, m in enumerate(models, start=1):
            sel = obs.events.mc_id == i
            counts_i = make_counts(obs.events.ra[sel], obs.events.dec[sel], obs.events.energy[sel], geom, ds.energy_axis)
            region = (geom.separation(*m.spatial_model.position_in("galactic")) < 0.6)[None] & ds.mask_safe.data
            n_src[m.name] += counts_i[region].sum()
            mu_src[m.name] += ev.npred_source(m)[region].sum()
            n_tot[m.name] += ds.counts.data[region].sum()
            mu_tot[m.name] += total[region].sum()
    for name in n_src:
        assert abs(n_src[name] - mu_src[name]) < 3.5 * np.sqrt(mu_src[name]), (name, n_src[name], mu_src[name])
        assert abs(n_tot[name] - mu_tot[name]) < 3.5 * np.sqrt(mu_tot[name]), (name, n_tot[name], mu_tot[name])


def test_background_only_significance_is_standard_normal(tmp_path):
    """8 independent 2 h background-only pointings: per-pixel (0.15°) and correlated (0.2°, sparse
    independent sample) Cash significances with the IRF background have mean 0 ± 0.05, width 1 ± 0.05."""
    lons = list(range(0, 64, 8))
    cfg = {"simulation": {"models": "", "livetime": "2 h", "pointings": {"list": [[f"{lon} deg", "0 deg"] for lon in lons]}, "energy": ["0.1 TeV", "100 TeV"]}}
    s = simulate_survey(cfg, tmp_path, seed=3, truth=False)
    store = DataStore.from_dir(s.store)
    eax = MapAxis.from_energy_bounds(0.1, 100, nbin=3, name="energy")
    etax = MapAxis.from_energy_bounds(0.05, 200, per_decade=4, name="energy_true")
    pixel, correlated = [], []
    for oid, lon in zip(s.obs_ids, lons, strict=True):
        obs = store.load(oid, irfs=("aeff", "bkg"))
        for binsz, radius, step, out in ((0.15, 0.0, 1, pixel), (0.05, 0.2, 8, correlated)):
            geom = WcsGeom.create((lon, 0), 5.1, binsz, frame="galactic")
            ds = reduce_observation(obs, geom=geom, energy_axis=eax, energy_true_axis=etax, offset_max=2.4)
            inside = pixel_offsets(geom, obs.pointing) < 2.4
            kernel = disk_kernel(radius / binsz) if radius else np.ones((1, 1))
            sig = cash_maps(ds.counts.data.sum(0), ds.background.data.sum(0), kernel=kernel, mask=inside)["sqrt_ts"]
            sample = np.zeros(inside.shape, bool)
            sample[::step, ::step] = True
            out.append(sig[sample & (pixel_offsets(geom, obs.pointing) < 2.0)])
    for sig in (np.concatenate(pixel), np.concatenate(correlated)):
        assert sig.size > 500
        assert abs(sig.mean()) < 0.05, sig.mean()
        assert abs(sig.std() - 1) < 0.05, sig.std()


def test_cli_steps(models_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = json.dumps({"data": {"store": "store"}, "simulation": {"enabled": True, "models": str(models_file), "pointings": {"list": [["0 deg", "0 deg"]]}, "truth": {"n_mc": 100}}})
    assert cli_main(["simulate-irf", "--params", params, "--output", "store/irf.fits"]) == 0
    assert cli_main(["simulate-obs", "--params", params, "--obs-id", "1", "--irf", "store/irf.fits", "--output", "store/events/events_1.fits"]) == 0
    assert cli_main(["simulate-index", "--params", params, "--irf", "store/irf.fits", "--obs-index", "store/obs-index.fits.gz", "--hdu-index", "store/hdu-index.fits.gz", "store/events/events_1.fits"]) == 0
    assert cli_main(["simulate-truth", "--params", params, "--irf", "store/irf.fits", "--truth", "store/truth/truth.fits", "--models", "store/truth/models.yaml"]) == 0
    obs = DataStore.from_dir(tmp_path / "store").load(1)
    assert len(obs.events) > 1000
    assert len(read_truth(tmp_path / "store/truth/truth.fits")) == 3
    assert cli_main(["simulate-obs", "--params", params, "--obs-id", "5", "--irf", "store/irf.fits", "--output", "x.fits"]) == 1


def test_demo_models_and_config_errors(tmp_path):
    cfg = load_config(overrides={"simulation": {"enabled": True, "models": "demo"}})
    models = load_models(cfg)
    assert len(models) == 11
    tags = {m.spatial_model.tag[0] for m in models}
    assert {"PointSpatialModel", "GaussianSpatialModel", "ShellSpatialModel", "DiskSpatialModel"} <= tags
    assert {m.spectral_model.tag[0] for m in models} == {"PowerLawSpectralModel", "LogParabolaSpectralModel", "ExpCutoffPowerLawSpectralModel"}
    assert load_models(load_config(overrides={"simulation": {"models": ""}})) == []
    with pytest.raises(ConfigError, match="simulation.models"):
        load_models(load_config(overrides={"simulation": {"models": str(tmp_path / "missing.yaml")}}))


def test_embedded_default_config_is_the_demo():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    assert cfg["simulation"]["enabled"] and cfg["simulation"]["models"] == "demo"
    assert cfg["data"]["store"] == "data/demo"
    assert [p.obs_id for p in cfg.pointings()] == list(range(1, 9))
    assert [d.name for d in cfg.datasets] == ["subTeV", "postTeV"]


@pytest.mark.crosscheck
def test_gammapy_reads_the_store(survey):
    gammapy_data = pytest.importorskip("gammapy.data")
    ds = gammapy_data.DataStore.from_dir(survey.store)
    assert list(ds.obs_table["OBS_ID"]) == [1, 2]
    ours = DataStore.from_dir(survey.store).load(1)
    obs = ds.obs(1)
    assert len(obs.events.table) == len(ours.events)
    assert np.array_equal(np.asarray(obs.events.table["MC_ID"]), ours.events.mc_id)
    assert obs.pointing.fixed_icrs.ra.deg == pytest.approx(ours.pointing[0])
    assert obs.observation_live_time_duration.to_value("s") == pytest.approx(ours.livetime)
    import astropy.units as u

    e = [0.1, 1.0, 10.0] * u.TeV
    assert np.allclose(obs.aeff.evaluate(energy_true=e, offset=1.2 * u.deg).to_value("m2"), ours.aeff.evaluate(e.value, 1.2), rtol=1e-4)
    bkg = obs.bkg.evaluate(energy=e, fov_lon=0.7 * u.deg, fov_lat=-1.1 * u.deg).to_value("s-1 TeV-1 sr-1")
    assert np.allclose(bkg, ours.bkg.evaluate(e.value, 0.7, -1.1), rtol=1e-3)
    r68 = obs.psf.containment_radius(0.68, energy_true=e, offset=1.2 * u.deg).to_value("deg")
    assert np.allclose(r68, ours.psf.containment_radius(0.68, e.value, 1.2), rtol=0.01)  # gammapy: rad grid


@pytest.mark.realdata
def test_simulate_with_prod5_irfs(shared_data, models_file, tmp_path):
    """A real GADF IRF file (CTA prod5 South) is rewritten into the store and simulated with."""
    path = shared_data / "cta-caldb" / "Prod5-South-20deg-AverageAz-14MSTs37SSTs.180000s-v0.1.fits.gz"
    if not path.is_file():
        pytest.skip(f"real-data test: {path} not found")
    cfg = {"simulation": {"irf": str(path), "models": str(models_file), "pointings": {"list": [["0 deg", "0 deg"]]}, "energy": ["0.1 TeV", "100 TeV"]}}
    s = simulate_survey(cfg, tmp_path, seed=4, truth=False)
    obs = DataStore.from_dir(s.store).load(1)
    assert obs.psf.tag == "psf_3gauss" and obs.edisp.migra.nbin == 300
    # prod5's background above 0.1 TeV within 5°: 38.4 Hz (docs/simulation.md), times the ontime
    assert np.sum(obs.events.mc_id == 0) == pytest.approx(38.4 * obs.ontime, rel=0.03)
    assert np.sum(obs.events.mc_id > 0) > 500
