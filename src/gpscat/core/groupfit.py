"""The fit of one group of overlapping sources: refits, residual search, model selection, TS.

:func:`fit_group` takes the group's datasets (cut to its region of interest, see
:func:`roi_dataset`), the members' start models and the frozen models of the other groups'
sources in the region, and runs (docs/fit.md):

1. the members' amplitudes and the background norms, then all free parameters;
2. (first pass) the residual search: while the residual significance inside the group
   reaches ``residual_threshold`` somewhere farther than ``min_separation`` from every
   member and nearer to the members than to the neighbours (the group's territory, see
   :func:`~gpscat.core.residuals.residual_peak`), a Gaussian is added there and the group
   refitted (at most ``max_new`` times);
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

from gpscat.core.association import R68_PER_SIGMA
from gpscat.core.dataset import MapDataset
from gpscat.core.fit import FitResult
from gpscat.core.geom import Map
from gpscat.core.group_fitter import (
    GroupFitOptions,
    GroupFitter,
    all_ids,
    amplitude_ids,
    free_ids,
    quick_ts,
    spectral_ids,
)
from gpscat.core.model_selection import Selection, select_spatial, select_spectral
from gpscat.core.npred import DatasetEvaluator
from gpscat.core.residuals import residual_peak
from gpscat.core.source_models import make_spatial, make_spectral, model_r68, wrap_lon
from gpscat.models.sky import Models, SkyModel

__all__ = ["GroupFit", "GroupFitOptions", "Rejection", "Selection", "fit_group", "merge_into_background", "roi_dataset"]
# GroupFitOptions and Selection are re-exported: the results of fit_group refer to them

log = logging.getLogger(__name__)

_MAX_TS_ROUNDS = 3


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
    #: members whose covariance comes from a fit of their own parameters only (the
    #: group's Hesse was inaccurate): :func:`conditional_covariance`
    conditional: list[str] = field(default_factory=list)
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


# ----------------------------------------------------------------------------- residual search


def _extents(models, center) -> list[tuple[float, float, float]]:
    """(lon, lat, 68 % radius) of sky models, Galactic deg, longitudes next to ``center``."""
    out = []
    for m in models:
        if m.spatial_model is None:
            continue
        lon, lat = m.spatial_model.position_in("galactic")
        out.append((float(wrap_lon(lon, center[0])), float(lat), model_r68(m.spatial_model)))
    return out


def _residual_search(fitter, members, *, center, search_radius, name_prefix, added):
    o = fitter.options
    others = _extents(fitter.neighbours, center)  # frozen: their territory does not change
    for k in range(o.max_new):
        models = fitter.models(members)
        avoid = [(m.spatial_model.lon_0.value, m.spatial_model.lat_0.value) for m in members]
        territory = (_extents(members, center), others)
        peak = residual_peak(fitter.datasets, models, radius=o.residual_radius, center=center, search_radius=search_radius,
                             avoid=avoid, min_separation=o.min_separation, territory=territory)
        if peak is None or not peak.sqrt_ts >= o.residual_threshold:
            break
        lon = float(wrap_lon(peak.lon, center[0]))
        name = f"{name_prefix}N{len(added) + 1}"
        spatial = make_spatial("gauss", lon, peak.lat, R68_PER_SIGMA * o.new_size, limits=o.limits)
        spectral = make_spectral("pl", amplitude=1e-12, index=2.3)
        new = SkyModel(spectral, spatial, name=name)
        ds = next(d for d in fitter.datasets if d.name == peak.dataset)
        unit = float(DatasetEvaluator(ds, [new]).npred_source(new)[ds.mask()].sum())
        if unit > 0:
            spectral.amplitude.value = 1e-12 * max(peak.excess, 1.0) / unit
        log.info("residual search %d: %.1f sigma at (%.3f, %.3f) in %s: new source %s", k + 1, peak.sqrt_ts, lon, peak.lat,
                 peak.dataset, name)
        trial = [*members, new]
        fitter.run(trial, free=free_ids(new) | amplitude_ids(members))
        fitter.run(trial, free=all_ids(trial))
        members = trial
        added.append(name)
    return members


# ----------------------------------------------------------------------------- TS


def _source_ts(fitter: GroupFitter, members, name, base: np.ndarray) -> tuple[float, np.ndarray]:
    """TS of ``name`` (refit without it) and the datasets' contributions."""
    reduced = [m for m in members if m.name != name]
    saved = [(p, p.value, p.error) for m in members for p in m.parameters]
    saved += [(p, p.value, p.error) for b in fitter.backgrounds for p in b.parameters]
    try:
        if reduced:
            free = all_ids(reduced) if fitter.options.ts_refit == "all" else spectral_ids(reduced)
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
              seeded_shells=(), final_datasets=None) -> GroupFit:
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
    final_datasets : list of MapDataset, optional
        The same regions with observation footprints (:mod:`gpscat.core.footprints`): the
        final fit, the TS and the covariances use them; the first fits, the residual search
        and the model selection, which only compare candidates, use ``datasets``.
    """
    o = options or GroupFitOptions()
    datasets = list(datasets)
    if not datasets:
        raise ValueError("fit_group needs at least one dataset (the group's region has no safe bin?)")
    fitter = GroupFitter(datasets, neighbours, o, final_datasets=final_datasets)
    members = list(members)
    out = GroupFit(Models([*members, *fitter.backgrounds]), [m.name for m in members], "ok", fitter.neighbours)
    start_stat = fitter.stat(members)
    if not np.isfinite(start_stat):
        out.status = "failed: non-finite likelihood at the start values (NaN/inf in the data, exposure or background?)"
        log.error("group %s: %s", name_prefix, out.status)
        return out
    if members:
        fitter.run(members, free=amplitude_ids(members))
        fitter.run(members, free=all_ids(members))
        if first_pass and o.residual and o.max_new > 0:
            members = _residual_search(fitter, members, center=center, search_radius=search_radius, name_prefix=name_prefix,
                                       added=out.added)
        if first_pass and o.selection:
            quick = quick_ts(fitter, members)
            order = sorted(members, key=lambda m: -quick[m.name])
            for rank, m in enumerate(order):
                sel = out.selection.setdefault(m.name, Selection())
                if quick[m.name] < o.min_ts_select:
                    continue
                members = select_spatial(fitter, members, m.name, brightest=rank == 0, ts_quick=quick[m.name],
                                          seeded_shell=m.name in set(seeded_shells), sel=sel)
                members = select_spectral(fitter, members, m.name, sel=sel)
    fitter.finalise()
    for _ in range(_MAX_TS_ROUNDS):
        result = fitter.run(members, free=all_ids(members), covariance=True, fast=False)
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
        if out.result.covariance is not None and not out.result.covariance_success and members:
            out.conditional = conditional_covariance(fitter, members, out.models)
        if not out.result.success:
            out.status = f"not converged: {out.result.message}"
        log.info("final fit: %d free parameters, covariance %s", len(labels),
                 "accurate" if out.result.covariance_success else ("inaccurate" if out.result.covariance is not None else "failed"))
        log.debug("final fit parameters: %s", labels)
    out.n_fits = fitter.n_fits
    return out


def _own_hesse(fitter: GroupFitter, members, free: set[int], best) -> FitResult:
    """Refit of ``free`` (one member's) and the background norms from the best fit, with
    the covariance; the best-fit values are restored (the refit only measures curvature)."""
    res = fitter.run(members, free=free, covariance=True, fast=False)
    for p, v in best:
        p.value = v
    return res


def conditional_covariance(fitter: GroupFitter, members, models: Models) -> list[str]:
    """Per-source covariances when the group's Hesse is inaccurate (a block-diagonal matrix).

    With tens of free parameters of overlapping sources, Minuit's Hesse can fail to find a
    positive-definite matrix and returns a forced one whose errors can be several times too
    small (measured: a 24 sigma point source in a 34-parameter group, position error 0.0004
    deg).  Each member is then refitted alone — its parameters and the background norms free,
    the rest fixed at the best fit, so it starts at the minimum — and its own Hesse gives its
    block.  These conditional errors ignore the correlations with the other members (an
    underestimate where they overlap strongly) but are real curvatures.  A member's own fit
    has few parameters, so where Minuit's Hesse is inaccurate again (bright shells) the
    finite-difference fallback of :meth:`~gpscat.core.fit.Fit.numerical_covariance` applies;
    a member for which that fails too is measured again with its parameters that sit at a
    bound held there (a bound leaves no curvature to measure, nor room for the finite
    differences: a shell's width at its minimum), and those get NaN errors (the source is
    flagged ``AT_BOUND``); otherwise the member gets NaN errors.  The background norms keep
    the block of the last successful refit.

    Returns the names of the members whose block was replaced.
    """
    blocks, done = [], []
    best = [(p, p.value) for p in models.parameters]
    for m in members:
        free = [p for p in m.parameters if not p.frozen]
        res = _own_hesse(fitter, members, {id(p) for p in free}, best)
        held = [p for p in free if p.at_bound()]
        if not (res.covariance is not None and res.covariance_success) and held and len(held) < len(free):
            # a parameter at its bound has no curvature there (nor room for the finite
            # differences): hold it, as catalogs do, and measure the others; it keeps NaN
            res = _own_hesse(fitter, members, {id(p) for p in free} - {id(p) for p in held}, best)
            log.info("source %s: own Hesse with %s held at their bounds", m.name, [p.name for p in held])
        if res.covariance is not None and res.covariance_success:
            ps = list(res.parameters)
            order = free + [p for p in ps if not any(p is q for q in free)]  # + the background norms
            where = {id(p): i for i, p in enumerate(order)}
            idx = np.array([where[id(p)] for p in ps])
            block = np.full((len(order), len(order)), np.nan)
            block[np.ix_(idx, idx)] = np.asarray(res.covariance)
            blocks.append((order, block))
            done.append(m.name)
        else:  # no error is better than a wrong one: NaN, flagged NO_COVARIANCE downstream
            blocks.append((free, np.full((len(free), len(free)), np.nan)))
            log.warning("source %s: its own Hesse is inaccurate too: no covariance", m.name)
    params = list(dict.fromkeys(p for ps, _ in blocks for p in ps))
    where = {id(p): i for i, p in enumerate(params)}
    cov = np.zeros((len(params), len(params)))
    for ps, block in blocks:
        idx = np.array([where[id(p)] for p in ps])
        cov[np.ix_(idx, idx)] = block
    known = {id(p) for p in models.parameters}
    keep = [i for i, p in enumerate(params) if id(p) in known]
    models.set_covariance([params[i] for i in keep], cov[np.ix_(keep, keep)])
    log.info("group covariance inaccurate: conditional covariances for %s", done)
    return done
