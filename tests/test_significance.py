"""Significance maps: null distributions, injected sources, flux, and the map stages end to end."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from maps_sky import EXPOSURE, make_survey

from gpscat.config import ConfigError, load_config
from gpscat.core.convolve import correlate, disk_kernel, gaussian_kernel
from gpscat.core.geom import WcsGeom, angular_separation, to_frame
from gpscat.core.ring import alpha_map, ring_background
from gpscat.core.significance import (
    cash_maps,
    effective_scale,
    flux_maps,
    power_law_weights,
    reco_exposure,
    wstat_maps,
)
from gpscat.io.dataset import read_dataset, write_dataset
from gpscat.io.maps import read_map
from gpscat.stages import background, exclusion, reduce, significance, stack

# ------------------------------------------------------------------- pure functions


def _null_stats(sig, border):
    core = sig[border:-border, border:-border]
    return np.nanmean(core), np.nanstd(core)


def test_cash_null_distribution():
    rng = np.random.default_rng(10)
    bkg = np.full((400, 400), 2.0)
    counts = rng.poisson(bkg).astype(float)
    kernel = disk_kernel(3.0)
    maps = cash_maps(counts, bkg, kernel=kernel)
    mean, std = _null_stats(maps["sqrt_ts"], 10)
    assert abs(mean) < 0.05 and abs(std - 1) < 0.03
    # without the effective-counts scaling the fractional kernel edge narrows the width
    raw = cash_maps(counts, bkg, kernel=kernel, effective_counts=False)["sqrt_ts"]
    assert _null_stats(raw, 10)[1] == pytest.approx(np.sqrt((kernel**2).sum() / kernel.sum()), abs=0.025)
    assert maps["counts"][150, 150] == pytest.approx(counts[147:154, 147:154].ravel() @ kernel.ravel())


def test_effective_scale():
    bkg = np.full((40, 40), 3.0)
    np.testing.assert_allclose(effective_scale(bkg, kernel=disk_kernel(5.0, sampling="center")), 1.0)
    k = disk_kernel(5.0)
    assert effective_scale(bkg, kernel=k)[20, 20] == pytest.approx(k.sum() / (k**2).sum())


def test_wstat_ring_null_distribution():
    rng = np.random.default_rng(11)
    acc = np.full((360, 360), 3.0)
    counts = rng.poisson(acc).astype(float)
    off = ring_background(counts, acc, exclusion_mask=None, r_in=20, width=10)
    maps = wstat_maps(counts, off.counts_off, acc, off.acceptance_off, kernel=disk_kernel(3.0))
    mean, std = _null_stats(maps["sqrt_ts"], 35)
    assert abs(mean) < 0.05 and abs(std - 1) < 0.03
    # background = alpha * n_off with alpha = ON-disk acceptance / ring acceptance
    c = (130, 130)
    alpha = np.pi * 9 / (np.pi * (30**2 - 20**2))
    assert maps["alpha"][c] == pytest.approx(alpha, rel=1e-9)
    assert maps["background"][c] == pytest.approx(alpha * off.counts_off[c], rel=1e-9)


def test_injected_source_position_and_strength():
    rng = np.random.default_rng(12)
    shape = (120, 160)
    bkg = np.full(shape, 1.0)
    src = np.zeros(shape)
    src[70, 50] = 400.0
    src = correlate(src, gaussian_kernel(2.0))
    counts = rng.poisson(bkg + src).astype(float)
    maps = cash_maps(counts, bkg, kernel=disk_kernel(5.0))
    iy, ix = np.unravel_index(np.nanargmax(maps["sqrt_ts"]), shape)
    assert abs(iy - 70) <= 1 and abs(ix - 50) <= 1
    # the disk of 5 px holds 1 - exp(-25/8) = 95.6% of the source: excess ≈ 382 ± sqrt(n_on)
    assert maps["excess"][70, 50] == pytest.approx(400 * (1 - np.exp(-25 / 8)), abs=3 * maps["excess_error"][70, 50])
    expected = maps["sqrt_ts"][70, 50]
    assert expected > 15


def test_masked_pixels_are_nan_and_not_used():
    counts = np.ones((30, 30))
    bkg = np.ones((30, 30))
    mask = np.ones((30, 30), bool)
    mask[:, :15] = False
    counts[:, :15] = 100.0  # must not leak into unmasked pixels
    maps = cash_maps(counts, bkg, kernel=disk_kernel(3.0), mask=mask)
    assert np.all(np.isnan(maps["sqrt_ts"][:, :15]))
    np.testing.assert_allclose(maps["excess"][:, 15:], 0.0, atol=1e-9)


def test_power_law_weights_and_reco_exposure():
    w = power_law_weights([1.0, 10.0], [0.5, 1.0, 10.0, 20.0], index=2.0)
    np.testing.assert_allclose(w, [[0.0, 1.0, 0.0]])
    w = power_law_weights([1.0, 4.0], [1.0, 2.0, 4.0], index=2.0)
    # ∫ E^-2: [1,2] -> 1/2, [2,4] -> 1/4 of the total 3/4
    np.testing.assert_allclose(w, [[2 / 3, 1 / 3]])
    exposure = np.stack([np.full((4, 5), 3.0), np.full((4, 5), 6.0)])
    np.testing.assert_allclose(reco_exposure(exposure, [1.0, 4.0], [1.0, 2.0, 4.0]), 4.0)


def test_flux_of_a_known_source():
    shape = (60, 60)
    kernel = disk_kernel(10.0)
    excess = np.full(shape, 500.0)
    err = np.full(shape, 25.0)
    exposure = np.full((1, *shape), 1e9)
    out = flux_maps(excess, err, exposure, np.array([1.0, 10.0]), kernel=kernel)
    assert out["flux"][30, 30] == pytest.approx(500 / 1e9 / 1e4)
    assert out["flux_error"][30, 30] == pytest.approx(25 / 1e9 / 1e4)
    assert out["exposure"][30, 30] == pytest.approx(1e9)


# ------------------------------------------------------------------------ stages


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("survey"), np.random.default_rng(7))


def _cfg(**sections):
    return load_config(overrides=sections)


@pytest.fixture(scope="module")
def excl_file(survey, tmp_path_factory):
    out = tmp_path_factory.mktemp("excl") / "exclusion.fits"
    cfg = _cfg(background={"exclusion": {"circles": [{"lon": "-1.5 deg", "lat": "0 deg", "radius": "0.2 deg"}]}})
    exclusion.run(cfg, dataset="test", stacked=survey.stacked, output=out)
    return out


def test_exclusion_stage(survey, excl_file):
    usable = read_map(excl_file, "EXCLUSION_MASK")
    assert usable.data.dtype.kind == "i"  # int16 on disk, 1 = usable
    geom = usable.geom
    ix, iy, _ = geom.coord_to_idx(*survey.source)
    assert usable.data[iy, ix] == 0  # found by the hysteresis threshold
    ix, iy, _ = geom.coord_to_idx(-1.5, 0.0)
    assert usable.data[iy, ix] == 0  # the configured circle
    assert usable.data.mean() > 0.9
    sqrt_ts = read_map(excl_file, "SQRT_TS").data
    outside = usable.data.astype(bool) & np.isfinite(sqrt_ts)
    assert abs(np.mean(sqrt_ts[outside])) < 0.2  # renormalised first pass: no bias


def test_fov_background_stage(survey, excl_file, tmp_path):
    cfg = _cfg(background={"method": "fov"}, significance={"correlation_radii": ["0.12 deg", "0.4 deg"]})
    out, norms = tmp_path / "dataset.fits", tmp_path / "background_norms.fits"
    background.run(cfg, dataset="test", stacked=survey.stacked, observations=survey.observations,
                   exclusion=excl_file, output=out, norms=norms)
    table = Table.read(norms)
    assert list(table["OBS_ID"]) == [101, 102, 103]
    for row in table:
        assert row["NORM"] == pytest.approx(survey.norms[row["OBS_ID"]], abs=3.5 * row["NORM_ERR"])
        assert row["VALID"]
    files = significance.run(cfg, dataset="test", input=out, output_dir=tmp_path)
    assert {f.name for f in files} == {"significance_r0.12.fits", "significance_r0.12.png",
                                       "significance_r0.40.fits", "significance_r0.40.png"}
    assert [p.name for p in significance.output_paths(cfg, tmp_path)] == [
        "significance_r0.12.fits", "significance_r0.12.png", "significance_r0.40.fits", "significance_r0.40.png"]
    with fits.open(tmp_path / "significance_r0.40.fits") as hl:
        assert {"SQRT_TS", "EXCESS", "BACKGROUND", "COUNTS", "FLUX", "EXPOSURE"} <= {h.name for h in hl}
        assert hl["FLUX"].header["BUNIT"] == "cm-2 s-1"
        assert hl[0].header["STAT"] == "cash"
    _check_significance_maps(survey, tmp_path / "significance_r0.12.fits", tmp_path / "significance_r0.40.fits", excl_file)


def _check_significance_maps(survey, small, large, excl_file):
    sig = read_map(small, "SQRT_TS")
    geom: WcsGeom = sig.geom
    usable = read_map(excl_file, "EXCLUSION_MASK").data.astype(bool)
    # null distribution away from the source (and more than a correlation radius from the mask edge)
    far = (geom.separation(*survey.source) > 0.8) & usable & np.isfinite(sig.data)
    assert abs(np.mean(sig.data[far])) < 0.15 and abs(np.std(sig.data[far]) - 1) < 0.15
    iy, ix = np.unravel_index(np.nanargmax(sig.data), sig.data.shape)
    lon, lat = geom.pix_to_coord(ix, iy)
    assert np.hypot(lon - survey.source[0], lat - survey.source[1]) < 0.06
    # flux within 0.4 deg (4 sigma of the source): all of the injected counts over the exposure
    flux = read_map(large, "FLUX").data
    err = read_map(large, "FLUX_ERR").data
    ix, iy, _ = geom.coord_to_idx(*survey.source)
    expected = survey.source_counts / (EXPOSURE * 1e4)
    assert float(flux[iy, ix]) == pytest.approx(expected, abs=3 * float(err[iy, ix]) + 0.03 * expected)


def test_irf_method_and_skipped_observations(survey, excl_file, tmp_path):
    skipped = tmp_path / "999.fits"
    first = read_dataset(survey.observations[0])
    one = first.cutout(slice(0, 1), slice(0, 1))
    one.meta = {"obs_id": 999, "skipped": True, "reason": "test"}
    write_dataset(skipped, one)
    obs = [*survey.observations, skipped]
    out, norms = tmp_path / "dataset.fits", tmp_path / "norms.fits"
    background.run(_cfg(background={"method": "fov"}), dataset="t", stacked=survey.stacked, observations=obs,
                   exclusion=excl_file, output=out, norms=norms)
    assert list(Table.read(norms)["OBS_ID"]) == [101, 102, 103]
    background.run(_cfg(background={"method": "irf"}), dataset="t", stacked=survey.stacked, observations=obs,
                   exclusion=excl_file, output=out, norms=norms)
    assert len(Table.read(norms)) == 0
    np.testing.assert_array_equal(read_dataset(out).background.data, read_dataset(survey.stacked).background.data)


def test_ring_background_and_wstat_significance(survey, excl_file, tmp_path):
    bands = [["1 TeV", "2.2 TeV"], ["2.2 TeV", "10 TeV"]]
    cfg = _cfg(background={"method": "ring", "ring": {"r_in": "0.5 deg", "width": "0.3 deg", "per_energy_bin": True}},
               significance={"correlation_radii": ["0.12 deg", "0.4 deg"], "energy_bands": bands})
    out = tmp_path / "onoff.fits"
    background.run(cfg, dataset="test", stacked=survey.stacked, observations=survey.observations,
                   exclusion=excl_file, output=out)
    with fits.open(out) as hl:
        assert {"COUNTS", "COUNTS_OFF", "ACCEPTANCE", "ACCEPTANCE_OFF", "EXPOSURE", "MASK_SAFE"} <= {h.name for h in hl}
    counts_off = read_map(out, "COUNTS_OFF")
    assert counts_off.data.shape[0] == 3  # per energy bin
    alpha = alpha_map(read_map(out, "ACCEPTANCE").data, read_map(out, "ACCEPTANCE_OFF").data)
    assert np.nanmax(alpha) < 0.01  # one pixel against a ring of ~0.5 deg²
    files = significance.run(cfg, dataset="test", input=out, output_dir=tmp_path)
    assert "bands_r0.12.fits" in {f.name for f in files}
    bands_map = read_map(tmp_path / "bands_r0.12.fits", "SQRT_TS")
    assert bands_map.axes[0].nbin == 2 and bands_map.data.shape[0] == 2
    np.testing.assert_allclose(bands_map.axes[0].edges[[0, -1]], [1.0, 10.0])
    with fits.open(tmp_path / "significance_r0.12.fits") as hl:
        assert hl[0].header["STAT"] == "wstat"
    _check_significance_maps(survey, tmp_path / "significance_r0.12.fits", tmp_path / "significance_r0.40.fits", excl_file)


def test_ring_summed_rejects_bands(survey, excl_file, tmp_path):
    cfg = _cfg(background={"method": "ring", "ring": {"adaptive": True, "r_out_max": "1.2 deg", "stepsize": "0.2 deg"}},
               significance={"correlation_radii": ["0.1 deg"], "energy_bands": [["1 TeV", "3 TeV"]]})
    out = tmp_path / "onoff.fits"
    background.run(cfg, dataset="test", stacked=survey.stacked, observations=survey.observations,
                   exclusion=excl_file, output=out)
    assert read_map(out, "COUNTS").data.shape[0] == 1
    with pytest.raises(ConfigError, match="per_energy_bin"):
        significance.run(cfg, dataset="test", input=out, output_dir=tmp_path)


def test_band_slices():
    edges = np.geomspace(1, 10, 7)
    sl = significance.band_slices(edges, [(1.0, 3.2), (3.2, 10.0)])
    assert sl == [slice(0, 3), slice(3, 6)]
    with pytest.raises(ConfigError, match="contiguous"):
        significance.band_slices(edges, [(1.0, 2.0), (5.0, 10.0)])
    # one band list for several datasets: bands outside this dataset's range are skipped
    assert significance.band_slices(edges, [(0.1, 1.0), (1.0, 3.2), (3.2, 10.0), (10.0, 100.0)]) == sl
    with pytest.raises(ConfigError, match="no band overlaps"):
        significance.band_slices(edges, [(10.0, 100.0)])


# ------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_msh1552_ring_significance_matches_gammapy(shared_data, tmp_path):
    """H.E.S.S. DL3 DR1, MSH 15-52: the gammapy ring-background tutorial settings, r = 0.1 deg.

    gammapy 2.1 (RingBackgroundMaker per observation + ExcessMapEstimator, OFF counts not
    correlated; reproduced in ``test_maps_crosscheck.py``): counts 41803, excess 1131.1,
    max significance 18.9.
    """
    pos = {"frame": "icrs", "lon": "228.32 deg", "lat": "-59.08 deg"}
    cfg = load_config(overrides={
        "data": {"store": str(shared_data / "hess-dl3-dr1"), "selection": {"cone": {**pos, "radius": "2.5 deg"}}},
        "survey": {"frame": "icrs", "center": [pos["lon"], pos["lat"]], "width": ["3 deg", "3 deg"]},
        "datasets": [{
            "name": "msh", "binsz": "0.02 deg", "offset_max": "2.5 deg", "cutout_width": "5 deg",
            "energy": {"min": "0.5 TeV", "max": "10 TeV", "nbins": 10},
            "energy_true": {"min": "0.5 TeV", "max": "10 TeV", "nbins": 10},
            "safe_mask": {"methods": ["aeff-default"]},  # gammapy AnalysisConfig default
        }],
        "background": {
            "method": "ring", "ring": {"r_in": "0.5 deg", "width": "0.3 deg"},
            "exclusion": {"circles": [{**pos, "radius": "0.4 deg"}], "hysteresis": {"enabled": False}},
        },
        "significance": {"correlation_radii": ["0.1 deg"], "quicklook": False},
    })
    store = reduce.open_store(cfg)
    ids = reduce.select_observations(cfg, store)
    assert len(ids) == 20
    paths = [tmp_path / f"{i}.fits" for i in ids]
    for i, p in zip(ids, paths, strict=True):
        reduce.run(cfg, dataset="msh", obs_id=i, output=p, store=store)
    stack.run(cfg, dataset="msh", inputs=paths, output=tmp_path / "stacked.fits")
    exclusion.run(cfg, dataset="msh", stacked=tmp_path / "stacked.fits", output=tmp_path / "exclusion.fits")
    background.run(cfg, dataset="msh", stacked=tmp_path / "stacked.fits", observations=paths,
                   exclusion=tmp_path / "exclusion.fits", output=tmp_path / "onoff.fits")
    significance.run(cfg, dataset="msh", input=tmp_path / "onoff.fits", output_dir=tmp_path)

    onoff = {n: read_map(tmp_path / "onoff.fits", n).data for n in ("COUNTS", "COUNTS_OFF", "ACCEPTANCE", "ACCEPTANCE_OFF")}
    mask = read_map(tmp_path / "onoff.fits", "MASK_SAFE").data.astype(bool)
    alpha = alpha_map(onoff["ACCEPTANCE"], onoff["ACCEPTANCE_OFF"])
    counts = onoff["COUNTS"][mask].sum()
    excess = (onoff["COUNTS"] - alpha * onoff["COUNTS_OFF"])[mask].sum()
    assert counts == pytest.approx(41803, rel=0.02)
    assert excess == pytest.approx(1131.1, rel=0.02)
    sig = read_map(tmp_path / "significance_r0.10.fits", "SQRT_TS")
    assert float(np.nanmax(sig.data)) == pytest.approx(18.9, abs=0.3)
    iy, ix = np.unravel_index(np.nanargmax(sig.data), sig.data.shape)
    glon, glat = to_frame(*sig.geom.pix_to_coord(ix, iy), "icrs", "galactic")
    assert angular_separation(glon, glat, 320.315, -1.188) < 0.04  # HGPS HESS J1514-591
