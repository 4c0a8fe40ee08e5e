"""WStat fits of spectral models to ON/OFF spectra, and flux points.

The statistic of one :class:`~gpscat.core.spectrum.OnOffSpectrum` is WStat
(:func:`gpscat.core.likelihood.wstat`, background profiled per bin) summed over the safe
bins (∧ the fit range), with the source counts forward-folded through the spectrum's
exposure and energy dispersion:
``μ_k = Σ_j 1e4 · exposure_j · ∫_{E_j} φ(E) dE · edisp_jk``.

Minimisation, errors and TS reuse the fit engine :class:`gpscat.core.fit.Fit` (Migrad +
Hesse): :class:`SpectrumFit` only replaces its per-dataset evaluators with
:class:`SpectrumStatistic` (the engine builds map evaluators from ``MapDataset`` objects
in its constructor, so the subclass sets the same attributes itself).

Flux points (:func:`flux_points`, gammapy's ``FluxPointsEstimator`` defaults): in each
energy bin (edges snapped to the nearest reco edges, in log energy) the best-fit model is
multiplied by a free ``norm`` (everything else frozen) and refitted on the bins of that
energy range; ``norm_err`` from Hesse, ``norm_errn``/``norm_errp`` and the upper limit
``norm_ul`` from the profile (Δstat = 1 and ``ul_sigma²``), TS = stat(norm = 0) − stat(best);
a point with ``sqrt_ts < sqrt_ts_ul`` is an upper limit.  ``dnde = norm · φ(E_ref)`` at
``E_ref = sqrt(E_min E_max)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq

from gpscat.core.fit import Fit, FitResult
from gpscat.core.likelihood import wstat
from gpscat.core.reduce import energy_mask
from gpscat.core.spectrum import OnOffSpectrum
from gpscat.models.sky import Models, SkyModel
from gpscat.models.spectral import CompoundSpectralModel, PowerLawNormSpectralModel, SpectralModel

__all__ = [
    "FLUX_POINT_COLUMNS",
    "SpectrumFit",
    "SpectrumFitResult",
    "SpectrumStatistic",
    "fit_spectrum",
    "flux_points",
    "snap_edges",
]

log = logging.getLogger(__name__)

#: Flux-point columns: name → (unit, description).
FLUX_POINT_COLUMNS: dict[str, tuple[str, str]] = {
    "e_ref": ("TeV", "reference energy sqrt(e_min e_max)"),
    "e_min": ("TeV", "lower bin edge (a reco edge)"),
    "e_max": ("TeV", "upper bin edge (a reco edge)"),
    "norm": ("", "best-fit norm of the model in the bin"),
    "norm_err": ("", "symmetric 1 sigma error (Hesse)"),
    "norm_errn": ("", "negative 1 sigma error from the profile"),
    "norm_errp": ("", "positive 1 sigma error from the profile"),
    "norm_ul": ("", "upper limit on the norm"),
    "ts": ("", "stat(norm=0) - stat(best)"),
    "sqrt_ts": ("", "sign(norm) sqrt(ts)"),
    "is_ul": ("", "sqrt_ts below the threshold: quote norm_ul"),
    "dnde_ref": ("cm-2 s-1 TeV-1", "model at e_ref"),
    "dnde": ("cm-2 s-1 TeV-1", "norm x dnde_ref"),
    "dnde_err": ("cm-2 s-1 TeV-1", ""),
    "dnde_errn": ("cm-2 s-1 TeV-1", ""),
    "dnde_errp": ("cm-2 s-1 TeV-1", ""),
    "dnde_ul": ("cm-2 s-1 TeV-1", ""),
    "counts": ("", "ON counts in the bin (safe mask)"),
    "excess": ("", "ON - alpha OFF in the bin"),
    "npred": ("", "predicted source counts in the bin at the best norm"),
    "success": ("", "the norm fit converged"),
}


def snap_edges(axis, edges) -> np.ndarray:
    """Requested energy edges moved to the nearest edges of ``axis`` (log), duplicates dropped."""
    edges = np.asarray(edges, dtype=float)
    ax = np.log(axis.edges)
    idx = np.abs(np.log(edges)[:, None] - ax[None, :]).argmin(axis=1)
    return axis.edges[np.unique(idx)]


class SpectrumStatistic:
    """WStat of one spectrum for the sky models that apply to it (a term of :class:`SpectrumFit`).

    Parameters
    ----------
    spectrum : OnOffSpectrum
    models : iterable of SkyModel
        Their spectral parts are used (spatial models are ignored).
    mask : ndarray of bool, optional
        Fit mask (reco bins), combined with the safe mask.
    """

    def __init__(self, spectrum: OnOffSpectrum, models, *, mask: np.ndarray | None = None):
        self.spectrum = spectrum
        self.mask = spectrum.mask_safe.copy() if mask is None else spectrum.mask_safe & np.asarray(mask, dtype=bool)
        self._lo, self._hi = spectrum.energy_true.lo, spectrum.energy_true.hi
        self._n, self._off, self._alpha = (a[self.mask] for a in (spectrum.counts, spectrum.counts_off, spectrum.alpha))
        self.set_models(models)

    def set_models(self, models) -> None:
        self.models = [m for m in models if isinstance(m, SkyModel) and m.applies_to(self.spectrum.name)]

    def npred_signal(self) -> np.ndarray:
        """Predicted source counts per reco bin (all bins)."""
        total = np.zeros(self.spectrum.energy.nbin)
        for m in self.models:
            total += self.spectrum.npred_signal(m.spectral_model.integral(self._lo, self._hi))
        return total

    def __call__(self, _evaluator=None) -> float:
        mu = self.npred_signal()[self.mask]
        return float(np.sum(wstat(self._n, self._off, self._alpha, mu)))


class SpectrumFit(Fit):
    """:class:`~gpscat.core.fit.Fit` (Migrad, Hesse, Minos, TS, profiles) on ON/OFF spectra.

    Parameters
    ----------
    spectra : OnOffSpectrum or list of OnOffSpectrum
        Fitted jointly (names must be unique).
    models : Models
        Sky models (spectral parts used); a model applies to the spectra named in its
        ``datasets_names`` (all when None).
    masks : list of ndarray, optional
        Fit masks per spectrum (reco bins).
    tol, strategy, max_nfev
        Migrad settings, see :class:`~gpscat.core.fit.Fit`.
    """

    def __init__(self, spectra, models: Models, *, masks: Sequence[np.ndarray] | None = None, tol: float = 0.1, strategy: int = 1, max_nfev: int | None = None):
        # Fit.__init__ builds map evaluators from MapDatasets; the 1D terms replace them
        self.datasets = [spectra] if isinstance(spectra, OnOffSpectrum) else list(spectra)
        names = [s.name for s in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"spectrum names must be unique, got {names}")
        masks = [None] * len(self.datasets) if masks is None else list(masks)
        if len(masks) != len(self.datasets):
            raise ValueError(f"got {len(masks)} fit masks for {len(self.datasets)} spectra")
        self.models = models
        self.tol, self.strategy, self.max_nfev = tol, strategy, max_nfev
        self._terms = [SpectrumStatistic(s, list(models), mask=m) for s, m in zip(self.datasets, masks, strict=True)]
        self._evaluators = self._terms
        self.nfev = 0


@dataclass
class SpectrumFitResult:
    """Best fit of one spectral model: the fit engine's result plus the source's TS and counts."""

    fit: FitResult
    model: SpectralModel
    models: Models
    ts: float
    npred: float
    covariance: np.ndarray | None = None
    names: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return bool(self.fit.success)


def _start_amplitude(model: SpectralModel, stats: list[SpectrumStatistic], excess: float) -> None:
    """Scale the model's normalisation so that it predicts the observed excess."""
    norm_par = next((p for p in model.parameters if p.name in ("amplitude", "norm", "const")), None)
    npred = sum(float(s.npred_signal()[s.mask].sum()) for s in stats)
    if norm_par is not None and not norm_par.frozen and npred > 0 and excess > 0:
        norm_par.value *= excess / npred


