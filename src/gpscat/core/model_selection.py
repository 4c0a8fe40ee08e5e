"""Model selection of one member of a group (docs/fit.md, step 3).

Each candidate shape or spectrum is a local refit (:func:`gpscat.core.group_fitter.local_fit`);
the current model counts with its last fit.  Spatial: point unless ``TS_ext >=
ts_extension``; among extended shapes the Gaussian unless another has an AIC lower by
``delta_aic``; the generalised Gaussian and elongation only for the group's brightest member
above ``min_ts_complex``.  Spectral: power law unless LogParabola / ExpCutoffPowerLaw improve
by ``ts_curvature``.  The statistics of every candidate are kept in :class:`Selection`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from gpscat.core.group_fitter import GroupFitOptions, current_fit, get_member, local_fit, n_free
from gpscat.core.source_models import (
    convert_spatial,
    convert_spectral,
    copy_source,
    model_r68,
    spatial_kind,
)

__all__ = ["Selection", "choose_spatial", "select_spatial", "select_spectral", "try_elongation"]

log = logging.getLogger(__name__)

_SHELL_MIN_R68 = 0.3  # deg: a shell is tried only for sources at least this large (or seeded as shells)


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


def choose_spatial(stats: dict, sel: Selection, o: GroupFitOptions) -> str:
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


def select_spatial(fitter, members, name, *, brightest: bool, ts_quick: float, seeded_shell: bool, sel: Selection):
    """Spatial model selection of member ``name`` (local refits of the candidate shapes).

    Point and Gaussian always; disk and (for shell seeds, shell starts or sources larger
    than 0.3 deg) shell unless the source is clearly point-like; the generalised Gaussian
    when the Gaussian wins for the brightest member above ``min_ts_complex`` (or the start
    was one); then elongation for that member.
    """
    o = fitter.options
    src = get_member(members, name)
    current = spatial_kind(src.spatial_model)
    complex_ok = brightest and ts_quick >= o.min_ts_complex
    stats: dict[str, tuple[float, list]] = {}

    def trial(kind):
        if kind in stats or kind not in o.spatial_kinds:
            return
        if kind == current:
            stats[kind] = current_fit(fitter, members, name)
        else:
            cand = copy_source(src, spatial=convert_spatial(src.spatial_model, kind, limits=o.limits))
            stats[kind] = local_fit(fitter, members, cand)
        sel.spatial[kind] = (stats[kind][0], n_free(get_member(stats[kind][1], name)))

    trial(current)
    trial("point")
    trial("gauss")
    clearly_point = "gauss" in stats and "point" in stats and stats["point"][0] - stats["gauss"][0] < 0.5 * o.ts_extension
    if not (clearly_point and current in ("point", "gauss")):
        trial("disk")
        gauss_r68 = model_r68(get_member(stats["gauss"][1], name).spatial_model) if "gauss" in stats else 0.0
        if seeded_shell or current == "shell" or max(model_r68(src.spatial_model), gauss_r68) >= _SHELL_MIN_R68:
            trial("shell")
    if not stats:  # none of the allowed shapes could be fitted: keep the current one
        return members
    chosen = choose_spatial(stats, sel, o)
    if chosen in ("gauss", "gauss-general") and complex_ok:
        trial("gauss-general")
        chosen = choose_spatial(stats, sel, o)
    aics = {k: stats[k][0] + 2 * sel.spatial[k][1] for k in stats}
    others = [v for k, v in aics.items() if k != chosen]
    sel.delta_aic_spatial = (min(others) - aics[chosen]) if others else np.nan
    members = stats[chosen][1]
    if complex_ok and chosen in ("gauss", "disk", "gauss-general"):
        members = try_elongation(fitter, members, name, stats[chosen][0], sel)
    log.info("source %s: spatial %s (TS_ext %.1f, tried %s)", name, spatial_kind(get_member(members, name).spatial_model), sel.ts_ext,
             {k: round(v[0] - stats[chosen][0], 1) for k, v in stats.items()})
    return members


def try_elongation(fitter, members, name, stat0: float, sel: Selection):
    src = get_member(members, name)
    best_stat, best = np.inf, None
    for phi in (0.0, 90.0):
        spatial = src.spatial_model.copy()
        spatial.e.frozen, spatial.phi.frozen = False, False
        spatial.e.value, spatial.phi.value = 0.4, phi
        spatial.e.max = 0.95
        cand = copy_source(src, spatial=spatial)
        stat, trial = local_fit(fitter, members, cand)
        if stat < best_stat:
            best_stat, best = stat, trial
    sel.ts_elong = stat0 - best_stat
    if best is not None and sel.ts_elong >= fitter.options.ts_elongation:
        return best
    return members


def select_spectral(fitter, members, name, *, sel: Selection):
    o = fitter.options
    src = get_member(members, name)
    current = src.spectral_model.tag[1]
    stats = {}
    for kind in dict.fromkeys(("pl", *o.spectral_kinds)):
        if kind == current:
            stats[kind] = current_fit(fitter, members, name)
        else:  # the shape stays at its best fit: a spectral refit costs no new convolution
            cand = copy_source(src, spectral=convert_spectral(src.spectral_model, kind))
            stats[kind] = local_fit(fitter, members, cand, spatial=False)
        sel.spectral[kind] = (stats[kind][0], n_free(get_member(stats[kind][1], name)))
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
