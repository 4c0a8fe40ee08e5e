"""Per-pixel power-law spectral index from correlated counts in several energy bands.

In each pixel (or at any set of positions) the counts ``n_k`` in energy band ``k`` are
modelled as background plus a power law,

``mu_k = b_k + 1e4 · X_k · N · I_k(Γ)``,   ``I_k(Γ) = ∫_band k (E / E_ref)^-Γ dE``,

with ``X_k`` the band exposure (m² s, the convention of
:func:`gpscat.core.significance.flux_maps`: ``excess = 1e4 · X · integral flux``), ``N``
the differential flux at ``E_ref`` (cm⁻² s⁻¹ TeV⁻¹; for correlated maps, of the emission
within the correlation disk) and ``Γ`` the index.  Sums of Poisson counts are Poisson, so
the Cash likelihood is exact for top-hat correlated counts and backgrounds.

``(N, Γ)`` are fitted by Fisher scoring (Newton steps with the expected information),
vectorised over all pixels at once; the errors are from the inverse Fisher matrix at the
optimum and ``ts`` is the likelihood ratio of the fit against background only.  Band
integrals use Gauss–Legendre quadrature in ``ln E`` (exact to ~1e-10 for the smooth
integrands), which gives their derivatives in ``Γ`` for free.

Why a fit rather than a ratio of two band fluxes: it uses every band, weights them by
their counts, gives an error, and copes with bands where the excess is negative.

:func:`index_maps` applies it to the correlated band maps of the significance stage
(:class:`BandMaps`), joining the bands of several datasets (disjoint energy ranges) on the
finest grid: the spectral index map of the detect stage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpscat.core.geom import Map, WcsGeom

__all__ = ["BandMaps", "IndexFit", "band_integrals", "fit_power_law", "index_maps"]

log = logging.getLogger(__name__)

_CM2_PER_M2 = 1e4
_TINY = 1e-12


@dataclass(frozen=True)
class IndexFit:
    """Result of :func:`fit_power_law`, arrays of the spatial shape of the input.

    ``index``/``index_err`` (NaN where not fitted), ``norm``/``norm_err`` (cm⁻² s⁻¹ TeV⁻¹
    at the reference energy), ``ts`` (fit vs. background only, >= 0), and ``converged``
    (the last index step was below the tolerance and the index is not at a bound).
    """

    index: np.ndarray
    index_err: np.ndarray
    norm: np.ndarray
    norm_err: np.ndarray
    ts: np.ndarray
    converged: np.ndarray


@dataclass
class BandMaps:
    """Correlated band maps ``(K, ny, nx)`` of one ``bands_r<r>.fits`` file."""

    dataset: str
    radius: float  # deg
    geom: WcsGeom
    counts: np.ndarray
    background: np.ndarray
    exposure: np.ndarray
    e_lo: np.ndarray  # TeV
    e_hi: np.ndarray


def band_integrals(
    index: np.ndarray,
    e_lo: np.ndarray,
    e_hi: np.ndarray,
    *,
    e_ref: float = 1.0,
    n_nodes: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``∫ (E/E_ref)^-Γ dE`` over each band and its first two derivatives in ``Γ``.

    Parameters
    ----------
    index : numpy.ndarray
        Indices ``Γ``, any shape ``S``.
    e_lo, e_hi : numpy.ndarray
        Band edges, shape ``(K,)``, TeV, ``0 < e_lo < e_hi``.
    e_ref : float
        Reference energy, TeV.
    n_nodes : int
        Gauss–Legendre nodes per band.

    Returns
    -------
    integral, d_index, d2_index : numpy.ndarray
        Shape ``(K, *S)``, TeV.
    """
    e_lo = np.atleast_1d(np.asarray(e_lo, dtype=float))
    e_hi = np.atleast_1d(np.asarray(e_hi, dtype=float))
    if e_lo.shape != e_hi.shape or e_lo.ndim != 1 or not np.all((e_lo > 0) & (e_hi > e_lo)):
        raise ValueError(f"bands need 0 < e_lo < e_hi (1D), got e_lo={e_lo}, e_hi={e_hi}")
    if not e_ref > 0:
        raise ValueError(f"e_ref must be > 0 TeV, got {e_ref}")
    t, w = np.polynomial.legendre.leggauss(int(n_nodes))
    a, b = np.log(e_lo / e_ref), np.log(e_hi / e_ref)
    u = 0.5 * (b - a)[:, None] * t[None, :] + 0.5 * (a + b)[:, None]  # ln(E/E_ref), (K, J)
    wu = 0.5 * (b - a)[:, None] * w[None, :] * e_ref * np.exp(u)  # dE = E d ln E
    g = np.asarray(index, dtype=float)
    shape = (1,) * g.ndim
    uu = u.reshape(u.shape[:1] + shape + u.shape[1:])
    ww = wu.reshape(uu.shape)
    f = ww * np.exp(-g[None, ..., None] * uu)
    return f.sum(-1), -(f * uu).sum(-1), (f * uu * uu).sum(-1)


