"""Correlated significance, excess and flux maps (pure functions on arrays).

Given counts and a background estimate, the maps at a correlation radius are built by
correlating the images with a top-hat (disk) kernel of peak 1 (:func:`disk_kernel`), so
that each pixel holds the counts and background *within* the disk around it:

* **Cash** (known background, e.g. the FoV-normalised IRF background):
  ``n_on = disk ⊛ counts``, ``mu_bkg = disk ⊛ background``,
  ``sqrt_ts = cash_significance(n_on, mu_bkg)``.
* **WStat** (ring ON/OFF): ``n_on = disk ⊛ counts``; the OFF counts are **not**
  correlated again — the ring already integrates them around each pixel (gammapy's
  ``correlate_off=False``; correlating them a second time is gammapy issue #5245) —
  and ``alpha = (disk ⊛ acceptance) / acceptance_off`` is the ratio of the ON-disk to
  the OFF-ring acceptance, so ``background = alpha · n_off``.

Inputs are masked (``mask`` True = use; typically the safe mask) before correlation and
outputs are NaN where the mask is False, as in gammapy's ``ExcessMapEstimator``.

Effective counts: the default top-hat has fractional weights at its edge, so the
correlated counts are not Poisson (their variance ``Σ k² μ`` is below their mean
``Σ k μ``).  The significance and errors are computed for the effective counts
``s · n_on`` with ``s = Σ k μ / Σ k² μ`` (:func:`effective_scale`), which restores a unit-width
null distribution; with gammapy's centre-sampled 0/1 kernel ``s = 1`` and the results are
gammapy's exactly.  The COUNTS / BACKGROUND / EXCESS maps are the plain weighted sums.

Flux: ``flux = excess / <exposure>`` where ``<exposure>`` is the mean over the disk of the
exposure weighted for a power law of index 2 over the energy range (:func:`reco_exposure`),
converted to cm⁻² s⁻¹ (integral flux over the range).
"""

from __future__ import annotations

import numpy as np

from gpscat.core.convolve import correlate
from gpscat.core.stats import (
    cash_significance,
    excess_error_cash,
    excess_error_wstat,
    wstat_significance,
)

__all__ = [
    "cash_maps",
    "effective_scale",
    "flux_maps",
    "power_law_weights",
    "reco_exposure",
    "wstat_maps",
]

_M2_TO_CM2 = 1e4


def _mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(shape):
        m = np.broadcast_to(m, shape)
    return m


def _check_same_shape(**arrays) -> tuple[int, ...]:
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    first = next(iter(shapes.values()))
    if any(s != first for s in shapes.values()) or len(first) < 2:
        raise ValueError(f"maps must have one shape (..., ny, nx), got {shapes}")
    return first


