"""Per-observation reduction: pure functions (gpscat.core.reduce) and the stage."""

from __future__ import annotations

import numpy as np
import pytest
from _dl3_fake import make_irfs, write_store

from gpscat.config import Config, validate_config
from gpscat.core import reduce as R
from gpscat.core.fov import altaz_rotations, fov_normalise, fov_to_sky, rotate_fov, sky_to_fov
from gpscat.core.geom import MapAxis, WcsGeom, angular_separation, to_frame
from gpscat.core.irf import Background3D
from gpscat.io.dataset import read_dataset
from gpscat.io.dl3 import DataStore, DL3Error
from gpscat.stages import reduce as SR

E_AXIS = MapAxis.from_energy_bounds(0.1, 10, nbin=4)
ET_AXIS = MapAxis.from_energy_bounds(0.05, 20, nbin=8, name="energy_true")
PNT = (266.4, -28.9)  # RA, Dec: close to the Galactic centre


@pytest.fixture(scope="module")
def irfs():
    return make_irfs()


@pytest.fixture(scope="module")
def geom():
    lon, lat = to_frame(*PNT, "icrs", "galactic")
    return WcsGeom.create((float(lon), float(lat)), 6.0, 0.05)


def test_fov_frame_convention_and_inverse():
    lon, lat = sky_to_fov(np.array([101.0, 100.0]), np.array([20.0, 21.0]), 100.0, 20.0)
    assert lon[0] == pytest.approx(-0.93969, abs=1e-4)  # east (larger RA) is negative fov_lon
    assert lat[1] == pytest.approx(1.0) and lon[1] == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    fl, fb = rng.uniform(-4, 4, 100), rng.uniform(-4, 4, 100)
    ra, dec = fov_to_sky(fl, fb, 30.0, -60.0)
    assert np.allclose(sky_to_fov(ra, dec, 30.0, -60.0), (fl, fb), atol=1e-9)
    assert np.allclose(sky_to_fov(ra, dec, 30.0, -60.0, alignment="REVERSE_LON_RADEC")[0], -fl, atol=1e-9)
    with pytest.raises(ValueError, match="altaz_rotations"):
        sky_to_fov(ra, dec, 30.0, -60.0, alignment="ALTAZ")


def test_altaz_rotations_are_orthogonal_and_slow(irfs, geom):
    w, m = altaz_rotations(PNT, location=(16.5, -23.27, 1835.0), mjd_start=58000.9, duration=1800.0)
    assert w.sum() == pytest.approx(1.0) and len(w) >= 2
    assert np.allclose(m @ np.swapaxes(m, 1, 2), np.eye(2), atol=1e-3)  # aberration: ~2e-4
    # successive nodes differ by at most ~1 degree of FoV rotation
    angle = np.degrees(np.unwrap(np.arctan2(m[:, 1, 0], m[:, 0, 0])))
    assert np.all(np.abs(np.diff(angle)) <= 1.05)
    fl, fb = np.array([0.5, -1.0]), np.array([1.0, 0.3])
    back = rotate_fov(*rotate_fov(fl, fb, m[0]), m[0].T)
    assert np.allclose(back, (fl, fb), atol=1e-3)
    bkg = irfs["bkg"]
    altaz_bkg = Background3D(bkg.energy, bkg.fov_lon, bkg.fov_lat, bkg.data, "ALTAZ")
    with pytest.raises(ValueError, match="ALTAZ-aligned BKG_3D needs altaz"):
        R.make_background(altaz_bkg, geom, E_AXIS, pointing=PNT, ontime=10.0)
    # the test table is radially symmetric: any rotation gives the RADEC map (up to the
    # bilinear interpolation on its 0.5 deg grid, which is not rotation invariant)
    b = R.make_background(altaz_bkg, geom, E_AXIS, pointing=PNT, ontime=10.0, altaz=(w, m))
    assert np.allclose(b, R.make_background(bkg, geom, E_AXIS, pointing=PNT, ontime=10.0), rtol=1e-2)


def test_make_counts_bins_events(geom):
    x = np.array([10, 10, 30, 59, 0])
    y = np.array([20, 20, 40, 0, 119])
    lon, lat = geom.pix_to_coord(x, y)
    ra, dec = to_frame(lon, lat, "galactic", "icrs")
    energy = np.array([0.15, 0.15, 5.0, 50.0, 1.0])  # the 50 TeV event is outside the axis
    ra = np.append(ra, PNT[0] + 10)  # far outside the map
    dec = np.append(dec, PNT[1])
    energy = np.append(energy, 1.0)
    c = R.make_counts(ra, dec, energy, geom, E_AXIS)
    assert c.shape == (4, 120, 120) and c.sum() == 4
    assert c[0, 20, 10] == 2 and c[3, 40, 30] == 1 and c[2, 119, 0] == 1


