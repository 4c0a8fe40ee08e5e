"""Seed classification: features, truth matching, working point, the train/apply stage.

Fast tests use synthetic seed tables whose classes differ in known ways; the slow tests
train on simulated skies of the demo configuration (``tests/test_classify_acceptance.py``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from regions import Regions

from gpscat.cli import main
from gpscat.config import ConfigError, load_config
from gpscat.core.classify import (
    CLASSES,
    ClassifierParams,
    cross_validate,
    evaluate,
    informative_features,
    make_classifier,
    match_seeds,
    rank,
    seed_features,
    working_point,
)
from gpscat.core.training_sky import SkyParams, random_sky, sky_truth
from gpscat.io.classifier import read_classifier
from gpscat.io.seeds import SEED_COLUMNS, empty_seed_table, read_seeds, write_seeds
from gpscat.stages import classify as classify_stage
from gpscat.stages.classify import CLASSIFY_COLUMNS
from gpscat.stages.training import training_params

DATASETS = ("subTeV", "postTeV")
RADII = (0.1, 0.2)


def synthetic_seeds(rng: np.random.Generator, n_skies: int = 12, per_sky: int = 12) -> Table:
    """Labelled seed tables whose classes differ as real seeds do (sizes, Hough, neighbours)."""
    tables = []
    for k in range(n_skies):
        t = empty_seed_table(DATASETS, RADII, nrows=per_sky)
        label = rng.choice(CLASSES, size=per_sky, p=[0.3, 0.35, 0.15, 0.2])
        ts = rng.uniform(5, 30, per_sky)
        size = np.select([label == "point", label == "extended", label == "shell"], [rng.uniform(0, 0.04, per_sky), rng.uniform(0.1, 0.4, per_sky),
                                                                                     rng.uniform(0.3, 0.6, per_sky)], rng.uniform(0, 0.3, per_sky))
        t["ID"] = np.arange(1, per_sky + 1)
        t["Type"] = np.where(label == "shell", "shell", "peak")
        t["GLON"] = rng.uniform(-2, 2, per_sky) % 360
        t["GLAT"] = rng.uniform(-1, 1, per_sky)
        t["Sqrt_TS"] = ts
        t["Size"] = size
        t["Extent"] = 1.5 * size + 0.1
        t["Radius_Best"] = np.where(size > 0.1, 0.2, 0.1)
        grid = ts[:, None, None] * rng.uniform(0.5, 1.0, (per_sky, 2, 2))
        t["Sqrt_TS_Grid"] = grid
        t["Hough_Score"] = np.where(label == "shell", rng.uniform(0.6, 1, per_sky), np.nan)
        t["Shell_Radius"] = np.where(label == "shell", size - 0.05, np.nan)
        t["Shell_Width"] = np.where(label == "shell", 0.1, np.nan)
        t["Nest_Flag"] = np.where(label == "spurious", 1, 0)
        t["Sqrt_TS"][label == "spurious"] = rng.uniform(5, 8, np.sum(label == "spurious"))
        t["Label"] = label.astype("U10")
        t["Sky"] = k
        tables.append(t)
    from astropy.table import vstack

    out = vstack(tables, metadata_conflicts="silent")
    out.meta.update({"DATASETS": ",".join(DATASETS), "RADII": ",".join(f"{r:.4f}" for r in RADII)})
    return out


# ------------------------------------------------------------------------ features


def test_features_names_shapes_and_nan():
    rng = np.random.default_rng(1)
    t = synthetic_seeds(rng, n_skies=1, per_sky=5)
    X, names = seed_features(t)
    assert X.shape == (5, len(names)) and len(set(names)) == len(names)
    for d in DATASETS:
        for r in RADII:
            assert f"Sig_{d}_r{r:.2f}" in names and f"Rel_{d}_r{r:.2f}" in names
    j = names.index(f"Rel_{DATASETS[0]}_r0.10")
    assert np.allclose(X[:, j], np.asarray(t["Sqrt_TS_Grid"])[:, 0, 0] / np.asarray(t["Sqrt_TS"]))
    # Hough score is NaN for peaks: kept as NaN, never inf
    assert np.isnan(X[np.asarray(t["Type"]) == "peak", names.index("Hough_Score")]).all()
    assert not np.isinf(X).any()
    # the brightest seed has no brighter neighbour
    top = int(np.argmax(t["Sqrt_TS"]))
    assert np.isnan(X[top, names.index("Brighter_Sep")])
    assert "Association_Overlap" not in names
    X2, names2 = seed_features(t, association=True)
    assert "Association_Overlap" in names2 and np.isnan(X2[:, names2.index("Association_Overlap")]).all()


def test_shell_context_features():
    """A Hough seed is not a fragment of the brighter peaks on its own rim; those peaks know the ring."""
    t = empty_seed_table(DATASETS, RADII, nrows=3)
    t["ID"] = [1, 2, 3]
    t["Type"] = ["peak", "shell", "peak"]
    t["GLON"] = [0.3, 0.0, 2.0]
    t["GLAT"] = [0.0, 0.0, 0.0]
    t["Sqrt_TS"] = [15.0, 12.0, 8.0]
    t["Extent"] = [0.2, 0.45, 0.1]
    X, names = seed_features(t)
    col = {n: X[:, i] for i, n in enumerate(names)}
    assert np.isnan(col["Brighter_Sep"][1])  # the rim peak (0.3 deg < 0.45 deg) is part of the shell
    assert col["Brighter_Sep"][2] == pytest.approx(1.7)  # the shell itself is no neighbour's part
    assert col["In_Shell_TS_Ratio"][0] == pytest.approx(15 / 12)
    assert np.isnan(col["In_Shell_TS_Ratio"][[1, 2]]).all()


def test_features_of_an_empty_table_and_bad_axes():
    X, names = seed_features(empty_seed_table(DATASETS, RADII))
    assert X.shape == (0, len(names))
    t = empty_seed_table(DATASETS, RADII, nrows=2)
    t.meta["RADII"] = "0.1000"
    with pytest.raises(ValueError, match="Sqrt_TS_Grid"):
        seed_features(t)


def test_informative_features():
    X = np.array([[1.0, np.nan, 3.0, np.nan], [1.0, np.nan, 4.0, 2.0]])
    assert informative_features(X).tolist() == [False, False, True, True]


# ------------------------------------------------------------------------ matching


def _seeds(rows):
    t = Table(rows=rows, names=("GLON", "GLAT", "Sqrt_TS", "Type"), dtype=("f8", "f8", "f8", "U5"))
    return t


def _truth(models):
    return sky_truth(models)


def test_match_rule():
    from gpscat.models.sky import SkyModel
    from gpscat.models.spatial import GaussianSpatialModel, PointSpatialModel, ShellSpatialModel
    from gpscat.models.spectral import PowerLawSpectralModel

    def sky(name, spatial):
        return SkyModel(PowerLawSpectralModel(), spatial, name=name)

    truth = _truth([
        sky("pt", PointSpatialModel(lon_0=0.0, lat_0=0.0, frame="galactic")),
        sky("gs", GaussianSpatialModel(lon_0=1.0, lat_0=0.0, sigma=0.2, frame="galactic")),
        sky("sh", ShellSpatialModel(lon_0=-1.0, lat_0=0.0, radius=0.4, width=0.1, frame="galactic")),
        sky("sh2", ShellSpatialModel(lon_0=0.0, lat_0=1.0, radius=0.3, width=0.05, frame="galactic")),
    ])
    assert list(truth["Class"]) == ["point", "extended", "shell", "shell"]
    assert truth["Match_Radius"][1] == pytest.approx(0.4) and truth["Match_Radius"][2] == pytest.approx(0.5)
    seeds = _seeds([
        (0.05, 0.0, 20.0, "peak"),   # point within 0.1 deg
        (0.0, 0.3, 6.0, "peak"),     # 0.3 deg from the point: no source within tolerance
        (1.0, 0.05, 15.0, "peak"),   # Gaussian centre: the brightest of its seeds
        (1.3, 0.0, 8.0, "peak"),     # Gaussian flank (1.5 sigma): a duplicate
        (359.0, 0.02, 9.0, "shell"),  # the Hough seed of the shell
        (359.0, 0.42, 12.0, "peak"),  # a rim peak, brighter, but the shell has its Hough seed
        (0.0, 1.3, 7.0, "peak"),     # rim of a shell the Hough step missed
        (0.05, 0.75, 6.0, "peak"),   # the other side of that rim
    ])
    m = match_seeds(seeds, truth)
    assert list(m["Label"]) == ["point", "spurious", "extended", "spurious", "shell", "spurious", "extended", "spurious"]
    assert list(m["Duplicate"]) == [False, False, False, True, False, True, False, True]
    assert list(m["Truth_Name"]) == ["pt", "", "gs", "gs", "sh", "sh", "sh2", "sh2"]
    assert list(m["Truth_Class"])[-2:] == ["shell", "shell"]
    assert np.isnan(m["Truth_Sep"][1]) and m["Truth_Sep"][0] == pytest.approx(0.05, abs=1e-6)
    # with a larger minimum tolerance the stray seed is a duplicate of the point source
    wide = match_seeds(seeds, truth, min_tolerance=0.35)
    assert wide["Truth_Name"][1] == "pt" and wide["Duplicate"][1] and wide["Label"][1] == "spurious"
    with pytest.raises(ValueError, match="min_tolerance"):
        match_seeds(seeds, truth, min_tolerance=-1)
    # nothing injected: every seed is spurious
    assert set(match_seeds(seeds, truth[:0])["Label"]) == {"spurious"}


def test_random_sky_is_seeded_and_separated():
    p = SkyParams(n_sources=10)
    a = sky_truth(random_sky(np.random.default_rng(3), p))
    b = sky_truth(random_sky(np.random.default_rng(3), p))
    c = sky_truth(random_sky(np.random.default_rng(4), p))
    assert (a == b).all() and not np.array_equal(a["GLON"], c["GLON"])
    lon = (np.asarray(a["GLON"]) + 180) % 360 - 180
    assert np.all(np.abs(lon) <= 1.5) and np.all(np.abs(a["GLAT"]) <= 0.8)
    from gpscat.core.geom import angular_separation

    d = angular_separation(lon[:, None], np.asarray(a["GLAT"])[:, None], lon[None, :], np.asarray(a["GLAT"])[None, :])
    need = p.min_separation + 0.5 * (np.asarray(a["Match_Radius"])[:, None] + np.asarray(a["Match_Radius"])[None, :])
    assert np.all((d >= need - 1e-9) | np.eye(len(a), dtype=bool))
    with pytest.raises(ValueError, match="fractions"):
        SkyParams(fractions={"blob": 1.0})


# ------------------------------------------------------------------- working point, rank


def test_working_point_and_evaluate():
    p_real = np.array([0.99, 0.9, 0.8, 0.7, 0.2, 0.1, 0.6, 0.05])
    is_real = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    ts = np.array([30, 20, 10, 8, 6, 9, 7.5, 5.5])
    # 4 real seeds above 7 sigma: 95 % of them needs all 4, threshold = the 4th highest
    assert working_point(p_real, is_real, ts, recall=0.95) == pytest.approx(0.7)
    assert working_point(p_real, is_real, ts, recall=0.5) == pytest.approx(0.9)
    assert working_point(p_real[:0], is_real[:0], ts[:0]) == 0.5
    with pytest.raises(ValueError, match="recall"):
        working_point(p_real, is_real, ts, recall=0)
    labels = np.array(["point", "extended", "shell", "point", "extended", "spurious", "spurious", "spurious"])
    proba = np.zeros((8, 4))
    proba[np.arange(8), [0, 1, 2, 0, 3, 3, 1, 3]] = 0.7
    proba[:, 3] = np.where(proba[:, 3] == 0, 1 - p_real, proba[:, 3])
    m = evaluate(labels, proba, ts, threshold=0.7)
    assert m["n"] == 8 and np.sum(m["confusion"]) == 8
    assert m["confusion"][1][3] == 1 and m["confusion"][3][1] == 1
    assert m["recall"]["point"] == 1.0 and m["recall"]["spurious"] == pytest.approx(2 / 3)
    assert json.dumps(m)  # JSON-able


def test_rank_ties_by_significance():
    r = rank(np.array([0.5, 0.9, 0.5, np.nan]), np.array([10.0, 5.0, 20.0, 50.0]))
    assert r.tolist() == [3, 1, 2, 4]


def test_cross_validation_is_grouped_and_deterministic():
    rng = np.random.default_rng(2)
    t = synthetic_seeds(rng)
    X, _ = classify_stage.features_by_sky(t)
    m = make_classifier(ClassifierParams(max_iter=30))
    a = cross_validate(m, X, t["Label"], t["Sky"], n_splits=3)
    b = cross_validate(m, X, t["Label"], t["Sky"], n_splits=3)
    assert np.array_equal(a, b) and np.allclose(a.sum(axis=1), 1)
    with pytest.raises(ValueError, match="n_splits"):
        cross_validate(m, X, t["Label"], np.zeros(len(t)), n_splits=3)


# ------------------------------------------------------------------------ config


def test_config_section():
    cfg = load_config(overrides={"classify": {"training": {"n_skies": 5, "sources": {"gauss_sigma": ["6 arcmin", "0.3 deg"]}}}})
    p = training_params(cfg)
    assert p.n_skies == 5 and p.sky.gauss_sigma == pytest.approx((0.1, 0.3))
    assert p.sky.lon_range == pytest.approx((-1.5, 1.5)) and p.livetime is None
    with pytest.raises(ConfigError, match="classify"):
        load_config(overrides={"classify": {"no_such_key": 1}})
    with pytest.raises(ConfigError, match="gauss_sigma"):
        training_params(load_config(overrides={"classify": {"training": {"sources": {"gauss_sigma": ["1 TeV", "2 TeV"]}}}}))
    with pytest.raises(ConfigError, match="source_margin"):
        training_params(load_config(overrides={"classify": {"training": {"source_margin": ["3 deg", "0.5 deg"]}}}))


# --------------------------------------------------------------------- train / apply


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained (fast) on synthetic labelled seeds, and its outputs."""
    tmp = tmp_path_factory.mktemp("clf")
    cfg = load_config(overrides={"classify": {"cv_folds": 3, "model": {"max_iter": 40}}})
    seeds = synthetic_seeds(np.random.default_rng(7))
    out = dict(output_model=tmp / "model.joblib", report=tmp / "report.json", confusion_png=tmp / "confusion.png", training_table=tmp / "training.fits")
    rep = classify_stage.train(cfg, seeds=seeds, **out)
    return cfg, seeds, out, rep


