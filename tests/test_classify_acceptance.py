"""Acceptance of the seed classifier on held-out simulated skies (issue 7, item 4).

The classifier is trained exactly as ``gpscat classify-train`` does with the embedded demo
configuration (config/config.yaml: built-in CTA-South-like IRFs, sub-TeV + post-TeV
datasets), then applied to skies it never saw (another master seed).  Targets: accuracy
>= 90 % over point / extended / shell / spurious, and >= 90 % of the spurious seeds
rejected at the threshold that keeps 95 % of the real seeds above 7 sigma.  The measured
numbers are in docs/classify.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.table import vstack

from gpscat.config import load_config
from gpscat.core.classify import CLASSES, evaluate, working_point
from gpscat.io.classifier import read_classifier
from gpscat.stages import classify as classify_stage
from gpscat.stages.training import training_params, training_seeds, with_seed

REPO = Path(__file__).resolve().parents[1]
HELDOUT_SEED = 1001
N_HELDOUT = 40

log = logging.getLogger(__name__)


def classify_by_sky(seeds, model):
    """Classify each simulated sky on its own (neighbour features stay within a sky)."""
    parts = []
    for k in np.unique(seeds["Sky"]):
        sub = seeds[seeds["Sky"] == k]
        sub.meta = dict(seeds.meta)
        parts.append(classify_stage.classify_table(sub, model))
    return vstack(parts, metadata_conflicts="silent")


def confusion_text(metrics: dict) -> str:
    head = "true \\ predicted"
    rows = [f"{head:>16} " + " ".join(f"{c:>9}" for c in CLASSES)]
    for c, row in zip(CLASSES, metrics["confusion"], strict=True):
        rows.append(f"{c:>16} " + " ".join(f"{v:>9d}" for v in row))
    return "\n".join(rows)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("classify_demo")
    cfg = load_config(REPO / "config" / "config.yaml")
    out = dict(output_model=tmp / "model.joblib", report=tmp / "report.json", confusion_png=tmp / "confusion.png")
    report = classify_stage.train(cfg, workdir=tmp, **out)
    model = read_classifier(out["output_model"])
    held, _ = training_seeds(cfg, params=with_seed(training_params(cfg), HELDOUT_SEED), skies=range(N_HELDOUT), folder=tmp)
    return report, model, classify_by_sky(held, model)


def heldout_metrics(model, held) -> tuple[dict, dict, str]:
    """Metrics at the model's threshold, at the held-out 95 % working point, and a text summary."""
    labels = np.asarray(held["Label"]).astype(str)
    proba = np.column_stack([held[f"P_{c}"] for c in CLASSES])
    ts = np.asarray(held["Sqrt_TS"], float)
    at_model = evaluate(labels, proba, ts, threshold=model["threshold"])
    # the acceptance criterion: spurious recall where 95 % of the real seeds above 7 sigma are kept
    thr95 = working_point(1 - proba[:, 3], labels != "spurious", ts, min_significance=7.0, recall=0.95)
    at95 = evaluate(labels, proba, ts, threshold=thr95)
    text = (f"held-out: {at_model['n']} seeds in {N_HELDOUT} skies {at_model['n_per_class']}\n{confusion_text(at_model)}\n"
            f"accuracy {at_model['accuracy']:.3f}; model threshold {model['threshold']:.3f}: spurious rejected "
            f"{at_model['spurious_rejected']:.3f}, real > 7 sigma kept {at_model['real_kept_above']:.3f}; at 95 % of the real "
            f"> 7 sigma kept (threshold {thr95:.3f}): spurious rejected {at95['spurious_rejected']:.3f}")
    return at_model, at95, text


@pytest.mark.slow
def test_heldout_skies_regression_floor(demo):
    """What the classifier reaches today (docs/classify.md): a guard against regressions."""
    report, model, held = demo
    at_model, at95, text = heldout_metrics(model, held)
    cv = report["cross_validation"]
    text += (f"; cross-validated: accuracy {cv['accuracy']:.3f}, spurious rejected {cv['spurious_rejected']:.3f}; "
             f"training {report['timing']['total_s']:.0f} s")
    print(text)  # the full confusion matrix in the test output (pytest -s, or on failure)
    log.info("%s", text)
    # measured (docs/classify.md): CV 0.894 / 0.820; held out 0.878, 0.806 rejected and 0.905 kept
    # at the model's threshold, 0.722 rejected at 95 % kept
    assert cv["accuracy"] >= 0.87 and cv["spurious_rejected"] >= 0.75, text
    assert at_model["accuracy"] >= 0.85, text
    assert at_model["real_kept_above"] >= 0.88 and at_model["spurious_rejected"] >= 0.72, text
    assert at95["spurious_rejected"] >= 0.63, text


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "issue 7 targets not reached with honest simulations (docs/classify.md, 'Measured performance'): "
    "held-out accuracy 0.878 and spurious recall 0.722 at 95 % recall of the real seeds above 7 sigma "
    "(cross-validated 0.894 and 0.820); the residual errors are fragments of large sources and unresolved shells"))
def test_heldout_skies_issue_targets(demo):
    _, model, held = demo
    at_model, at95, text = heldout_metrics(model, held)
    assert at_model["accuracy"] >= 0.90, text
    assert at95["spurious_rejected"] >= 0.90, text


@pytest.mark.slow
def test_training_is_deterministic(tmp_path):
    cfg = load_config(REPO / "config" / "config.yaml", overrides={"classify": {"training": {"n_skies": 4}, "cv_folds": 2}})
    serial, _ = training_seeds(cfg, folder=tmp_path, n_jobs=1)
    parallel, _ = training_seeds(cfg, folder=tmp_path, n_jobs=2)
    assert len(serial) > 10
    for name in ("GLON", "GLAT", "Sqrt_TS", "Size", "Label"):
        assert np.array_equal(np.asarray(serial[name]), np.asarray(parallel[name])), name
    models = []
    for i, seeds in enumerate((serial, parallel)):
        out = dict(output_model=tmp_path / f"m{i}.joblib", report=tmp_path / f"r{i}.json", confusion_png=tmp_path / f"c{i}.png")
        classify_stage.train(cfg, seeds=seeds, **out)
        models.append(read_classifier(out["output_model"]))
    a, b = (classify_by_sky(serial, m) for m in models)
    assert models[0]["threshold"] == models[1]["threshold"]
    for c in CLASSES:
        assert np.array_equal(a[f"P_{c}"], b[f"P_{c}"])


@pytest.mark.slow
def test_cli_classify_train(tmp_path):
    import json

    import yaml

    from gpscat.cli import main

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    raw["classify"] = {"training": {"n_skies": 3, "n_jobs": 1}, "cv_folds": 2}
    out = tmp_path / "classify"
    rc = main(["classify-train", "--params", json.dumps(raw), "--output", str(out / "model.joblib"), "--report", str(out / "training_report.json"),
               "--confusion", str(out / "confusion.png"), "--training-table", str(out / "training_seeds.fits"), "--workdir", str(tmp_path / "work")])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"model.joblib", "training_report.json", "training_report.md", "confusion.png", "training_seeds.fits"}
    model = read_classifier(out / "model.joblib")
    assert model["provenance"]["n_skies"] == 3 and model["provenance"]["irf"] == "builtin"
    assert not any((tmp_path / "work").iterdir())  # the folder is made, the temporary skies removed
