"""Counts statistics: analytic Li & Ma / Cash values, limits, zeros, intervals, null distribution."""

import numpy as np
import pytest

from gpscat.core.stats import (
    cash_excess_interval,
    cash_significance,
    cash_ts,
    excess_error_cash,
    excess_error_wstat,
    wstat_excess_interval,
    wstat_mu_bkg,
    wstat_significance,
    wstat_ts,
)


def li_ma_17(n_on, n_off, alpha):
    """Li & Ma (1983) eq. 17 written out for scalars with positive counts."""
    t1 = n_on * np.log((1 + alpha) / alpha * n_on / (n_on + n_off))
    t2 = n_off * np.log((1 + alpha) * n_off / (n_on + n_off))
    return np.sign(n_on - alpha * n_off) * np.sqrt(2 * (t1 + t2))


def test_li_ma_reference_value():
    # the classic example (18 ON, 97 OFF, alpha = 0.1), Li & Ma eq. 17 = 2.2422
    assert wstat_significance(18, 97, 0.1) == pytest.approx(2.2421704424844875, rel=1e-12)


@pytest.mark.parametrize("n_on,n_off,alpha", [(10, 50, 0.1), (3, 40, 0.2), (100, 900, 0.05), (7.5, 3.2, 1.3)])
def test_wstat_matches_formula(n_on, n_off, alpha):
    assert wstat_significance(n_on, n_off, alpha) == pytest.approx(li_ma_17(n_on, n_off, alpha), rel=1e-12)


def test_cash_analytic():
    assert cash_ts(10, 5) == pytest.approx(2 * (10 * np.log(2) - 5))
    assert cash_significance(10, 5) == pytest.approx(np.sqrt(2 * (10 * np.log(2) - 5)))
    assert cash_significance(5, 10) == pytest.approx(-np.sqrt(2 * (5 * np.log(0.5) + 5)))
    # no counts over a background of mu: TS = 2 mu
    assert cash_significance(0, 2.0) == pytest.approx(-2.0)


def test_zeros_and_undefined():
    assert cash_significance(0, 0) == 0
    assert np.isnan(cash_significance(3, 0))
    assert wstat_significance(0, 0, 0.2) == 0
    # no OFF counts: TS = 2 n_on ln((1 + alpha) / alpha)
    assert wstat_significance(3, 0, 0.1) == pytest.approx(np.sqrt(2 * 3 * np.log(11)))
    # no ON counts: TS = 2 n_off ln(1 + alpha)
    assert wstat_significance(0, 10, 0.1) == pytest.approx(-np.sqrt(2 * 10 * np.log(1.1)))
    assert np.isnan(wstat_significance(3, 5, 0.0))
    with np.errstate(all="raise"):  # vectorised without warnings
        wstat_significance(np.array([0, 0, 5]), np.array([0, 3, 0]), 0.5)
        cash_significance(np.array([0, 0, 5.0]), np.array([0, 1, 2.0]))


def test_negative_input_is_an_error():
    with pytest.raises(ValueError, match="n_on"):
        cash_significance(-1, 2)
    with pytest.raises(ValueError, match="alpha"):
        wstat_significance(1, 2, -0.1)


def test_wstat_tends_to_cash_for_small_alpha():
    mu = 20.0
    alpha = 1e-5
    assert wstat_significance(35, mu / alpha, alpha) == pytest.approx(cash_significance(35, mu), rel=1e-3)


def test_broadcasting_and_shapes():
    n_on = np.arange(12.0).reshape(3, 4)
    assert cash_significance(n_on, 5.0).shape == (3, 4)
    assert wstat_ts(n_on, 20.0, np.full((1, 4), 0.25)).shape == (3, 4)


def test_excess_errors():
    assert excess_error_cash(16, 4) == 4
    assert excess_error_wstat(16, 36, 0.5) == pytest.approx(5.0)


@pytest.mark.parametrize("n_on,mu", [(0, 2.0), (1, 0.5), (25, 20.0), (400, 380.0)])
def test_cash_interval_is_delta_ts_one(n_on, mu):
    errn, errp = cash_excess_interval(n_on, mu, n_sigma=1)
    excess = n_on - mu
    # at the bounds the TS against the best fit rises by exactly 1 (unless the bound is mu = 0)
    for bound in (excess + errp, excess - errn):
        mu_tot = mu + bound
        if mu_tot > 1e-12:
            stat = 2 * (mu_tot - n_on + (n_on * np.log(n_on / mu_tot) if n_on > 0 else 0))
            assert stat == pytest.approx(1.0, abs=1e-8)
    if n_on > 100:  # Gaussian limit
        assert errp == pytest.approx(np.sqrt(n_on), rel=0.05)
        assert errn == pytest.approx(np.sqrt(n_on), rel=0.05)
    if n_on == 0:
        assert errn == pytest.approx(0.0)  # the excess cannot go below -mu


def test_wstat_interval_against_profile_scan():
    n_on, n_off, alpha = 30.0, 80.0, 0.2
    errn, errp = wstat_excess_interval(n_on, n_off, alpha)
    s = np.linspace(-20, 60, 400001)
    b = wstat_mu_bkg(n_on, n_off, alpha, s)
    mu_on = s + alpha * b
    ok = mu_on > 0
    stat = np.full_like(s, np.inf)
    stat[ok] = 2 * (mu_on[ok] - n_on * np.log(mu_on[ok]) + b[ok] - n_off * np.log(b[ok]))
    inside = s[stat <= stat.min() + 1.0]
    excess = n_on - alpha * n_off
    assert excess - inside.min() == pytest.approx(errn, abs=1e-3)
    assert inside.max() - excess == pytest.approx(errp, abs=1e-3)
    # the large-count limit is the symmetric error
    en, ep = wstat_excess_interval(4000.0, 9000.0, 0.4)
    assert 0.5 * (en + ep) == pytest.approx(float(excess_error_wstat(4000.0, 9000.0, 0.4)), rel=0.01)


def test_null_distribution_is_standard_normal():
    rng = np.random.default_rng(42)
    mu = 60.0
    n = rng.poisson(mu, 20000).astype(float)
    s = cash_significance(n, mu)
    assert abs(s.mean()) < 0.05 and abs(s.std() - 1) < 0.05
    alpha = 0.1
    n_on = rng.poisson(mu, 20000).astype(float)
    n_off = rng.poisson(mu / alpha, 20000).astype(float)
    s = wstat_significance(n_on, n_off, alpha)
    assert abs(s.mean()) < 0.05 and abs(s.std() - 1) < 0.05