def test_train_outputs(trained):
    cfg, seeds, out, rep = trained
    model = read_classifier(out["output_model"])
    assert model["classes"] == list(CLASSES) and model["datasets"] == list(DATASETS) and model["radii"] == list(RADII)
    assert 0 <= model["threshold"] <= 1 and model["features"] == rep["features"]
    assert model["provenance"]["n_seeds"] == len(seeds) and model["provenance"]["config_hash"] == cfg.hash
    assert "Index" in rep["dropped_features"]  # never varies in the synthetic table
    back = json.loads(out["report"].read_text())
    assert back["cross_validation"]["confusion"] == rep["cross_validation"]["confusion"]
    assert back["cross_validation"]["accuracy"] > 0.7  # the synthetic classes are separable
    assert set(back["importance"]) == set(rep["features"])
    assert "| point |" in out["report"].with_suffix(".md").read_text()
    assert out["confusion_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(Table.read(out["training_table"])) == len(seeds)


def test_train_is_deterministic(trained, tmp_path):
    cfg, seeds, out, _ = trained
    again = dict(output_model=tmp_path / "m.joblib", report=tmp_path / "r.json", confusion_png=tmp_path / "c.png")
    classify_stage.train(cfg, seeds=seeds, **again)
    a, b = read_classifier(out["output_model"]), read_classifier(again["output_model"])
    assert a["threshold"] == b["threshold"]
    X, names = seed_features(seeds)
    idx = [names.index(n) for n in a["features"]]
    assert np.array_equal(a["estimator"].predict_proba(X[:, idx]), b["estimator"].predict_proba(X[:, idx]))


def test_apply_adds_columns_ranks_and_regions(trained, tmp_path):
    cfg, seeds, out, _ = trained
    t = seeds[seeds["Sky"] == 0]
    t = t[[c for c in t.colnames if c in SEED_COLUMNS]]
    t.meta = dict(seeds.meta)
    path = tmp_path / "seeds_associated.fits"
    write_seeds(path, t)
    # the associate stage's extra HDUs travel along
    with fits.open(path, mode="append") as hl:
        hl.append(fits.BinTableHDU(Table({"Seed_ID": [1]}), name="ASSOCIATIONS"))
    res = classify_stage.apply(cfg, seeds=path, model=out["output_model"], output=tmp_path / "seeds.fits", regions=tmp_path / "seeds.reg")
    back = read_seeds(tmp_path / "seeds.fits")
    assert back.colnames == list(SEED_COLUMNS) + list(CLASSIFY_COLUMNS)
    assert np.allclose(back["P_point"] + back["P_extended"] + back["P_shell"] + back["P_spurious"], 1)
    assert np.allclose(back["P_Real"], 1 - back["P_spurious"])
    assert sorted(back["Rank"]) == list(range(1, len(t) + 1))
    assert back["P_Real"][np.argsort(back["Rank"])].tolist() == sorted(back["P_Real"], reverse=True)
    thr = read_classifier(out["output_model"])["threshold"]
    assert np.array_equal(back["Selected"], back["P_Real"] >= thr) and back.meta["PTHRESH"] == pytest.approx(thr)
    assert set(back["Class"]) <= set(CLASSES) and set(back["Start_Class"]) <= {"point", "extended", "shell"}
    assert (back["Class"] == res["Class"]).all()
    with fits.open(tmp_path / "seeds.fits") as hl:
        assert [h.name for h in hl] == ["PRIMARY", "SEEDS", "ASSOCIATIONS"]
    regs = Regions.read(tmp_path / "seeds.reg", format="ds9")
    assert len(regs) == len(t)
    colors = {"point": "green", "extended": "yellow", "shell": "cyan", "spurious": "red"}
    for reg, row in zip(regs, back, strict=True):
        assert reg.visual["edgecolor"] == colors[row["Class"]]
        assert reg.meta["text"].startswith(f"{row['ID']} {row['Class']}")


def test_apply_empty_seed_table(trained, tmp_path):
    cfg, _, out, _ = trained
    path = tmp_path / "seeds_associated.fits"
    write_seeds(path, empty_seed_table(DATASETS, RADII))
    res = classify_stage.apply(cfg, seeds=path, model=out["output_model"], output=tmp_path / "seeds.fits", regions=tmp_path / "seeds.reg")
    back = read_seeds(tmp_path / "seeds.fits")
    assert len(res) == 0 and len(back) == 0
    assert back.colnames == list(SEED_COLUMNS) + list(CLASSIFY_COLUMNS)
    assert back["Sqrt_TS_Grid"].shape == (0, 2, 2)
    assert (tmp_path / "seeds.reg").read_text().startswith("# Region file format: DS9")


def test_apply_refuses_other_axes_and_fixed_threshold(trained, tmp_path):
    cfg, seeds, out, _ = trained
    path = tmp_path / "seeds.fits"
    write_seeds(path, empty_seed_table(("all",), RADII, nrows=1))
    with pytest.raises(ValueError, match="retrain"):
        classify_stage.apply(cfg, seeds=path, model=out["output_model"], output=tmp_path / "o.fits", regions=tmp_path / "o.reg")
    t = seeds[:5]
    t = t[[c for c in t.colnames if c in SEED_COLUMNS]]
    write_seeds(path, t)
    cfg1 = load_config(overrides={"classify": {"working_point": {"threshold": 1.0}}})
    res = classify_stage.apply(cfg1, seeds=path, model=out["output_model"], output=tmp_path / "o.fits", regions=tmp_path / "o.reg")
    assert np.array_equal(res["Selected"], res["P_Real"] >= 1.0)


def test_cli_classify(trained, tmp_path):
    _, seeds, out, _ = trained
    t = seeds[:6]
    t = t[[c for c in t.colnames if c in SEED_COLUMNS]]
    write_seeds(tmp_path / "in.fits", t)
    rc = main(["classify", "--seeds", str(tmp_path / "in.fits"), "--model", str(out["output_model"]),
               "--output", str(tmp_path / "seeds.fits"), "--regions", str(tmp_path / "seeds.reg")])
    assert rc == 0 and len(read_seeds(tmp_path / "seeds.fits")) == 6
    rc = main(["classify", "--seeds", str(tmp_path / "in.fits"), "--model", str(tmp_path / "nothing.joblib"),
               "--output", str(tmp_path / "x.fits"), "--regions", str(tmp_path / "x.reg")])
    assert rc == 1


def test_model_file_checks(tmp_path):
    import joblib

    joblib.dump({"format": "something-else"}, tmp_path / "m.joblib")
    with pytest.raises(ValueError, match="not a gpscat seed classifier"):
        read_classifier(tmp_path / "m.joblib")


def test_docs_list_every_classify_column():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "classify.md").read_text(encoding="utf-8")
    missing = [c for c in CLASSIFY_COLUMNS if f"`{c}`" not in text]
    assert not missing, f"docs/classify.md lacks columns {missing}"
