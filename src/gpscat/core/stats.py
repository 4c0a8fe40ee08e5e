"""Counts statistics for significance and excess maps: Cash (known background) and WStat (on/off).

All functions are vectorised over numpy arrays (broadcasting), accept non-integer counts
(correlated maps with fractional kernel weights are sums of weighted counts), and handle
zeros without warnings.

Conventions (the same as gammapy's ``CashCountsStatistic`` / ``WStatCountsStatistic``):

* ``ts`` is the likelihood-ratio test statistic of "signal + background" against
  "background only", with the signal amplitude free to be negative;
* the significance is the *signed* square root, ``sign(excess) * sqrt(ts)``;
* Cash form: ``n_on`` counts over a known expected background ``mu_bkg``
  (Li & Ma 1983 in the limit alpha → 0);
* WStat form: ``n_on`` counts in the ON region, ``n_off`` in the OFF region,
  ``alpha = acceptance_on / acceptance_off``; the TS is Li & Ma (1983) eq. 17, which is
  the profile-likelihood ratio with the background marginalised (Cousins et al. 2008).

Where a statistic is undefined (``mu_bkg <= 0`` with ``n_on > 0``, ``alpha <= 0`` or non-finite
input) the result is NaN.  Where nothing was observed or expected (``n_on = 0`` and
``mu_bkg = 0``) TS and significance are 0.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "cash_excess_interval",
    "cash_significance",
    "cash_ts",
    "excess_error_cash",
    "excess_error_wstat",
    "wstat_excess_interval",
    "wstat_mu_bkg",
    "wstat_significance",
    "wstat_ts",
]

_BISECT_STEPS = 80


def _xlogy(x, y):
    """x * log(y) with 0 * log(anything >= 0) = 0 and no warnings."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def _arrays(*args):
    return np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in args))


def _check_nonnegative(name: str, a: np.ndarray) -> None:
    if np.any(a < 0):
        raise ValueError(f"{name} must be >= 0 (counts), got minimum {np.nanmin(a)}")


# ---------------------------------------------------------------------- Cash


def cash_ts(n_on, mu_bkg) -> np.ndarray:
    """Test statistic of ``n_on`` counts over a known background ``mu_bkg``.

    ``TS = 2 * (n_on * ln(n_on / mu_bkg) - n_on + mu_bkg)`` — the Cash statistic of the
    background-only hypothesis minus that of the best fit (``mu = n_on``).

    Parameters
    ----------
    n_on : array_like
        Observed (possibly correlated, non-integer) counts, >= 0.
    mu_bkg : array_like
        Expected background counts, >= 0.

    Returns
    -------
    ts : numpy.ndarray
        ``>= 0``; NaN where ``mu_bkg <= 0 < n_on`` or an input is not finite.
    """
    n_on, mu_bkg = _arrays(n_on, mu_bkg)
    _check_nonnegative("n_on", n_on)
    _check_nonnegative("mu_bkg", mu_bkg)
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = 2.0 * (_xlogy(n_on, n_on / mu_bkg) - n_on + mu_bkg)
    ts = np.clip(ts, 0.0, None)
    bad = ((mu_bkg <= 0) & (n_on > 0)) | ~np.isfinite(n_on) | ~np.isfinite(mu_bkg)
    return np.where(bad, np.nan, ts)


def cash_significance(n_on, mu_bkg) -> np.ndarray:
    """Signed significance ``sign(n_on - mu_bkg) * sqrt(TS)`` for a known background.

    This is the Li & Ma (1983) significance in the limit of a perfectly known background
    (gammapy ``CashCountsStatistic.sqrt_ts``).  See :func:`cash_ts` for the arguments.
    """
    n_on, mu_bkg = _arrays(n_on, mu_bkg)
    return np.sign(n_on - mu_bkg) * np.sqrt(cash_ts(n_on, mu_bkg))


def excess_error_cash(n_on, mu_bkg) -> np.ndarray:
    """Symmetric 1σ error of the excess ``n_on - mu_bkg``: ``sqrt(n_on)``.

    The curvature of the Poisson likelihood at its maximum; ``mu_bkg`` is exactly known.
    """
    n_on, _ = _arrays(n_on, mu_bkg)
    _check_nonnegative("n_on", n_on)
    return np.sqrt(n_on)