def test_make_exposure_is_aeff_times_livetime(geom, irfs):
    off = R.pixel_offsets(geom, PNT)
    x = R.make_exposure(irfs["aeff"], geom, ET_AXIS, pointing=PNT, livetime=1000.0)
    assert x.shape == (8, *geom.shape)
    iy, ix = np.unravel_index(np.argmin(off), off.shape)
    assert x[:, iy, ix] == pytest.approx(irfs["aeff"].evaluate(ET_AXIS.center, off[iy, ix]) * 1000.0)
    with pytest.raises(ValueError, match="livetime"):
        R.make_exposure(irfs["aeff"], geom, ET_AXIS, pointing=PNT, livetime=-1.0)


def test_make_background_total_and_orientation(irfs):
    bkg = irfs["bkg"]
    wide = WcsGeom.create(PNT, 10.0, 0.05, frame="icrs", proj="TAN")
    b = R.make_background(bkg, wide, E_AXIS, pointing=PNT, ontime=100.0, fill_missing=False)
    # rate ∝ exp(-r²/2σ²), σ = 2.5°: ∫ dΩ ≈ 2πσ² (flat sky, truncated at the 6° table edge)
    sigma = np.radians(2.5)
    spatial = 2 * np.pi * sigma**2 * (1 - np.exp(-0.5 * (np.radians(5.0) / sigma) ** 2))
    rate0 = bkg.integrate(E_AXIS.edges, 0.0, 0.0)
    # the map is a 10° box: compare the disc of 5° radius
    inside = R.pixel_offsets(wide, PNT) < 5.0
    assert b[:, inside].sum(axis=1) == pytest.approx(rate0 * spatial * 100.0, rel=0.02)
    # an asymmetric table: brighter at positive fov_lon = west = smaller RA
    data = bkg.data * np.where(bkg.fov_lon.center > 0, 2.0, 1.0)[None, :, None]
    asym = Background3D(bkg.energy, bkg.fov_lon, bkg.fov_lat, data, "RADEC")
    b2 = R.make_background(asym, wide, E_AXIS, pointing=PNT, ontime=100.0).sum(axis=0)
    west = wide.coord_to_idx(PNT[0] - 1.0, PNT[1])
    east = wide.coord_to_idx(PNT[0] + 1.0, PNT[1])
    assert b2[west[1], west[0]] == pytest.approx(2 * b2[east[1], east[0]], rel=0.02)


def test_make_psf_normalised_and_edisp_kernel(geom, irfs):
    rad = MapAxis("rad", np.linspace(0, 0.66, 67), "deg", "lin")
    coarse = WcsGeom.create(geom.center_coord, 6.0, 0.5)
    p = R.make_psf(irfs["psf"], coarse, ET_AXIS, rad, pointing=PNT)
    assert p.shape == (8, 66, 12, 12)
    jac = 2 * np.pi * np.radians(rad.center) * np.radians(rad.width)
    assert np.allclose((p * jac[None, :, None, None]).sum(axis=1), 1.0)
    k = R.make_edisp_kernel(irfs["edisp"], coarse, MapAxis.from_energy_bounds(0.01, 100, nbin=20), ET_AXIS, pointing=PNT)
    assert k.shape == (8, 20, 12, 12) and np.allclose(k.sum(axis=1), 1.0, atol=1e-6)


def test_safe_energy_thresholds(irfs):
    assert list(R.energy_mask(E_AXIS, 0.3, 5.0)) == [False, True, True, False]
    assert list(R.energy_mask(E_AXIS, 0.1, None)) == [True] * 4
    aeff = irfs["aeff"]
    emin = R.aeff_max_threshold(aeff, percent=10, offset=0.0)
    e = aeff.energy_true.edges
    v = aeff.evaluate(e, 0.0)
    assert v[e == emin] > 0.1 * v.max() and np.all(v[e < emin] <= 0.1 * v.max())
    bias_e = R.edisp_bias_threshold(irfs["edisp"], percent=1, offset=0.0)
    assert 0.02 <= bias_e < 1.0
    spec = np.array([1.0, 5.0, 3.0, 0.5])[:, None, None] * np.ones((4, 2, 2))
    assert R.bkg_peak_threshold(spec, E_AXIS) == pytest.approx(E_AXIS.lo[1])
    with pytest.raises(ValueError, match="unknown safe-mask method"):
        R.check_safe_mask_methods(["offset-max", "aeff-min"])


