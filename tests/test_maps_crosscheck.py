"""Cross-checks of the map statistics, ring background and files against gammapy 2.1.

With gammapy's centre-sampled top-hat (``sampling="center"``) our ring OFF maps and
correlated significance / excess maps must equal gammapy's ``RingBackgroundMaker`` and
``ExcessMapEstimator`` (``correlate_off=False``) on identical inputs; our files must open
in gammapy.  The MSH 15-52 test reproduces the reference numbers of the acceptance test
(gammapy's ring-background tutorial settings with a 0.1 deg correlation radius).
"""

import numpy as np
import pytest

gammapy = pytest.importorskip("gammapy")

import astropy.units as u  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402
from astropy.table import Table  # noqa: E402
from gammapy.data import GTI  # noqa: E402
from gammapy.datasets import MapDataset, MapDatasetOnOff  # noqa: E402
from gammapy.estimators import ExcessMapEstimator  # noqa: E402
from gammapy.makers import AdaptiveRingBackgroundMaker, RingBackgroundMaker  # noqa: E402
from gammapy.maps import Map, MapAxis  # noqa: E402
from gammapy.maps import WcsGeom as GpWcsGeom  # noqa: E402
from gammapy.stats import CashCountsStatistic, WStatCountsStatistic  # noqa: E402
from maps_sky import make_survey  # noqa: E402

from gpscat.config import load_config  # noqa: E402
from gpscat.core.convolve import disk_kernel  # noqa: E402
from gpscat.core.ring import OnOffStack, adaptive_ring_background, ring_background  # noqa: E402
from gpscat.core.significance import cash_maps, wstat_maps  # noqa: E402
from gpscat.core.stats import (  # noqa: E402
    cash_excess_interval,
    cash_significance,
    wstat_excess_interval,
    wstat_significance,
)
from gpscat.stages import background, exclusion, reduce, significance, stack  # noqa: E402

pytestmark = pytest.mark.crosscheck

# gammapy 2.1, ring-background tutorial settings, 0.1 deg, OFF counts not correlated
MSH_COUNTS, MSH_EXCESS, MSH_MAX_SIG = 41803, 1131.1, 18.9


def test_statistics_match_gammapy():
    rng = np.random.default_rng(5)
    n_on = rng.poisson(6, 500).astype(float)
    n_off = rng.poisson(30, 500).astype(float)
    alpha = rng.uniform(0.02, 1.0, 500)
    mu = rng.uniform(0.1, 12, 500)
    cash = CashCountsStatistic(n_on, mu)
    wstat = WStatCountsStatistic(n_on, n_off, alpha)
    np.testing.assert_allclose(cash_significance(n_on, mu), cash.sqrt_ts, atol=1e-9)
    np.testing.assert_allclose(wstat_significance(n_on, n_off, alpha), wstat.sqrt_ts, atol=1e-9)
    errn, errp = cash_excess_interval(n_on, mu)
    np.testing.assert_allclose(errn, cash.compute_errn(), atol=1e-6)
    np.testing.assert_allclose(errp, cash.compute_errp(), atol=1e-6)
    errn, errp = wstat_excess_interval(n_on, n_off, alpha)
    np.testing.assert_allclose(errn, wstat.compute_errn(), atol=1e-5)
    np.testing.assert_allclose(errp, wstat.compute_errp(), atol=1e-5)


@pytest.fixture(scope="module")
def gp_dataset():
    rng = np.random.default_rng(6)
    geom = GpWcsGeom.create(skydir=(0, 0), width=(4, 3), binsz=0.04, frame="galactic",
                            axes=[MapAxis.from_energy_bounds(1, 10, 1, unit="TeV")])
    yy, xx = np.indices(geom.data_shape[1:])
    bkg = 2.0 * np.exp(-0.5 * ((xx - 50) ** 2 + (yy - 37) ** 2) / 40.0**2)[None]
    counts = rng.poisson(bkg).astype(float)
    counts[0, 35:40, 48:53] += rng.poisson(6.0, (5, 5))
    ds = MapDataset.create(geom, name="x")
    ds.gti = GTI.create([0.0] * u.s, [1800.0] * u.s, reference_time="2020-01-01")
    ds.counts.data = counts
    ds.background.data = bkg
    ds.mask_safe.data[...] = True
    exclusion = np.ones(geom.data_shape, bool)
    exclusion[0, 30:45, 42:58] = False
    return ds, Map.from_geom(geom, data=exclusion)