def effective_scale(weights, *, kernel: np.ndarray, mask=None) -> np.ndarray:
    """Scale ``s = (k ⊛ w) / (k² ⊛ w)`` that turns kernel-weighted counts into effective counts.

    With fractional kernel values ``k`` the correlated counts ``N = Σ k n`` of Poisson
    counts of mean ``μ ∝ w`` have ``Var N = Σ k² μ < E N = Σ k μ``; ``s N`` has variance
    equal to its mean, as Poisson counts.  ``s = 1`` for a 0/1 kernel (gammapy's
    centre-sampled top-hat) and wherever ``w`` vanishes.

    Parameters
    ----------
    weights : numpy.ndarray
        Expected-count shape under the null hypothesis (background or acceptance).
    kernel : numpy.ndarray
        The correlation kernel.
    mask : numpy.ndarray of bool, optional
        Pixels used.
    """
    num = correlate(weights, kernel, mask=mask)
    den = correlate(weights, np.asarray(kernel, dtype=float) ** 2, mask=mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where((num > 0) & (den > 0), num / np.where(den > 0, den, 1.0), 1.0)
    return np.maximum(scale, 1.0)


def cash_maps(
    counts, background, *, kernel: np.ndarray, mask=None, effective_counts: bool = True
) -> dict[str, np.ndarray]:
    """Correlated counts, background, excess, excess error and significance (Cash form).

    Parameters
    ----------
    counts, background : numpy.ndarray
        Shape ``(..., ny, nx)``: observed counts and predicted background counts.
    kernel : numpy.ndarray
        Correlation kernel (a :func:`gpscat.core.convolve.disk_kernel`, peak 1).
    mask : numpy.ndarray of bool, optional
        Pixels used (True); the outputs are NaN elsewhere.
    effective_counts : bool
        Compute the significance and error of kernel-weighted counts as effective Poisson
        counts (:func:`effective_scale`): with a fractional-edge top-hat this keeps the
        null distribution at unit width (without it the width is ``sqrt(Σk²/Σk)``, 0.96
        for a radius of 5 pixels).  No effect for 0/1 kernels.

    Returns
    -------
    dict
        ``counts``, ``background`` (within the kernel), ``excess``, ``excess_error``,
        ``sqrt_ts``.
    """
    shape = _check_same_shape(counts=counts, background=background)
    m = _mask(mask, shape)
    n_on = correlate(counts, kernel, mask=m)
    mu = correlate(background, kernel, mask=m)
    s = effective_scale(background, kernel=kernel, mask=m) if effective_counts else 1.0
    out = {
        "counts": n_on,
        "background": mu,
        "excess": n_on - mu,
        "excess_error": excess_error_cash(s * n_on, s * mu) / s,
        "sqrt_ts": cash_significance(s * n_on, s * mu),
    }
    return {k: np.where(m, v, np.nan) for k, v in out.items()}


def wstat_maps(
    counts,
    counts_off,
    acceptance,
    acceptance_off,
    *,
    kernel: np.ndarray,
    mask=None,
    effective_counts: bool = True,
) -> dict[str, np.ndarray]:
    """Correlated ON counts, background, excess, error and Li & Ma significance (WStat form).

    Parameters
    ----------
    counts, counts_off, acceptance, acceptance_off : numpy.ndarray
        ON/OFF maps of shape ``(..., ny, nx)`` (e.g. from the ring background): the OFF
        counts and acceptance are those of the OFF region of each pixel.
    kernel : numpy.ndarray
        ON-region kernel (disk, peak 1).  The OFF counts are used as they are.
    mask : numpy.ndarray of bool, optional
        Pixels used (True); outputs are NaN elsewhere and where ``acceptance_off <= 0``.
    effective_counts : bool
        Treat the kernel-weighted ON counts as effective Poisson counts (scale ``s`` from
        the acceptance, :func:`effective_scale`): Li & Ma with ``s n_on``, ``n_off`` and
        ``s alpha``.  No effect for 0/1 kernels.

    Returns
    -------
    dict
        ``counts`` (ON), ``counts_off``, ``alpha``, ``background`` (``alpha · n_off``),
        ``excess``, ``excess_error``, ``sqrt_ts``.
    """
    shape = _check_same_shape(
        counts=counts, counts_off=counts_off, acceptance=acceptance, acceptance_off=acceptance_off
    )
    m = _mask(mask, shape)
    n_on = correlate(counts, kernel, mask=m)
    acc_on = correlate(acceptance, kernel, mask=m)
    acc_off = np.where(m, np.nan_to_num(np.asarray(acceptance_off, dtype=float)), 0.0)
    n_off = np.where(m, np.nan_to_num(np.asarray(counts_off, dtype=float)), 0.0)
    has_off = acc_off > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(has_off, acc_on / np.where(has_off, acc_off, 1.0), np.nan)
    alpha_ok = np.where(has_off, alpha, 1.0)
    s = effective_scale(acceptance, kernel=kernel, mask=m) if effective_counts else 1.0
    out = {
        "counts": n_on,
        "counts_off": n_off,
        "alpha": alpha,
        "background": alpha_ok * n_off,
        "excess": n_on - alpha_ok * n_off,
        "excess_error": excess_error_wstat(s * n_on, n_off, s * alpha_ok) / s,
        "sqrt_ts": wstat_significance(s * n_on, n_off, s * alpha_ok),
    }
    valid = m & has_off
    return {k: np.where(valid, v, np.nan) for k, v in out.items()}


def power_law_weights(
    energy_edges: np.ndarray, energy_true_edges: np.ndarray, *, index: float = 2.0
) -> np.ndarray:
    """Share of a power-law flux over each reco bin that falls in each true-energy bin.

    Treating reconstructed as true energy (no dispersion), ``W[i, j]`` is the integral of
    ``E^-index`` over ``reco bin i ∩ true bin j`` divided by its integral over reco bin
    ``i``.  ``W @ exposure`` is then the exposure in reco bin ``i`` for that spectrum; rows
    sum to less than 1 where the true-energy axis does not cover the reco bin.

    Returns
    -------
    weights : numpy.ndarray
        Shape ``(n_reco, n_true)``.
    """
    e = np.asarray(energy_edges, dtype=float)
    t = np.asarray(energy_true_edges, dtype=float)
    if e.ndim != 1 or t.ndim != 1 or e.size < 2 or t.size < 2 or e[0] <= 0 or t[0] <= 0:
        raise ValueError("energy edges must be 1D, positive, with at least 2 values")
    lo = np.maximum(e[:-1, None], t[None, :-1])
    hi = np.minimum(e[1:, None], t[None, 1:])
    overlap = _pl_integral(lo, np.maximum(hi, lo), index)
    total = _pl_integral(e[:-1], e[1:], index)
    return overlap / total[:, None]


def _pl_integral(lo, hi, index):
    if np.isclose(index, 1.0):
        return np.log(hi / lo)
    return (hi ** (1.0 - index) - lo ** (1.0 - index)) / (1.0 - index)


def reco_exposure(
    exposure: np.ndarray,
    energy_edges: np.ndarray,
    energy_true_edges: np.ndarray,
    *,
    index: float = 2.0,
    mask=None,
) -> np.ndarray:
    """Power-law weighted exposure per reco-energy bin, ``(n_reco, ny, nx)``, in exposure units.

    Parameters
    ----------
    exposure : numpy.ndarray
        ``(n_true, ny, nx)`` exposure (m² s) per true-energy bin.
    energy_edges, energy_true_edges : numpy.ndarray
        Reco and true energy edges (same unit).
    index : float
        Power-law index of the assumed spectrum.
    mask : numpy.ndarray of bool, optional
        ``(n_reco, ny, nx)`` safe mask: exposure is 0 where a reco bin is not used.

    Notes
    -----
    To get the exposure over several reco bins (an energy band), weight each bin by its
    share of the band's power-law flux: see :func:`flux_maps`.
    """
    exposure = np.asarray(exposure, dtype=float)
    w = power_law_weights(energy_edges, energy_true_edges, index=index)
    if exposure.ndim != 3 or exposure.shape[0] != w.shape[1]:
        raise ValueError(f"exposure must be (n_true={w.shape[1]}, ny, nx), got shape {exposure.shape}")
    out = np.einsum("ij,jyx->iyx", w, np.nan_to_num(exposure))
    if mask is not None:
        out = np.where(np.asarray(mask, dtype=bool), out, 0.0)
    return out


def flux_maps(
    excess: np.ndarray,
    excess_error: np.ndarray,
    exposure_reco: np.ndarray,
    energy_edges: np.ndarray,
    *,
    kernel: np.ndarray,
    index: float = 2.0,
    mask=None,
) -> dict[str, np.ndarray]:
    """Integral flux (cm⁻² s⁻¹) over the energy range of ``energy_edges`` from an excess image.

    The band exposure is the reco-bin exposures (:func:`reco_exposure`) weighted by each
    bin's share of the power-law flux in the band; it is averaged over the correlation disk
    (the kernel-weighted mean over masked pixels), and ``flux = excess / exposure``.

    Parameters
    ----------
    excess, excess_error : numpy.ndarray
        Correlated excess image and its error, ``(ny, nx)``.
    exposure_reco : numpy.ndarray
        ``(n_reco, ny, nx)`` m² s for the bins of ``energy_edges``.
    energy_edges : numpy.ndarray
        Reco edges of the bins summed into ``excess`` (TeV).
    kernel : numpy.ndarray
        The correlation kernel used for ``excess``.
    index : float
        Power-law index.
    mask : numpy.ndarray of bool, optional
        ``(ny, nx)``; outputs are NaN outside.

    Returns
    -------
    dict
        ``flux``, ``flux_error`` (cm⁻² s⁻¹) and ``exposure`` (the disk-mean band exposure, m² s).
    """
    e = np.asarray(energy_edges, dtype=float)
    share = _pl_integral(e[:-1], e[1:], index) / _pl_integral(e[0], e[-1], index)
    band = np.tensordot(share, np.asarray(exposure_reco, dtype=float), axes=(0, 0))
    m = _mask(mask, band.shape)
    mean_exposure = correlate(band, kernel, mask=m, normalize=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        good = m & (mean_exposure > 0)
        inv = np.where(good, 1.0 / (np.where(good, mean_exposure, 1.0) * _M2_TO_CM2), np.nan)
    return {
        "flux": excess * inv,
        "flux_error": excess_error * inv,
        "exposure": np.where(m, mean_exposure, np.nan),
    }
