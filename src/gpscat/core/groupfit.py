"""The fit of one group of overlapping sources: refits, residual search, model selection, TS.

:func:`fit_group` takes the group's datasets (cut to its region of interest, see
:func:`roi_dataset`), the members' start models and the frozen models of the other groups'
sources in the region, and runs (docs/fit.md):

1. the members' amplitudes and the background norms, then all free parameters;
2. (first pass) the residual search: while the residual significance inside the group
   reaches ``residual_threshold`` somewhere farther than ``min_separation`` from every
   member, a Gaussian is added there and the group refitted (at most ``max_new`` times);
3. (first pass) model selection per member, brightest first, each candidate by a *local*
   refit (the candidate's parameters, the other members' amplitudes, the background norms):
   spatial — point vs the best extended shape by ``TS_ext = 2 Δln L ≥ ts_extension``, then
   among the extended shapes by AIC (the Gaussian unless another is better by
   ``delta_aic``), elongation for the brightest member (``ts_elongation``); spectral — power
   law vs LogParabola / ExpCutoffPowerLaw by ``TS_curv ≥ ts_curvature``;
4. the final fit of all free parameters with the covariance (Hesse);
5. TS per member: refit without it (``ts_refit``: the spectral parameters of the other
   members and the background norms, or all free parameters), split into the datasets'
   contributions; members below ``ts_threshold``, or whose position ran to the edge of its
   range (``max_shift`` from the seed), are removed (kept in ``rejected`` with the reason)
   and the fit and TS repeated (at most three rounds).

Nothing here raises on a bad fit: a fit that does not converge is reported in
``GroupFit.status``; a non-finite likelihood at the start (NaN in the data or IRFs) stops
the group with ``failed: ...`` and the start models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from gpscat.core.dataset import MapDataset
from gpscat.core.fit import Fit, FitResult
from gpscat.core.geom import Map
from gpscat.core.npred import DatasetEvaluator
from gpscat.core.residuals import residual_peak
from gpscat.core.source_models import (
    SPATIAL_KINDS,
    SPECTRAL_KINDS,
    ShapeLimits,
    convert_spatial,
    convert_spectral,
    copy_source,
    make_spatial,
    make_spectral,
    model_r68,
    spatial_kind,
    wrap_lon,
)
from gpscat.models.sky import FoVBackgroundModel, Models, SkyModel

__all__ = ["GroupFit", "GroupFitOptions", "Rejection", "Selection", "fit_group", "merge_into_background", "roi_dataset"]

log = logging.getLogger(__name__)

_SHELL_MIN_R68 = 0.3  # deg: a shell is tried only for sources at least this large (or seeded as shells)
_MAX_TS_ROUNDS = 3
_FAST_TOL = 1.0  # Migrad tolerance of intermediate and candidate fits (EDM goal 0.002)


@dataclass(frozen=True)
class GroupFitOptions:
    """Settings of :func:`fit_group` (the ``fit`` config section, docs/fit.md)."""

    ts_threshold: float = 25.0
    ts_refit: str = "spectral"
    tol: float = 0.1
    strategy: int = 1
    max_nfev: int | None = None
    spatial_kinds: tuple[str, ...] = SPATIAL_KINDS
    spectral_kinds: tuple[str, ...] = SPECTRAL_KINDS
    selection: bool = True
    ts_extension: float = 16.0
    delta_aic: float = 4.0
    ts_curvature: float = 4.0
    ts_elongation: float = 16.0
    min_ts_complex: float = 100.0
    min_ts_select: float = 25.0
    residual: bool = True
    residual_threshold: float = 5.0
    residual_radius: float = 0.1
    max_new: int = 2
    new_size: float = 0.1
    min_separation: float = 0.1
    limits: ShapeLimits = field(default_factory=ShapeLimits)

    def __post_init__(self):
        if self.ts_refit not in ("all", "spectral"):
            raise ValueError(f"ts_refit must be 'all' or 'spectral', got {self.ts_refit!r}")
        for k in self.spatial_kinds:
            if k not in SPATIAL_KINDS:
                raise ValueError(f"unknown spatial kind {k!r}; known: {SPATIAL_KINDS}")
        for k in self.spectral_kinds:
            if k not in SPECTRAL_KINDS:
                raise ValueError(f"unknown spectral kind {k!r}; known: {SPECTRAL_KINDS}")

    @property
    def fit_options(self) -> dict:
        return {"tol": self.tol, "strategy": self.strategy, "max_nfev": self.max_nfev}


@dataclass
class Selection:
    """Model selection of one source: statistics (−2 ln L) and free-parameter counts of the
    candidates tried, the test statistics and the AIC margin of the choice."""

    spatial: dict[str, tuple[float, int]] = field(default_factory=dict)
    spectral: dict[str, tuple[float, int]] = field(default_factory=dict)
    ts_ext: float = np.nan
    ts_curv: float = np.nan
    ts_elong: float = np.nan
    delta_aic_spatial: float = np.nan
    delta_aic_spectral: float = np.nan


@dataclass
class Rejection:
    """A source removed from the group: its last model, TS and the reason."""

    model: SkyModel
    ts: float
    reason: str


@dataclass
class GroupFit:
    """Outcome of :func:`fit_group` (models hold the best-fit values and covariance)."""

    models: Models
    members: list[str]
    status: str
    neighbours: list[SkyModel] = field(default_factory=list)
    result: FitResult | None = None
    ts: dict[str, float] = field(default_factory=dict)
    ts_datasets: dict[str, dict[str, float]] = field(default_factory=dict)
    selection: dict[str, Selection] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    n_fits: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ----------------------------------------------------------------------------- datasets


def roi_dataset(dataset: MapDataset, center: tuple[float, float], radius: float, *, pad: float = 0.8,
                frame: str = "galactic") -> MapDataset | None:
    """Cutout of ``dataset`` around ``center`` (deg, ``frame``) with ``mask_fit`` = the disk of
    ``radius``; ``None`` if the disk holds no safe bin.

    The cutout reaches ``pad`` (deg) beyond the disk, so that the prediction of every
    source that reaches the disk — through its PSF tails too — is computed on a cutout of
    its own that the map does not clip.
    """
    geom = dataset.geom
    slices = geom.cutout_slices(center[0], center[1], (2.0 * (radius + pad) + 2 * geom.binsz,) * 2, frame=frame)
    if slices is None:
        return None
    cut = dataset.cutout(*slices)
    inside = cut.geom.separation(center[0], center[1], frame=frame) <= radius
    mask = np.broadcast_to(inside, Map.expected_shape(cut.geom, (cut.energy_axis,))).copy()
    cut = replace(cut, mask_fit=Map(cut.geom, mask, (cut.energy_axis,), ""))
    return cut if cut.mask().any() else None


def merge_into_background(datasets, models) -> list[MapDataset]:
    """Datasets whose background includes the predicted counts of ``models`` (frozen
    "outer sources" as a fixed background map)."""
    out = []
    for ds in datasets:
        signal = DatasetEvaluator(ds, list(models)).npred_signal()
        out.append(replace(ds, background=ds.background.copy(data=np.asarray(ds.background.data, float) + signal)))
    return out


# ----------------------------------------------------------------------------- fitting


class _GroupFitter:
    """Builds fits of members + frozen neighbours + background models with chosen free sets."""

    def __init__(self, datasets, neighbours, options: GroupFitOptions):
        self.datasets = list(datasets)
        self.neighbours = list(neighbours)
        for m in self.neighbours:
            m.freeze()
        self.backgrounds = [FoVBackgroundModel(d.name) for d in self.datasets]
        self.options = options
        self.n_fits = 0

    def models(self, members) -> Models:
        return Models([*members, *self.neighbours, *self.backgrounds])

    def stat(self, members) -> float:
        return Fit(self.datasets, self.models(members)).stat_sum()

    def dataset_stats(self, members) -> np.ndarray:
        models = self.models(members)
        return np.array([Fit(d, models).stat_sum() for d in self.datasets])

    def run(self, members, *, free, covariance: bool = False, fast: bool = True) -> FitResult:
        """Fit with only the parameters in ``free`` (a set of ids) plus background norms free.

        ``fast`` fits (candidates, intermediate steps) use Minuit strategy 0; the final
        fit the configured strategy.
        """
        models = self.models(members)
        options = dict(self.options.fit_options)
        if fast:  # comparisons need the minimum to ~0.01 in -2 ln L, not an accurate covariance
            options["strategy"] = 0
            options["tol"] = max(options["tol"], _FAST_TOL)
        allowed = set(free) | {id(b.spectral_model.norm) for b in self.backgrounds}
        saved = [(p, p.frozen) for p in models.parameters]
        for p, frozen in saved:
            p.frozen = frozen or id(p) not in allowed
        try:
            self.n_fits += 1
            return Fit(self.datasets, models, **options).run(covariance=covariance)
        finally:
            for p, frozen in saved:
                p.frozen = frozen


def _free_ids(model: SkyModel) -> set[int]:
    return {id(p) for p in model.parameters if not p.frozen}


def _amplitude_ids(members) -> set[int]:
    return {id(m.spectral_model.parameters["amplitude"]) for m in members}


def _spectral_ids(members) -> set[int]:
    return {id(p) for m in members for p in m.spectral_model.parameters if not p.frozen}


def _all_ids(members) -> set[int]:
    return set().union(*(_free_ids(m) for m in members)) if members else set()


def _n_free(model: SkyModel) -> int:
    return sum(not p.frozen for p in model.parameters)


def _replace(members, new: SkyModel) -> list[SkyModel]:
    return [new if m.name == new.name else m for m in members]


def _local_fit(fitter: _GroupFitter, members, candidate: SkyModel, *, spatial: bool = True) -> tuple[float, list[SkyModel]]:
    """Local refit with ``candidate`` in place of its namesake: (stat, members).

    Free: the candidate's parameters (only its spectral ones unless ``spatial``), the other
    members' amplitudes and the background norms.  The others go back to their values
    afterwards, so that every candidate starts from the same point.
    """
    trial = _replace(members, candidate)
    others = [m for m in trial if m.name != candidate.name]
    own = _free_ids(candidate) if spatial else _spectral_ids([candidate])
    saved = [(p, p.value) for m in [*others, *fitter.backgrounds] for p in m.parameters]
    try:
        result = fitter.run(trial, free=own | _amplitude_ids(others))
    except Exception as exc:  # a candidate must never stop the group
        log.warning("candidate %s (%s) failed: %s", candidate.name, type(candidate.spatial_model).__name__, exc)
        result = None
    for p, v in saved:
        p.value = v
    if result is None or not np.isfinite(result.total_stat):
        return np.inf, members
    return result.total_stat, trial


def _current(fitter: _GroupFitter, members, name) -> tuple[float, list[SkyModel]]:
    """The current model of ``name`` as a candidate: its statistic at the last fit (no refit)."""
    src = _get(members, name)
    cand = copy_source(src, spatial=src.spatial_model.copy(), spectral=src.spectral_model.copy())
    trial = _replace(members, cand)
    return fitter.stat(trial), trial


def _quick_ts(fitter: _GroupFitter, members) -> dict[str, float]:
    """Statistic without each member, nothing refitted: an upper bound of its TS."""
    base = fitter.stat(members)
    return {m.name: fitter.stat([o for o in members if o is not m]) - base for m in members}


# ----------------------------------------------------------------------------- selection


def _choose_spatial(stats: dict, sel: Selection, o: GroupFitOptions) -> str:
    """Point unless TS_ext >= ts_extension; among extended shapes the Gaussian unless
    another has an AIC lower by delta_aic (see the module docstring)."""
    ext = [k for k in stats if k != "point"]
    if not ext:
        return "point"
    best_ext = min(ext, key=lambda k: stats[k][0])
    if "point" in stats:
        sel.ts_ext = stats["point"][0] - stats[best_ext][0]
        if sel.ts_ext < o.ts_extension:
            return "point"
    aic = {k: stats[k][0] + 2 * sel.spatial[k][1] for k in ext}
    chosen = "gauss" if "gauss" in aic else best_ext
    alt = min(aic, key=aic.get)
    return alt if alt != chosen and aic[alt] <= aic[chosen] - o.delta_aic else chosen


def _select_spatial(fitter, members, name, *, brightest: bool, ts_quick: float, seeded_shell: bool, sel: Selection):
    """Spatial model selection of member ``name`` (local refits of the candidate shapes).

    Point and Gaussian always; disk and (for shell seeds, shell starts or sources larger
    than 0.3 deg) shell unless the source is clearly point-like; the generalised Gaussian
    when the Gaussian wins for the brightest member above ``min_ts_complex`` (or the start
    was one); then elongation for that member.
    """
    o = fitter.options
    src = _get(members, name)
    current = spatial_kind(src.spatial_model)
    complex_ok = brightest and ts_quick >= o.min_ts_complex
    stats: dict[str, tuple[float, list]] = {}

    def trial(kind):
        if kind in stats or kind not in o.spatial_kinds:
            return
        if kind == current:
            stats[kind] = _current(fitter, members, name)
        else:
            cand = copy_source(src, spatial=convert_spatial(src.spatial_model, kind, limits=o.limits))
            stats[kind] = _local_fit(fitter, members, cand)
        sel.spatial[kind] = (stats[kind][0], _n_free(_get(stats[kind][1], name)))

    trial(current)
    trial("point")
    trial("gauss")
    clearly_point = "gauss" in stats and "point" in stats and stats["point"][0] - stats["gauss"][0] < 0.5 * o.ts_extension
    if not (clearly_point and current in ("point", "gauss")):
        trial("disk")
        gauss_r68 = model_r68(_get(stats["gauss"][1], name).spatial_model) if "gauss" in stats else 0.0
        if seeded_shell or current == "shell" or max(model_r68(src.spatial_model), gauss_r68) >= _SHELL_MIN_R68:
            trial("shell")
    if not stats:  # none of the allowed shapes could be fitted: keep the current one
        return members
    chosen = _choose_spatial(stats, sel, o)
    if chosen in ("gauss", "gauss-general") and complex_ok:
        trial("gauss-general")
        chosen = _choose_spatial(stats, sel, o)
    aics = {k: stats[k][0] + 2 * sel.spatial[k][1] for k in stats}
    others = [v for k, v in aics.items() if k != chosen]
    sel.delta_aic_spatial = (min(others) - aics[chosen]) if others else np.nan
    members = stats[chosen][1]
    if complex_ok and chosen in ("gauss", "disk", "gauss-general"):
        members = _try_elongation(fitter, members, name, stats[chosen][0], sel)
    log.info("source %s: spatial %s (TS_ext %.1f, tried %s)", name, spatial_kind(_get(members, name).spatial_model), sel.ts_ext,
             {k: round(v[0] - stats[chosen][0], 1) for k, v in stats.items()})
    return members


def _get(members, name) -> SkyModel:
    return next(m for m in members if m.name == name)


def _try_elongation(fitter, members, name, stat0: float, sel: Selection):
    src = _get(members, name)
    best_stat, best = np.inf, None
    for phi in (0.0, 90.0):
        spatial = src.spatial_model.copy()
        spatial.e.frozen, spatial.phi.frozen = False, False
        spatial.e.value, spatial.phi.value = 0.4, phi
        spatial.e.max = 0.95
        cand = copy_source(src, spatial=spatial)
        stat, trial = _local_fit(fitter, members, cand)
        if stat < best_stat:
            best_stat, best = stat, trial
    sel.ts_elong = stat0 - best_stat
    if best is not None and sel.ts_elong >= fitter.options.ts_elongation:
        return best
    return members


def _select_spectral(fitter, members, name, *, sel: Selection):
    o = fitter.options
    src = _get(members, name)
    current = src.spectral_model.tag[1]
    stats = {}
    for kind in dict.fromkeys(("pl", *o.spectral_kinds)):
        if kind == current:
            stats[kind] = _current(fitter, members, name)
        else:  # the shape stays at its best fit: a spectral refit costs no new convolution
            cand = copy_source(src, spectral=convert_spectral(src.spectral_model, kind))
            stats[kind] = _local_fit(fitter, members, cand, spatial=False)
        sel.spectral[kind] = (stats[kind][0], _n_free(_get(stats[kind][1], name)))
    curved = [k for k in stats if k != "pl"]
    chosen = "pl"
    if curved:
        best = min(curved, key=lambda k: stats[k][0])
        sel.ts_curv = stats["pl"][0] - stats[best][0]
        if sel.ts_curv >= o.ts_curvature:
            chosen = best
    aics = {k: stats[k][0] + 2 * sel.spectral[k][1] for k in stats}
    others = [v for k, v in aics.items() if k != chosen]
    sel.delta_aic_spectral = (min(others) - aics[chosen]) if others else np.nan
    log.info("source %s: spectrum %s (TS_curv %.1f)", name, chosen, sel.ts_curv)
    return stats[chosen][1]


# ----------------------------------------------------------------------------- residual search


def _residual_search(fitter, members, *, center, search_radius, name_prefix, added):
    o = fitter.options
    for k in range(o.max_new):
        models = fitter.models(members)
        avoid = [(m.spatial_model.lon_0.value, m.spatial_model.lat_0.value) for m in members]
        peak = residual_peak(fitter.datasets, models, radius=o.residual_radius, center=center, search_radius=search_radius,
                             avoid=avoid, min_separation=o.min_separation)
        if peak is None or not peak.sqrt_ts >= o.residual_threshold:
            break
        lon = float(wrap_lon(peak.lon, center[0]))
        name = f"{name_prefix}N{len(added) + 1}"
        spatial = make_spatial("gauss", lon, peak.lat, 1.5096 * o.new_size, limits=o.limits)
        spectral = make_spectral("pl", amplitude=1e-12, index=2.3)
        new = SkyModel(spectral, spatial, name=name)
        ds = next(d for d in fitter.datasets if d.name == peak.dataset)
        unit = float(DatasetEvaluator(ds, [new]).npred_source(new)[ds.mask()].sum())
        if unit > 0:
            spectral.amplitude.value = 1e-12 * max(peak.excess, 1.0) / unit
        log.info("residual search %d: %.1f sigma at (%.3f, %.3f) in %s: new source %s", k + 1, peak.sqrt_ts, lon, peak.lat,
                 peak.dataset, name)
        trial = [*members, new]
        fitter.run(trial, free=_free_ids(new) | _amplitude_ids(members))
        fitter.run(trial, free=_all_ids(trial))
        members = trial
        added.append(name)
    return members


# ----------------------------------------------------------------------------- TS


def _source_ts(fitter: _GroupFitter, members, name, base: np.ndarray) -> tuple[float, np.ndarray]:
    """TS of ``name`` (refit without it) and the datasets' contributions."""
    reduced = [m for m in members if m.name != name]
    saved = [(p, p.value, p.error) for m in members for p in m.parameters]
    saved += [(p, p.value, p.error) for b in fitter.backgrounds for p in b.parameters]
    try:
        if reduced:
            free = _all_ids(reduced) if fitter.options.ts_refit == "all" else _spectral_ids(reduced)
            fitter.run(reduced, free=free)
        else:
            fitter.run(reduced, free=set())
        without = fitter.dataset_stats(reduced)
    finally:
        for p, v, e in saved:
            p.value, p.error = v, e
    per = without - base
    return float(per.sum()), per