def _cash_stat(n_on, mu):
    """``2 * (mu - n_on * ln(mu))`` plus the saturated term, so that the minimum is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * (mu - n_on + _xlogy(n_on, n_on / mu))


def cash_excess_interval(n_on, mu_bkg, *, n_sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric errors ``(errn, errp)`` of the excess, from the likelihood profile.

    The excess bounds are where ``TS(excess) - TS_min = n_sigma**2``; the lower bound is
    limited by ``mu_bkg + excess >= 0``.  Vectorised bisection (``80`` halvings, relative
    precision ~1e-15 of the bracket).

    Returns
    -------
    errn, errp : numpy.ndarray
        Positive distances from the best-fit excess ``n_on - mu_bkg`` to the bounds.
    """
    if not n_sigma > 0:
        raise ValueError(f"n_sigma must be > 0, got {n_sigma}")
    n_on, mu_bkg = _arrays(n_on, mu_bkg)
    _check_nonnegative("n_on", n_on)
    _check_nonnegative("mu_bkg", mu_bkg)
    delta = n_sigma**2
    # the interval in mu = mu_bkg + excess: f(mu) = stat(mu) - delta changes sign on each side
    f = lambda mu: _cash_stat(n_on, mu) - delta  # noqa: E731
    tiny = np.full_like(n_on, 1e-300)
    at_zero = f(tiny) <= 0  # the bound reaches mu = 0 (no counts): the excess bound is -mu_bkg
    f_lo = lambda mu: np.where(at_zero, 1.0, f(mu))  # noqa: E731
    lo = np.where(at_zero, 0.0, _bisect(f_lo, tiny, n_on, increasing=False))
    hi_bound = n_on + 2.0 * n_sigma * np.sqrt(n_on + 1.0) + delta + 1.0
    hi = _bisect(f, n_on, hi_bound, increasing=True)
    return n_on - lo, hi - n_on


# ---------------------------------------------------------------------- WStat


def _check_alpha(alpha: np.ndarray) -> None:
    if np.any(alpha < 0):
        raise ValueError(f"alpha must be >= 0, got minimum {np.nanmin(alpha)}")