def fit_spectrum(
    spectra,
    model: SpectralModel,
    *,
    fit_range: tuple[float | None, float | None] | None = None,
    name: str = "source",
    tol: float = 0.1,
    start_from_excess: bool = True,
) -> SpectrumFitResult:
    """WStat fit of ``model`` (modified in place) to one or several spectra (jointly).

    Parameters
    ----------
    spectra : OnOffSpectrum or list of OnOffSpectrum
    model : SpectralModel
        Start values are taken from it; the normalisation is first scaled to the
        observed excess when ``start_from_excess``.
    fit_range : (emin, emax) TeV, optional
        Reco bins that lie fully in the range (``None`` ends are open), as gammapy's
        ``fit_range``.
    name : str
        Source model name (parameter labels ``<name>.spectral.<par>``).

    Returns
    -------
    SpectrumFitResult
        ``ts`` = stat(no source) − stat(best fit); ``npred`` in the fitted bins.
    """
    spectra = [spectra] if isinstance(spectra, OnOffSpectrum) else list(spectra)
    lo, hi = fit_range if fit_range is not None else (None, None)
    masks = [energy_mask(s.energy, lo, hi) for s in spectra]
    sky = SkyModel(spectral_model=model, name=name)
    models = Models([sky])
    fitter = SpectrumFit(spectra, models, masks=masks, tol=tol)
    if start_from_excess:
        excess = sum(float(s.excess[t.mask].sum()) for s, t in zip(spectra, fitter._terms, strict=True))
        _start_amplitude(model, fitter._terms, excess)
    result = fitter.run()
    stat_best = fitter.stat_sum()
    null = float(sum(SpectrumStatistic(s, [], mask=m)() for s, m in zip(spectra, masks, strict=True)))
    npred = float(sum(t.npred_signal()[t.mask].sum() for t in fitter._terms))
    free = [p for p in model.parameters if not p.frozen]
    cov = models.covariance_of(free) if result.covariance is not None else None
    return SpectrumFitResult(result, model, models, null - stat_best, npred, cov, [p.name for p in free])


