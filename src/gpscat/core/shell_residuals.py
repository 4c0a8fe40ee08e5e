"""Significance maps with the detected shells modelled: the search for sources on their flanks.

A compact source on the flank of a bright shell is no local maximum of the significance
maps: the rim beside it is brighter, and there is no valley between them (on a simulated
strip, an 8σ Gaussian 0.05° beyond the outer edge of a 55σ shell).  Once the Hough step
has found the shell, it can be modelled and removed, and the search run again on what is
left.

For each dataset, every shell is fitted to the uncorrelated counts image (Cash
statistic, on the background the background stage normalised) as a projected uniform
shell — gammapy's ``ShellSpatialModel``: inner radius ``R``, width ``w`` — convolved
with the dataset's Gaussian PSF and weighted by the relative exposure, with free centre,
``R``, ``w`` and total counts, on the pixels within reach of the shell.  Pixels near the
other seeds are left out of the fit.  Shells are fitted brightest first, each on top of
the ones before.  The models are added to the background image, and the correlated maps
of every radius are recomputed (:func:`gpscat.core.significance.cash_maps`) as the
significance stage computes them.  A shell whose fit fails is not modelled (logged) and
its disk is masked in that dataset's recomputed maps, so its rim's fragments do not come
back as seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from iminuit import Minuit
from scipy import special

from gpscat.core.convolve import disk_kernel
from gpscat.core.geom import angular_separation, to_frame
from gpscat.core.significance import cash_maps

__all__ = ["ShellFit", "ShellProfile", "fit_shell", "shell_image", "subtract_shells"]

log = logging.getLogger(__name__)

_M2_TO_CM2 = 1e4


@dataclass(frozen=True)
class ShellFit:
    """A shell fitted to a counts image (pixel units of that image)."""

    x: float
    y: float
    r_in: float
    width: float
    npred: float  # total counts of the shell (untruncated, at the reference exposure)
    valid: bool


class ShellProfile:
    """Radial profile of a projected uniform shell convolved with a Gaussian (pixels).

    The surface brightness of the shell (inner radius ``R``, outer ``ro = R + w``) is
    ``sqrt(ro² − ρ²) − sqrt(R² − ρ²)`` (clipped at 0); its convolution with a Gaussian
    of ``σ`` is radial, ``g(r) = ∫ f(ρ) ρ/σ² exp(−(r − ρ)²/2σ²) I0e(rρ/σ²) dρ``, computed
    with a kernel matrix on grids of ``ρ`` (σ/3, at most 0.1 px) and ``r`` (σ/3, at most
    0.25 px) out to ``rho_max`` (the largest outer radius used) and 5σ beyond, built once
    per σ; ``f`` is averaged exactly over each ρ cell, so the profile varies smoothly
    with ``R`` and ``w`` (a fit's numerical derivatives need that).  ``σ² = σ_psf² + 1/12`` (the pixel's
    own width).  The profile is normalised by ``2π(ro³ − R³)/3``: it integrates to 1.
    """

    def __init__(self, psf_sigma: float, rho_max: float):
        self.sigma = float(np.sqrt(psf_sigma**2 + 1.0 / 12.0))
        self.drho = min(0.1, self.sigma / 3.0)
        self.rho = (np.arange(int(np.ceil(rho_max / self.drho)) + 1) + 0.5) * self.drho
        # the profile is 0 beyond rho_max + 5 σ (np.interp's right=0)
        self.r = np.arange(0.0, rho_max + 5.0 * self.sigma + 0.5, min(0.25, self.sigma / 3.0))
        s2 = self.sigma**2
        arg = self.r[:, None] * self.rho[None, :] / s2
        self.kernel = (self.rho / s2)[None, :] * np.exp(-((self.r[:, None] - self.rho[None, :]) ** 2) / (2 * s2)) * special.i0e(arg) * self.drho

    def _cell_mean(self, radius: float) -> np.ndarray:
        """Mean of ``sqrt(radius² − ρ²)`` over each ρ cell (exact: smooth in ``radius``)."""
        edges = np.clip(np.append(self.rho - 0.5 * self.drho, self.rho[-1] + 0.5 * self.drho), 0.0, radius)
        u = edges / radius if radius > 0 else np.zeros_like(edges)
        prim = 0.5 * radius**2 * (u * np.sqrt(np.clip(1.0 - u * u, 0.0, None)) + np.arcsin(u))
        return np.diff(prim) / self.drho

    def __call__(self, dist: np.ndarray, r_in: float, width: float) -> np.ndarray:
        """Fraction of the shell's flux per pixel at ``dist`` pixels from its centre."""
        ro = r_in + width
        f = self._cell_mean(ro) - self._cell_mean(r_in)
        total = 2.0 * np.pi / 3.0 * (ro**3 - r_in**3)
        if total <= 0:
            return np.zeros(np.shape(dist))
        return np.interp(dist, self.r, self.kernel @ f, right=0.0) / total


