"""Ring and adaptive-ring background: OFF counts and OFF acceptance from a ring around each pixel.

For every pixel the OFF region is the annulus ``r_in <= r < r_in + width`` around it,
restricted to pixels the exclusion mask allows (``True`` = usable, gammapy's convention).
With the acceptance ``a`` (the IRF background prediction, whose normalisation cancels):

* ``counts_off = ring ⊛ (counts · usable)``, ``acceptance_off = ring ⊛ (a · usable)``;
* ``alpha = a / acceptance_off`` per pixel, the background estimate is ``alpha · counts_off``.

The adaptive ring (H.E.S.S./HGPS; gammapy's ``AdaptiveRingBackgroundMaker``) grows the ring
where exclusions leave too little OFF acceptance: rings are tried from the smallest to the
largest (``fixed_width``: the inner radius grows by ``stepsize``; ``fixed_r_in``: the width
grows), and each pixel takes the first ring whose ``alpha_on = acceptance_on /
acceptance_off <= alpha_max``, where ``acceptance_on`` is the acceptance within ``theta``
of the pixel (a top-hat of radius ``theta``; 0 means the pixel alone).  Pixels that never
reach ``alpha_max`` take the largest ring (``r_out = r_out_max``).  Note: gammapy 2.1 scales
``theta`` by deg² instead of converting it to pixels, so its ``acceptance_on`` is the pixel
alone; ``theta=0`` reproduces that.

:class:`OnOffStack` adds per-observation ON/OFF maps into a survey mosaic exactly like
gammapy's ``MapDatasetOnOff.stack``: counts, OFF counts and acceptance are summed inside
each observation's mask, and the stacked ``acceptance_off`` is set so that
``alpha = Σ alpha_i n_off_i / Σ n_off_i``.

Everything works on arrays ``(..., ny, nx)`` (an energy axis in front is handled plane by
plane); radii are in pixels.  The correlations are FFTs (:func:`gpscat.core.convolve.correlate`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gpscat.core.convolve import correlate, disk_kernel, ring_kernel

__all__ = ["OffMaps", "OnOffStack", "adaptive_ring_background", "alpha_map", "ring_background"]

log = logging.getLogger(__name__)

_METHODS = ("fixed_width", "fixed_r_in")


@dataclass(frozen=True)
class OffMaps:
    """OFF counts and OFF acceptance per pixel, and the outer ring radius used (pixels)."""

    counts_off: np.ndarray
    acceptance_off: np.ndarray
    r_out: np.ndarray


def _check_inputs(counts, acceptance, exclusion_mask):
    counts = np.asarray(counts, dtype=float)
    acceptance = np.asarray(acceptance, dtype=float)
    if counts.shape != acceptance.shape or counts.ndim < 2:
        raise ValueError(
            f"counts {counts.shape} and acceptance {acceptance.shape} must have the same shape (..., ny, nx)"
        )
    if exclusion_mask is None:
        usable = np.ones(counts.shape[-2:], dtype=bool)
    else:
        usable = np.asarray(exclusion_mask, dtype=bool)
        if usable.shape != counts.shape[-2:] and usable.shape != counts.shape:
            raise ValueError(
                f"exclusion_mask shape {usable.shape} must be the image shape {counts.shape[-2:]} or {counts.shape}"
            )
    counts = np.where(np.isfinite(counts), counts, 0.0)
    acceptance = np.where(np.isfinite(acceptance), acceptance, 0.0)
    return counts, acceptance, usable


def ring_background(
    counts: np.ndarray,
    acceptance: np.ndarray,
    *,
    exclusion_mask: np.ndarray | None,
    r_in: float,
    width: float,
    sampling: str = "fraction",
) -> OffMaps:
    """OFF counts and OFF acceptance in a fixed ring around every pixel.

    Parameters
    ----------
    counts : numpy.ndarray
        Counts, shape ``(..., ny, nx)``.
    acceptance : numpy.ndarray
        Background acceptance (e.g. the IRF background counts), same shape.
    exclusion_mask : numpy.ndarray of bool or None
        ``True`` = usable for the OFF estimate; image or same shape as ``counts``.
    r_in, width : float
        Inner radius and width of the ring, pixels.
    sampling : {"fraction", "center"}
        Pixel sampling of the ring (see :func:`gpscat.core.convolve.ring_kernel`).
    """
    counts, acceptance, usable = _check_inputs(counts, acceptance, exclusion_mask)
    kernel = ring_kernel(r_in, width, sampling=sampling)
    counts_off = correlate(counts, kernel, mask=usable)
    acceptance_off = correlate(acceptance, kernel, mask=usable)
    return OffMaps(counts_off, acceptance_off, np.full(counts.shape, float(r_in + width)))


def adaptive_ring_background(
    counts: np.ndarray,
    acceptance: np.ndarray,
    *,
    exclusion_mask: np.ndarray | None,
    r_in: float,
    width: float,
    r_out_max: float,
    stepsize: float,
    alpha_max: float,
    theta: float = 0.0,
    method: str = "fixed_width",
    sampling: str = "fraction",
) -> OffMaps:
    """OFF maps from the smallest ring that reaches ``alpha_on <= alpha_max`` at each pixel.

    Parameters
    ----------
    counts, acceptance, exclusion_mask, r_in, width, sampling
        As for :func:`ring_background` (radii in pixels).
    r_out_max : float
        Largest outer radius tried, pixels (``>= r_in + width``).
    stepsize : float
        Growth of the inner radius (``fixed_width``) or of the width (``fixed_r_in``), pixels.
    alpha_max : float
        Largest acceptable ``acceptance_on / acceptance_off``.
    theta : float
        Radius (pixels) of the ON region for ``acceptance_on``; 0 = the pixel alone.
    method : {"fixed_width", "fixed_r_in"}
        How the ring grows.

    Returns
    -------
    OffMaps
        ``r_out`` holds the outer radius chosen per pixel.
    """
    if method not in _METHODS:
        raise ValueError(f"adaptive ring method must be one of {_METHODS}, got {method!r}")
    if not (stepsize > 0):
        raise ValueError(f"adaptive ring stepsize must be > 0 pixels, got {stepsize}")
    if not (alpha_max > 0):
        raise ValueError(f"alpha_max must be > 0, got {alpha_max}")
    if not (r_out_max >= r_in + width - 1e-9):
        raise ValueError(f"r_out_max ({r_out_max}) must be >= r_in + width ({r_in + width}) pixels")
    if not (theta >= 0):
        raise ValueError(f"theta must be >= 0 pixels, got {theta}")
    counts, acceptance, usable = _check_inputs(counts, acceptance, exclusion_mask)

    n_steps = int(np.floor((r_out_max - r_in - width) / stepsize + 1e-9)) + 1
    steps = np.arange(n_steps) * stepsize
    rings = [(r_in + s, width) if method == "fixed_width" else (r_in, width + s) for s in steps]

    acceptance_on = acceptance if theta == 0 else correlate(acceptance, disk_kernel(theta))
    counts_off = np.zeros_like(counts)
    acceptance_off = np.zeros_like(counts)
    r_out = np.zeros_like(counts)
    done = np.zeros(counts.shape, dtype=bool)
    for i, (ri, wi) in enumerate(rings):
        kernel = ring_kernel(ri, wi, sampling=sampling)
        c_off = correlate(counts, kernel, mask=usable)
        a_off = correlate(acceptance, kernel, mask=usable)
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where(a_off > 0, acceptance_on / np.where(a_off > 0, a_off, 1.0), np.inf)
        take = ~done & ((alpha <= alpha_max) | (i == len(rings) - 1))
        counts_off[take] = c_off[take]
        acceptance_off[take] = a_off[take]
        r_out[take] = ri + wi
        done |= take
        log.debug("adaptive ring %d/%d (r_in %.1f, width %.1f px): %d pixels", i + 1, len(rings), ri, wi, int(take.sum()))
    return OffMaps(counts_off, acceptance_off, r_out)


def alpha_map(acceptance: np.ndarray, acceptance_off: np.ndarray) -> np.ndarray:
    """``acceptance / acceptance_off``; 0 where there is no OFF acceptance."""
    acceptance = np.asarray(acceptance, dtype=float)
    acceptance_off = np.asarray(acceptance_off, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(acceptance_off > 0, acceptance / np.where(acceptance_off > 0, acceptance_off, 1.0), 0.0)
    return np.where(np.isfinite(alpha), alpha, 0.0)


class OnOffStack:
    """Accumulate ON/OFF maps of observations into a mosaic (gammapy ``MapDatasetOnOff.stack``).

    Parameters
    ----------
    shape : tuple of int
        Mosaic data shape ``(..., ny, nx)``.

    Usage: ``stack = OnOffStack((1, ny, nx))``, then per observation
    ``stack.add(counts, off.counts_off, acceptance, off.acceptance_off, mask, slices)``,
    then ``stack.result()`` (a dict: counts, counts_off, acceptance, acceptance_off, mask).
    """

    def __init__(self, shape: tuple[int, ...]):
        self.counts = np.zeros(shape)
        self.counts_off = np.zeros(shape)
        self.acceptance = np.zeros(shape)
        self.background = np.zeros(shape)  # Σ alpha_i n_off_i
        self.mask = np.zeros(shape, dtype=bool)

    def add(
        self,
        counts: np.ndarray,
        counts_off: np.ndarray,
        acceptance: np.ndarray,
        acceptance_off: np.ndarray,
        mask: np.ndarray,
        slices: tuple[slice, slice] = (slice(None), slice(None)),
    ) -> None:
        """Add one observation's maps (already cropped to ``slices`` of the mosaic).

        ``mask`` (bool) selects the pixels that enter the stack: the safe mask of the
        observation, where it also has OFF acceptance.
        """
        target = (..., *slices)
        m = np.asarray(mask, dtype=bool)
        alpha = alpha_map(acceptance, acceptance_off)
        self.counts[target] += np.where(m, counts, 0.0)
        self.counts_off[target] += np.where(m, counts_off, 0.0)
        self.acceptance[target] += np.where(m, acceptance, 0.0)
        self.background[target] += np.where(m, alpha * counts_off, 0.0)
        self.mask[target] |= m

    def result(self) -> dict[str, np.ndarray]:
        """Stacked maps; ``acceptance_off`` such that ``alpha = Σ α_i n_off_i / Σ n_off_i``.

        Where no OFF count was stacked, ``alpha`` is the mean ``Σ background / Σ n_off``
        of the whole mosaic (as gammapy does).
        """
        total_off = self.counts_off.sum()
        mean_alpha = self.background.sum() / total_off if total_off > 0 else np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where(self.counts_off > 0, self.background / np.where(self.counts_off > 0, self.counts_off, 1.0), mean_alpha)
            acceptance_off = np.where(alpha > 0, self.acceptance / alpha, 0.0)
        acceptance_off = np.where(np.isfinite(acceptance_off), acceptance_off, 0.0)
        return {
            "counts": self.counts.copy(),
            "counts_off": self.counts_off.copy(),
            "acceptance": self.acceptance.copy(),
            "acceptance_off": acceptance_off,
            "mask": self.mask.copy(),
        }
