"""Kernels and FFT correlation of images.

Kernels are 2D arrays with odd side lengths, centred on the middle pixel, in pixel units:

* :func:`disk_kernel` — top-hat of radius ``r`` pixels.  With ``sampling="fraction"``
  (default) each value is the exact fraction of the pixel's area inside the circle, so
  the kernel is properly sampled at the edge and sums to ``π r²`` for any ``r``.  ``sampling="center"`` is 1 where the pixel centre is
  within ``r`` (astropy/gammapy ``Tophat2DKernel`` normalised to its peak).
* :func:`ring_kernel` — annulus ``r_in <= r < r_in + width``, the difference of two disks.
* :func:`gaussian_kernel` — Gaussian integrated over each pixel, normalised to sum 1.

Disk and ring kernels have a *peak* of 1, not a unit sum: correlating counts with them
gives the counts *within* the disk or ring around each pixel — what Li & Ma significance
maps need.

:func:`correlate` computes ``out[p] = Σ_k kernel[k] · data[p + k]`` (zero outside the map)
with FFTs, at a cost independent of the kernel radius; masks multiply the data, and
``normalize=True`` divides by the correlated mask (a kernel-weighted mean over the usable
pixels).  FFT round-off (~1e-16 of the largest value) is removed by setting results below
``1e-12 × max|data| × Σ|kernel|`` to exactly 0, so empty regions stay exactly empty.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import erf

__all__ = ["correlate", "disk_kernel", "gaussian_kernel", "ring_kernel"]

log = logging.getLogger(__name__)

_SAMPLINGS = ("fraction", "center")


def _chord_integral(a, b, radius):
    """∫_a^b sqrt(R² - u²) du for -R <= a <= b <= R (vectorised)."""

    def prim(u):
        return 0.5 * (u * np.sqrt(np.clip(radius**2 - u**2, 0.0, None)) + radius**2 * np.arcsin(np.clip(u / radius, -1.0, 1.0)))

    return prim(b) - prim(a)


def _quadrant_area(x, y, radius):
    """Area of the disk of ``radius`` (centred at 0) with ``u <= x`` and ``v <= y``.

    Integrating over u the part of the chord [-h(u), h(u)] below y, h = sqrt(R² - u²):
    2h where h <= y, y + h where |y| < h, 0 where h <= -y; the switch is at |u| = w,
    w = sqrt(R² - y²).
    """
    xc = np.clip(x, -radius, radius)
    w = np.sqrt(np.clip(radius**2 - y**2, 0.0, None))
    seg1 = _chord_integral(-radius, np.maximum(np.minimum(xc, -w), -radius), radius)
    seg3 = _chord_integral(w, np.maximum(xc, w), radius)
    mid_hi = np.clip(xc, -w, w)
    mid = y * (mid_hi + w) + _chord_integral(-w, mid_hi, radius)
    return np.where(y > 0, 2.0 * (seg1 + seg3), 0.0) + mid


def _disk_fraction(radius: float, half: int) -> np.ndarray:
    """Exact fraction of each pixel of a ``(2 half + 1)²`` grid inside a centred disk."""
    d = np.abs(np.arange(-half, half + 1, dtype=float))
    # evaluate on (|min|, |max|) offsets so the kernel is exactly symmetric under flips and x<->y
    y, x = np.meshgrid(d, d, indexing="ij")
    x, y = np.minimum(x, y), np.maximum(x, y)
    lo_x, hi_x, lo_y, hi_y = x - 0.5, x + 0.5, y - 0.5, y + 0.5
    area = (
        _quadrant_area(hi_x, hi_y, radius)
        - _quadrant_area(lo_x, hi_y, radius)
        - _quadrant_area(hi_x, lo_y, radius)
        + _quadrant_area(lo_x, lo_y, radius)
    )
    area[np.abs(area) < 1e-12] = 0.0
    return np.clip(area, 0.0, 1.0)


def disk_kernel(radius: float, *, sampling: str = "fraction") -> np.ndarray:
    """Top-hat (disk) kernel of ``radius`` pixels, peak 1.

    Parameters
    ----------
    radius : float
        Radius in pixels, > 0.
    sampling : {"fraction", "center"}
        ``"fraction"``: value = fraction of the pixel area inside the circle (exact: the
        analytic area of the circle–square intersection); ``"center"``: 1 where the pixel
        centre is within ``radius`` (inclusive).

    Returns
    -------
    kernel : numpy.ndarray
        Shape ``(2n+1, 2n+1)`` with ``n = ceil(radius)`` (``ceil(radius - 0.5)`` for
        ``"center"``, at least 0).
    """
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"disk radius must be a positive number of pixels, got {radius}")
    if sampling not in _SAMPLINGS:
        raise ValueError(f"sampling must be one of {_SAMPLINGS}, got {sampling!r}")
    if sampling == "center":
        r2 = radius**2 * (1 + 1e-9)  # 0.1 / 0.02 must include the pixel at 5
        half = int(np.floor(np.sqrt(r2)))
        d = np.arange(-half, half + 1, dtype=float)
        return (d[:, None] ** 2 + d[None, :] ** 2 <= r2).astype(float)
    half = int(np.ceil(radius + 0.5))
    k = _disk_fraction(float(radius), half)
    return _trim(k)


def ring_kernel(r_in: float, width: float, *, sampling: str = "fraction") -> np.ndarray:
    """Annulus kernel ``r_in <= r < r_in + width`` (pixels), peak 1.

    The difference of two :func:`disk_kernel` s, so with ``sampling="fraction"`` every value is
    the fraction of the pixel inside the annulus and the sum is ``π (r_out² - r_in²)``.
    ``r_in`` may be 0 (a disk).
    """
    if not (np.isfinite(r_in) and r_in >= 0):
        raise ValueError(f"ring inner radius must be >= 0 pixels, got {r_in}")
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"ring width must be > 0 pixels, got {width}")
    outer = disk_kernel(r_in + width, sampling=sampling)
    if r_in == 0:
        return outer
    inner = disk_kernel(r_in, sampling=sampling)
    pad = (outer.shape[0] - inner.shape[0]) // 2
    ring = outer - np.pad(inner, pad)
    if sampling == "center":  # keep the inner edge itself in the ring (r == r_in)
        d = np.arange(outer.shape[0], dtype=float) - outer.shape[0] // 2
        ring[np.isclose(d[:, None] ** 2 + d[None, :] ** 2, r_in**2, rtol=1e-9)] = 1.0
    return np.clip(ring, 0.0, 1.0)


def gaussian_kernel(sigma: float, *, n_sigma: float = 4.0) -> np.ndarray:
    """Gaussian of standard deviation ``sigma`` pixels integrated over pixels, sum 1.

    The kernel extends to ``ceil(n_sigma * sigma)`` pixels from the centre; pixel values are
    the exact integrals of the (separable) Gaussian over each pixel, renormalised to sum 1.
    """
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"gaussian sigma must be a positive number of pixels, got {sigma}")
    if not n_sigma > 0:
        raise ValueError(f"n_sigma must be > 0, got {n_sigma}")
    half = max(1, int(np.ceil(n_sigma * sigma)))
    edges = (np.arange(-half, half + 2) - 0.5) / (np.sqrt(2.0) * sigma)
    p = 0.5 * np.diff(erf(edges))
    k = np.outer(p, p)
    return k / k.sum()


def _trim(k: np.ndarray) -> np.ndarray:
    """Drop all-zero outer rows/columns symmetrically (keeps odd shape and centring)."""
    n = k.shape[0] // 2
    nz = np.nonzero(k)
    if nz[0].size == 0:
        return k[n : n + 1, n : n + 1]
    r = int(max(np.abs(nz[0] - n).max(), np.abs(nz[1] - n).max()))
    return k[n - r : n + r + 1, n - r : n + r + 1]


def correlate(
    data: np.ndarray,
    kernel: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    normalize: bool = False,
) -> np.ndarray:
    """Correlate the last two axes of ``data`` with a 2D ``kernel`` via FFT.

    ``out[..., y, x] = Σ_{i,j} kernel[i, j] · (data · mask)[..., y + i - n, x + j - n]``
    with zero padding outside the map (``n`` = kernel half size).

    Parameters
    ----------
    data : numpy.ndarray
        Shape ``(..., ny, nx)``; NaNs are treated as 0 (and as unusable with ``normalize``).
    kernel : numpy.ndarray
        2D, odd side lengths, centred.
    mask : numpy.ndarray, optional
        Boolean or weights broadcastable to ``data`` (True / 1 = use the pixel).
    normalize : bool
        Divide by the correlated mask: the kernel-weighted mean of the usable pixels
        (NaN where no usable pixel is within the kernel).

    Returns
    -------
    out : numpy.ndarray
        Same shape as ``data`` (float64).
    """
    kernel = np.asarray(kernel, dtype=float)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"kernel must be 2D with odd side lengths, got shape {kernel.shape}")
    data = np.asarray(data, dtype=float)
    if data.ndim < 2:
        raise ValueError(f"data must have at least 2 dimensions (..., ny, nx), got shape {data.shape}")
    finite = np.isfinite(data)
    weights = finite.astype(float)
    if mask is not None:
        weights = weights * np.broadcast_to(np.asarray(mask, dtype=float), data.shape)
    values = np.where(finite, data, 0.0) * weights
    out = _fft_correlate(values, kernel)
    if normalize:
        norm = _fft_correlate(weights, kernel)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(norm > 0, out / np.where(norm > 0, norm, 1.0), np.nan)
    return out


def _fft_correlate(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    flipped = kernel[::-1, ::-1]  # correlation = convolution with the flipped kernel
    k = flipped.reshape((1,) * (values.ndim - 2) + flipped.shape)
    out = fftconvolve(values, k, mode="same", axes=(-2, -1))
    scale = np.max(np.abs(values), initial=0.0) * np.abs(kernel).sum()
    out[np.abs(out) < 1e-12 * scale] = 0.0
    if np.all(values >= 0) and np.all(kernel >= 0):
        np.clip(out, 0.0, None, out=out)
    return out
