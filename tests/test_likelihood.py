"""Likelihood statistics: Cash and WStat against their definitions and gammapy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

from gpscat.core.likelihood import TRUNCATION_VALUE, cash, cash_sum, wstat


def test_cash_is_minus_two_log_poisson_up_to_a_constant():
    rng = np.random.default_rng(3)
    n = rng.poisson(5.0, size=50).astype(float)
    mu = rng.uniform(1, 9, size=50)
    minus2logl = -2 * (n * np.log(mu) - mu - gammaln(n + 1))
    np.testing.assert_allclose(cash(n, mu) - minus2logl, -2 * gammaln(n + 1), atol=1e-9)
    assert cash_sum(n, mu) == pytest.approx(cash(n, mu).sum(), rel=1e-12)


def test_cash_truncation():
    assert np.isfinite(cash(3.0, 0.0))
    assert cash(3.0, 0.0) == pytest.approx(2 * (TRUNCATION_VALUE - 3 * np.log(TRUNCATION_VALUE)))
    assert cash(0.0, 0.0) == pytest.approx(2 * TRUNCATION_VALUE)


@pytest.mark.parametrize(
    ("n_on", "n_off", "alpha", "mu_sig"),
    [(10, 20, 0.2, 3.0), (0, 5, 0.5, 1.0), (7, 0, 0.3, 2.0), (7, 0, 0.3, 9.0), (3, 40, 0.1, 0.0), (12, 30, 0.25, 20.0)],
)
def test_wstat_profiles_the_background(n_on, n_off, alpha, mu_sig):
    def minus2logl(b):
        mu_on = mu_sig + alpha * b
        return 2 * (mu_on + b - (n_on * np.log(mu_on) if n_on else 0) - (n_off * np.log(b) if n_off else 0))

    res = minimize_scalar(minus2logl, bounds=(1e-12, 10 * (n_on + n_off + 1)), method="bounded", options={"xatol": 1e-12})
    # the saturated model (mu = n in both regions), with 0 ln 0 = 0
    sat = 2 * sum(n - n * np.log(n) for n in (n_on, n_off) if n > 0)
    expected = res.fun - sat
    assert wstat(n_on, n_off, alpha, mu_sig) == pytest.approx(expected, abs=1e-6)
    assert wstat(n_on, n_off, alpha, mu_sig) >= -1e-12


def test_wstat_zero_at_best_signal():
    n_on, n_off, alpha = 25.0, 50.0, 0.2
    assert wstat(n_on, n_off, alpha, n_on - alpha * n_off) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.crosscheck
def test_matches_gammapy():
    stats = pytest.importorskip("gammapy.stats")
    rng = np.random.default_rng(5)
    n_on = rng.poisson(4, 100).astype(float)
    n_off = rng.poisson(10, 100).astype(float)
    alpha = rng.uniform(0.05, 0.5, 100)
    mu_sig = rng.uniform(0, 5, 100)
    np.testing.assert_allclose(cash(n_on, mu_sig + 1), stats.cash(n_on, mu_sig + 1), rtol=1e-10)
    np.testing.assert_allclose(wstat(n_on, n_off, alpha, mu_sig), stats.wstat(n_on, n_off, alpha, mu_sig), rtol=1e-8, atol=1e-10)