def _root(f, x0: float, step: float, *, direction: int) -> float:
    """Root of the increasing-away-from-x0 function ``f`` on one side of ``x0`` (NaN if none)."""
    a, b = x0, x0 + direction * step
    for _ in range(60):
        if f(b) > 0:
            try:
                return float(brentq(f, min(a, b), max(a, b), xtol=1e-6 * step, rtol=1e-10))
            except ValueError:
                return math.nan
        a, b = b, b + direction * (b - x0)
    return math.nan


def _flux_point(spectra, model: SpectralModel, masks, *, ul_sigma: float) -> dict[str, float]:
    norm = PowerLawNormSpectralModel(norm=1.0)
    frozen = model.copy()
    frozen.freeze()
    sky = SkyModel(spectral_model=CompoundSpectralModel(frozen, norm, "mul"), name="norm")
    fitter = SpectrumFit(spectra, Models([sky]), masks=masks)
    res = fitter.run()
    best, err = norm.norm.value, norm.norm.error
    stat_best = fitter.stat_sum()

    def delta(x: float, level: float) -> float:
        norm.norm.value = x
        try:
            return fitter.stat_sum() - stat_best - level
        finally:
            norm.norm.value = best

    step = err if err > 0 and np.isfinite(err) else max(abs(best), 1.0) * 0.1
    out = {
        "norm": best,
        "norm_err": err if res.covariance is not None else math.nan,
        "norm_errn": best - _root(lambda x: delta(x, 1.0), best, step, direction=-1),
        "norm_errp": _root(lambda x: delta(x, 1.0), best, step, direction=1) - best,
        "norm_ul": _root(lambda x: delta(x, ul_sigma**2), best, step, direction=1),
        "ts": delta(0.0, 0.0),
        "success": bool(res.success),
    }
    out["npred"] = float(sum(t.npred_signal()[t.mask].sum() for t in fitter._terms))
    return out


def flux_points(
    spectra,
    model: SpectralModel,
    *,
    energy_edges,
    fit_range: tuple[float | None, float | None] | None = None,
    ul_sigma: float = 2.0,
    sqrt_ts_ul: float = 2.0,
) -> dict[str, np.ndarray]:
    """Flux points of a best-fit ``model`` (not modified) in energy bins.

    Parameters
    ----------
    spectra : OnOffSpectrum or list of OnOffSpectrum
        Fitted jointly in each bin.
    model : SpectralModel
        Best-fit model; its parameters are frozen in a copy.
    energy_edges : array_like
        Requested bin edges (TeV), snapped to the reco edges of the first spectrum.
    fit_range : (emin, emax) TeV, optional
        Only reco bins fully inside it are used (as gammapy keeps the fit mask).
    ul_sigma : float
        Upper limits at this many sigma (Δstat = ul_sigma²).
    sqrt_ts_ul : float
        Points with ``sqrt_ts`` below this are upper limits (``is_ul``).

    Returns
    -------
    dict of ndarray
        The :data:`FLUX_POINT_COLUMNS`, one entry per bin (empty arrays if none).
    """
    spectra = [spectra] if isinstance(spectra, OnOffSpectrum) else list(spectra)
    if not spectra:
        raise ValueError("flux_points needs at least one spectrum")
    if not ul_sigma > 0:
        raise ValueError(f"ul_sigma must be > 0, got {ul_sigma}")
    edges = snap_edges(spectra[0].energy, energy_edges)
    lo, hi = fit_range if fit_range is not None else (None, None)
    rows = []
    for e1, e2 in zip(edges[:-1], edges[1:], strict=True):
        masks = [energy_mask(s.energy, e1, e2) & energy_mask(s.energy, lo, hi) for s in spectra]
        e_ref = math.sqrt(e1 * e2)
        row = {k: math.nan for k in FLUX_POINT_COLUMNS}
        row.update(e_ref=e_ref, e_min=e1, e_max=e2, dnde_ref=float(model(e_ref)), success=False)
        safe = [m & s.mask_safe for s, m in zip(spectra, masks, strict=True)]
        row["counts"] = float(sum(s.counts[m].sum() for s, m in zip(spectra, safe, strict=True)))
        row["excess"] = float(sum(s.excess[m].sum() for s, m in zip(spectra, safe, strict=True)))
        if any(m.any() for m in safe):
            row.update(_flux_point(spectra, model, masks, ul_sigma=ul_sigma))
        rows.append(row)
    out = {k: np.array([r[k] for r in rows], dtype=float) for k in FLUX_POINT_COLUMNS}
    out["success"] = out["success"].astype(bool)
    out["sqrt_ts"] = np.sign(out["norm"]) * np.sqrt(np.clip(out["ts"], 0.0, None))
    out["is_ul"] = ~(out["sqrt_ts"] >= sqrt_ts_ul)
    for k in ("", "_err", "_errn", "_errp", "_ul"):
        out[f"dnde{k}"] = out[f"norm{k}"] * out["dnde_ref"]
    return out
