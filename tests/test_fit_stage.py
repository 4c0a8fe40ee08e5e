"""The fit stage: a synthetic group against its truth, failures, determinism, passes."""

from __future__ import annotations

import numpy as np
import pytest
from catalog_sky import SMALL_SKY, catalog_chain, small_survey

from gpscat.config import load_config
from gpscat.core.geom import angular_separation
from gpscat.core.source_results import FLAGS, below_poisson_limit
from gpscat.io.dataset import read_dataset, write_dataset
from gpscat.io.fit_results import read_group_result
from gpscat.io.models_yaml import read_models
from gpscat.io.source_catalog import read_catalog_fits
from gpscat.stages import fit as fit_stage
from gpscat.stages import group as group_stage

DATASETS = [{"name": "low", "energy": {"min": "0.1 TeV", "max": "1 TeV", "nbins": 2}},
            {"name": "high", "energy": {"min": "1 TeV", "max": "30 TeV", "nbins": 2}}]


def _config(**fit):
    return load_config(overrides={"datasets": DATASETS, "fit": {"passes": 1, **fit},
                                  "catalog": {"name_prefix": "TEST"}})


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return small_survey(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def catalog(survey, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chain")
    paths = catalog_chain(_config(), folder, seeds=survey["seeds"], datasets=survey["datasets"])
    return folder, paths, read_catalog_fits(paths["catalog"])


def _match(cat, lon, lat):
    d = angular_separation(np.asarray(cat["GLON"]), np.asarray(cat["GLAT"]), lon % 360, lat)
    j = int(np.argmin(d))
    return cat[j], d[j]


def test_group_fit_recovers_the_injected_sources(catalog):
    _, _, tables = catalog
    cat = tables["CATALOG"]
    assert len(cat) == 3, cat["Source_ID", "GLON", "GLAT", "TS"]
    for kind, lon, lat, sigma, amp, _index, seeded in SMALL_SKY:
        row, d = _match(cat, lon, lat)
        pull = np.hypot(((row["GLON"] - lon % 360 + 180) % 360 - 180) / row["GLON_Err"], (row["GLAT"] - lat) / row["GLAT_Err"])
        assert pull < 3.5, (kind, lon, lat, d, pull)
        assert row["Spatial_Model"] == {"point": "PointSpatialModel", "gauss": "GaussianSpatialModel"}[kind]
        assert row["TS"] > 25 and row["Fit_Status"] == "ok"
        assert abs(row["DNDE_1TeV"] - amp) < 3.5 * row["DNDE_1TeV_Err"], (kind, row["DNDE_1TeV"], amp)
        assert (row["Origin"] == "seed") == seeded
        assert bool(row["Flags"] & FLAGS["FROM_RESIDUAL"]) == (not seeded)
        if kind == "gauss":
            assert abs(row["Radius"] - sigma) < 3.5 * row["Radius_Err"]
        # per-dataset contributions add up
        assert row["TS_low"] + row["TS_high"] == pytest.approx(row["TS"], rel=1e-6, abs=1e-6)
        assert row["Npred_low"] + row["Npred_high"] == pytest.approx(row["Npred"])
        assert np.isfinite(row["Pos_Err_68"]) and row["R68"] > row["R68_Model"]
        # a real fit's amplitude error is above the Poisson limit of its counts (with background: well above)
        assert row["Amplitude_Err"] * np.sqrt(row["Npred"]) / row["Amplitude"] > 1.0
        assert not row["Flags"] & FLAGS["NO_COVARIANCE"]


def test_impossibly_small_errors_are_flagged():
    # 1e4 counts: no fit can know the amplitude better than 1 %
    assert below_poisson_limit(1.0, 0.001, 1e4) and not below_poisson_limit(1.0, 0.006, 1e4)
    assert not below_poisson_limit(1.0, 0.03, 1e4) and not below_poisson_limit(1.0, np.nan, 1e4)
    assert not below_poisson_limit(1.0, 0.001, 0.0)


def test_flux_points_follow_the_spectrum(catalog):
    _, _, tables = catalog
    cat, fp = tables["CATALOG"], tables["FLUX_POINTS"]
    row, _ = _match(cat, SMALL_SKY[1][1], SMALL_SKY[1][2])
    pts = fp[fp["Source_Name"] == row["Source_Name"]]
    assert len(pts) >= 3 and np.all(np.diff(pts["e_ref"]) > 0)
    _, _, _, _, amp, index, _ = SMALL_SKY[1]
    det = ~pts["is_ul"]
    assert det.sum() >= 2
    truth = amp * pts["e_ref"] ** -index
    pull = (pts["dnde"][det] - truth[det]) / pts["dnde_err"][det]
    assert np.all(np.abs(pull) < 4), pull
    assert np.all(pts["dnde_ul"] >= pts["dnde"])
    assert np.all(pts["norm_ul"][pts["is_ul"]] > 0)


def test_group_files_and_models(catalog):
    folder, _, tables = catalog
    res = read_group_result(folder / "fit" / "pass1" / "group_1.fits")
    assert set(res["SOURCES"]["Source_ID"]) == set(tables["CATALOG"]["Source_ID"])
    models = read_models(folder / "fit" / "pass1" / "group_1.yaml")
    assert sorted(models.names) == sorted(res["SOURCES"]["Source_ID"])
    assert (folder / "fit" / "pass1" / "group_1_covariance.dat").stat().st_size > 0
    # the YAML carries the fitted values and errors of the table
    for row in res["SOURCES"]:
        sp = models[row["Source_ID"]].spatial_model
        assert sp.lat_0.value == pytest.approx(row["GLAT"]) and sp.lat_0.error == pytest.approx(row["GLAT_Err"])


def test_failed_fit_is_flagged_and_the_catalog_still_made(survey, tmp_path):
    """A NaN exposure in the group's region: Fit_Status 'failed: …', flagged, catalog written."""
    broken = []
    for path in survey["datasets"]:
        ds = read_dataset(path)
        ds.exposure.data[:, 20:30, 20:30] = np.nan
        broken.append(tmp_path / path.name)
        write_dataset(broken[-1], ds)
    paths = catalog_chain(_config(), tmp_path, seeds=survey["seeds"], datasets=broken)
    cat = read_catalog_fits(paths["catalog"])["CATALOG"]
    assert len(cat) == 2  # the seeded sources, at their start values
    assert all(s.startswith("failed:") for s in cat["Fit_Status"])
    assert np.all(cat["Flags"] & FLAGS["FIT_FAILED"])
    assert np.all(np.isnan(cat["TS"]))
    for key in ("yaml", "regions", "overview", "residual", "residual_png"):
        assert paths[key].exists()


def test_iteration_limit_is_reported_not_fatal(survey, tmp_path):
    cfg = _config(optimizer={"max_nfev": 5}, residual={"enabled": False}, selection={"enabled": False})
    paths = catalog_chain(cfg, tmp_path, seeds=survey["seeds"], datasets=survey["datasets"])
    cat = read_catalog_fits(paths["catalog"])["CATALOG"]
    assert len(cat) >= 1
    assert all(s.startswith("not converged") for s in cat["Fit_Status"])
    assert np.all(cat["Flags"] & FLAGS["NOT_CONVERGED"])


def test_second_pass_keeps_an_isolated_group(survey, tmp_path):
    cfg = _config(passes=2, selection={"enabled": False}, residual={"enabled": False})
    group_stage.run(cfg, seeds=survey["seeds"], output_dir=tmp_path / "groups", datasets=survey["datasets"])
    groups = tmp_path / "groups"
    kw = {"groups": groups / "groups.fits", "datasets": survey["datasets"]}
    fit_stage.run(cfg, group_id=1, pass_=1, models=groups / "group_1.yaml", neighbours=[groups / "start_models.yaml"],
                  output=tmp_path / "p1.fits", output_models=tmp_path / "p1.yaml", **kw)
    fit_stage.run(cfg, group_id=1, pass_=2, models=tmp_path / "p1.yaml", neighbours=[], previous_neighbours=[groups / "start_models.yaml"],
                  previous=tmp_path / "p1.fits", output=tmp_path / "p2.fits", output_models=tmp_path / "p2.yaml", **kw)
    p1, p2 = read_group_result(tmp_path / "p1.fits")["SOURCES"], read_group_result(tmp_path / "p2.fits")["SOURCES"]
    assert list(p2["Pass"]) == [2] * len(p2)
    np.testing.assert_array_equal(p1["GLON"], p2["GLON"])  # no neighbour moved: the pass-1 fit is kept
    assert read_models(tmp_path / "p2.yaml").names == read_models(tmp_path / "p1.yaml").names


def test_fit_is_deterministic(survey, catalog, tmp_path):
    _, paths, tables = catalog
    again = catalog_chain(_config(), tmp_path, seeds=survey["seeds"], datasets=survey["datasets"])
    second = read_catalog_fits(again["catalog"])
    for name in ("CATALOG", "FLUX_POINTS", "REJECTED"):
        a, b = tables[name], second[name]
        assert a.colnames == b.colnames
        for col in a.colnames:
            np.testing.assert_array_equal(np.asarray(a[col]), np.asarray(b[col]), err_msg=f"{name}.{col}")
