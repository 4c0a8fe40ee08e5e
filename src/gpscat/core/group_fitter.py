"""The fitting machinery of a group fit: free-parameter sets, local refits, statistics.

:class:`GroupFitter` builds :class:`~gpscat.core.fit.Fit` objects of the group's members,
its frozen neighbours and one :class:`~gpscat.models.sky.FoVBackgroundModel` per dataset,
with only chosen parameters free (:meth:`GroupFitter.run`); :func:`local_fit` is the refit
of one candidate model with the other members' amplitudes and the background norms
(docs/fit.md, model selection).  Used by :mod:`gpscat.core.model_selection` and
:mod:`gpscat.core.groupfit`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from gpscat.core.fit import Fit, FitResult
from gpscat.core.source_models import SPATIAL_KINDS, SPECTRAL_KINDS, ShapeLimits, copy_source
from gpscat.models.sky import FoVBackgroundModel, Models, SkyModel

__all__ = [
    "GroupFitOptions",
    "GroupFitter",
    "all_ids",
    "amplitude_ids",
    "current_fit",
    "free_ids",
    "get_member",
    "local_fit",
    "n_free",
    "quick_ts",
    "replace_member",
    "spectral_ids",
]

log = logging.getLogger(__name__)

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



class GroupFitter:
    """Fits of the members + frozen neighbours + one background model per dataset, with
    chosen free parameters (:meth:`run`); the neighbours are frozen on construction."""

    def __init__(self, datasets, neighbours, options: GroupFitOptions, *, final_datasets=None):
        self.datasets = list(datasets)
        self.final_datasets = list(final_datasets) if final_datasets is not None else None
        self.neighbours = list(neighbours)
        for m in self.neighbours:
            m.freeze()
        self.backgrounds = [FoVBackgroundModel(d.name) for d in self.datasets]
        self.options = options
        self.n_fits = 0

    def finalise(self) -> None:
        """Use the final datasets (e.g. with observation footprints) from now on: the final
        fit, TS, covariances and flux points; the search and the model selection before ran
        on the cheaper ones."""
        if self.final_datasets is not None:
            self.datasets = self.final_datasets

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


def free_ids(model: SkyModel) -> set[int]:
    """Ids of the free parameters of ``model``."""
    return {id(p) for p in model.parameters if not p.frozen}


def amplitude_ids(members) -> set[int]:
    """Ids of the members' amplitude parameters."""
    return {id(m.spectral_model.parameters["amplitude"]) for m in members}


def spectral_ids(members) -> set[int]:
    """Ids of the members' free spectral parameters."""
    return {id(p) for m in members for p in m.spectral_model.parameters if not p.frozen}


def all_ids(members) -> set[int]:
    """Ids of every free parameter of the members."""
    return set().union(*(free_ids(m) for m in members)) if members else set()


def n_free(model: SkyModel) -> int:
    """Number of free parameters of ``model``."""
    return sum(not p.frozen for p in model.parameters)


def replace_member(members, new: SkyModel) -> list[SkyModel]:
    """``members`` with ``new`` in place of the member of the same name."""
    return [new if m.name == new.name else m for m in members]


def local_fit(fitter: GroupFitter, members, candidate: SkyModel, *, spatial: bool = True) -> tuple[float, list[SkyModel]]:
    """Local refit with ``candidate`` in place of its namesake: (stat, members).

    Free: the candidate's parameters (only its spectral ones unless ``spatial``), the other
    members' amplitudes and the background norms.  The others go back to their values
    afterwards, so that every candidate starts from the same point.
    """
    trial = replace_member(members, candidate)
    others = [m for m in trial if m.name != candidate.name]
    own = free_ids(candidate) if spatial else spectral_ids([candidate])
    saved = [(p, p.value) for m in [*others, *fitter.backgrounds] for p in m.parameters]
    try:
        result = fitter.run(trial, free=own | amplitude_ids(others))
    except Exception as exc:  # a candidate must never stop the group
        log.warning("candidate %s (%s) failed: %s", candidate.name, type(candidate.spatial_model).__name__, exc)
        result = None
    for p, v in saved:
        p.value = v
    if result is None or not np.isfinite(result.total_stat):
        return np.inf, members
    return result.total_stat, trial


def current_fit(fitter: GroupFitter, members, name) -> tuple[float, list[SkyModel]]:
    """The current model of ``name`` as a candidate: its statistic at the last fit (no refit)."""
    src = get_member(members, name)
    cand = copy_source(src, spatial=src.spatial_model.copy(), spectral=src.spectral_model.copy())
    trial = replace_member(members, cand)
    return fitter.stat(trial), trial


def quick_ts(fitter: GroupFitter, members) -> dict[str, float]:
    """Statistic without each member, nothing refitted: an upper bound of its TS."""
    base = fitter.stat(members)
    return {m.name: fitter.stat([o for o in members if o is not m]) - base for m in members}


def get_member(members, name) -> SkyModel:
    """The member called ``name``."""
    return next(m for m in members if m.name == name)
