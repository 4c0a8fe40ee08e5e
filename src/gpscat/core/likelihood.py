"""Poisson likelihood statistics (−2 ln L forms, as gammapy defines them).

* :func:`cash` — counts with a known background (the background is part of ``mu``);
* :func:`wstat` — on/off counts with the background profiled out bin by bin (Wachter
  et al. 1979, the XSPEC W statistic; profile from :mod:`gpscat.core.stats`), the statistic of ring/reflected-background data.

Both are per-bin arrays; sum them over the bins selected by the dataset's mask
(``mask_safe ∧ mask_fit``).  Significance helpers (Li & Ma) live elsewhere.
"""

from __future__ import annotations

import numpy as np

from gpscat.core.stats import wstat_mu_bkg

__all__ = ["TRUNCATION_VALUE", "cash", "cash_sum", "wstat"]

#: Predicted counts are clipped at this value so that ``log(mu)`` stays finite.
TRUNCATION_VALUE = 1e-25


def cash(n_on, mu_on) -> np.ndarray:
    """Cash statistic per bin: ``2 (mu - n ln mu)`` with ``mu`` clipped at 1e-25."""
    n_on = np.asarray(n_on, dtype=float)
    mu_on = np.maximum(np.asarray(mu_on, dtype=float), TRUNCATION_VALUE)
    return 2.0 * (mu_on - n_on * np.log(mu_on))


def cash_sum(n_on: np.ndarray, mu_on: np.ndarray) -> float:
    """Sum of :func:`cash` over all bins (1D arrays of the masked bins)."""
    mu = np.maximum(mu_on, TRUNCATION_VALUE)
    return float(2.0 * (mu.sum() - np.dot(n_on, np.log(mu))))


def wstat(n_on, n_off, alpha, mu_sig) -> np.ndarray:
    """W statistic per bin (−2 ln of the profile likelihood ratio to the saturated model).

    ``2 [mu_sig + (1+alpha) mu_bkg − n_on − n_off − n_on ln((mu_sig + alpha mu_bkg)/n_on)
    − n_off ln(mu_bkg/n_off)]`` with ``mu_bkg`` from :func:`wstat_profile_background` and
    ``x ln x → 0`` conventions; it is 0 for a perfect model and ≥ 0 otherwise.
    ``mu_bkg`` is the profiled OFF background, :func:`gpscat.core.stats.wstat_mu_bkg`.
    """
    n_on, n_off, alpha, mu_sig = (np.asarray(a, dtype=float) for a in (n_on, n_off, alpha, mu_sig))
    mu_bkg = wstat_mu_bkg(n_on, n_off, alpha, mu_sig)
    mu_on = np.maximum(mu_sig + alpha * mu_bkg, TRUNCATION_VALUE)
    mu_off = np.maximum(mu_bkg, TRUNCATION_VALUE)
    with np.errstate(divide="ignore", invalid="ignore"):
        term_on = np.where(n_on > 0, n_on * np.log(mu_on / np.where(n_on > 0, n_on, 1.0)), 0.0)
        term_off = np.where(n_off > 0, n_off * np.log(mu_off / np.where(n_off > 0, n_off, 1.0)), 0.0)
    return 2.0 * (mu_sig + (1 + alpha) * mu_bkg - n_on - n_off - term_on - term_off)