def _rejection_reason(model: SkyModel, ts: float, threshold: float) -> str:
    """Why a fitted member does not go to the catalog ('' if it does)."""
    if not ts >= threshold:
        return f"TS {ts:.1f} < {threshold:g}"
    sp = model.spatial_model
    for p in (sp.lon_0, sp.lat_0):
        lo, hi = p.bounds
        if lo is not None and hi is not None and min(p.value - lo, hi - p.value) <= 1e-3 * (hi - lo):
            return "position at the edge of its range (moved max_shift from its seed: not the seeded emission)"
    return ""


# ----------------------------------------------------------------------------- the group


def fit_group(datasets, members, neighbours=(), *, options: GroupFitOptions | None = None, center=(0.0, 0.0),
              search_radius: float = 0.0, name_prefix: str = "G", first_pass: bool = True,
              seeded_shells=()) -> GroupFit:
    """Fit one group (see the module docstring).

    Parameters
    ----------
    datasets : list of MapDataset
        The group's region of interest in each dataset (:func:`roi_dataset`).
    members : list of SkyModel
        Start models of the group's sources (modified in place to the best fit).
    neighbours : list of SkyModel
        Other groups' sources reaching the region (frozen).
    options : GroupFitOptions
    center, search_radius
        Galactic position (deg) and radius of the residual search (the group's own radius).
    name_prefix : str
        Names of new sources: ``<prefix>N1``, ``<prefix>N2``, ...
    first_pass : bool
        Residual search and model selection run only in the first pass.
    seeded_shells : iterable of str
        Members seeded as shells (a shell shape is always tried for them).
    """
    o = options or GroupFitOptions()
    datasets = list(datasets)
    if not datasets:
        raise ValueError("fit_group needs at least one dataset (the group's region has no safe bin?)")
    fitter = _GroupFitter(datasets, neighbours, o)
    members = list(members)
    out = GroupFit(Models([*members, *fitter.backgrounds]), [m.name for m in members], "ok", fitter.neighbours)
    start_stat = fitter.stat(members)
    if not np.isfinite(start_stat):
        out.status = "failed: non-finite likelihood at the start values (NaN/inf in the data, exposure or background?)"
        log.error("group %s: %s", name_prefix, out.status)
        return out
    if members:
        fitter.run(members, free=_amplitude_ids(members))
        fitter.run(members, free=_all_ids(members))
        if first_pass and o.residual and o.max_new > 0:
            members = _residual_search(fitter, members, center=center, search_radius=search_radius, name_prefix=name_prefix,
                                       added=out.added)
        if first_pass and o.selection:
            quick = _quick_ts(fitter, members)
            order = sorted(members, key=lambda m: -quick[m.name])
            for rank, m in enumerate(order):
                sel = out.selection.setdefault(m.name, Selection())
                if quick[m.name] < o.min_ts_select:
                    continue
                members = _select_spatial(fitter, members, m.name, brightest=rank == 0, ts_quick=quick[m.name],
                                          seeded_shell=m.name in set(seeded_shells), sel=sel)
                members = _select_spectral(fitter, members, m.name, sel=sel)
    for _ in range(_MAX_TS_ROUNDS):
        result = fitter.run(members, free=_all_ids(members), covariance=True, fast=False)
        out.result = result
        base = fitter.dataset_stats(members)
        out.ts, out.ts_datasets = {}, {}
        for m in members:
            ts, per = _source_ts(fitter, members, m.name, base)
            out.ts[m.name] = ts
            out.ts_datasets[m.name] = {d.name: float(v) for d, v in zip(datasets, per, strict=True)}
        reasons = {m.name: _rejection_reason(m, out.ts[m.name], o.ts_threshold) for m in members}
        low = [m for m in members if reasons[m.name]]
        if not low:
            break
        for m in low:
            out.rejected.append(Rejection(m, out.ts[m.name], reasons[m.name]))
            log.info("source %s rejected: %s", m.name, reasons[m.name])
        members = [m for m in members if m not in low]
        if not members:
            break
    out.members = [m.name for m in members]
    out.models = Models([*members, *fitter.backgrounds])
    if out.result is not None:
        labels = out.result.labels
        params = out.result.parameters
        if out.result.covariance is not None and all(p in list(out.models.parameters) for p in params):
            out.models.set_covariance(params, out.result.covariance)
        if not out.result.success:
            out.status = f"not converged: {out.result.message}"
        log.debug("final fit: %d free parameters %s", len(labels), labels)
    out.n_fits = fitter.n_fits
    return out