def shell_image(shape: tuple[int, int], x0: float, y0: float, r_in: float, width: float, psf_sigma: float) -> np.ndarray:
    """:class:`ShellProfile` on a pixel grid, centred on pixel ``(x0, y0)`` (sums to ~1)."""
    yy, xx = np.indices(shape)
    dist = np.hypot(xx - x0, yy - y0)
    return ShellProfile(psf_sigma, r_in + width)(dist, r_in, width)


def fit_shell(
    counts: np.ndarray,
    background: np.ndarray,
    weight: np.ndarray,
    usable: np.ndarray,
    *,
    x0: float,
    y0: float,
    r_in: float,
    width: float,
    psf_sigma: float,
) -> ShellFit:
    """Cash fit of a :class:`ShellProfile` × ``weight`` on a fixed background (pixels).

    ``counts``, ``background``, ``weight`` (relative exposure) and ``usable`` share one
    shape (a cutout); the start values come from the Hough step.  Only pixels within
    ``1.2 (R + w) + 3σ + 2`` of the start centre enter (beyond, the shell adds nothing and
    other sources would).  The centre may move by ``max(2, 0.2 R)`` pixels, ``R`` by a
    factor 0.6–1.5; ``0.3 ≤ w ≤ max(R, 2 w_start)``.  The background is not refitted:
    the background stage has normalised it.
    """
    width = max(float(width), 1.0)
    shift = max(2.0, 0.2 * r_in)
    w_max = max(r_in, 2.0 * width)
    yy, xx = np.indices(counts.shape)
    window = np.hypot(xx - x0, yy - y0) <= 1.2 * (r_in + width) + 3.0 * psf_sigma + 2.0
    ok = usable & window & np.isfinite(counts) & np.isfinite(background) & np.isfinite(weight) & (background > 0)
    n, b, wt = counts[ok], background[ok], weight[ok]
    yy, xx = yy[ok], xx[ok]
    profile = ShellProfile(psf_sigma, 1.5 * r_in + w_max)

    def cash(x, y, r, w, amp):
        mu = np.maximum(b + amp * wt * profile(np.hypot(xx - x, yy - y), r, w), 1e-12)
        return 2.0 * float(np.sum(mu - n * np.log(mu)))

    m = Minuit(cash, x=x0, y=y0, r=r_in, w=width, amp=max(float(n.sum() - b.sum()), 1.0))
    m.errordef = Minuit.LEAST_SQUARES
    m.limits["x"] = (x0 - shift, x0 + shift)
    m.limits["y"] = (y0 - shift, y0 + shift)
    m.limits["r"] = (0.6 * r_in, 1.5 * r_in)
    m.limits["w"] = (0.3, w_max)
    m.limits["amp"] = (0.0, None)
    try:
        for _ in range(2):  # a second migrad from the first one's end settles most EDM misses
            m.migrad(ncall=3000)
            if m.valid:
                break
    except (RuntimeError, ValueError) as exc:  # a non-finite statistic
        log.warning("shell fit at pixel (%.1f, %.1f) failed: %s", x0, y0, exc)
        return ShellFit(x0, y0, r_in, width, 0.0, False)
    v = m.values
    log.debug("shell fit: %s", m.fmin)
    return ShellFit(float(v["x"]), float(v["y"]), float(v["r"]), float(v["w"]), float(v["amp"]), bool(m.valid))