def fit_power_law(
    counts: np.ndarray,
    background: np.ndarray,
    exposure: np.ndarray,
    e_lo: np.ndarray,
    e_hi: np.ndarray,
    *,
    e_ref: float = 1.0,
    index_init: float = 2.5,
    index_bounds: tuple[float, float] = (0.5, 5.0),
    n_iter: int = 30,
    tol: float = 1e-4,
    min_ts: float = 4.0,
    mask: np.ndarray | None = None,
) -> IndexFit:
    """Fit a power law to band counts in every pixel (vectorised).

    Parameters
    ----------
    counts, background, exposure : numpy.ndarray
        Shape ``(K, *S)``: counts and background (counts, correlated or not) and band
        exposure (m² s) in ``K`` energy bands at positions of any shape ``S``.
    e_lo, e_hi : numpy.ndarray
        Band edges, TeV, shape ``(K,)``; bands may leave gaps but should not overlap.
    e_ref : float
        Reference energy of ``norm``, TeV.
    index_init : float
        Starting index.
    index_bounds : (float, float)
        The index is kept within these bounds (a fit at a bound is not converged).
    n_iter : int
        Maximum Fisher-scoring iterations.
    tol : float
        Convergence tolerance on the index step.
    min_ts : float
        Positions whose total excess has a TS below this (or is negative) get NaN index
        and errors: there is nothing to measure.
    mask : numpy.ndarray, optional
        Shape ``S`` or ``(K, *S)``, True where usable; a band with mask False at a
        position does not enter the fit there.

    Returns
    -------
    IndexFit
    """
    n, b, x = (np.asarray(a, dtype=float) for a in (counts, background, exposure))
    if not (n.shape == b.shape == x.shape) or n.ndim < 1:
        raise ValueError(f"counts, background, exposure need one shape (K, ...), got {n.shape}, {b.shape}, {x.shape}")
    e_lo, e_hi = np.atleast_1d(e_lo), np.atleast_1d(e_hi)
    if e_lo.size != n.shape[0] or e_hi.size != n.shape[0]:
        raise ValueError(f"{n.shape[0]} bands in the maps but {e_lo.size} energy bands given")
    if n.shape[0] < 2:
        raise ValueError(f"need at least 2 energy bands for an index, got {n.shape[0]}")
    lo_b, hi_b = index_bounds
    if not lo_b < index_init < hi_b:
        raise ValueError(f"index_init must lie within index_bounds {index_bounds}, got {index_init}")
    use = np.isfinite(n) & np.isfinite(b) & np.isfinite(x) & (x > 0) & (b >= 0)
    if mask is not None:
        use &= np.broadcast_to(np.asarray(mask, dtype=bool), n.shape)
    n, b, x = np.where(use, n, 0.0), np.where(use, b, 0.0), np.where(use, x, 0.0)
    shape = n.shape[1:]

    n, b, x = (a.reshape(a.shape[0], -1) for a in (n, b, x))  # (K, P)
    gamma = np.full(n.shape[1], float(index_init))
    i0, _, _ = band_integrals(gamma, e_lo, e_hi, e_ref=e_ref)
    resp0 = (_CM2_PER_M2 * x * i0).sum(0)
    excess = np.sum(n - b, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(resp0 > 0, np.clip(excess, _TINY, None) / resp0, 0.0)
    norm = np.maximum(norm, _TINY)
    step = np.full(gamma.size, np.inf)
    act = np.arange(gamma.size)  # pixels still iterating: most converge in a few steps
    for _ in range(int(n_iter)):
        na, ba, xa, ga, nrm = n[:, act], b[:, act], x[:, act], gamma[act], norm[act]
        sa, s1a, _ = band_integrals(ga, e_lo, e_hi, e_ref=e_ref)
        sa, s1a = _CM2_PER_M2 * xa * sa, _CM2_PER_M2 * xa * s1a
        lam = np.maximum(ba + nrm * sa, _TINY)
        r = na / lam - 1.0
        g_n, g_g = np.sum(r * sa, 0), np.sum(r * nrm * s1a, 0)
        f_nn = np.sum(sa * sa / lam, 0)
        f_ng = np.sum(sa * nrm * s1a / lam, 0)
        f_gg = np.sum((nrm * s1a) ** 2 / lam, 0)
        det = f_nn * f_gg - f_ng**2
        ok = det > _TINY * np.maximum(f_nn * f_gg, _TINY)
        with np.errstate(divide="ignore", invalid="ignore"):
            d_n = np.where(ok, (f_gg * g_n - f_ng * g_g) / det, 0.0)
            d_g = np.where(ok, (f_nn * g_g - f_ng * g_n) / det, 0.0)
        d_g = np.clip(d_g, -0.5, 0.5)
        norm[act] = np.maximum(nrm + d_n, 0.1 * nrm)  # stay positive, at most a factor 10 down
        gamma[act] = np.clip(ga + d_g, lo_b, hi_b)
        step[act] = np.abs(gamma[act] - ga)  # a pixel held at a bound stops iterating
        act = act[step[act] >= tol]
        if act.size == 0:
            break

    s, s1, _ = band_integrals(gamma, e_lo, e_hi, e_ref=e_ref)
    s, s1 = _CM2_PER_M2 * x * s, _CM2_PER_M2 * x * s1
    lam = np.maximum(b + norm * s, _TINY)
    f_nn = np.sum(s * s / lam, 0)
    f_ng = np.sum(s * norm * s1 / lam, 0)
    f_gg = np.sum((norm * s1) ** 2 / lam, 0)
    det = f_nn * f_gg - f_ng**2
    ts = 2.0 * np.sum(_xlogy(n, lam) - lam - (_xlogy(n, np.maximum(b, _TINY)) - b), 0)
    ts = np.clip(np.where(np.isfinite(ts), ts, 0.0), 0.0, None)
    fitted = (excess > 0) & (ts >= min_ts) & (det > 0) & (np.sum(use, 0).reshape(-1) >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        index_err = np.sqrt(f_nn / det)
        norm_err = np.sqrt(f_gg / det)
    nan = np.where(fitted, 1.0, np.nan)
    converged = fitted & (step < tol) & (gamma > lo_b) & (gamma < hi_b)
    gamma, index_err, norm, norm_err, ts, converged, nan = (
        a.reshape(shape) for a in (gamma, index_err, norm, norm_err, ts, converged, nan)
    )
    log.debug("index fit: %d of %d positions fitted, %d converged", int(fitted.sum()), fitted.size, int(converged.sum()))
    return IndexFit(
        index=gamma * nan,
        index_err=index_err * nan,
        norm=norm * nan,
        norm_err=norm_err * nan,
        ts=ts,
        converged=converged,
    )


def _xlogy(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, a * np.log(np.where(a > 0, c, 1.0)), 0.0)


def index_maps(
    bands: Sequence[BandMaps],
    *,
    radius: float,
    e_ref: float = 1.0,
    index_init: float = 2.5,
    min_ts: float = 9.0,
) -> dict[str, Map] | None:
    """Per-pixel power-law index maps from each dataset's band maps nearest ``radius`` (deg).

    The grid is that of the finest dataset; other datasets' bands (disjoint in energy) are
    interpolated onto it (bilinear: correlated maps are smooth).  Returns the maps
    ``INDEX``, ``INDEX_ERR``, ``NORM``, ``NORM_ERR`` (cm⁻² s⁻¹ TeV⁻¹ at ``e_ref``,
    within the correlation disk) and ``TS``, or ``None`` without band maps.
    """
    if not bands:
        return None
    per = {}
    for bm in bands:
        per.setdefault(bm.dataset, []).append(bm)
    chosen = sorted((min(v, key=lambda bm: abs(bm.radius - radius)) for v in per.values()), key=lambda bm: bm.e_lo.min())
    ref = min(chosen, key=lambda bm: bm.geom.binsz)
    glon, glat = ref.geom.get_coord()
    stacks, lo, hi = [], [], []
    for bm in chosen:
        if lo and bm.e_lo.min() < max(h.max() for h in hi) * (1 - 1e-6):
            log.warning("index map: bands of %s overlap in energy with another dataset: not used", bm.dataset)
            continue
        if bm.geom == ref.geom:
            arr = np.stack([bm.counts, bm.background, bm.exposure])
        else:
            arr = np.stack([
                np.stack([Map(bm.geom, a[k]).interp_image(glon, glat, ref.geom.frame) for k in range(a.shape[0])])
                for a in (bm.counts, bm.background, bm.exposure)
            ])
        stacks.append(arr)
        lo.append(bm.e_lo), hi.append(bm.e_hi)
    a = np.concatenate(stacks, axis=1)
    if a.shape[1] < 2:
        log.warning("index map: fewer than 2 energy bands, no index")
        return None
    fit = fit_power_law(a[0], a[1], a[2], np.concatenate(lo), np.concatenate(hi), e_ref=e_ref, index_init=index_init, min_ts=min_ts)
    meta = {"E_REF": e_ref, "RADIUS": ref.radius}
    log.info("index map: %d bands, %d pixels fitted", a.shape[1], int(np.isfinite(fit.index).sum()))
    return {
        "INDEX": Map(ref.geom, fit.index, meta=meta),
        "INDEX_ERR": Map(ref.geom, fit.index_err, meta=meta),
        "NORM": Map(ref.geom, fit.norm, unit="cm-2 s-1 TeV-1", meta=meta),
        "NORM_ERR": Map(ref.geom, fit.norm_err, unit="cm-2 s-1 TeV-1", meta=meta),
        "TS": Map(ref.geom, fit.ts, meta=meta),
    }
