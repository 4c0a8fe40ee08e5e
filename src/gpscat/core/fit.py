"""Joint Poisson likelihood fits of models to datasets with iminuit (Migrad + Hesse).

One :class:`Fit` ties a list of datasets to a :class:`~gpscat.models.sky.Models`
collection.  Models apply to the datasets named in their ``datasets_names`` (all when
``None``), each dataset's FoV background model to that dataset only.  Parameters shared by
several models (linked: the same :class:`~gpscat.models.parameters.Parameter` object) are
one degree of freedom, so a source fitted jointly to a sub-TeV and a post-TeV dataset is
simply one ``SkyModel`` with ``datasets_names=None``.

The statistic is Cash (``2 Σ (μ − n ln μ)``) over the bins of ``mask_safe ∧ mask_fit``, or
WStat for datasets that carry off counts (``counts_off`` and ``acceptance`` /
``acceptance_off`` maps).  A fit that does not converge returns a :class:`FitResult` with
``success=False`` and the reason in ``message``; it never raises.
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass, field

import numpy as np
from iminuit import Minuit
from threadpoolctl import threadpool_limits

from gpscat.core.dataset import MapDataset
from gpscat.core.fitstat import DatasetStatistic
from gpscat.core.npred import PSF_CONTAINMENT, DatasetEvaluator
from gpscat.models.parameters import Parameter
from gpscat.models.sky import Models

__all__ = ["Fit", "FitResult", "fit", "compute_ts"]

log = logging.getLogger(__name__)

_PENALTY = 1e30
#: largest number of free parameters for the finite-difference Hessian fallback
#: (2 n² likelihood evaluations)
MAX_NUMERICAL_HESSIAN = 12


@dataclass
class FitResult:
    """Outcome of :meth:`Fit.run`.

    ``parameters`` are the free parameters in fit order (their values and errors are set
    on the model objects too); ``covariance`` is in parameter units, aligned with them.
    ``minos`` maps a parameter label to its (negative lower, upper) asymmetric errors.
    """

    success: bool
    message: str
    total_stat: float
    nfev: int
    edm: float = math.nan
    labels: list[str] = field(default_factory=list)
    parameters: list[Parameter] = field(default_factory=list)
    covariance: np.ndarray | None = None
    covariance_success: bool = False
    covariance_method: str = ""
    minos: dict[str, tuple[float, float]] = field(default_factory=dict)

    def value(self, label: str) -> float:
        return self.parameters[self.labels.index(label)].value

    def error(self, label: str) -> float:
        return self.parameters[self.labels.index(label)].error


def _scale(p: Parameter) -> float:
    """Internal scale of a parameter for Minuit: a power of ten of its size (1 for angles)."""
    if p.unit == "deg" or p.value == 0 or not np.isfinite(p.value):
        return 1.0
    return float(10.0 ** np.floor(np.log10(abs(p.value))))


def _step(p: Parameter) -> float:
    if p.error > 0 and np.isfinite(p.error):
        return p.error
    if p.unit == "deg":
        return 0.01
    return 0.1 * abs(p.value) if p.value != 0 else 0.1


class Fit:
    """Likelihood of ``models`` given ``datasets``, and Migrad/Hesse/Minos on it.

    Parameters
    ----------
    datasets : MapDataset or list of MapDataset
    models : Models
    tol : float
        Migrad tolerance (EDM goal 0.002·tol).
    strategy : int
        Minuit strategy (0 fast, 1 default, 2 careful).
    max_nfev : int, optional
        Call limit of Migrad.
    psf_containment, point_method
        Prediction options, see :class:`~gpscat.core.npred.SourceEvaluator`.
    """

    def __init__(
        self,
        datasets,
        models: Models,
        *,
        tol: float = 0.1,
        strategy: int = 1,
        max_nfev: int | None = None,
        psf_containment: float = PSF_CONTAINMENT,
        point_method: str = "exact",
    ):
        self.datasets = [datasets] if isinstance(datasets, MapDataset) else list(datasets)
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique, got {names}")
        self.models = models
        self.tol, self.strategy, self.max_nfev = tol, strategy, max_nfev
        self._evaluators = [
            DatasetEvaluator(d, list(models), psf_containment=psf_containment, point_method=point_method) for d in self.datasets
        ]
        self._terms = [DatasetStatistic(d) for d in self.datasets]
        self.nfev = 0

    # -- statistic
    def stat_sum(self) -> float:
        """Total −2 ln L of the current parameter values."""
        self.nfev += 1
        return float(sum(term(ev) for term, ev in zip(self._terms, self._evaluators, strict=True)))

    def _set_models(self, models) -> None:
        for ev in self._evaluators:
            ev.set_models(list(models))

    def free_parameters(self, models: Models | None = None) -> tuple[list[Parameter], list[str]]:
        """Free parameters (each linked parameter once) and their labels."""
        models = self.models if models is None else models
        labels = models.parameter_labels()
        pars = list(models.parameters)
        free = [(p, lab) for p, lab in zip(pars, labels, strict=True) if not p.frozen]
        return [p for p, _ in free], [lab for _, lab in free]

    # -- fitting
    def _minuit(self, params: list[Parameter], labels: list[str]) -> tuple[Minuit, np.ndarray]:
        """Minuit on the scaled free parameters; its function holds the fit by a weak reference.

        A ``Minuit`` object is always in a reference cycle (its value, error and limit views
        point back at it), so it is freed only by the cyclic garbage collector, which runs
        rarely in array-heavy code — and it holds this function.  A strong reference to the
        fit would keep every finished fit's evaluators (source cutouts, PSF kernel FFTs,
        responses, fine sampling grids) alive until a collection, and a group fit's
        model-selection trials would pile them up (1.2 GB instead of 0.5 GB for a 4-source
        group, docs/benchmarks.md).  The caller holds the fit while Minuit runs.
        """
        scales = np.array([_scale(p) for p in params])
        statistic = weakref.WeakMethod(self.stat_sum)

        def fcn(x):
            for p, xi, s in zip(params, x, scales, strict=True):
                p.value = float(xi * s)
            try:
                with np.errstate(all="ignore"):  # wild trial values: a penalty, not warnings
                    val = statistic()()
            except (ValueError, FloatingPointError, ZeroDivisionError) as exc:
                log.debug("statistic failed at %s: %s", x, exc)
                return _PENALTY
            return val if np.isfinite(val) else _PENALTY

        x0 = np.array([p.value for p in params]) / scales
        m = Minuit(fcn, x0, name=labels)
        m.errordef = Minuit.LEAST_SQUARES
        m.strategy = self.strategy
        m.tol = self.tol
        m.errors = [_step(p) / s for p, s in zip(params, scales, strict=True)]
        m.limits = [tuple(None if b is None else b / s for b in p.bounds) for p, s in zip(params, scales, strict=True)]
        return m, scales

    def run(self, *, covariance: bool = True, minos: list[str] | bool | None = None) -> FitResult:
        """Migrad (then Hesse, then Minos on request) over all free parameters.

        Parameters
        ----------
        covariance : bool
            Run Hesse and store the covariance on the models and the result.
        minos : list of str or True, optional
            Labels (``<model>.<spectral|spatial>.<name>``) of parameters for asymmetric
            errors; ``True`` for all free parameters.
        """
        return self._optimize(self.models, covariance=covariance, minos=minos)

    def _optimize(self, models: Models, *, covariance: bool, minos) -> FitResult:
        # many small array operations: BLAS threads only add latency (badly so when the
        # cores are shared with other jobs), so the fit runs single-threaded
        with threadpool_limits(limits=1, user_api="blas"):
            return self._optimize_single_thread(models, covariance=covariance, minos=minos)

    def _optimize_single_thread(self, models: Models, *, covariance: bool, minos) -> FitResult:
        params, labels = self.free_parameters(models)
        start = [p.value for p in params]
        self.nfev = 0
        if not params:
            return FitResult(True, "no free parameters", self._safe_stat(), 0, labels=labels, parameters=params)
        try:
            m, scales = self._minuit(params, labels)
            m.migrad(ncall=self.max_nfev)
        except Exception as exc:  # a fit must never kill a run
            log.warning("fit failed: %s", exc)
            for p, v in zip(params, start, strict=True):
                p.value = v
            return FitResult(False, f"migrad raised: {exc}", self._safe_stat(), self.nfev, labels=labels, parameters=params)
        self._apply(params, m.values, scales)
        fmin = m.fmin
        success = bool(fmin.is_valid)
        message = "Optimization terminated successfully." if success else _fmin_message(fmin)
        result = FitResult(success, message, float(fmin.fval), self.nfev, float(fmin.edm), labels, params)
        if covariance:
            self._hesse(m, params, scales, result, models)
        if minos:
            names = labels if minos is True else list(minos)
            self._minos(m, params, scales, names, result)
        self._apply(params, m.values, scales)
        log.info("fit %s: stat %.3f after %d calls", "converged" if success else "FAILED", result.total_stat, result.nfev)
        return result

    def _apply(self, params, values, scales) -> None:
        for p, v, s in zip(params, values, scales, strict=True):
            p.value = float(v * s)

    def _hesse(self, m: Minuit, params, scales, result: FitResult, models: Models) -> None:
        try:
            m.hesse()
        except Exception as exc:
            log.warning("hesse failed: %s", exc)
            return
        if m.covariance is None:
            return
        cov = np.array(m.covariance) * np.outer(scales, scales)
        result.covariance = cov
        result.covariance_success = bool(m.fmin.has_accurate_covar)
        result.covariance_method = "hesse"
        if not result.covariance_success and len(params) <= MAX_NUMERICAL_HESSIAN:
            self._apply(params, m.values, scales)
            numerical = self.numerical_covariance(params)
            if numerical is not None:
                log.info("Hesse inaccurate: covariance of %d parameters from finite differences", len(params))
                cov = result.covariance = numerical
                result.covariance_success, result.covariance_method = True, "numerical"
        models.set_covariance(params, cov)

    def _minos(self, m: Minuit, params, scales, names, result: FitResult) -> None:
        for name in names:
            i = result.labels.index(name)
            try:
                m.minos(name)
                me = m.merrors[name]
                result.minos[name] = (float(me.lower * scales[i]), float(me.upper * scales[i]))
            except Exception as exc:
                log.warning("minos failed for %s: %s", name, exc)
                result.minos[name] = (math.nan, math.nan)

    def numerical_covariance(self, params: list[Parameter]) -> np.ndarray | None:
        """Covariance ``2 H⁻¹`` from a central finite-difference Hessian of the statistic
        (−2 ln L) at the current values, or ``None`` if it is not positive definite.

        The fallback when Minuit's Hesse is inaccurate: Minuit chooses its steps from the
        function's estimated precision and can land on a scale where the likelihood of a
        bright extended source is not smooth, then forces a positive-definite matrix whose
        errors are tens of times too small.  Here the steps are physical: 10⁻³ deg for
        angles, 1 % of the value otherwise (0.01 for a zero value), kept inside the
        bounds — or four times those where the Hessian they give is not positive definite
        (a shell's likelihood at 10⁻³ deg steps can be dominated by its sampling); then,
        once the errors are known, half of each error (the first matrix is kept when that
        one fails).  Values are restored.
        """
        x0 = np.array([p.value for p in params], dtype=float)
        h = np.array([1e-3 if p.unit == "deg" else (0.01 * abs(v) if v != 0 else 0.01) for p, v in zip(params, x0, strict=True)])
        try:
            cov = None
            for scale in (1.0, 4.0):  # physical steps; where they see no minimum, coarser ones
                cov = self._finite_difference_covariance(params, x0, self._inside_bounds(params, x0, scale * h))
                if cov is not None:
                    break
            if cov is None:
                return None
            refined = self._finite_difference_covariance(params, x0, self._inside_bounds(params, x0, 0.5 * np.sqrt(np.diag(cov))))
            return refined if refined is not None else cov
        finally:
            for p, v in zip(params, x0, strict=True):
                p.value = float(v)

    @staticmethod
    def _inside_bounds(params, x0, h) -> np.ndarray:
        h = h.copy()
        for i, p in enumerate(params):
            for b in p.bounds:
                if b is not None and abs(x0[i] - b) > 0:
                    h[i] = min(h[i], 0.5 * abs(x0[i] - b))
        return h

    def _finite_difference_covariance(self, params, x0, h) -> np.ndarray | None:
        n = len(params)

        def stat(dx):
            for p, v in zip(params, x0 + dx, strict=True):
                p.value = float(v)
            with np.errstate(all="ignore"):
                return self.stat_sum()

        hess = np.empty((n, n))
        f0 = stat(np.zeros(n))
        for i in range(n):  # 2 n² evaluations in all, n <= MAX_NUMERICAL_HESSIAN
            e_i = np.zeros(n)
            e_i[i] = h[i]
            hess[i, i] = (stat(e_i) - 2 * f0 + stat(-e_i)) / h[i] ** 2
            for j in range(i):
                e_j = np.zeros(n)
                e_j[j] = h[j]
                hess[i, j] = hess[j, i] = (stat(e_i + e_j) - stat(e_i - e_j) - stat(e_j - e_i) + stat(-e_i - e_j)) / (4 * h[i] * h[j])
        if not np.all(np.isfinite(hess)):
            return None
        try:
            np.linalg.cholesky(hess)
        except np.linalg.LinAlgError:
            return None
        cov = 2.0 * np.linalg.inv(hess)
        return 0.5 * (cov + cov.T)

    def _safe_stat(self) -> float:
        try:
            return self.stat_sum()
        except Exception:
            return math.nan

    # -- derived
    def ts(self, name: str, *, refit: bool = True) -> float:
        """Test statistic of model ``name``: stat without it (refitted) − stat with it.

        Parameter values and errors are restored afterwards.
        """
        stat_with = self.stat_sum()
        saved = [(p, p.value, p.error) for p in self.models.parameters]
        reduced = self.models.without(name)
        self._set_models(reduced)
        try:
            if refit and any(not p.frozen for p in reduced.parameters):
                stat_without = self._optimize(reduced, covariance=False, minos=None).total_stat
            else:
                stat_without = self.stat_sum()
        finally:
            self._set_models(self.models)
            for p, v, e in saved:
                p.value, p.error = v, e
        return float(stat_without - stat_with)

    def stat_profile(self, parameter: Parameter, values, *, reoptimize: bool = False) -> dict[str, np.ndarray]:
        """Statistic as a function of one parameter (others refitted if ``reoptimize``)."""
        saved = [(p, p.value, p.error) for p in self.models.parameters]
        frozen = parameter.frozen
        stats = []
        parameter.frozen = True
        limits = threadpool_limits(limits=1, user_api="blas")
        try:
            for v in np.asarray(values, dtype=float):
                parameter.value = float(v)
                stats.append(self.run(covariance=False).total_stat if reoptimize else self.stat_sum())
                if reoptimize:
                    for p, val, _ in saved:
                        if p is not parameter:
                            p.value = val
        finally:
            limits.restore_original_limits()
            parameter.frozen = frozen
            for p, val, err in saved:
                p.value, p.error = val, err
        return {"values": np.asarray(values, dtype=float), "stat": np.array(stats)}


def _fmin_message(fmin) -> str:
    reasons = []
    if fmin.has_reached_call_limit:
        reasons.append("call limit reached")
    if fmin.is_above_max_edm:
        reasons.append(f"EDM {fmin.edm:.3g} above goal {fmin.edm_goal:.3g}")
    if fmin.has_parameters_at_limit:
        reasons.append("parameters at limit")
    if not fmin.has_valid_parameters:
        reasons.append("invalid parameters")
    return "Migrad did not converge: " + (", ".join(reasons) or "invalid minimum")


def fit(datasets, models: Models, *, covariance: bool = True, minos=None, **options) -> FitResult:
    """Fit ``models`` to ``datasets`` (see :class:`Fit` for the options)."""
    return Fit(datasets, models, **options).run(covariance=covariance, minos=minos)


def compute_ts(datasets, models: Models, name: str, *, refit: bool = True, **options) -> float:
    """TS of model ``name`` at the current parameter values (refit without it)."""
    return Fit(datasets, models, **options).ts(name, refit=refit)
