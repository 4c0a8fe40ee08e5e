"""Ring and adaptive-ring background, and the ON/OFF stacking rule."""

import numpy as np
import pytest

from gpscat.core.convolve import ring_kernel
from gpscat.core.ring import OnOffStack, adaptive_ring_background, alpha_map, ring_background


def _sky(seed=0, shape=(120, 120), level=4.0):
    rng = np.random.default_rng(seed)
    acceptance = np.full(shape, level)
    return rng.poisson(acceptance).astype(float), acceptance


def test_ring_off_maps_for_a_flat_field():
    counts, acceptance = _sky()
    off = ring_background(counts, acceptance, exclusion_mask=None, r_in=15, width=8)
    area = np.pi * (23**2 - 15**2)
    c = (slice(30, 90), slice(30, 90))  # away from the edges
    np.testing.assert_allclose(off.acceptance_off[c], 4.0 * area, rtol=1e-9)
    alpha = alpha_map(acceptance, off.acceptance_off)
    np.testing.assert_allclose(alpha[c], 1 / area, rtol=1e-9)
    bkg = alpha * off.counts_off
    assert bkg[c].mean() == pytest.approx(4.0, rel=0.01)
    assert np.all(off.r_out == 23)


def test_ring_value_equals_weighted_sum_at_one_pixel():
    counts, acceptance = _sky(1)
    usable = np.ones(counts.shape, bool)
    usable[50:70, 40:60] = False
    off = ring_background(counts, acceptance, exclusion_mask=usable, r_in=10, width=5)
    k = ring_kernel(10, 5)
    n = k.shape[0] // 2
    y, x = 60, 55
    patch = (counts * usable)[y - n : y + n + 1, x - n : x + n + 1]
    assert off.counts_off[y, x] == pytest.approx(np.sum(k * patch), rel=1e-10)


def test_excluded_source_does_not_leak_into_off():
    counts, acceptance = _sky(2)
    source = np.zeros_like(counts)
    source[55:65, 55:65] = 50.0
    usable = np.ones(counts.shape, bool)
    usable[50:70, 50:70] = False
    off_src = ring_background(counts + source, acceptance, exclusion_mask=usable, r_in=12, width=6)
    off_bkg = ring_background(counts, acceptance, exclusion_mask=usable, r_in=12, width=6)
    np.testing.assert_allclose(off_src.counts_off, off_bkg.counts_off)
    # and with the source at the centre, the ON-pixel excess is the injected counts
    alpha = alpha_map(acceptance, off_src.acceptance_off)
    excess = counts + source - alpha * off_src.counts_off
    assert excess[55:65, 55:65].sum() == pytest.approx(5000, abs=4 * np.sqrt(100 * 54))


def test_energy_axis_is_handled_plane_by_plane():
    counts, acceptance = _sky(3)
    cube_c = np.stack([counts, 2 * counts])
    cube_a = np.stack([acceptance, 3 * acceptance])
    off = ring_background(cube_c, cube_a, exclusion_mask=None, r_in=10, width=5)
    single = ring_background(counts, acceptance, exclusion_mask=None, r_in=10, width=5)
    np.testing.assert_allclose(off.counts_off[1], 2 * single.counts_off)
    np.testing.assert_allclose(off.acceptance_off[1], 3 * single.acceptance_off)


def test_adaptive_ring_grows_only_near_exclusions():
    counts, acceptance = _sky(4, shape=(160, 160))
    usable = np.ones(counts.shape, bool)
    yy, xx = np.indices(counts.shape)
    usable[np.hypot(yy - 80, xx - 80) < 25] = False
    kw = dict(exclusion_mask=usable, r_in=10, width=6)
    fixed = ring_background(counts, acceptance, **kw)
    area = np.pi * (16**2 - 10**2)
    alpha_max = 1.5 / area  # the full ring gives 1 / area; allow losing a third of it
    adaptive = adaptive_ring_background(counts, acceptance, r_out_max=40, stepsize=3, alpha_max=alpha_max, **kw)
    interior = (yy >= 16) & (yy < 144) & (xx >= 16) & (xx < 144)  # full rings inside the map
    far = (np.hypot(yy - 80, xx - 80) > 45) & interior
    # far from the exclusion the first ring is taken: identical to the fixed ring
    np.testing.assert_allclose(adaptive.counts_off[far], fixed.counts_off[far])
    assert np.all(adaptive.r_out[far] == 16)
    # at the exclusion centre the ring had to grow, and alpha is now within the limit
    assert adaptive.r_out[80, 80] > 16
    alpha = alpha_map(acceptance, adaptive.acceptance_off)
    reached = adaptive.r_out < 40
    assert np.all(alpha[reached][acceptance[reached] > 0] <= alpha_max * (1 + 1e-9))
    # the fixed-r_in variant grows the width instead
    grow_w = adaptive_ring_background(
        counts, acceptance, r_out_max=40, stepsize=3, alpha_max=alpha_max, method="fixed_r_in", **kw
    )
    assert grow_w.r_out[80, 80] > 16
    with pytest.raises(ValueError, match="method"):
        adaptive_ring_background(counts, acceptance, r_out_max=40, stepsize=3, alpha_max=0.1, method="x", **kw)


def test_adaptive_ring_takes_largest_ring_when_limit_unreachable():
    counts, acceptance = _sky(5, shape=(60, 60))
    off = adaptive_ring_background(
        counts, acceptance, exclusion_mask=None, r_in=5, width=3, r_out_max=14, stepsize=2, alpha_max=1e-9
    )
    assert np.all(off.r_out == 14)


def test_onoff_stack_follows_gammapy_rule():
    shape = (1, 10, 10)
    stack = OnOffStack(shape)
    ones = np.ones(shape)
    mask_a = np.ones(shape, bool)
    mask_b = np.zeros(shape, bool)
    mask_b[..., :, 5:] = True
    # obs A: alpha = 0.1, n_off = 100; obs B (right half only): alpha = 0.2, n_off = 50
    stack.add(3 * ones, 100 * ones, 1 * ones, 10 * ones, mask_a)
    stack.add(2 * ones, 50 * ones, 2 * ones, 10 * ones, mask_b)
    res = stack.result()
    np.testing.assert_array_equal(res["counts"][..., :5], 3)
    np.testing.assert_array_equal(res["counts"][..., 5:], 5)
    alpha = alpha_map(res["acceptance"], res["acceptance_off"])
    np.testing.assert_allclose(alpha[..., :5], 0.1)
    np.testing.assert_allclose(alpha[..., 5:], (0.1 * 100 + 0.2 * 50) / 150)
    np.testing.assert_allclose((alpha * res["counts_off"])[..., 5:], 20.0)  # Σ alpha_i n_off_i
    assert res["mask"].all()


def test_onoff_stack_with_slices_and_no_off_counts():
    stack = OnOffStack((1, 8, 8))
    part = np.ones((1, 4, 4))
    stack.add(part, 0 * part, part, part, part.astype(bool), (slice(2, 6), slice(2, 6)))
    stack.add(part, 10 * part, part, 20 * part, part.astype(bool), (slice(0, 4), slice(0, 4)))
    res = stack.result()
    assert res["mask"].sum() == 16 + 16 - 4
    # where no OFF count was stacked alpha falls back to the mosaic mean Σ bkg / Σ n_off = 0.05
    alpha = alpha_map(res["acceptance"], res["acceptance_off"])
    assert alpha[0, 5, 5] == pytest.approx(0.05)
