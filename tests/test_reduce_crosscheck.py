"""Cross-check of the reduction and stacking against gammapy 2.1 on CTA 1DC and H.E.S.S. data.

Acceptance (issue 2): the three CTA 1DC Galactic-centre runs with the geometry of
gammapy's "2D map fitting" tutorial (8°×6°, 0.02°, reco 0.1–10 TeV in 1 bin, true
0.5–20 TeV in 16 bins, offset-max 2.5°, FoV background, stacked).

gammapy integrates the background rate over a reco bin with one log-log trapezoid
between the bin edges; over the tutorial's single 2-decade bin that is off by up to
+10 % at the centre of the field of view and −2 % at 2.4° (our exact integral agrees
with a 20001-point quadrature to 1e-4, see test_irf.py).  The pixel-by-pixel background
comparison is therefore made against gammapy with ``background_oversampling=20``, which
makes its integral converge; the deviation from gammapy's default is checked as well.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gpscat.config import Config, validate_config
from gpscat.core import reduce as R
from gpscat.core.fov import fov_normalise, sky_to_fov
from gpscat.core.geom import MapAxis, WcsGeom
from gpscat.io.dataset import read_dataset
from gpscat.io.dl3 import DataStore
from gpscat.io.irf import read_irf
from gpscat.stages import reduce as SR
from gpscat.stages import stack as SS

pytestmark = [pytest.mark.crosscheck, pytest.mark.realdata]
gammapy = pytest.importorskip("gammapy")

u = pytest.importorskip("astropy.units")
OBS_IDS = [110380, 111140, 111159]


def _gammapy_stacked(store, *, oversampling):
    from gammapy.data import DataStore as GDataStore
    from gammapy.datasets import MapDataset
    from gammapy.makers import DatasetsMaker, FoVBackgroundMaker, MapDatasetMaker, SafeMaskMaker
    from gammapy.maps import MapAxis as GAxis
    from gammapy.maps import WcsGeom as GGeom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = GDataStore.from_dir(store).get_observations(OBS_IDS)
        geom = GGeom.create(skydir=(0, 0), frame="galactic", width=(8, 6), binsz=0.02, axes=[GAxis.from_energy_bounds(0.1, 10, 1, "TeV")])
        et = GAxis.from_energy_bounds(0.5, 20, 16, "TeV", name="energy_true")
        ref = MapDataset.create(geom, energy_axis_true=et, binsz_irf=0.2, name="stacked")
        makers = [
            MapDatasetMaker(background_oversampling=oversampling),
            SafeMaskMaker(methods=["offset-max"], offset_max=2.5 * u.deg),
            FoVBackgroundMaker(method="scale"),
        ]
        maker = DatasetsMaker(makers, stack_datasets=True, cutout_mode="trim", cutout_width=5 * u.deg)
        return maker.run(ref, obs)[0]


@pytest.fixture(scope="module")
def store(shared_data):
    return shared_data / "cta-1dc/index/gps"


@pytest.fixture(scope="module")
def ours(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xcheck")
    raw = {
        "data": {"store": str(store), "selection": {"obs_ids": OBS_IDS}},
        "survey": {"center": ["0 deg", "0 deg"], "width": ["8 deg", "6 deg"]},
        "datasets": [{"name": "gc", "binsz": "0.02 deg", "energy": {"min": "0.1 TeV", "max": "10 TeV", "nbins": 1},
                      "energy_true": {"min": "0.5 TeV", "max": "20 TeV", "nbins": 16}, "offset_max": "2.5 deg",
                      "psf": {"binsz": "0.2 deg"}}],
    }
    cfg = Config(validate_config(raw))
    assert SR.select_observations(cfg) == OBS_IDS
    paths, norms = [], {}
    for obs_id in OBS_IDS:
        paths.append(tmp / f"{obs_id}.fits")
        ds = SR.run(cfg, dataset="gc", obs_id=obs_id, output=paths[-1])
        norms[obs_id] = fov_normalise(ds.counts.data, ds.background.data, ds.mask_safe.data).norm
    d = cfg.datasets[0]
    stacked, _ = SS.stack_datasets(paths, geom=cfg.survey.geom(d.binsz), energy_axis=d.energy_axis, energy_true_axis=d.energy_axis_true, irf_geom=cfg.survey.geom(d.irf_binsz), norms=norms)
    SS.run(cfg, dataset="gc", inputs=paths, output=tmp / "stacked.fits")
    return stacked, paths, tmp / "stacked.fits"


@pytest.fixture(scope="module")
def gp_default(store):
    return _gammapy_stacked(store, oversampling=None)


@pytest.fixture(scope="module")
def gp_oversampled(store):
    return _gammapy_stacked(store, oversampling=20)


def test_counts_exposure_background_totals(ours, gp_default):
    stacked, _, _ = ours
    assert stacked.counts.data.sum() == 85625
    assert stacked.counts.data.sum() == gp_default.counts.data.sum()
    x, gx = stacked.exposure.data, gp_default.exposure.data
    assert x[x > 0].min() == pytest.approx(gx[gx > 0].min(), rel=0.01)
    assert x.max() == pytest.approx(gx.max(), rel=0.01)
    assert x[x > 0].min() == pytest.approx(8.4607e8, rel=0.01) and x.max() == pytest.approx(2.1404e10, rel=0.01)
    assert stacked.background.data.sum() == pytest.approx(gp_default.npred_background().data.sum(), rel=0.01)
    assert np.array_equal(stacked.mask_safe.data, gp_default.mask_safe.data.astype(bool))


def test_exposure_and_background_per_pixel(ours, gp_default, gp_oversampled):
    stacked, _, _ = ours
    gx = gp_default.exposure.data
    good = gx > 0.1 * gx.max()
    assert np.max(np.abs(stacked.exposure.data[good] / gx[good] - 1)) < 0.02
    image = np.broadcast_to(gx.max(axis=0, keepdims=True) > 0.1 * gx.max(), stacked.background.data.shape)
    b = stacked.background.data[image]
    rel = np.abs(b / gp_oversampled.npred_background().data[image] - 1)
    assert rel.max() < 0.02
    # gammapy's default one-trapezoid integral over the 2-decade bin: documented deviation
    rel_default = np.abs(b / gp_default.npred_background().data[image] - 1)
    assert 0.02 < rel_default.max() < 0.08


def test_gammapy_reads_our_files_psf_and_edisp(ours, gp_default):
    from gammapy.datasets import MapDataset

    _, paths, stacked_path = ours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = MapDataset.read(paths[0])
        ours_gp = MapDataset.read(stacked_path)
    assert one.counts.data.sum() == read_dataset(paths[0]).counts.data.sum()
    pos = gp_default.counts.geom.center_skydir
    e = [0.7, 2.0, 8.0] * u.TeV
    r_ours = ours_gp.psf.containment_radius(0.68, energy_true=e, position=pos).to_value("deg")
    r_gp = gp_default.psf.containment_radius(0.68, energy_true=e, position=pos).to_value("deg")
    assert np.allclose(r_ours, r_gp, rtol=0.03)
    k_ours = ours_gp.edisp.get_edisp_kernel(position=pos).data
    k_gp = gp_default.edisp.get_edisp_kernel(position=pos).data
    assert np.allclose(k_ours, k_gp, atol=0.02)


def test_irf_evaluation_matches_gammapy(shared_data):
    from gammapy.irf import load_irf_dict_from_file

    files = {
        "1dc": (shared_data / "cta-1dc/caldb/data/cta/1dc/bcf/South_z20_50h/irf_file.fits", ("EFFECTIVE AREA", "POINT SPREAD FUNCTION", "BACKGROUND")),
        "hess": (shared_data / "hess-dl3-dr1/data/hess_dl3_dr1_obs_id_020136.fits.gz", ("AEFF", "PSF", "BKG")),
        "prod5": (shared_data / "cta-caldb/Prod5-South-20deg-AverageAz-14MSTs37SSTs.180000s-v0.1.fits.gz", ("EFFECTIVE AREA", "POINT SPREAD FUNCTION", "BACKGROUND")),
    }
    energy = np.geomspace(0.05, 50, 17)
    offset = np.linspace(0, 2.4, 7)
    lon = np.linspace(-2.4, 2.4, 9)
    for path, (a, p, b) in files.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = load_irf_dict_from_file(path)
        ga = g["aeff"].evaluate(energy_true=energy[:, None] * u.TeV, offset=offset * u.deg).to_value("m2")
        assert np.allclose(read_irf(path, a).evaluate(energy[:, None], offset), ga, rtol=1e-5, atol=1e-6 * ga.max())
        rad = np.linspace(0, 0.3, 7)[:, None, None]
        gp = g["psf"].evaluate(rad=rad * u.deg, energy_true=energy[4:14:3, None] * u.TeV, offset=offset[:5] * u.deg).to_value("sr-1")
        assert np.allclose(read_irf(path, p).evaluate(rad, energy[4:14:3, None], offset[:5]), gp, rtol=1e-5, atol=1e-8 * gp.max())
        gb = g["bkg"].evaluate(energy=energy[:, None, None] * u.TeV, fov_lon=lon[:, None] * u.deg, fov_lat=lon[::-1] * u.deg).to_value("s-1 TeV-1 sr-1")
        mb = read_irf(path, b).evaluate(energy[:, None, None], lon[:, None], lon[::-1])
        assert np.allclose(mb, gb, rtol=1e-5, atol=1e-9 * gb.max())


def test_fov_frame_matches_gammapy():
    from astropy.coordinates import SkyCoord
    from gammapy.utils.coordinates import FoVICRSFrame

    rng = np.random.default_rng(0)
    ra, dec = 228.6 + rng.uniform(-3, 3, 50), -58.8 + rng.uniform(-3, 3, 50)
    f = SkyCoord(ra, dec, unit="deg").transform_to(FoVICRSFrame(origin=SkyCoord(228.6, -58.8, unit="deg")))
    lon, lat = sky_to_fov(ra, dec, 228.6, -58.8)
    assert np.allclose(lon, f.fov_lon.deg, atol=1e-8) and np.allclose(lat, f.fov_lat.deg, atol=1e-8)


def test_hess_background_map_matches_gammapy(shared_data):
    """Asymmetric H.E.S.S. BKG_3D: checks the array layout and the FoV orientation."""
    from gammapy.data import DataStore as GDataStore
    from gammapy.datasets import MapDataset
    from gammapy.makers import MapDatasetMaker
    from gammapy.maps import MapAxis as GAxis
    from gammapy.maps import WcsGeom as GGeom

    store = shared_data / "hess-dl3-dr1"
    obs = DataStore.from_dir(store).load(20136)
    geom = WcsGeom.create(obs.pointing, 4.0, 0.04, frame="icrs")
    axis = MapAxis.from_energy_bounds(0.5, 10, nbin=5)
    ours = R.make_background(obs.bkg, geom, axis, pointing=obs.pointing, ontime=obs.ontime)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gobs = GDataStore.from_dir(store).obs(20136)
        ggeom = GGeom.create(skydir=obs.pointing, width=4.0, binsz=0.04, frame="icrs", axes=[GAxis.from_energy_bounds(0.5, 10, 5, "TeV")])
        empty = MapDataset.create(ggeom, energy_axis_true=GAxis.from_energy_bounds(0.3, 20, 5, "TeV", name="energy_true"))
        gb = MapDatasetMaker(selection=["background"], background_oversampling=20).run(empty, gobs).background.data
    good = gb > 1e-3 * gb.max()
    assert np.max(np.abs(ours[good] / gb[good] - 1)) < 0.02
    assert WcsGeom.is_aligned(geom, geom)


def test_altaz_background_matches_gammapy(shared_data):
    """An ALTAZ-aligned (asymmetric) table on a CTA 1DC observation: FoV rotation during the run."""
    from dataclasses import replace

    from gammapy.data import DataStore as GDataStore
    from gammapy.datasets import MapDataset
    from gammapy.irf import Background3D as GBackground3D
    from gammapy.makers import MapDatasetMaker
    from gammapy.maps import MapAxis as GAxis
    from gammapy.maps import WcsGeom as GGeom

    from gpscat.core.fov import altaz_rotations

    table = shared_data / "hess-dl3-dr1/data/hess_dl3_dr1_obs_id_020136.fits.gz"
    store = shared_data / "cta-1dc/index/gps"
    obs = DataStore.from_dir(store).load(110380, irfs=())
    bkg = replace(read_irf(table, "BKG"), fov_alignment="ALTAZ")
    geom = WcsGeom.create(obs.pointing, 4.0, 0.04, frame="icrs")
    axis = MapAxis.from_energy_bounds(0.5, 10, nbin=3)
    rot = altaz_rotations(obs.pointing, location=obs.location, mjd_start=obs.gti.mjdref + obs.tstart / 86400.0, duration=obs.ontime)
    ours = R.make_background(bkg, geom, axis, pointing=obs.pointing, ontime=obs.ontime, altaz=rot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gobs = GDataStore.from_dir(store).obs(110380)
        g = GBackground3D.read(table, hdu="BKG")
        gobs.bkg = GBackground3D(axes=g.axes, data=g.data, unit=g.unit, fov_alignment="ALTAZ")
        ggeom = GGeom.create(skydir=obs.pointing, width=4.0, binsz=0.04, frame="icrs", axes=[GAxis.from_energy_bounds(0.5, 10, 3, "TeV")])
        empty = MapDataset.create(ggeom, energy_axis_true=GAxis.from_energy_bounds(0.3, 20, 3, "TeV", name="energy_true"))
        gb = MapDatasetMaker(selection=["background"], background_oversampling=20).run(empty, gobs).background.data
    inside = (R.pixel_offsets(geom, obs.pointing) < 2.4)[None] & (gb > 1e-3 * gb.max())
    assert np.max(np.abs(ours[inside] / gb[inside] - 1)) < 0.005
    radec = R.make_background(replace(bkg, fov_alignment="RADEC"), geom, axis, pointing=obs.pointing, ontime=obs.ontime)
    assert np.max(np.abs(radec[inside] / gb[inside] - 1)) > 0.1  # the rotation matters here
