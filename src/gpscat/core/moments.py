"""Seed shapes and centres: excess moments in watershed basins, windowed centroids.

Pure functions on numpy arrays in pixel units (``image[y, x]``):

* :func:`seed_moments` — second moments of the positive excess in each seed's watershed
  basin of the significance map (neighbouring seeds split the emission between them);
* :func:`untruncated_sigma` — the Gaussian sigma whose moments within a radius are the
  measured ones (the basin's edge truncates the wings);
* :func:`windowed_centroid` — Gaussian-windowed, iterated centroids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from skimage.segmentation import watershed

from gpscat.core.detect import check_image, check_mask

__all__ = ["Moments", "seed_moments", "untruncated_sigma", "windowed_centroid"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Moments:
    """Second moments of the excess around each seed (pixel units).

    ``sigma_major``/``sigma_minor`` are the standard deviations along the principal axes,
    *not* deconvolved nor corrected for the truncation at the region's edge (see
    :func:`untruncated_sigma`); ``angle`` is the direction of the major axis in radians,
    counter-clockwise from the +x pixel axis; ``x``/``y`` the excess centroid; ``npix``
    the number of pixels with positive excess used, ``area`` the number of pixels of the
    region.  NaN where a seed has no positive excess.
    """

    x: np.ndarray
    y: np.ndarray
    sigma_major: np.ndarray
    sigma_minor: np.ndarray
    angle: np.ndarray
    npix: np.ndarray
    area: np.ndarray


def seed_moments(
    excess: np.ndarray,
    significance: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    level: float,
    max_radius: float | np.ndarray,
    mask: np.ndarray | None = None,
) -> Moments:
    """Excess second moments in each seed's basin of the significance map.

    The region of seed *i* is its watershed basin of ``-significance`` among the pixels
    above ``level`` (markers at the seeds), limited to ``max_radius`` pixels from the
    seed: neighbouring seeds split the emission between them instead of each measuring
    the blend.  Weights are the positive excess.

    Parameters
    ----------
    excess : numpy.ndarray
        2D excess map (correlated or not; the caller deconvolves the kernel).
    significance : numpy.ndarray
        2D significance map on the same grid.
    x, y : numpy.ndarray
        Seed pixel positions.
    level : float
        Significance above which pixels belong to a seed's region.
    max_radius : float or numpy.ndarray
        Pixels (> 0), one value or one per seed.
    mask : numpy.ndarray, optional
        True for usable pixels.

    Returns
    -------
    Moments
    """
    excess = check_image(excess, "excess")
    significance = check_image(significance, "significance")
    if excess.shape != significance.shape:
        raise ValueError(f"excess shape {excess.shape} differs from significance shape {significance.shape}")
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    n = x.size
    rmax = np.broadcast_to(np.asarray(max_radius, dtype=float), (n,))
    if not np.all(np.isfinite(rmax) & (rmax > 0)):
        raise ValueError(f"max_radius must be > 0 pixels, got {max_radius}")
    usable = check_mask(mask, excess.shape) & np.isfinite(excess) & np.isfinite(significance)
    ny, nx = excess.shape
    ix = np.clip(np.round(x).astype(np.int64), 0, nx - 1)
    iy = np.clip(np.round(y).astype(np.int64), 0, ny - 1)
    markers = np.zeros(excess.shape, dtype=np.int64)
    markers[iy, ix] = np.arange(1, n + 1)
    region = usable & (significance >= level)
    region[iy, ix] = True  # a seed below ``level`` keeps its own pixel
    sig = np.where(usable, significance, np.nanmin(significance[usable]) if usable.any() else 0.0)
    labels = watershed(-sig, markers, mask=region) if n else markers
    lab = labels.ravel()
    inside = lab > 0
    yy, xx = np.indices(excess.shape)
    k = lab[inside] - 1
    dx = xx.ravel()[inside] - x[k]
    dy = yy.ravel()[inside] - y[k]
    within = dx * dx + dy * dy <= rmax[k] ** 2
    w = np.clip(excess.ravel()[inside], 0.0, None) * within

    def s(v):
        return np.bincount(k, weights=v, minlength=n)

    sw = s(w)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = s(w * dx) / sw, s(w * dy) / sw
        cxx = s(w * dx * dx) / sw - mx**2
        cyy = s(w * dy * dy) / sw - my**2
        cxy = s(w * dx * dy) / sw - mx * my
    half_tr = 0.5 * (cxx + cyy)
    root = np.sqrt(np.maximum(0.25 * (cxx - cyy) ** 2 + cxy**2, 0.0))
    lam1, lam2 = half_tr + root, np.maximum(half_tr - root, 0.0)
    angle = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    npix = np.bincount(k, weights=(w > 0).astype(float), minlength=n).astype(np.int64)
    bad = ~(sw > 0)
    nan = np.where(bad, np.nan, 1.0)
    return Moments(
        x=(x + mx) * nan,
        y=(y + my) * nan,
        sigma_major=np.sqrt(np.maximum(lam1, 0.0)) * nan,
        sigma_minor=np.sqrt(lam2) * nan,
        angle=angle * nan,
        npix=npix,
        area=np.bincount(k, weights=within.astype(float), minlength=n).astype(np.int64),
    )


def untruncated_sigma(sigma: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Sigma of a circular Gaussian whose moments measured within ``radius`` give ``sigma``.

    Within a disk of radius ``R`` a Gaussian of sigma ``s`` has the per-axis second
    moment ``s² g(a)``, ``a = R² / (2 s²)``, ``g(a) = 1 - a e^-a / (1 - e^-a)``, which
    grows monotonically to ``R² / 4`` (a flat disk) as ``s → ∞``; this inverts it by
    bisection.  NaN where ``sigma² >= 0.99 R² / 4`` (no finite solution) or inputs are
    not finite.  Works on arrays of any broadcastable shapes (same units).
    """
    s, r = np.broadcast_arrays(np.asarray(sigma, dtype=float), np.asarray(radius, dtype=float))
    ok = np.isfinite(s) & np.isfinite(r) & (s > 0) & (r > 0) & (s**2 < 0.99 * r**2 / 4)
    lo = np.where(ok, np.log(np.where(ok, s, 1.0)), 0.0)
    hi = np.where(ok, np.log(np.where(ok, 100 * r, 1.0)), 0.0)

    def moment(log_u):
        u2 = np.exp(2 * log_u)
        a = np.where(ok, r**2, 1.0) / (2 * u2)
        with np.errstate(over="ignore", invalid="ignore"):
            g = 1.0 - a * np.exp(-a) / -np.expm1(-a)
        return u2 * g

    for _ in range(60):  # bisection on all values at once
        mid = 0.5 * (lo + hi)
        low = moment(mid) < s**2
        lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
    return np.where(ok, np.exp(0.5 * (lo + hi)), np.nan)