def test_ring_and_excess_maps_match_gammapy(gp_dataset):
    ds, excl = gp_dataset
    onoff = RingBackgroundMaker(r_in="0.4 deg", width="0.2 deg", exclusion_mask=excl).run(ds)
    off = ring_background(ds.counts.data, ds.background.data, exclusion_mask=excl.data[0],
                          r_in=10, width=5, sampling="center")
    np.testing.assert_allclose(off.counts_off, onoff.counts_off.data, rtol=1e-6)  # gammapy: float32
    np.testing.assert_allclose(off.acceptance_off, onoff.acceptance_off.data, rtol=1e-6)

    result = ExcessMapEstimator("0.12 deg", correlate_off=False).run(onoff)
    kernel = disk_kernel(0.12 / 0.04, sampling="center")
    ours = wstat_maps(ds.counts.data, onoff.counts_off.data, ds.background.data, onoff.acceptance_off.data,
                      kernel=kernel, mask=onoff.mask_safe.data)
    np.testing.assert_allclose(ours["sqrt_ts"], result["sqrt_ts"].data, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(ours["excess"], result["npred_excess"].data, atol=1e-4, equal_nan=True)

    cash = ExcessMapEstimator("0.12 deg").run(ds)
    ours = cash_maps(ds.counts.data, ds.background.data, kernel=kernel)
    np.testing.assert_allclose(ours["sqrt_ts"], cash["sqrt_ts"].data, atol=1e-5)
    np.testing.assert_allclose(ours["excess"], cash["npred_excess"].data, atol=1e-4)


def test_adaptive_ring_matches_gammapy(gp_dataset):
    ds, _ = gp_dataset
    excl = np.ones(ds.counts.data.shape, bool)
    excl[0, 20:55, 30:70] = False
    maker = AdaptiveRingBackgroundMaker(r_in="0.3 deg", width="0.2 deg", r_out_max="1.0 deg", stepsize="0.08 deg",
                                        threshold_alpha=0.004, exclusion_mask=Map.from_geom(ds.counts.geom, data=excl))
    onoff = maker.run(ds)
    # gammapy 2.1 uses the pixel alone as the ON acceptance (theta = 0, see gpscat.core.ring)
    ours = adaptive_ring_background(ds.counts.data, ds.background.data, exclusion_mask=excl[0], r_in=7.5, width=5,
                                    r_out_max=25, stepsize=2, alpha_max=0.004, sampling="center")
    reached = np.isfinite(onoff.counts_off.data)  # gammapy leaves NaN where no ring reaches alpha_max
    assert 0.9 < reached.mean() < 1.0 and len(np.unique(ours.r_out)) == 7
    np.testing.assert_allclose(ours.counts_off[reached], onoff.counts_off.data[reached], rtol=1e-6)
    np.testing.assert_allclose(ours.acceptance_off[reached], onoff.acceptance_off.data[reached], rtol=1e-6)
    assert np.all(ours.r_out[~reached] == 24.5)  # we take the largest ring there


def test_onoff_stacking_matches_gammapy(gp_dataset):
    ds, excl = gp_dataset
    maker = RingBackgroundMaker(r_in="0.4 deg", width="0.2 deg", exclusion_mask=excl)
    stacked = MapDatasetOnOff.create(geom=ds.counts.geom, name="s")
    ours = OnOffStack(ds.counts.data.shape)
    for scale, cut in ((1.0, slice(None)), (0.7, slice(0, 60))):
        d = ds.copy(name=f"d{scale}")
        d.background.data = ds.background.data * scale
        d.mask_safe.data[...] = False
        d.mask_safe.data[..., cut] = True
        o = maker.run(d)
        stacked.stack(o)
        ours.add(d.counts.data, o.counts_off.data, d.background.data, o.acceptance_off.data, o.mask_safe.data)
    res = ours.result()
    np.testing.assert_allclose(res["counts_off"], stacked.counts_off.data, rtol=1e-6)
    np.testing.assert_allclose(res["acceptance"], stacked.acceptance.data, rtol=1e-6)
    np.testing.assert_allclose(res["counts"], stacked.counts.data, rtol=1e-6)
    np.testing.assert_allclose(res["acceptance_off"], stacked.acceptance_off.data, rtol=1e-6)
    np.testing.assert_array_equal(res["mask"], stacked.mask_safe.data)


def test_stage_files_open_in_gammapy(tmp_path):
    sv = make_survey(tmp_path / "sv", np.random.default_rng(8))
    cfg = load_config(overrides={"background": {"method": "ring"}, "significance": {"correlation_radii": ["0.1 deg"]}})
    excl = tmp_path / "exclusion.fits"
    exclusion.run(cfg, dataset="t", stacked=sv.stacked, output=excl)
    mask = Map.read(excl, hdu="EXCLUSION_MASK")
    assert mask.data.shape == sv.geom.shape
    onoff = tmp_path / "onoff.fits"
    background.run(cfg, dataset="t", stacked=sv.stacked, observations=sv.observations, exclusion=excl, output=onoff)
    ds = MapDatasetOnOff.read(onoff)
    assert ds.counts_off.data.shape == (1, *sv.geom.shape)
    significance.run(cfg, dataset="t", input=onoff, output_dir=tmp_path)
    sig = Map.read(tmp_path / "significance_r0.10.fits", hdu="SQRT_TS")
    assert np.nanmax(sig.data) > 10


POS = SkyCoord(228.32, -59.08, unit="deg")


@pytest.fixture(scope="module")
def gp_msh1552(shared_data):
    """gammapy 2.1 per-observation datasets of the ring-background tutorial (MSH 15-52), by obs id."""
    from gammapy.analysis import Analysis, AnalysisConfig

    config = AnalysisConfig()
    config.observations.datastore = str(shared_data / "hess-dl3-dr1")
    config.observations.obs_cone = {"frame": "icrs", "lon": POS.ra, "lat": POS.dec, "radius": 2.5 * u.deg}
    config.datasets.type = "3d"
    config.datasets.geom.wcs.skydir = {"lon": POS.ra, "lat": POS.dec, "frame": "icrs"}
    config.datasets.geom.wcs.width = {"width": "3 deg", "height": "3 deg"}
    config.datasets.geom.wcs.binsize = "0.02 deg"
    config.datasets.geom.selection.offset_max = 2.5 * u.deg
    config.datasets.geom.axes.energy.min = "0.5 TeV"
    config.datasets.geom.axes.energy.max = "10 TeV"
    config.datasets.geom.axes.energy.nbins = 10
    config.datasets.stack = False
    analysis = Analysis(config)
    analysis.config.datasets.geom.axes.energy_true = analysis.config.datasets.geom.axes.energy
    analysis.get_observations()
    analysis.get_datasets()
    return dict(zip((int(i) for i in analysis.observations.ids), analysis.datasets, strict=True))


def _exclusion_04(geom):
    from regions import CircleSkyRegion

    return ~geom.region_mask([CircleSkyRegion(center=POS, radius=0.4 * u.deg)])


@pytest.mark.realdata
@pytest.mark.slow
def test_msh1552_reference_numbers(gp_msh1552):
    datasets = list(gp_msh1552.values())
    geom = datasets[0].counts.geom
    geom_image = geom.to_image().to_cube([geom.axes["energy"].squash()])
    maker = RingBackgroundMaker(r_in="0.5 deg", width="0.3 deg", exclusion_mask=_exclusion_04(geom_image))
    energy_true = datasets[0].exposure.geom.axes["energy_true"]
    stacked = MapDatasetOnOff.create(geom=geom_image, energy_axis_true=energy_true, name="stacked")
    for ds in datasets:
        stacked.stack(maker.run(ds.to_image()))
    maps = ExcessMapEstimator(0.1 * u.deg, selection_optional=[], correlate_off=False).run(stacked)
    m = stacked.mask_safe.data
    assert stacked.counts.data[m].sum() == MSH_COUNTS
    assert (stacked.counts - stacked.background).data[m].sum() == pytest.approx(MSH_EXCESS, abs=0.1)
    assert np.nanmax(maps["sqrt_ts"].data) == pytest.approx(MSH_MAX_SIG, abs=0.05)


@pytest.mark.realdata
@pytest.mark.slow
def test_msh1552_fov_norms_match_gammapy(gp_msh1552, shared_data, tmp_path):
    from gammapy.makers import FoVBackgroundMaker

    gp_norms = {}
    for obs_id, ds in gp_msh1552.items():
        excl = _exclusion_04(ds.counts.geom.to_image())
        out = FoVBackgroundMaker(method="scale", exclusion_mask=excl).run(ds)
        gp_norms[obs_id] = out.background_model.spectral_model.norm.value
    pos = {"frame": "icrs", "lon": "228.32 deg", "lat": "-59.08 deg"}
    cfg = load_config(overrides={
        "data": {"store": str(shared_data / "hess-dl3-dr1"), "selection": {"cone": {**pos, "radius": "2.5 deg"}}},
        "survey": {"frame": "icrs", "center": [pos["lon"], pos["lat"]], "width": ["3 deg", "3 deg"]},
        "datasets": [{"name": "msh", "binsz": "0.02 deg", "offset_max": "2.5 deg", "cutout_width": "5 deg",
                      "energy": {"min": "0.5 TeV", "max": "10 TeV", "nbins": 10},
                      "energy_true": {"min": "0.5 TeV", "max": "10 TeV", "nbins": 10},
                      "safe_mask": {"methods": ["aeff-default"]}}],
        "background": {"method": "fov", "exclusion": {"circles": [{**pos, "radius": "0.4 deg"}], "hysteresis": {"enabled": False}}},
    })
    store = reduce.open_store(cfg)
    paths = []
    for obs_id in reduce.select_observations(cfg, store):
        paths.append(tmp_path / f"{obs_id}.fits")
        reduce.run(cfg, dataset="msh", obs_id=obs_id, output=paths[-1], store=store)
    stack.run(cfg, dataset="msh", inputs=paths, output=tmp_path / "stacked.fits")
    exclusion.run(cfg, dataset="msh", stacked=tmp_path / "stacked.fits", output=tmp_path / "exclusion.fits")
    background.run(cfg, dataset="msh", stacked=tmp_path / "stacked.fits", observations=paths,
                   exclusion=tmp_path / "exclusion.fits", output=tmp_path / "dataset.fits", norms=tmp_path / "norms.fits")
    ours = Table.read(tmp_path / "norms.fits")
    assert sorted(ours["OBS_ID"]) == sorted(gp_norms)
    for row in ours:
        assert row["NORM"] == pytest.approx(gp_norms[int(row["OBS_ID"])], rel=0.005)
