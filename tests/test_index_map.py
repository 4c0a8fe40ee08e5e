"""Per-pixel power-law index fit: band integrals, unbiased pulls, masks, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from gpscat.core.geom import WcsGeom
from gpscat.core.index_map import BandMaps, band_integrals, fit_power_law, index_maps

E_LO = np.array([0.5, 1.0, 3.0, 10.0])
E_HI = np.array([1.0, 3.0, 10.0, 50.0])


def _analytic(index, lo, hi):
    return (hi ** (1 - index) - lo ** (1 - index)) / (1 - index)


def test_band_integrals_match_analytic_and_derivatives():
    g = np.array([1.5, 2.0, 2.7, 3.5])
    i, d1, d2 = band_integrals(g, E_LO, E_HI)
    assert i.shape == (4, 4)
    np.testing.assert_allclose(i, _analytic(g[None, :], E_LO[:, None], E_HI[:, None]), rtol=1e-9)
    h = 1e-5
    ip, _, _ = band_integrals(g + h, E_LO, E_HI)
    im, _, _ = band_integrals(g - h, E_LO, E_HI)
    np.testing.assert_allclose(d1, (ip - im) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(d2, (ip - 2 * i + im) / h**2, rtol=1e-4)
    # the index 1 case (log) has no special branch to get wrong
    i1, _, _ = band_integrals(np.array(1.0), [1.0], [10.0])
    assert i1[0] == pytest.approx(np.log(10.0), rel=1e-10)
    with pytest.raises(ValueError, match="e_lo"):
        band_integrals(2.0, [1.0], [0.5])


def _simulate(rng, index, norm, shape, exposure=1e7, bkg=(200.0, 100.0, 30.0, 5.0)):
    i, _, _ = band_integrals(index, E_LO, E_HI)
    x = np.full((4, *shape), exposure)
    b = np.asarray(bkg)[:, None, None] * np.ones((4, *shape))
    mu = b + 1e4 * x * norm * i
    return rng.poisson(mu).astype(float), b, x


def test_fit_recovers_index_with_calibrated_errors():
    rng = np.random.default_rng(7)
    shape = (60, 60)
    index = rng.uniform(1.8, 3.2, shape)
    n, b, x = _simulate(rng, index, 1e-9, shape)
    fit = fit_power_law(n, b, x, E_LO, E_HI)
    assert fit.index.shape == shape
    assert np.mean(fit.converged) > 0.99
    pull = (fit.index - index) / fit.index_err
    assert abs(np.nanmean(pull)) < 0.15
    assert np.nanstd(pull) == pytest.approx(1.0, abs=0.1)
    pull_n = (fit.norm - 1e-9) / fit.norm_err
    assert np.nanstd(pull_n) == pytest.approx(1.0, abs=0.1)


def test_background_only_and_masks_give_nan():
    rng = np.random.default_rng(8)
    shape = (40, 40)
    b = np.array([200.0, 100.0, 30.0, 5.0])[:, None, None] * np.ones((4, *shape))
    n = rng.poisson(b).astype(float)
    x = np.full((4, *shape), 1e7)
    fit = fit_power_law(n, b, x, E_LO, E_HI, min_ts=9.0)
    assert np.mean(np.isfinite(fit.index)) < 0.02  # ~ P(TS > 9) for background only
    # a masked pixel, and a pixel with only one usable band, are not fitted
    n2, b2, x2 = _simulate(rng, np.full((2, 2), 2.5), 1e-9, (2, 2))
    mask = np.ones((2, 2), bool)
    mask[0, 0] = False
    x2[1:, 1, 1] = 0.0
    fit2 = fit_power_law(n2, b2, x2, E_LO, E_HI, mask=mask)
    assert np.isnan(fit2.index[0, 0]) and np.isnan(fit2.index[1, 1])
    assert np.isfinite(fit2.index[0, 1]) and np.isfinite(fit2.index[1, 0])


def test_fit_power_law_errors():
    z = np.zeros((4, 2))
    with pytest.raises(ValueError, match="one shape"):
        fit_power_law(z, z[:3], z, E_LO, E_HI)
    with pytest.raises(ValueError, match="energy bands"):
        fit_power_law(z, z, z, E_LO[:3], E_HI[:3])
    with pytest.raises(ValueError, match="at least 2"):
        fit_power_law(z[:1], z[:1], z[:1], E_LO[:1], E_HI[:1])
    with pytest.raises(ValueError, match="index_init"):
        fit_power_law(z, z, z, E_LO, E_HI, index_init=9.0)


def _band_maps(name, binsz, lo, hi, index, rng, radius=0.2):
    geom = WcsGeom.create((0.0, 0.0), (1.0, 0.6), binsz)
    lo, hi = np.asarray(lo), np.asarray(hi)
    x = np.full((lo.size, *geom.shape), 1e7)
    b = np.full(x.shape, 50.0)
    mu = b + 1e4 * x * 1e-9 * band_integrals(np.array(index), lo, hi)[0][:, None, None]
    return BandMaps(name, radius, geom, rng.poisson(mu).astype(float), b, x, lo, hi)


def test_index_maps_joins_datasets_on_the_finest_grid(caplog):
    rng = np.random.default_rng(9)
    sub = _band_maps("sub", 0.04, [0.1, 0.3], [0.3, 1.0], 2.5, rng)
    post = _band_maps("post", 0.02, [1.0, 10.0], [10.0, 100.0], 2.5, rng)
    other_radius = _band_maps("post", 0.02, [1.0, 10.0], [10.0, 100.0], 1.0, rng, radius=0.4)
    maps = index_maps([sub, post, other_radius], radius=0.2)
    assert maps["INDEX"].geom == post.geom
    assert set(maps) == {"INDEX", "INDEX_ERR", "NORM", "NORM_ERR", "TS"}
    pull = (maps["INDEX"].data - 2.5) / maps["INDEX_ERR"].data
    assert abs(np.nanmean(pull)) < 0.2 and np.nanstd(pull) == pytest.approx(1.0, abs=0.15)
    # a dataset overlapping another in energy is left out, with a warning
    overlap = _band_maps("again", 0.02, [0.5, 3.0], [3.0, 30.0], 2.5, rng)
    with caplog.at_level(logging.WARNING):
        index_maps([sub, overlap], radius=0.2)
    assert any("overlap" in r.getMessage() for r in caplog.records)
    assert index_maps([], radius=0.2) is None
