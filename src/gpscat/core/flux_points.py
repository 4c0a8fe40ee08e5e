"""Flux points of one source: its normalisation refitted in energy bins, all else frozen.

For each bin ``[e_min, e_max]`` (snapped to the datasets' reco-energy edges,
:func:`snap_edges`) only the reco bins whose centres lie inside it count (in every dataset
that has some).  Every parameter of every model stays at its best fit (the source's shape,
its neighbours, the background norms) except the source's normalisation ``norm``
(amplitude / best-fit amplitude).  The prediction is then linear in the norm,
``mu = B + norm · S`` (``S``: the source's predicted counts, ``B``: everything else), so the
Cash statistic of a bin is a convex function of one variable, computed from ``B``, ``S``
and the counts once per dataset — no model is evaluated again:

* ``norm``: the root of ``d stat / d norm = 2 Σ S (1 − n/mu)`` (0 if the slope at 0 is
  positive); ``norm_err = sqrt(2 / H)`` with ``H = 2 Σ n S² / mu²`` (the curvature of
  −2 ln L); ``ts = stat(0) − stat(norm)``, ``sqrt_ts``;
* ``norm_ul``: where the statistic rises by ``ul_sigma²`` above its minimum (norm ≥ best);
  ``is_ul`` when ``ts < min_ts``;
* ``dnde`` = norm × model dN/dE at ``e_ref = sqrt(e_min e_max)`` (cm⁻² s⁻¹ TeV⁻¹), with
  errors and upper limit likewise, ``e2dnde`` in erg cm⁻² s⁻¹; ``npred`` of the source in
  the bin (at the fitted norm).

Column names follow gammapy's "gadf-sed" flux-point format (``e_ref``, ``dnde``,
``dnde_ul``, ``is_ul``, ...), so the rows of one source are a FluxPoints table.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from gpscat.core.fluxes import TEV_TO_ERG
from gpscat.core.likelihood import TRUNCATION_VALUE
from gpscat.core.npred import DatasetEvaluator
from gpscat.models.sky import Models

__all__ = ["FLUX_POINT_FIELDS", "flux_points", "snap_edges"]

FLUX_POINT_FIELDS = ("e_min", "e_ref", "e_max", "norm", "norm_err", "norm_ul", "ts", "sqrt_ts", "is_ul",
                     "dnde", "dnde_err", "dnde_ul", "e2dnde", "e2dnde_err", "e2dnde_ul", "npred")


def snap_edges(edges, datasets) -> np.ndarray:
    """``edges`` (TeV) moved to the nearest reco-energy edge of any dataset, duplicates removed."""
    edges = np.asarray(edges, dtype=float)
    if edges.size < 2 or np.any(~(edges > 0)) or np.any(np.diff(edges) <= 0):
        raise ValueError(f"flux-point edges must be >= 2 increasing positive energies, got {edges}")
    avail = np.unique(np.concatenate([np.asarray(d.energy_axis.edges, float) for d in datasets]))
    idx = np.abs(np.log(avail)[None, :] - np.log(edges)[:, None]).argmin(axis=1)
    return np.unique(avail[idx])


def _stat(n, b, s, norm) -> float:
    mu = np.maximum(b + norm * s, TRUNCATION_VALUE)
    return float(2.0 * (mu.sum() - np.dot(n, np.log(mu))))


def _fit_norm(n, b, s) -> tuple[float, float]:
    """Best norm >= 0 and its 1 sigma error of mu = b + norm s."""

    def slope(x):
        mu = np.maximum(b + x * s, TRUNCATION_VALUE)
        return float(2.0 * np.sum(s * (1.0 - n / mu)))

    best = 0.0
    if slope(0.0) < 0:
        hi = 1.0
        while slope(hi) < 0 and hi < 1e8:
            hi *= 4.0
        best = float(brentq(slope, 0.0, hi, xtol=1e-8, rtol=1e-10))
    mu = np.maximum(b + best * s, TRUNCATION_VALUE)
    curvature = float(2.0 * np.sum(n * s**2 / mu**2))
    if best == 0.0 or curvature <= 0:  # at the bound: the curvature of the expected counts
        curvature = max(curvature, float(2.0 * np.sum(s**2 / np.maximum(b, TRUNCATION_VALUE))))
    return best, float(np.sqrt(2.0 / curvature)) if curvature > 0 else np.nan


def _upper(n, b, s, best: float, stat_min: float, delta: float, step: float) -> float:
    def f(x):
        return _stat(n, b, s, x) - stat_min - delta

    hi = best + max(step, 1e-6)
    for _ in range(60):
        if f(hi) > 0:
            break
        hi = best + 2.0 * (hi - best)
    else:
        return np.nan
    return float(brentq(f, best, hi, xtol=1e-6 * (hi - best)))


def flux_points(datasets, models: Models, name: str, energy_edges, *, ul_sigma: float = 2.0, min_ts: float = 4.0) -> dict[str, np.ndarray]:
    """Flux points of source ``name`` (see the module docstring).

    ``models`` holds the best fit (the source, other sources, background models) and is
    not changed.  Bins without data give a row of NaN (``is_ul`` False).  Returns a dict
    of arrays keyed by :data:`FLUX_POINT_FIELDS`.
    """
    if ul_sigma <= 0:
        raise ValueError(f"ul_sigma must be > 0, got {ul_sigma}")
    datasets = [d for d in datasets if d.counts is not None]
    edges = snap_edges(energy_edges, datasets)
    source = models[name]
    parts = []  # per dataset: reco-bin centres, counts, other prediction, source prediction (masked bins)
    for ds in datasets:
        ev = DatasetEvaluator(ds, list(models))
        total = ev.npred()
        src = ev.npred_source(source)
        mask = ds.mask()
        plane = np.nonzero(mask)[0]
        centers = np.asarray(ds.energy_axis.center, float)[plane]
        parts.append((centers, np.asarray(ds.counts.data, float)[mask], (total - src)[mask], src[mask]))
    nbin = edges.size - 1
    out = {k: np.full(nbin, np.nan) for k in FLUX_POINT_FIELDS}
    out["is_ul"] = np.zeros(nbin, dtype=bool)
    for k, (e1, e2) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        e_ref = float(np.sqrt(e1 * e2))
        out["e_min"][k], out["e_ref"][k], out["e_max"][k] = e1, e_ref, e2
        sel = [(c > e1) & (c < e2) for c, *_ in parts]
        n, b, s = (np.concatenate([p[i][m] for p, m in zip(parts, sel, strict=True)]) for i in (1, 2, 3))
        if n.size == 0 or not np.sum(s) > 0:
            continue
        best, err = _fit_norm(n, b, s)
        stat_min = _stat(n, b, s, best)
        ts = max(_stat(n, b, s, 0.0) - stat_min, 0.0)
        ul = _upper(n, b, s, best, stat_min, ul_sigma**2, err if np.isfinite(err) else 1.0)
        dnde0 = float(source.spectral_model(e_ref))
        norm = np.array([best, err, ul])
        out["norm"][k], out["norm_err"][k], out["norm_ul"][k] = norm
        out["ts"][k], out["sqrt_ts"][k] = ts, np.sqrt(ts)
        out["is_ul"][k] = ts < min_ts
        out["dnde"][k], out["dnde_err"][k], out["dnde_ul"][k] = norm * dnde0
        out["e2dnde"][k], out["e2dnde_err"][k], out["e2dnde_ul"][k] = norm * dnde0 * e_ref**2 * TEV_TO_ERG
        out["npred"][k] = best * float(np.sum(s))
    return out