def wstat_ts(n_on, n_off, alpha) -> np.ndarray:
    """Li & Ma (1983) eq. 17 test statistic for ON/OFF counts.

    ``TS = 2 * [n_on ln((1+α) n_on / (α (n_on+n_off))) + n_off ln((1+α) n_off / (n_on+n_off))]``

    Parameters
    ----------
    n_on, n_off : array_like
        ON and OFF counts, >= 0 (non-integer allowed).
    alpha : array_like
        Ratio of ON to OFF acceptance, > 0.

    Returns
    -------
    ts : numpy.ndarray
        ``>= 0``; 0 where ``n_on = n_off = 0``; NaN where ``alpha`` is 0 or not finite.
    """
    n_on, n_off, alpha = _arrays(n_on, n_off, alpha)
    _check_nonnegative("n_on", n_on)
    _check_nonnegative("n_off", n_off)
    _check_alpha(alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = n_on + n_off
        term_on = _xlogy(n_on, (1.0 + alpha) / alpha * n_on / total)
        term_off = _xlogy(n_off, (1.0 + alpha) * n_off / total)
        ts = np.clip(2.0 * (term_on + term_off), 0.0, None)
    bad = (alpha <= 0) | ~np.isfinite(alpha) | ~np.isfinite(n_on) | ~np.isfinite(n_off)
    return np.where(bad, np.nan, ts)


def wstat_significance(n_on, n_off, alpha) -> np.ndarray:
    """Signed Li & Ma significance ``sign(n_on - α n_off) * sqrt(TS)``; see :func:`wstat_ts`."""
    n_on, n_off, alpha = _arrays(n_on, n_off, alpha)
    return np.sign(n_on - alpha * n_off) * np.sqrt(wstat_ts(n_on, n_off, alpha))


def excess_error_wstat(n_on, n_off, alpha) -> np.ndarray:
    """Symmetric 1σ error of the excess ``n_on - α n_off``: ``sqrt(n_on + α² n_off)``."""
    n_on, n_off, alpha = _arrays(n_on, n_off, alpha)
    _check_nonnegative("n_on", n_on)
    _check_nonnegative("n_off", n_off)
    return np.sqrt(n_on + alpha**2 * n_off)


def wstat_mu_bkg(n_on, n_off, alpha, mu_sig) -> np.ndarray:
    """Profile-likelihood estimate of the OFF-region background counts for a signal ``mu_sig``.

    Maximises ``Pois(n_on | mu_sig + α b) Pois(n_off | b)`` over ``b``; the ON-region
    background is then ``α b``.  Closed form of the quadratic's positive root.
    """
    n_on, n_off, alpha, mu_sig = _arrays(n_on, n_off, alpha, mu_sig)
    c = alpha * (n_on + n_off) - (1.0 + alpha) * mu_sig
    d = np.sqrt(c**2 + 4.0 * alpha * (1.0 + alpha) * n_off * mu_sig)
    with np.errstate(divide="ignore", invalid="ignore"):
        # c + d loses precision for c < 0; use the conjugate form there
        b_pos = (c + d) / (2.0 * alpha * (1.0 + alpha))
        b_neg = 2.0 * n_off * mu_sig / (d - c)
    b = np.where(c >= 0, b_pos, b_neg)
    return np.where(np.isfinite(b), np.clip(b, 0.0, None), 0.0)


def _wstat_stat(n_on, n_off, alpha, mu_sig):
    """WStat (-2 log profile likelihood) minus its saturated value, for a signal ``mu_sig``."""
    b = wstat_mu_bkg(n_on, n_off, alpha, mu_sig)
    mu_on = mu_sig + alpha * b
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * (
            mu_on - n_on + _xlogy(n_on, n_on / mu_on) + b - n_off + _xlogy(n_off, n_off / b)
        )


def wstat_excess_interval(n_on, n_off, alpha, *, n_sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric errors ``(errn, errp)`` of the ON/OFF excess from the WStat profile.

    Bounds where ``WStat(mu_sig) - WStat_min = n_sigma**2``, with the background profiled;
    the signal may go down to ``-α n_off``-like values as long as the ON expectation stays
    positive.  Vectorised bisection.
    """
    if not n_sigma > 0:
        raise ValueError(f"n_sigma must be > 0, got {n_sigma}")
    n_on, n_off, alpha = _arrays(n_on, n_off, alpha)
    _check_nonnegative("n_on", n_on)
    _check_nonnegative("n_off", n_off)
    _check_alpha(alpha)
    delta = n_sigma**2
    excess = n_on - alpha * n_off
    f = lambda s: _wstat_stat(n_on, n_off, alpha, s) - delta  # noqa: E731
    lo = _bisect(f, excess - 2.0 * n_sigma * np.sqrt(n_on + alpha**2 * n_off + 1.0), excess, increasing=False)
    width = np.sqrt(n_on + alpha**2 * n_off + 1.0)
    hi = _bisect(f, excess, excess + 2.0 * n_sigma * width + delta + 1.0, increasing=True)
    return excess - lo, hi - excess


# ---------------------------------------------------------------------- helpers


def _bisect(f, a, b, *, increasing: bool) -> np.ndarray:
    """Vectorised bisection for ``f(x) = 0`` on ``[a, b]``; ``f`` monotonic there.

    ``f`` must be negative at the inner end of the bracket (the likelihood minimum); the
    outer end (``b`` when ``increasing``, else ``a``) is pushed outwards (doubling the
    distance) until ``f`` is non-negative there.  Loops run over halvings, never elements.
    """
    a = np.array(a, dtype=float)
    b = np.array(b, dtype=float)
    for _ in range(64):
        outer = b if increasing else a
        grow = f(outer) < 0
        if not np.any(grow):
            break
        if increasing:
            b = np.where(grow, a + 2.0 * (b - a) + 1.0, b)
        else:
            a = np.where(grow, b - 2.0 * (b - a) - 1.0, a)
    for _ in range(_BISECT_STEPS):
        m = 0.5 * (a + b)
        fm = f(m)
        go_right = (fm < 0) if increasing else (fm > 0)
        a = np.where(go_right, m, a)
        b = np.where(go_right, b, m)
    return 0.5 * (a + b)
