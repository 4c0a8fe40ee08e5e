"""Held-out evaluation of the seed classifier (issue 7, item 4): shared by
tests/test_classify_acceptance.py and the workflow's demo run (tests/test_workflow.py),
whose classify_train rule trains exactly the demo configuration's classifier."""

from __future__ import annotations

import numpy as np
from astropy.table import vstack

from gpscat.core.classify import CLASSES, evaluate, working_point
from gpscat.stages import classify as classify_stage
from gpscat.stages.training import training_params, training_seeds, with_seed

HELDOUT_SEED = 1001
N_HELDOUT = 40


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


def heldout_seeds(cfg, model, folder):
    """Seeds of N_HELDOUT skies the classifier never saw (another master seed), classified."""
    held, _ = training_seeds(cfg, params=with_seed(training_params(cfg), HELDOUT_SEED), skies=range(N_HELDOUT), folder=folder)
    return classify_by_sky(held, model)


def check_heldout_floor(report, model, held) -> str:
    """What the classifier reaches today (docs/classify.md): a guard against regressions."""
    at_model, at95, text = heldout_metrics(model, held)
    cv = report["cross_validation"]
    text += f"; cross-validated: accuracy {cv['accuracy']:.3f}, spurious rejected {cv['spurious_rejected']:.3f}"
    # measured (docs/classify.md) on the workflow's demo classifier: on 9cc9ec6 (280 held-out
    # seeds, 33 spurious) CV 0.902 / 0.853, held out 0.868, 0.818 rejected and 0.910 kept at the
    # model's threshold, 0.667 rejected at 95 % kept.  With the Hough rings of one shell merged
    # by their mid radii and rings with an empty sector rejected (275 seeds, 28 spurious): CV
    # 0.901 / 0.846, held out 0.884, 0.821 and 0.915, 0.821 at 95 % (between the two changes
    # 0.607: one of the 28 spurious seeds is 3.6 points, and a retrained model moves the 95 %
    # threshold).  Floors a few seeds below
    assert cv["accuracy"] >= 0.86 and cv["spurious_rejected"] >= 0.78, text
    assert at_model["accuracy"] >= 0.85, text
    assert at_model["real_kept_above"] >= 0.88 and at_model["spurious_rejected"] >= 0.70, text
    assert at95["spurious_rejected"] >= 0.70, text
    return text


def check_heldout_targets(model, held) -> None:
    """Issue 7's targets: accuracy >= 90 %, >= 90 % of the spurious seeds rejected at 95 % real recall."""
    at_model, at95, text = heldout_metrics(model, held)
    assert at_model["accuracy"] >= 0.90, text
    assert at95["spurious_rejected"] >= 0.90, text