def test_fov_normalise_norm_and_tilt():
    rng = np.random.default_rng(2)
    energy = np.array([0.2, 0.6, 2.0, 6.0])
    bkg = np.ones((4, 30, 30)) * np.array([50.0, 20.0, 5.0, 1.0])[:, None, None]
    truth = 1.3 * bkg * (energy / 1.0)[:, None, None] ** -0.2
    counts = rng.poisson(truth).astype(float)
    mask = np.ones(counts.shape, bool)
    mask[:, :5] = False
    fit = fov_normalise(counts, bkg, mask)
    assert fit.valid and fit.norm == pytest.approx(counts[mask].sum() / bkg[mask].sum())
    tilted = fov_normalise(counts, bkg, mask, tilt=True, energy=energy)
    assert tilted.tilt == pytest.approx(0.2, abs=0.05) and tilted.norm == pytest.approx(1.3, rel=0.05)
    low = fov_normalise(np.zeros((4, 2, 2)), bkg[:, :2, :2])
    assert not low.valid and low.norm == 1.0


# ------------------------------------------------------------------------ stage


def _config(store_dir, **dataset):
    raw = {
        "data": {"store": str(store_dir)},
        "survey": {"center": ["0 deg", "0 deg"], "width": ["6 deg", "4 deg"]},
        "datasets": [{"name": "all", "binsz": "0.05 deg", "energy": {"min": "0.1 TeV", "max": "10 TeV", "nbins": 4},
                      "energy_true": {"min": "0.05 TeV", "max": "20 TeV", "nbins": 8}, "offset_max": "2 deg",
                      "psf": {"binsz": "0.5 deg"}, **dataset}],
    }
    return Config(validate_config(raw))


@pytest.fixture
def store_dir(tmp_path):
    return write_store(tmp_path / "store", [(1, 266.4, -28.9), (2, 268.0, -29.5), (3, 83.6, 22.0)], n_events=3000, seed=9)


def test_reduce_observation_counts_match_direct_selection(store_dir, tmp_path):
    cfg = _config(store_dir, safe_mask={"methods": ["offset-max", "aeff-default"]})
    assert SR.select_observations(cfg) == [1, 2]
    out = tmp_path / "1.fits"
    SR.run(cfg, dataset="all", obs_id=1, output=out)
    ds = read_dataset(out)
    obs = DataStore.from_dir(store_dir).load(1)
    ev = obs.events
    lon, lat = to_frame(ev.ra, ev.dec, "icrs", "galactic")
    survey = cfg.survey.geom(0.05)
    ix, iy, inside = survey.coord_to_idx(lon, lat)
    # the event's pixel centre within offset_max, energy in the safe bins (0.1-10 TeV, LO_THRES 0.1)
    pix_lon, pix_lat = survey.pix_to_coord(ix, iy)
    ra_c, dec_c = to_frame(pix_lon, pix_lat, "galactic", "icrs")
    sel = inside & (angular_separation(ra_c, dec_c, *obs.pointing) < 2.0) & (ev.energy >= 0.1) & (ev.energy < 10)
    assert ds.counts.data[ds.mask_safe.data].sum() == sel.sum()
    assert ds.meta["obs_id"] == 1 and ds.meta["livetime"] == pytest.approx(0.95 * 1800)
    assert ds.psf.data.shape[:2] == (8, 66) and ds.edisp.data.shape[:2] == (8, 4)
    assert ds.geom.is_aligned(survey) and ds.geom.width[0] >= 2 * 2.0


def test_zero_events_in_safe_range(store_dir, tmp_path):
    cfg = _config(store_dir, energy={"min": "50 TeV", "max": "100 TeV", "nbins": 1}, energy_true={"min": "40 TeV", "max": "150 TeV", "nbins": 2})
    cfg_strict = Config(validate_config({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "skip_bad_observations": False}}))
    with pytest.raises(DL3Error, match=r"obs 1 \(.*events_000001.fits.gz\): no events in the safe range"):
        SR.run(cfg_strict, dataset="all", obs_id=1, output=tmp_path / "x.fits")
    ds = SR.run(cfg, dataset="all", obs_id=1, output=tmp_path / "skip.fits")
    back = read_dataset(tmp_path / "skip.fits")
    assert ds.meta["skipped"] and back.meta["skipped"] and "no events" in back.meta["reason"]
    assert not back.mask_safe.data.any() and back.geom.npix == (1, 1)


def test_missing_file_is_skipped_with_reason(store_dir, tmp_path):
    cfg = _config(store_dir)
    DataStore.from_dir(store_dir).location(2, "events").path.unlink()
    ds = SR.run(cfg, dataset="all", obs_id=2, output=tmp_path / "2.fits")
    assert ds.meta["skipped"] and "events file" in ds.meta["reason"] and "not found" in ds.meta["reason"]