def _shell_models(first, shells, psf_sigma: float, frame: str, avoid, clip: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Counts image of every shell fitted on one dataset's uncorrelated images, and the
    pixels of the shells that did not fit (bool): the residual search skips them."""
    geom, b = first.geom, first.geom.binsz
    counts, background = first.counts_image, first.background_image
    usable = np.isfinite(counts) & np.isfinite(background)
    counts, background = np.nan_to_num(counts), np.nan_to_num(background)
    expo = first.exposure if first.exposure is not None else np.ones(geom.shape)
    total = np.zeros(geom.shape)
    skip = np.zeros(geom.shape, dtype=bool)
    sigma = psf_sigma / b
    ny, nx = geom.shape
    alon, alat, arad = avoid
    for s in shells:
        lon, lat = to_frame(np.atleast_1d(s["lon"]), np.atleast_1d(s["lat"]), frame, geom.frame)
        x, y = geom.coord_to_pix(lon, lat, geom.frame)
        x, y = float(x[0]), float(y[0])
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        r_in, width = s["radius"] / b, max(s["width"] / b, 1.0)
        half = int(np.ceil(1.5 * r_in + max(r_in, 2 * width) + 4 * sigma)) + 2
        x0, x1 = max(int(round(x)) - half, 0), min(int(round(x)) + half + 1, nx)
        y0, y1 = max(int(round(y)) - half, 0), min(int(round(y)) + half + 1, ny)
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        sl = (slice(y0, y1), slice(x0, x1))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        ref = expo[int(np.clip(round(y), 0, ny - 1)), int(np.clip(round(x), 0, nx - 1))]
        if not (np.isfinite(ref) and ref > 0):
            ref = np.nanmax(expo[sl]) if np.any(np.isfinite(expo[sl])) else 1.0
        weight = np.nan_to_num(expo[sl] / ref)
        ok = usable[sl].copy()
        close = angular_separation(alon, alat, s["lon"], s["lat"]) < half * b * 1.5 + arad
        if close.any():
            plon, plat = geom.pix_to_coord(xx.ravel(), yy.ravel())
            plon, plat = to_frame(plon, plat, geom.frame, frame)
            near = angular_separation(plon[:, None], plat[:, None], alon[close][None, :], alat[close][None, :]) < arad[close][None, :]
            ok &= ~near.any(axis=1).reshape(ok.shape)
        f = fit_shell(counts[sl], background[sl] + total[sl], weight, ok, x0=x - x0, y0=y - y0, r_in=r_in,
                      width=width, psf_sigma=sigma) if ok.sum() >= 10 else None
        if f is None or not f.valid:
            log.warning("%s: the shell at (%.3f, %.3f), R = %.3f deg did not fit: not modelled, its disk not searched again",
                        first.dataset, s["lon"], s["lat"], s["radius"])
            skip[sl] |= np.hypot(xx - x, yy - y) <= r_in + 2 * width + 3 * sigma + 2
            continue
        model = f.npred * weight * shell_image(weight.shape, f.x, f.y, f.r_in, f.width, sigma)
        # once more without the pixels the shell leaves in excess (> clip σ in the finest
        # map): a source beside the rim must not pull the shell towards it
        c = cash_maps(counts[sl], background[sl] + total[sl] + model, kernel=disk_kernel(first.radius / b), mask=ok)
        hot = np.nan_to_num(c["sqrt_ts"]) > clip
        if hot.any() and hot.sum() < 0.3 * ok.sum():
            f2 = fit_shell(counts[sl], background[sl] + total[sl], weight, ok & ~hot, x0=f.x, y0=f.y, r_in=f.r_in,
                           width=f.width, psf_sigma=sigma)
            if f2.valid:
                f = f2
                model = f.npred * weight * shell_image(weight.shape, f.x, f.y, f.r_in, f.width, sigma)
        total[sl] += model
        flon, flat = geom.pix_to_coord(np.atleast_1d(f.x + x0), np.atleast_1d(f.y + y0))
        log.info("%s: shell modelled at (%.3f, %.3f), R = %.3f, w = %.3f deg, %.0f counts",
                 first.dataset, float(flon[0]), float(flat[0]), f.r_in * b, f.width * b, f.npred)
    return total, skip


def subtract_shells(maps: Sequence, shells: Sequence[dict], psf: dict, frame: str, avoid=None) -> list | None:
    """Copies of ``maps`` whose correlated maps have the fitted shells in the background
    (``model_image`` the shells' counts; ``background_image`` unchanged), or ``None``.

    Parameters
    ----------
    maps : sequence of :class:`gpscat.core.seeds.SignificanceMaps`
        Needs the uncorrelated ``counts_image`` and ``background_image`` of a dataset
        (maps without them are returned unchanged).
    shells : sequence of dict
        The Hough shells (``lon``, ``lat`` in ``frame``, ``radius``, ``width`` deg).
    psf : dict
        PSF Gaussian sigma (deg) per dataset.
    avoid : (lon, lat, radius) arrays, optional
        Disks (deg, ``frame``) left out of the shell fits: the other seeds.

    Returns
    -------
    list or None
        ``None`` when no shell was modelled in any dataset.
    """
    if not shells:
        return None
    avoid = avoid or (np.zeros(0), np.zeros(0), np.zeros(0))
    avoid = tuple(np.asarray(a, dtype=float) for a in avoid)
    models = {}
    for name in dict.fromkeys(m.dataset for m in maps):
        own = sorted((m for m in maps if m.dataset == name), key=lambda m: m.radius)
        first = next((m for m in own if m.counts_image is not None and m.background_image is not None), None)
        if first is not None:
            models[name] = _shell_models(first, shells, psf[name], frame, avoid)
    if not any(np.any(v[0] > 0) for v in models.values()):
        return None
    out = []
    for m in maps:
        if m.dataset not in models or m.counts_image is None or m.background_image is None:
            out.append(m)
            continue
        model, skip = models[m.dataset]
        usable = np.isfinite(m.counts_image) & np.isfinite(m.background_image) & ~skip
        bkg = np.where(usable, m.background_image + model, np.nan)
        kernel = disk_kernel(m.radius / m.geom.binsz, sampling=m.kernel_sampling)
        c = cash_maps(np.nan_to_num(m.counts_image), np.nan_to_num(bkg), kernel=kernel, mask=usable)
        flux = None
        if m.exposure is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                flux = np.where(m.exposure > 0, c["excess"] / (m.exposure * _M2_TO_CM2), np.nan)
        out.append(replace(m, sqrt_ts=c["sqrt_ts"], excess=c["excess"], background=c["background"],
                           counts=c["counts"], flux=flux, counts_image=np.where(usable, m.counts_image, np.nan),
                           model_image=np.where(usable, model, np.nan)))
    return out
