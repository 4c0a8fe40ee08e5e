"""Stage ``classify``: train the seed classifier on simulated skies, then classify and rank seeds.

Two steps (one CLI command and Snakemake rule each):

* :func:`train` (``gpscat classify-train``) — simulate ``classify.training.n_skies`` skies
  with the survey's own IRFs and run them through the real stages
  (:mod:`gpscat.stages.training`), label the seeds with the injected truth, cross-validate
  (folds grouped by sky), choose the working point, fit the classifier on all seeds and
  write it (:mod:`gpscat.io.classifier`) with a JSON report, a Markdown summary and a
  confusion-matrix PNG;
* :func:`apply` (``gpscat classify``) — add ``Class``, ``Start_Class``, class probabilities,
  ``P_Real``, ``Rank`` and ``Selected`` to the seed table (``results/seeds/seeds.fits``)
  and write its DS9 regions coloured by class.

See ``docs/classify.md``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence

import numpy as np
import sklearn
from astropy.io import fits
from astropy.table import Table
from matplotlib.figure import Figure
from sklearn.inspection import permutation_importance
from threadpoolctl import threadpool_limits

from gpscat import __version__
from gpscat.config import Config, config_hash
from gpscat.core.classify import (
    CLASSES,
    REAL_CLASSES,
    ClassifierParams,
    cross_validate,
    evaluate,
    informative_features,
    make_classifier,
    p_real,
    predict_proba,
    rank,
    seed_features,
    working_point,
)
from gpscat.io.atomic import atomic_path, write_text_atomic
from gpscat.io.classifier import (
    read_classifier,
    write_classified_regions,
    write_classified_seeds,
    write_classifier,
)
from gpscat.io.seeds import empty_seed_table, read_seeds
from gpscat.stages.training import training_params, training_seeds

__all__ = ["CLASSIFY_COLUMNS", "apply", "classifier_params", "classify_table", "features_by_sky", "train"]

log = logging.getLogger(__name__)

#: columns added by :func:`apply`: name → (dtype, description)
CLASSIFY_COLUMNS = {
    "Class": ("U10", "most probable class: point, extended, shell or spurious"),
    "Start_Class": ("U10", "most probable real class (point, extended, shell): the fit's starting model"),
    "P_point": ("f8", "probability of a point-like source"),
    "P_extended": ("f8", "probability of an extended source (Gaussian, disk)"),
    "P_shell": ("f8", "probability of a shell"),
    "P_spurious": ("f8", "probability of a spurious seed (fluctuation or duplicate fragment)"),
    "P_Real": ("f8", "probability of being a real source, 1 - P_spurious"),
    "Rank": ("i4", "rank by decreasing P_Real (ties: Sqrt_TS), 1 = best"),
    "Selected": ("?", "P_Real >= the working-point threshold (header PTHRESH)"),
}
#: significance bins of the report
_BINS = (5.0, 7.0, 10.0, 20.0, np.inf)


def classifier_params(cfg: Config) -> ClassifierParams:
    """``classify.model`` as :class:`ClassifierParams`."""
    m = cfg["classify"]["model"]
    return ClassifierParams(
        kind=m["kind"], max_iter=int(m["max_iter"]), learning_rate=float(m["learning_rate"]), max_leaf_nodes=int(m["max_leaf_nodes"]),
        min_samples_leaf=int(m["min_samples_leaf"]), l2_regularization=float(m["l2_regularization"]), n_estimators=int(m["n_estimators"]),
        class_weight=None if m["class_weight"] == "none" else m["class_weight"], random_state=int(m["random_state"]),
    )


def features_by_sky(table: Table, *, association: bool = False) -> tuple[np.ndarray, list[str]]:
    """:func:`~gpscat.core.classify.seed_features` of each sky (``Sky`` column) separately, stacked.

    The neighbour features compare a seed with the other seeds of its own sky only.
    """
    if "Sky" not in table.colnames or len(table) == 0:
        return seed_features(table, association=association)
    sky = np.asarray(table["Sky"])
    X = None
    names: list[str] = []
    for k in np.unique(sky):
        rows = np.flatnonzero(sky == k)
        sub = table[rows]
        sub.meta = table.meta
        Xk, names = seed_features(sub, association=association)
        if X is None:
            X = np.full((len(table), Xk.shape[1]), np.nan)
        X[rows] = Xk
    return X, names


def _by_significance(labels, proba, sqrt_ts, threshold, min_significance) -> list[dict]:
    out = []
    for lo, hi in zip(_BINS[:-1], _BINS[1:], strict=True):
        sel = (sqrt_ts >= lo) & (sqrt_ts < hi)
        if sel.any():
            m = evaluate(labels[sel], proba[sel], sqrt_ts[sel], threshold=threshold, min_significance=min_significance)
            out.append({"sqrt_ts": [lo, None if np.isinf(hi) else hi], "n": m["n"], "accuracy": m["accuracy"], "n_per_class": m["n_per_class"],
                        "spurious_rejected": m["spurious_rejected"], "real_kept": m["real_kept"]})
    return out


def _confusion_png(path, metrics: dict, title: str) -> None:
    conf = np.asarray(metrics["confusion"])
    frac = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            ax.text(j, i, f"{conf[i, j]}\n{frac[i, j]:.0%}", ha="center", va="center", fontsize=8, color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="fraction of the true class", shrink=0.8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")


def _summary(report: dict) -> str:
    cv = report["cross_validation"]
    prov = report["provenance"]
    lines = [
        "# Seed classifier: training report", "",
        f"{prov['n_skies']} simulated skies (seed {prov['seed']}, IRF `{prov['irf']}`), {cv['n']} seeds "
        + ", ".join(f"{k} {v}" for k, v in cv["n_per_class"].items()) + f"; {report['model']['kind']}, {len(report['features'])} features.", "",
        f"Cross-validated ({report['cv_folds']} folds grouped by sky): accuracy **{cv['accuracy']:.3f}**; working point P_Real >= "
        f"{cv['threshold']:.3f} keeps {cv['real_kept_above']:.1%} of the {cv['n_real_above']} real seeds above {cv['min_significance']:g} sigma "
        f"and rejects **{cv['spurious_rejected']:.1%}** of the spurious seeds.", "",
        "Confusion matrix (rows true, columns predicted):", "",
        "| true \\ predicted | " + " | ".join(CLASSES) + " | recall |",
        "|---|" + "---:|" * (len(CLASSES) + 1),
    ]
    for c, row in zip(CLASSES, cv["confusion"], strict=True):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + f" | {cv['recall'][c]:.2f} |")
    lines += ["", "By significance:", "", "| Sqrt_TS | seeds | accuracy | spurious rejected | real kept |", "|---|---:|---:|---:|---:|"]
    for b in report["by_significance"]:
        hi = "" if b["sqrt_ts"][1] is None else f"{b['sqrt_ts'][1]:g}"
        lines.append(f"| {b['sqrt_ts'][0]:g}-{hi} | {b['n']} | {b['accuracy']:.2f} | {b['spurious_rejected']:.2f} | {b['real_kept']:.2f} |")
    lines += ["", "Permutation importance (accuracy drop, training seeds), top 12:", ""]
    for name, v in list(report["importance"].items())[:12]:
        lines.append(f"- `{name}`: {v:.3f}")
    lines += ["", f"Training took {report['timing']['total_s']:.0f} s (simulation and detection {report['timing']['skies_s']:.0f} s)."]
    return "\n".join(lines) + "\n"


def train(
    cfg: Config,
    *,
    output_model: str | os.PathLike,
    report: str | os.PathLike,
    confusion_png: str | os.PathLike,
    summary: str | os.PathLike | None = None,
    training_table: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    n_jobs: int | None = None,
    seeds: Table | None = None,
) -> dict:
    """Train the seed classifier and write the model, its report and plots.

    Parameters
    ----------
    cfg : Config
        Reads ``classify`` and the sections of the map and detect stages (and ``simulation``,
        ``data`` for the IRFs).
    output_model : path
        ``results/classify/model.joblib`` (:mod:`gpscat.io.classifier`).
    report, confusion_png : path
        ``training_report.json`` and the cross-validated confusion matrix PNG.
    summary : path, optional
        Markdown summary (default: ``report`` with the suffix ``.md``).
    training_table : path, optional
        Also write the labelled training seeds (FITS) there.
    workdir : path, optional
        Folder for the skies' temporary files (default: the system's temporary folder).
    n_jobs : int, optional
        Overrides ``classify.training.n_jobs``.
    seeds : Table, optional
        Labelled training seeds (as written to ``training_table``) instead of simulating.

    Returns
    -------
    dict
        The report.
    """
    t0 = time.perf_counter()
    c = cfg["classify"]
    params = training_params(cfg)
    association = bool(c["association_features"])
    if association:
        raise ValueError("classify.association_features: training skies are not associated yet; set it to false")
    if seeds is None:
        seeds, _ = training_seeds(cfg, params=params, folder=workdir, n_jobs=n_jobs)
    t_skies = time.perf_counter() - t0
    labels = np.asarray(seeds["Label"]).astype(str)
    if len(seeds) == 0 or len(set(labels)) < 2:
        raise ValueError(f"classify training: {len(seeds)} seeds with classes {sorted(set(labels))} in {params.n_skies} skies; "
                         "raise classify.training.n_skies or sources.per_sky")
    X_all, names_all = features_by_sky(seeds, association=association)
    keep = informative_features(X_all)
    X, names = X_all[:, keep], [n for n, k in zip(names_all, keep, strict=True) if k]
    groups = np.asarray(seeds["Sky"])
    sqrt_ts = np.asarray(seeds["Sqrt_TS"], float)
    mp = classifier_params(cfg)
    wp = c["working_point"]
    min_sig, recall = float(wp["min_significance"]), float(wp["real_recall"])
    n_splits = min(int(c["cv_folds"]), np.unique(groups).size)
    proba_cv = cross_validate(make_classifier(mp), X, labels, groups, n_splits=n_splits, random_state=mp.random_state)
    with threadpool_limits(1):  # OpenMP threads of small fits only contend with other jobs
        y = np.array([CLASSES.index(v) for v in labels])
        model = make_classifier(mp).fit(X, y)
        imp = permutation_importance(model, X, y, scoring="accuracy", n_repeats=5, random_state=mp.random_state)
    threshold = working_point(p_real(proba_cv), labels != "spurious", sqrt_ts, min_significance=min_sig, recall=recall)
    if wp["threshold"] is not None:
        threshold = float(wp["threshold"])
    cv = evaluate(labels, proba_cv, sqrt_ts, threshold=threshold, min_significance=min_sig)
    order = np.argsort(-imp.importances_mean, kind="stable")
    importance = {names[i]: float(imp.importances_mean[i]) for i in order}
    datasets = [d for d in str(seeds.meta.get("DATASETS", "")).split(",") if d]
    radii = [float(r) for r in str(seeds.meta.get("RADII", "")).split(",") if r]
    provenance = {
        "seed": int(seeds.meta.get("TRSEED", params.seed)), "n_skies": int(np.unique(groups).size), "n_seeds": len(seeds), "irf": str(seeds.meta.get("TRAINIRF", params.irf)),
        "livetime_s": float(seeds.meta.get("LIVETIME", np.nan)),
        "config_hash": cfg.hash, "classify_hash": _hash(cfg, ("classify", "datasets", "significance", "detect", "background")),
        "n_pointings": params.n_pointings, "sources_per_sky": params.sky.n_sources,
    }
    out = {
        "estimator": model, "features": names, "classes": list(CLASSES), "threshold": threshold, "association": association,
        "datasets": datasets, "radii": radii, "sklearn_version": sklearn.__version__, "gpscat_version": __version__,
        "provenance": provenance, "metrics": cv,
    }
    write_classifier(output_model, out)
    rep = {
        "provenance": provenance, "model": {"kind": mp.kind, **{k: v for k, v in vars(mp).items() if k not in ("kind", "extra")}},
        "features": names, "dropped_features": [n for n, k in zip(names_all, keep, strict=True) if not k], "cv_folds": n_splits,
        "cross_validation": cv, "by_significance": _by_significance(labels, proba_cv, sqrt_ts, threshold, min_sig),
        "duplicates": int(np.sum(np.asarray(seeds["Duplicate"]))) if "Duplicate" in seeds.colnames else None,
        "unrecognised_shells": (int(np.sum((np.asarray(seeds["Truth_Class"]).astype(str) == "shell") & (labels == "extended")))
                                if "Truth_Class" in seeds.colnames else None),
        "importance": importance, "sklearn_version": sklearn.__version__, "gpscat_version": __version__,
        "timing": {"skies_s": t_skies, "total_s": time.perf_counter() - t0},
    }
    write_text_atomic(report, json.dumps(rep, indent=1, default=float) + "\n")
    write_text_atomic(summary or os.fspath(report).rsplit(".", 1)[0] + ".md", _summary(rep))
    _confusion_png(confusion_png, cv, f"cross-validated, {cv['n']} seeds: accuracy {cv['accuracy']:.1%}")
    if training_table is not None:
        tab = seeds.copy(copy_data=False)
        with atomic_path(training_table) as tmp:
            tab.write(tmp, format="fits")
    log.info("classifier: CV accuracy %.3f, threshold %.3f, spurious rejected %.3f, real >%g sigma kept %.3f (%d seeds, %.0f s)",
             cv["accuracy"], threshold, cv["spurious_rejected"], min_sig, cv["real_kept_above"], cv["n"], rep["timing"]["total_s"])
    return rep


def _hash(cfg: Config, sections: Sequence[str]) -> str:
    return config_hash({k: cfg.to_dict().get(k) for k in sections})


def classify_table(table: Table, model: dict, *, threshold: float | None = None) -> Table:
    """A copy of ``table`` with :data:`CLASSIFY_COLUMNS` (an empty table keeps every column).

    Raises
    ------
    ValueError
        When the seed table's datasets or correlation radii differ from the model's.
    """
    out = table.copy()
    datasets = [d for d in str(table.meta.get("DATASETS", "")).split(",") if d]
    radii = [float(r) for r in str(table.meta.get("RADII", "")).split(",") if r]
    if datasets != list(model["datasets"]) or not np.allclose(radii, model["radii"], atol=1e-4) or len(radii) != len(model["radii"]):
        raise ValueError(f"seed table has datasets {datasets} and radii {radii}, the classifier was trained on "
                         f"{model['datasets']} and {model['radii']}: retrain it (gpscat classify-train)")
    X_all, names_all = seed_features(table, association=bool(model["association"]))
    index = {n: i for i, n in enumerate(names_all)}
    missing = [n for n in model["features"] if n not in index]
    if missing:
        raise ValueError(f"seed table gives no features {missing} that the classifier needs")
    X = X_all[:, [index[n] for n in model["features"]]]
    proba = predict_proba(model["estimator"], X)
    thr = float(model["threshold"] if threshold is None else threshold)
    pr = p_real(proba)
    out["Class"] = np.asarray(CLASSES, dtype="U10")[np.argmax(proba, axis=1)] if len(table) else np.zeros(0, "U10")
    real = [CLASSES.index(c) for c in REAL_CLASSES]
    out["Start_Class"] = np.asarray(REAL_CLASSES, dtype="U10")[np.argmax(proba[:, real], axis=1)] if len(table) else np.zeros(0, "U10")
    for i, c in enumerate(CLASSES):
        out[f"P_{c}"] = proba[:, i]
    out["P_Real"] = pr
    out["Rank"] = rank(pr, np.asarray(table["Sqrt_TS"], float)).astype("i4")
    out["Selected"] = pr >= thr
    for name, (_, desc) in CLASSIFY_COLUMNS.items():
        out[name].description = desc
    out.meta["PTHRESH"] = thr
    return out


def _filled(table: Table) -> Table:
    """Plain columns: astropy reads NaN floats of FITS tables as masked values."""
    out = Table(meta=table.meta)
    for name in table.colnames:
        col = table[name]
        if hasattr(col, "mask"):
            kind = col.dtype.kind
            fill = np.nan if kind == "f" else ("" if kind in "US" else 0)
            data = col.filled(fill)
            out[name] = data
            out[name].unit, out[name].description = col.unit, col.description
        else:
            out[name] = col
    return out


def apply(
    cfg: Config,
    *,
    seeds: str | os.PathLike,
    model: str | os.PathLike,
    output: str | os.PathLike,
    regions: str | os.PathLike,
) -> Table:
    """Classify and rank the seeds and write ``seeds.fits`` and ``seeds.reg``.

    Parameters
    ----------
    cfg : Config
        Reads ``classify.working_point.threshold`` (``null``: the model's threshold).
    seeds : path
        ``results/seeds/seeds_associated.fits`` (or ``seeds_detected.fits``).
    model : path
        The classifier written by :func:`train`.
    output, regions : path
        ``results/seeds/seeds.fits`` and ``results/seeds/seeds.reg``.

    Returns
    -------
    astropy.table.Table
        The classified seeds (input columns, then :data:`CLASSIFY_COLUMNS`).
    """
    table = _filled(read_seeds(seeds))
    clf = read_classifier(model)
    if len(table) == 0 and not table.meta.get("DATASETS"):
        table = empty_seed_table(clf["datasets"], clf["radii"])
    out = classify_table(table, clf, threshold=cfg["classify"]["working_point"]["threshold"])
    with fits.open(seeds, memmap=False) as hl:
        extra = [h.copy() for h in hl[1:] if h.name != "SEEDS"]
    write_classified_seeds(output, out, header={"GPSCAT": "classify", "PTHRESH": float(out.meta["PTHRESH"])}, extra_hdus=extra)
    write_classified_regions(regions, out)
    if len(out) == 0:
        log.info("no seed to classify: wrote the empty table %s", output)
    else:
        counts = {c: int(np.sum(out["Class"] == c)) for c in CLASSES}
        log.info("classified %d seeds %s; %d selected (P_Real >= %.3f) -> %s, %s", len(out), counts, int(out["Selected"].sum()),
                 float(out.meta["PTHRESH"]), output, regions)
    return out
