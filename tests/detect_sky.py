"""Synthetic Poisson skies with injected sources for the detection tests (known truth).

Pixel-space sources on a background of constant rate, folded with a Gaussian PSF, Poisson
counts, and correlated significance maps through the maps helpers (``gpscat.core.convolve``
and ``gpscat.core.stats``), as the significance stage makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from gpscat.core.convolve import correlate, disk_kernel
from gpscat.core.geom import WcsGeom
from gpscat.core.stats import cash_significance

__all__ = ["Sky", "make_sky", "shell_profile"]


def shell_profile(r: np.ndarray, radius: float, width: float) -> np.ndarray:
    """Projected surface brightness of a uniform spherical shell (inner radius, width), unnormalised."""
    r_out = radius + width
    outer = np.sqrt(np.clip(r_out**2 - r**2, 0, None))
    inner = np.sqrt(np.clip(radius**2 - r**2, 0, None))
    return outer - inner


@dataclass
class Sky:
    geom: WcsGeom
    counts: np.ndarray
    background: np.ndarray
    npred: np.ndarray  # expected source counts per pixel
    sources: list[dict] = field(default_factory=list)

    def correlated(self, radius_deg: float, *, expected: bool = False):
        """(significance, excess, counts, background) correlated in a disk of ``radius_deg``."""
        k = disk_kernel(radius_deg / self.geom.binsz)
        n = self.background + self.npred if expected else self.counts
        n_r = correlate(n, k)
        b_r = correlate(self.background, k)
        return cash_significance(n_r, b_r), n_r - b_r, n_r, b_r


def make_sky(
    rng: np.random.Generator,
    *,
    width=(4.0, 4.0),
    binsz: float = 0.02,
    bkg_rate: float = 2.0,
    psf_sigma: float = 0.05,
    sources: list[dict] = (),
) -> Sky:
    """Poisson sky on a galactic CAR grid centred on (0, 0).

    Each source is a dict with ``lon``, ``lat`` (deg), ``counts`` (total expected counts)
    and ``type``: ``point``; ``gauss`` with ``sigma`` (deg); ``shell`` with ``radius`` and
    ``width`` (deg).
    """
    geom = WcsGeom.create((0.0, 0.0), width, binsz)
    lon, lat = geom.get_coord()
    lon = np.where(lon > 180, lon - 360, lon)
    npred = np.zeros(geom.shape)
    for s in sources:
        r = np.hypot(lon - s["lon"], lat - s["lat"])
        if s["type"] in ("point", "gauss"):
            sig = np.hypot(psf_sigma, s.get("sigma", 0.0))
            img = np.exp(-0.5 * (r / sig) ** 2)
        elif s["type"] == "shell":
            img = ndimage.gaussian_filter(shell_profile(r, s["radius"], s["width"]), psf_sigma / binsz)
        else:
            raise ValueError(f"unknown source type {s['type']!r}")
        npred += s["counts"] * img / img.sum()
    background = np.full(geom.shape, float(bkg_rate))
    counts = rng.poisson(background + npred).astype(float)
    return Sky(geom, counts, background, npred, list(sources))
