"""Seed classification: features, labels from the simulated truth, classifier, working point.

Pure functions on seed tables (:data:`gpscat.io.seeds.SEED_COLUMNS`) and numpy arrays:

* :func:`seed_features` — the feature matrix of a seed table (NaN where a property does
  not apply: the classifier handles missing values);
* :func:`match_seeds` — the true class of each seed of a simulated survey (nearest injected
  source within its tolerance, else ``spurious``);
* :func:`make_classifier`, :func:`cross_validate` — a scikit-learn classifier with a fixed
  ``random_state`` and its cross-validated report, folds grouped by simulated sky;
* :func:`working_point`, :func:`evaluate`, :func:`rank` — the threshold on the probability
  of being real, the metrics at it, and the rank order.

See ``docs/classify.md`` for the rules and the measured performance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import StratifiedGroupKFold
from threadpoolctl import threadpool_limits

from gpscat.core.geom import angular_separation

__all__ = [
    "ASSOCIATION_FEATURES",
    "CLASSES",
    "REAL_CLASSES",
    "ClassifierParams",
    "cross_validate",
    "evaluate",
    "informative_features",
    "make_classifier",
    "match_seeds",
    "p_real",
    "predict_proba",
    "rank",
    "seed_features",
    "working_point",
]

#: class labels, in the order of the probability columns
CLASSES = ("point", "extended", "shell", "spurious")
REAL_CLASSES = CLASSES[:3]

#: scalar seed columns used as they are
_SCALAR = (
    "Sqrt_TS", "Radius_Best", "Size", "Size_Moments", "Size_Radius", "Extent", "Elongation",
    "Shell_Radius", "Shell_Width", "Hough_Score", "Rim_Sqrt_TS", "Rim_Contrast", "N_Absorbed",
    "N_Peaks", "Index", "Index_Err", "Index_Datasets", "Index_Datasets_Err", "Hardness",
)
#: smoothing (deg) added to a neighbour's width in ``Flank_Ratio``
_FLANK_KERNEL = 0.1
_BIG = 1e30
#: association columns (written by the associate stage), used when asked for
ASSOCIATION_FEATURES = ("Association_Overlap", "N_Associations")


def _axes(table: Table) -> tuple[list[str], list[float]]:
    datasets = [d for d in str(table.meta.get("DATASETS", "")).split(",") if d]
    radii = [float(r) for r in str(table.meta.get("RADII", "")).split(",") if r]
    grid = np.asarray(table["Sqrt_TS_Grid"]) if "Sqrt_TS_Grid" in table.colnames else None
    if grid is not None and grid.ndim == 3 and grid.shape[1:] != (len(datasets), len(radii)):
        raise ValueError(
            f"seed table: Sqrt_TS_Grid has axes {grid.shape[1:]} but DATASETS={table.meta.get('DATASETS')!r}, RADII={table.meta.get('RADII')!r}"
        )
    return datasets, radii


def _col(table: Table, name: str) -> np.ndarray:
    return np.asarray(table[name], dtype=float) if name in table.colnames else np.full(len(table), np.nan)


def _neighbour_features(table: Table) -> dict[str, np.ndarray]:
    """Context of each seed among the others: nearest brighter seed and the parent."""
    n = len(table)
    out = {k: np.full(n, np.nan) for k in (
        "Brighter_Sep", "Brighter_Sep_Extent", "Brighter_TS_Ratio", "Brighter_Size", "Brighter_Is_Shell", "Brighter_Hardness_Diff",
        "Log_Flank_Ratio", "Log_Wing_Sum_Ratio", "N_Brighter_Near", "Brighter_Profile_Diff", "Parent_TS_Ratio", "In_Shell_TS_Ratio",
        "Align_Own", "Align_Brighter", "N_Near_0.3", "N_Brighter_0.3", "TS_Over_Max_0.3", "N_Near_0.6", "N_Brighter_0.6", "TS_Over_Max_0.6",
        "N_Near_1.0", "N_Brighter_1.0", "TS_Over_Max_1.0", "Brighter_Sep2", "Brighter_Sep_Sizes", "Brighter_Elongation", "Brighter_Radius_Best",
        "Rim_Offset",
    )}
    if n == 0:
        return out
    lon, lat = _col(table, "GLON"), _col(table, "GLAT")
    ts, extent = _col(table, "Sqrt_TS"), _col(table, "Extent")
    sep = angular_separation(lon[:, None], lat[:, None], lon[None, :], lat[None, :])
    brighter = ts[None, :] > ts[:, None]
    # a Hough seed contains its rim: brighter peaks inside its outer radius are its own parts
    shell_seed = np.char.strip(np.asarray(table["Type"]).astype(str)) == "shell" if "Type" in table.colnames else np.zeros(n, bool)
    brighter &= ~(shell_seed[:, None] & (sep < np.nan_to_num(extent, nan=0.0)[:, None]))
    # a peak inside a Hough seed's outer radius: a piece of the ring (or a source inside it)
    inside = shell_seed[None, :] & ~shell_seed[:, None] & (sep < np.nan_to_num(extent, nan=0.0)[None, :])
    k = np.argmax(np.where(inside, ts[None, :], -np.inf), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["In_Shell_TS_Ratio"] = np.where(inside.any(axis=1), ts / ts[k], np.nan)
    d = np.where(brighter, sep, np.inf)
    j = np.argmin(d, axis=1)
    has = np.isfinite(d[np.arange(n), j])
    out["Brighter_Sep"] = np.where(has, d[np.arange(n), j], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["Brighter_Sep_Extent"] = np.where(has, out["Brighter_Sep"] / extent[j], np.nan)
        out["Brighter_TS_Ratio"] = np.where(has, ts / ts[j], np.nan)
    size = np.nan_to_num(_col(table, "Size"), nan=0.0)
    out["Brighter_Size"] = np.where(has, size[j], np.nan)
    out["Brighter_Is_Shell"] = np.where(has, shell_seed[j], np.nan)
    hardness = _col(table, "Hardness")
    with np.errstate(divide="ignore", invalid="ignore"):
        # a fragment shares its parent's spectrum, a separate source has its own
        out["Brighter_Hardness_Diff"] = np.where(has & (hardness > 0) & (hardness[j] > 0), np.log10(hardness / hardness[j]), np.nan)
    # the significance a brighter seed's Gaussian-like wing would give here (its Extent ~ 1.5 sigma)
    width2 = (np.nan_to_num(extent, nan=0.1) / 1.5) ** 2 + _FLANK_KERNEL**2
    wing = np.where(brighter, ts[None, :] * np.exp(-0.5 * sep**2 / width2[None, :]), 0.0).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["Log_Flank_Ratio"] = np.where(brighter.any(axis=1), np.clip(np.log10(ts / wing), -3.0, 3.0), np.nan)
        wsum = np.where(brighter, ts[None, :] * np.exp(-0.5 * sep**2 / width2[None, :]), 0.0).sum(axis=1)
        out["Log_Wing_Sum_Ratio"] = np.where(brighter.any(axis=1), np.clip(np.log10(ts / wsum), -3.0, 3.0), np.nan)
    out["N_Brighter_Near"] = (brighter & (sep < 3 * np.nan_to_num(extent, nan=0.1)[None, :])).sum(axis=1).astype(float)
    if "Sqrt_TS_Grid" in table.colnames:
        grid = np.asarray(table["Sqrt_TS_Grid"], float).reshape(n, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = grid / ts[:, None]
            out["Brighter_Profile_Diff"] = np.where(has, np.nansum(np.abs(rel - rel[j]), axis=1), np.nan)
    _pair_features(out, table, sep, brighter, j, has, shell_seed)
    if "Parent_ID" in table.colnames and "ID" in table.colnames:
        ids = np.asarray(table["ID"])
        parent = np.asarray(table["Parent_ID"])
        pos = {int(i): k for k, i in enumerate(ids)}
        k = np.array([pos.get(int(p), -1) for p in parent])
        with np.errstate(divide="ignore", invalid="ignore"):
            out["Parent_TS_Ratio"] = np.where(k >= 0, ts / ts[np.maximum(k, 0)], np.nan)
    return out


def _pair_features(out: dict, table: Table, sep: np.ndarray, brighter: np.ndarray, j: np.ndarray, has: np.ndarray, shell_seed: np.ndarray) -> None:
    """Geometry of a seed and its nearest brighter seed, local crowding, offset from a Hough rim.

    A fragment of an elongated source or of a ring lies along the major axes (``Align_*``:
    |cos| of the angle between a major axis and the line joining the two, times the
    elongation); fragments crowd around one bright seed (``N_Near_*``, ``TS_Over_Max_*``
    within 0.3, 0.6, 1 deg).
    """
    n = len(table)
    lon, lat, ts = _col(table, "GLON"), _col(table, "GLAT"), _col(table, "Sqrt_TS")
    ang, elong = np.deg2rad(_col(table, "Angle")), np.nan_to_num(_col(table, "Elongation"), nan=0.0)
    size = np.nan_to_num(_col(table, "Size"), nan=0.0)
    pa = np.arctan2(((lon[j] - lon + 180.0) % 360.0 - 180.0) * np.cos(np.deg2rad(lat)), lat[j] - lat)
    out["Align_Own"] = np.where(has, np.abs(np.cos(ang - pa)) * elong, np.nan)
    out["Align_Brighter"] = np.where(has, np.abs(np.cos(ang[j] - pa)) * elong[j], np.nan)
    others = ~np.eye(n, dtype=bool)
    for radius in (0.3, 0.6, 1.0):
        near = (sep < radius) & others
        out[f"N_Near_{radius}"] = near.sum(axis=1).astype(float)
        out[f"N_Brighter_{radius}"] = (near & brighter).sum(axis=1).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"TS_Over_Max_{radius}"] = np.where(near.any(axis=1), ts / np.where(near, ts[None, :], 0.0).max(axis=1), np.nan)
    d2 = np.sort(np.where(brighter, sep, np.inf), axis=1)[:, 1] if n > 1 else np.full(n, np.inf)
    out["Brighter_Sep2"] = np.where(np.isfinite(d2), d2, np.nan)
    out["Brighter_Sep_Sizes"] = np.where(has, out["Brighter_Sep"] / (size + size[j] + 0.05), np.nan)
    out["Brighter_Elongation"] = np.where(has, _col(table, "Elongation")[j], np.nan)
    out["Brighter_Radius_Best"] = np.where(has, _col(table, "Radius_Best")[j], np.nan)
    radius, width = _col(table, "Shell_Radius"), _col(table, "Shell_Width")
    ds = np.where(shell_seed[None, :] & others, sep, np.inf)
    k = np.argmin(ds, axis=1)
    hs = np.isfinite(ds[np.arange(n), k])
    with np.errstate(divide="ignore", invalid="ignore"):
        out["Rim_Offset"] = np.where(hs, (ds[np.arange(n), k] - radius[k] - 0.5 * width[k]) / (0.5 * width[k] + 0.1), np.nan)


def seed_features(table: Table, *, association: bool = False) -> tuple[np.ndarray, list[str]]:
    """Feature matrix of a seed table.

    Features: the scalar seed properties (:data:`_SCALAR`); the significance in every
    (dataset, radius) map ``Sig_<dataset>_r<radius>`` and the same divided by ``Sqrt_TS``
    (``Rel_...``: the shape of the significance-vs-radius curve and the spectrum); the
    index of the best radius; ``Is_Shell`` (Hough seed), ``Is_Residual`` (found with the
    shells modelled), ``Nested`` and ``Contains``
    (``Nest_Flag`` bits); ``log10`` of ``Excess`` and ``Flux``; the separation from the
    nearest brighter seed (deg and in units of its ``Extent``), the significance ratio to
    it and to the parent seed; with ``association``, :data:`ASSOCIATION_FEATURES` (NaN when
    the table has no such column).

    Parameters
    ----------
    table : astropy.table.Table
        Seed table with ``meta['DATASETS']`` and ``meta['RADII']`` (the axes of
        ``Sqrt_TS_Grid``).
    association : bool
        Add the association features.

    Returns
    -------
    X : ndarray, shape (n_seeds, n_features)
        Float features; NaN where a property does not apply or is unknown.
    names : list of str
        Feature names (the order of the columns of ``X``).
    """
    datasets, radii = _axes(table)
    n = len(table)
    feats: dict[str, np.ndarray] = {name: _col(table, name) for name in _SCALAR}
    ts = feats["Sqrt_TS"]
    grid = np.asarray(table["Sqrt_TS_Grid"], dtype=float).reshape(n, len(datasets), len(radii)) if n else np.zeros((0, len(datasets), len(radii)))
    for i, d in enumerate(datasets):
        for k, r in enumerate(radii):
            feats[f"Sig_{d}_r{r:.2f}"] = grid[:, i, k]
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, d in enumerate(datasets):
            for k, r in enumerate(radii):
                feats[f"Rel_{d}_r{r:.2f}"] = grid[:, i, k] / ts
    r_best = feats["Radius_Best"]
    feats["Radius_Best_Index"] = np.array([int(np.argmin(np.abs(np.asarray(radii) - rb))) if radii and np.isfinite(rb) else np.nan for rb in r_best], dtype=float)
    kind = np.asarray(table["Type"]).astype(str) if "Type" in table.colnames else np.full(n, "peak")
    feats["Is_Shell"] = (np.char.strip(kind) == "shell").astype(float)
    search = np.asarray(table["Search"]).astype(str) if "Search" in table.colnames else np.full(n, "maps")
    feats["Is_Residual"] = (np.char.strip(search) == "residual").astype(float)
    nest = np.asarray(table["Nest_Flag"], dtype=int) if "Nest_Flag" in table.colnames else np.zeros(n, int)
    feats["Nested"] = (nest & 1 > 0).astype(float)
    feats["Contains"] = (nest & 2 > 0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in ("Excess", "Flux"):
            v = _col(table, name)
            feats[f"Log_{name}"] = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
    feats.update(_neighbour_features(table))
    if association:
        for name in ASSOCIATION_FEATURES:
            feats[name] = _col(table, name)
    names = list(feats)
    X = np.column_stack([feats[k] for k in names]) if n else np.zeros((0, len(names)))
    X[~np.isfinite(X)] = np.nan
    np.clip(X, -_BIG, _BIG, out=X)  # the estimators work in float32
    return X, names


def informative_features(X: np.ndarray) -> np.ndarray:
    """Columns of ``X`` that vary: not all-NaN and not one constant value (a bool mask).

    Features that never vary in the training set (e.g. ``Index`` without band maps) carry
    no information and are dropped from the model's feature list.
    """
    X = np.asarray(X, float)
    if X.shape[0] == 0:
        return np.zeros(X.shape[1], bool)
    finite = np.isfinite(X)
    lo = np.where(finite, X, np.inf).min(axis=0)
    hi = np.where(finite, X, -np.inf).max(axis=0)
    return finite.any(axis=0) & ((hi > lo) | (~finite).any(axis=0) & finite.any(axis=0))


def match_seeds(seeds: Table, truth: Table, *, min_tolerance: float = 0.1) -> Table:
    """True class of each seed of a simulated survey.

    Rule (one seed per injected source):

    1. a seed *matches* the **nearest** injected source among those within their
       tolerance ``max(min_tolerance, Match_Radius)`` (``Match_Radius``: 0 for points,
       2 sigma for Gaussians, r for disks, outer radius for shells; see
       :func:`gpscat.core.training_sky.match_radius`);
    2. among the seeds matching one source, its **counterpart** is the most significant
       one and takes the source's class (``point``, ``extended``, ``shell``); for a shell
       source the counterpart is its most significant Hough seed (``Type == 'shell'``) —
       when the Hough step found none, the most significant seed is labelled
       ``extended``: no peak seed can start a shell model (it has no centre or radius of
       the ring), the emission it sees is extended;
    3. every other seed is ``spurious``: no source within tolerance (a noise or background
       fluctuation, or a Hough ring around unrelated emission), or a *duplicate* of a
       source that already has its counterpart (a fragment of an extended source or of a
       shell's rim, which must not start a model of its own).

    Parameters
    ----------
    seeds : Table
        ``GLON``, ``GLAT`` (deg), ``Sqrt_TS``; ``Type`` optional.
    truth : Table
        :func:`gpscat.core.training_sky.sky_truth`: ``GLON``, ``GLAT``, ``Match_Radius``,
        ``Class``, ``Name``.
    min_tolerance : float
        Smallest matching radius, deg.

    Returns
    -------
    Table
        ``Label`` (one of :data:`CLASSES`), ``Truth_Name`` (the matched source, also for
        duplicates; empty when none), ``Truth_Sep`` (deg to it, NaN when none),
        ``Truth_Class`` (the matched source's true class, ``spurious`` when none),
        ``Duplicate`` (True for a matched seed that is not the counterpart).
    """
    if min_tolerance < 0:
        raise ValueError(f"min_tolerance must be >= 0 deg, got {min_tolerance}")
    n = len(seeds)
    out = Table()
    out["Label"] = np.full(n, "spurious", dtype="U10")
    out["Truth_Name"] = np.full(n, "", dtype="U64")
    out["Truth_Sep"] = np.full(n, np.nan)
    out["Truth_Class"] = np.full(n, "spurious", dtype="U10")
    out["Duplicate"] = np.zeros(n, dtype=bool)
    if n == 0 or len(truth) == 0:
        return out
    sep = angular_separation(
        np.asarray(seeds["GLON"], float)[:, None], np.asarray(seeds["GLAT"], float)[:, None],
        np.asarray(truth["GLON"], float)[None, :], np.asarray(truth["GLAT"], float)[None, :],
    )
    tol = np.maximum(min_tolerance, np.asarray(truth["Match_Radius"], float))
    d = np.where(sep <= tol[None, :], sep, np.inf)
    rows = np.arange(n)
    j = np.argmin(d, axis=1)
    ok = np.isfinite(d[rows, j])
    out["Truth_Name"][ok] = np.asarray(truth["Name"]).astype(str)[j[ok]]
    out["Truth_Sep"][ok] = d[rows, j][ok]
    classes = np.asarray(truth["Class"]).astype(str)
    is_shell_seed = np.char.strip(np.asarray(seeds["Type"]).astype(str)) == "shell" if "Type" in seeds.colnames else np.zeros(n, bool)
    ts = np.nan_to_num(np.asarray(seeds["Sqrt_TS"], float), nan=-np.inf)
    for s in np.unique(j[ok]):
        members = np.flatnonzero(ok & (j == s))
        out["Truth_Class"][members] = classes[s]
        label, candidates = classes[s], members
        if label == "shell":
            hough = members[is_shell_seed[members]]
            # a shell that the Hough step did not find is, for its seeds, extended emission
            label, candidates = ("shell", hough) if hough.size else ("extended", members)
        best = candidates[np.argmax(ts[candidates])]
        out["Label"][best] = label
        out["Duplicate"][members[members != best]] = True
    return out


@dataclass(frozen=True)
class ClassifierParams:
    """Settings of the scikit-learn classifier (``classify.model`` in the config)."""

    kind: str = "hist_gradient_boosting"
    max_iter: int = 100
    learning_rate: float = 0.1
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 10
    l2_regularization: float = 1.0
    n_estimators: int = 300
    class_weight: str | None = "balanced"
    random_state: int = 0
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ("hist_gradient_boosting", "random_forest"):
            raise ValueError(f"classifier kind must be 'hist_gradient_boosting' or 'random_forest', got {self.kind!r}")


def make_classifier(params: ClassifierParams) -> ClassifierMixin:
    """A fresh scikit-learn classifier (deterministic: fixed ``random_state``, no early stopping)."""
    if params.kind == "random_forest":
        return RandomForestClassifier(
            n_estimators=params.n_estimators, min_samples_leaf=max(1, params.min_samples_leaf // 4),
            class_weight=("balanced_subsample" if params.class_weight else None), random_state=params.random_state, n_jobs=1, **params.extra,
        )
    return HistGradientBoostingClassifier(
        max_iter=params.max_iter, learning_rate=params.learning_rate, max_leaf_nodes=params.max_leaf_nodes,
        min_samples_leaf=params.min_samples_leaf, l2_regularization=params.l2_regularization, early_stopping=False,
        class_weight=params.class_weight, random_state=params.random_state, **params.extra,
    )


def _encode(labels: Sequence[str]) -> np.ndarray:
    labels = np.asarray(labels).astype(str)
    bad = sorted(set(labels) - set(CLASSES))
    if bad:
        raise ValueError(f"unknown class labels {bad}; classes are {CLASSES}")
    index = {c: i for i, c in enumerate(CLASSES)}
    return np.array([index[c] for c in labels], dtype=int)


def predict_proba(model: ClassifierMixin, X: np.ndarray) -> np.ndarray:
    """Probabilities of :data:`CLASSES` (columns in that order; 0 for classes the model never saw)."""
    out = np.zeros((X.shape[0], len(CLASSES)))
    if X.shape[0] == 0:
        return out
    with threadpool_limits(1):
        out[:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(X)
    return out


def cross_validate(
    model: ClassifierMixin, X: np.ndarray, labels: Sequence[str], groups: np.ndarray, *, n_splits: int = 5, random_state: int = 0
) -> np.ndarray:
    """Out-of-fold class probabilities, folds stratified by class and grouped by ``groups``.

    Seeds of one simulated sky share their noise and neighbours, so a sky is never split
    between training and validation (:class:`sklearn.model_selection.StratifiedGroupKFold`,
    shuffled with ``random_state``).

    Returns
    -------
    ndarray, shape (n_seeds, 4)
        Probabilities of :data:`CLASSES` predicted by the fold that did not see the seed.
    """
    y = _encode(labels)
    groups = np.asarray(groups)
    n_groups = np.unique(groups).size
    if n_splits < 2 or n_groups < n_splits:
        raise ValueError(f"n_splits must be >= 2 and <= the number of groups ({n_groups}), got {n_splits}")
    proba = np.zeros((y.size, len(CLASSES)))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    for train, test in folds.split(X, y, groups):
        # a feature with no value in a fold's training part (e.g. Hough_Score without shell
        # seeds) is left out of that fold: scikit-learn cannot bin an all-NaN column
        cols = ~np.isnan(X[train]).all(axis=0)
        with threadpool_limits(1):  # small fits: OpenMP threads only contend with other jobs
            m = clone(model).fit(X[np.ix_(train, cols)], y[train])
        proba[test] = predict_proba(m, X[np.ix_(test, cols)])
    return proba


def p_real(proba: np.ndarray) -> np.ndarray:
    """Probability of being a real source: 1 − P(spurious)."""
    return 1.0 - np.asarray(proba)[:, CLASSES.index("spurious")]


def working_point(p_real_: np.ndarray, is_real: np.ndarray, sqrt_ts: np.ndarray, *, min_significance: float = 7.0, recall: float = 0.95) -> float:
    """Highest threshold on ``P_Real`` that keeps ``recall`` of the real seeds above ``min_significance``.

    A seed is selected when ``P_Real >= threshold``.  Without any real seed above
    ``min_significance`` the threshold is 0.5.
    """
    if not 0 < recall <= 1:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    p = np.asarray(p_real_, float)[np.asarray(is_real, bool) & (np.asarray(sqrt_ts, float) > min_significance)]
    if p.size == 0:
        return 0.5
    # the k-th highest probability keeps k of the n seeds; k = ceil(recall n)
    k = int(np.ceil(recall * p.size - 1e-9))
    return float(np.sort(p)[::-1][k - 1])


def evaluate(labels: Sequence[str], proba: np.ndarray, sqrt_ts: np.ndarray, *, threshold: float, min_significance: float = 7.0) -> dict:
    """Metrics of predictions: accuracy, confusion matrix, recalls, and the working point.

    Returns a JSON-able dict: ``n``, ``n_per_class``, ``accuracy`` (argmax over the four
    classes), ``confusion`` (rows true, columns predicted, in :data:`CLASSES` order),
    ``recall`` per class, ``threshold``, ``spurious_rejected`` (fraction of spurious seeds
    with ``P_Real < threshold``), ``real_kept`` and ``real_kept_above`` (fraction of real
    seeds, and of those above ``min_significance``, with ``P_Real >= threshold``).
    """
    y = _encode(labels)
    proba = np.asarray(proba, float)
    pred = np.argmax(proba, axis=1) if y.size else np.zeros(0, int)
    conf = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(conf, (y, pred), 1)
    per_class = conf.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(per_class > 0, np.diag(conf) / np.maximum(per_class, 1), np.nan)
    pr = p_real(proba) if y.size else np.zeros(0)
    spurious = y == CLASSES.index("spurious")
    real = ~spurious
    above = real & (np.asarray(sqrt_ts, float) > min_significance)

    def frac(mask, cond):
        return float(np.mean(cond[mask])) if mask.any() else float("nan")

    return {
        "n": int(y.size),
        "n_per_class": {c: int(k) for c, k in zip(CLASSES, per_class, strict=True)},
        "accuracy": float(np.mean(pred == y)) if y.size else float("nan"),
        "confusion": conf.tolist(),
        "recall": {c: float(r) for c, r in zip(CLASSES, recall, strict=True)},
        "threshold": float(threshold),
        "min_significance": float(min_significance),
        "spurious_rejected": frac(spurious, pr < threshold),
        "real_kept": frac(real, pr >= threshold),
        "real_kept_above": frac(above, pr >= threshold),
        "n_real_above": int(above.sum()),
    }


def rank(p_real_: np.ndarray, sqrt_ts: np.ndarray) -> np.ndarray:
    """Rank of each seed (1 = best): by decreasing ``P_Real``, ties by decreasing ``Sqrt_TS``."""
    p = np.nan_to_num(np.asarray(p_real_, float), nan=-1.0)
    ts = np.nan_to_num(np.asarray(sqrt_ts, float), nan=-np.inf)
    order = np.lexsort((-ts, -p))
    out = np.empty(p.size, dtype=int)
    out[order] = np.arange(1, p.size + 1)
    return out
