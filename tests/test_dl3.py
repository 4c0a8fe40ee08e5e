"""GADF DL3 data store: index tables, loading, selection, error messages."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _dl3_fake import MJDREF, write_store
from astropy.io import fits

from gpscat.core.fov import fov_overlaps_geom
from gpscat.core.geom import WcsGeom
from gpscat.io.dl3 import DataStore, DL3Error, parse_time

OBS = [(1, 266.4, -28.9), (2, 268.0, -29.5), (3, 83.6, 22.0)]


@pytest.fixture
def store_dir(tmp_path):
    return write_store(tmp_path / "store", OBS, n_events=500, seed=4)


def test_load_observation(store_dir):
    ds = DataStore.from_dir(store_dir)
    assert list(ds.obs_ids) == [1, 2, 3]
    obs = ds.load(2)
    assert obs.pointing == pytest.approx((268.0, -29.5))
    assert obs.ontime == pytest.approx(1800.0)
    assert obs.livetime == pytest.approx(0.95 * 1800.0)
    assert len(obs.events) == 500 and obs.events.mc_id is not None
    assert obs.events.energy.dtype == float and obs.events.energy.min() >= 0.05
    assert obs.safe_energy_range == (0.1, 100.0)  # from AEFF LO_THRES/HI_THRES
    assert obs.aeff is ds.load(1).aeff  # the shared IRF file is read once
    loc = ds.location(1, "aeff")
    assert loc.path.parent.name == "caldb" and loc.hdu_name == "EFFECTIVE AREA"
    events_only = ds.load(3, irfs=())
    assert events_only.aeff is None and events_only.events is not None


def test_select(store_dir):
    ds = DataStore.from_dir(store_dir)
    assert ds.select(obs_ids=[3, 1]) == [1, 3]
    assert ds.select(exclude_ids=[2]) == [1, 3]
    assert ds.select(cone=(0.0, 0.0, 3.0, "galactic")) == [1, 2]
    t0 = MJDREF + (1e8 + 3600.0) / 86400.0
    assert ds.select(time_range=(t0 - 1e-3, t0 + 1e-3)) == [2]
    gc = WcsGeom.create((0, 0), (2, 2), 0.05)
    assert ds.select(geom=gc, offset_max=2.5) == [1, 2]
    assert ds.select(geom=gc, offset_max=0.1) == [1]
    with pytest.raises(DL3Error, match=r"\[7\] are not in the obs-index"):
        ds.select(obs_ids=[7])
    assert parse_time("51544.5") == 51544.5
    assert parse_time("2000-01-01T12:00:00") == pytest.approx(51544.5 + 64.184 / 86400, abs=1e-6)


def test_fov_overlap_outside_map():
    geom = WcsGeom.create((0, 0), (4, 2), 0.1)  # |l| < 2, |b| < 1
    from gpscat.core.geom import to_frame

    ra, dec = to_frame([0.0, 3.0, 0.0, 3.0], [0.0, 0.0, 3.4, 2.5], "galactic", "icrs")
    # inside; 1 deg from the edge; 2.4 deg above; ~1.8 deg from the corner
    assert list(fov_overlaps_geom(geom, ra, dec, 2.0)) == [True, True, False, True]


def test_missing_event_file(store_dir):
    ds = DataStore.from_dir(store_dir)
    ds.location(1, "events").path.unlink()
    with pytest.raises(DL3Error, match=r"obs 1: events file .*events_000001.fits.gz not found"):
        ds.load(1)


def test_missing_irf_hdu(store_dir):
    ds = DataStore.from_dir(store_dir)
    path = ds.location(1, "psf").path
    with fits.open(path) as hl:
        keep = fits.HDUList([h.copy() for h in hl if h.name != "POINT SPREAD FUNCTION"])
    keep.writeto(path, overwrite=True)
    with pytest.raises(DL3Error, match=r"obs 1: file .*irf.fits has no HDU 'POINT SPREAD FUNCTION' \(psf IRF\); it has \['PRIMARY', 'EFFECTIVE AREA'"):
        ds.load(1)


def test_corrupt_fits(store_dir):
    ds = DataStore.from_dir(store_dir)
    path = ds.location(2, "events").path
    path.write_bytes(b"this is not a FITS file" * 100)
    with pytest.raises(DL3Error, match=r"obs 2: cannot read events file .*events_000002.fits.gz"):
        ds.load(2)


def test_missing_event_column_and_unknown_obs(store_dir, tmp_path):
    ds = DataStore.from_dir(store_dir)
    path = ds.location(3, "events").path
    with fits.open(path) as hl:
        ev = hl["EVENTS"]
        cols = [c for c in ev.columns if c.name != "ENERGY"]
        new = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, header=ev.header, name="EVENTS"), hl["GTI"].copy()])
    new.writeto(path, overwrite=True)
    with pytest.raises(DL3Error, match=r"obs 3: file .* HDU 'EVENTS': missing column\(s\) \['ENERGY'\]"):
        ds.load_events(3)
    with pytest.raises(DL3Error, match="obs 9: no 'events' entry"):
        ds.load_events(9)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DL3Error, match="no obs-index"):
        DataStore.from_dir(empty)


def test_uncompressed_store(tmp_path):
    index = write_store(tmp_path / "plain", OBS[:1], n_events=10, gzip=False)
    shutil.move(index / "obs-index.fits.gz", index / "obs-index.fits")
    ds = DataStore.from_dir(index)
    assert len(ds.load(1).events) == 10


@pytest.mark.realdata
def test_cta_1dc_store(shared_data):
    ds = DataStore.from_dir(shared_data / "cta-1dc/index/gps")
    obs = ds.load(110380)
    assert len(obs.events) == 106217
    assert obs.livetime == pytest.approx(1764.0, rel=1e-6)
    assert obs.pointing == pytest.approx((267.68121338, -29.6075))
    geom = WcsGeom.create((0, 0), (8, 6), 0.02)
    assert ds.select(geom=geom, offset_max=2.5) == [110380, 111140, 111159]


@pytest.mark.realdata
def test_hess_dr1_store(shared_data):
    ds = DataStore.from_dir(shared_data / "hess-dl3-dr1")
    ids = ds.select(cone=(228.32, -59.08, 2.5, "icrs"))
    assert len(ids) == 20 and 20136 in ids
    obs = ds.load(20136)
    assert obs.livetime == pytest.approx(1521.03, rel=1e-4)
    assert np.all(np.isfinite(obs.events.ra))


def test_legacy_hess_background_alignment(store_dir):
    ds = DataStore.from_dir(store_dir)
    path = ds.location(1, "events").path
    with fits.open(path) as hl:
        hl = fits.HDUList([h.copy() for h in hl])
    hl["EVENTS"].header["CREATOR"] = "SASH FITS::EventListWriter"
    hl["EVENTS"].header["HDUVERS"] = "0.2"
    hl.writeto(path, overwrite=True)
    assert ds.load(1).bkg.fov_alignment == "REVERSE_LON_RADEC"
    assert ds.load(1, events=False).bkg.fov_alignment == "REVERSE_LON_RADEC"
    assert ds.load(2).bkg.fov_alignment == "RADEC"


@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_corrupt_irf_file(store_dir):
    ds = DataStore.from_dir(store_dir)
    ds.location(1, "aeff").path.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    with pytest.raises(DL3Error, match=r"obs 1: cannot read aeff IRF file .*irf.fits \(HDU 'EFFECTIVE AREA'\)"):
        ds.load(1)
