"""Kernels (normalisation, sampling) and FFT correlation (orientation, masks, round-off)."""

import numpy as np
import pytest
from scipy import ndimage

from gpscat.core.convolve import correlate, disk_kernel, gaussian_kernel, ring_kernel


@pytest.mark.parametrize("radius", [0.3, 0.5, 1.0, 2.5, 5.0, 7.3, 40.0])
def test_disk_kernel_area_is_exact(radius):
    k = disk_kernel(radius)
    assert k.shape[0] % 2 == 1 and k.shape[0] == k.shape[1]
    assert k.sum() == pytest.approx(np.pi * radius**2, rel=1e-10)
    assert k.max() == pytest.approx(min(1.0, np.pi * radius**2))
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    assert np.all((k >= 0) & (k <= 1))


def test_disk_kernel_edge_pixel_fraction():
    # unit-radius disk: the centre pixel is fully inside; the side pixel [0.5, 1.5] x [-0.5, 0.5]
    # holds ∫_{0.5}^{1} min(2 sqrt(1 - x²), 1) dx
    k = disk_kernel(1.0)
    x = np.linspace(0.5, 1.0, 200001)
    side = np.trapezoid(np.minimum(2 * np.sqrt(np.clip(1 - x**2, 0, None)), 1.0), x)
    assert k[1, 1] == 1.0
    assert k[1, 2] == pytest.approx(side, rel=1e-6)


def test_disk_kernel_center_sampling_counts_lattice_points():
    # Gauss circle problem: lattice points with x² + y² <= r²
    assert disk_kernel(5.0, sampling="center").sum() == 81
    assert disk_kernel(0.1 / 0.02, sampling="center").sum() == 81
    assert disk_kernel(1.0, sampling="center").sum() == 5


def test_ring_kernel_area():
    k = ring_kernel(10.0, 6.5)
    assert k.sum() == pytest.approx(np.pi * (16.5**2 - 10.0**2), rel=1e-10)
    n = k.shape[0] // 2
    assert k[n, n] == 0 and k.max() == 1.0
    assert ring_kernel(0, 3.0).sum() == pytest.approx(np.pi * 9)


def test_gaussian_kernel_normalised_with_right_width():
    sigma = 2.0
    k = gaussian_kernel(sigma, n_sigma=6)
    assert k.sum() == pytest.approx(1.0)
    n = k.shape[0] // 2
    d = np.arange(-n, n + 1)
    var = np.sum(k.sum(axis=0) * d**2)
    assert var == pytest.approx(sigma**2 + 1 / 12, rel=1e-3)  # pixel integration adds 1/12


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_kernel_bad_radius(bad):
    with pytest.raises(ValueError, match="radius"):
        disk_kernel(bad)


def test_correlate_matches_direct_correlation():
    rng = np.random.default_rng(1)
    data = rng.poisson(3.0, (40, 55)).astype(float)
    kernel = rng.uniform(0, 1, (5, 7))  # asymmetric: checks orientation
    direct = ndimage.correlate(data, kernel, mode="constant", cval=0.0)
    np.testing.assert_allclose(correlate(data, kernel), direct, rtol=1e-10, atol=1e-9)


def test_correlate_counts_in_disk():
    data = np.zeros((31, 31))
    data[15, 15] = 7.0
    out = correlate(data, disk_kernel(4.0))
    # a point within r of a pixel is counted with the fraction of that pixel in the disk
    assert out[15, 15] == pytest.approx(7.0, rel=1e-12)
    assert out.sum() == pytest.approx(7.0 * np.pi * 16)
    assert out[15, 25] == 0.0  # exactly zero away from data (no FFT noise)


def test_correlate_mask_and_normalize():
    rng = np.random.default_rng(2)
    data = rng.normal(5.0, 1.0, (3, 30, 40))
    mask = np.ones((30, 40), bool)
    mask[:, :10] = False
    k = disk_kernel(3.0)
    np.testing.assert_allclose(correlate(data, k, mask=mask), correlate(data * mask, k), atol=1e-10)
    const = np.full((30, 40), 2.5)
    mean = correlate(const, k, mask=mask, normalize=True)
    np.testing.assert_allclose(mean[:, 13:], 2.5, rtol=1e-10)
    assert np.isnan(mean[0, 0])  # no usable pixel within 3 px


def test_correlate_leading_axes_and_nan():
    data = np.ones((2, 20, 20))
    data[1, 5, 5] = np.nan
    out = correlate(data, disk_kernel(2.0))
    assert out.shape == (2, 20, 20)
    assert np.all(np.isfinite(out))
    assert out[0, 10, 10] == pytest.approx(np.pi * 4)


def test_correlate_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        correlate(np.ones((5, 5)), np.ones((2, 2)))