def windowed_centroid(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float | np.ndarray,
    mask: np.ndarray | None = None,
    n_iter: int = 20,
    tol: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-windowed centroids, iterated (the "windowed" positions of SExtractor).

    With a circular Gaussian window of ``sigma`` centred at ``c``, the weighted mean
    offset ``m`` of the image gives ``c ← c + 2 m``: for a Gaussian source of that sigma
    the fixed point is its centre after one step; the window keeps noise far from the
    source (and a flat pedestal) from pulling the result, unlike a plain centroid.

    Parameters
    ----------
    image : numpy.ndarray
        2D map (an excess map).
    x, y : numpy.ndarray
        Starting pixel positions.
    sigma : float or numpy.ndarray
        Window sigma, pixels (one or one per position).
    mask : numpy.ndarray, optional
        True for usable pixels.
    n_iter, tol : int, float
        Iterations at most and the step (pixels) below which a position has converged.

    Returns
    -------
    x, y : numpy.ndarray
        NaN where the weighted sum is not positive or the position left the map or did
        not converge.
    """
    image = check_image(image)
    x = np.atleast_1d(np.asarray(x, dtype=float)).copy()
    y = np.atleast_1d(np.asarray(y, dtype=float)).copy()
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), x.shape)
    if not np.all(np.isfinite(sig) & (sig > 0)):
        raise ValueError(f"window sigma must be > 0 pixels, got {sigma}")
    usable = check_mask(mask, image.shape) & np.isfinite(image)
    img = np.where(usable, image, 0.0)
    ny, nx = img.shape
    for i in range(x.size):  # a few hundred seeds, each on a small cutout
        half = int(np.ceil(4 * sig[i]))
        for _ in range(int(n_iter)):
            if not (0 <= x[i] < nx and 0 <= y[i] < ny):
                x[i] = y[i] = np.nan
                break
            x0, x1 = max(int(x[i]) - half, 0), min(int(x[i]) + half + 2, nx)
            y0, y1 = max(int(y[i]) - half, 0), min(int(y[i]) + half + 2, ny)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            dx, dy = xx - x[i], yy - y[i]
            w = np.exp(-0.5 * (dx * dx + dy * dy) / sig[i] ** 2) * img[y0:y1, x0:x1]
            sw = w.sum()
            if not sw > 0:
                x[i] = y[i] = np.nan
                break
            step_x, step_y = 2 * (w * dx).sum() / sw, 2 * (w * dy).sum() / sw
            x[i], y[i] = x[i] + step_x, y[i] + step_y
            if np.hypot(step_x, step_y) < tol:
                break
        else:
            x[i] = y[i] = np.nan
    return x, y
