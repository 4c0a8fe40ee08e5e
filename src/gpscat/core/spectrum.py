"""1D ON/OFF spectra in a circular aperture: per-observation extraction and stacking.

One :class:`OnOffSpectrum` holds, per reconstructed-energy bin, the ON counts (events
within ``R`` of the target), the OFF counts (events in the reflected circles,
:mod:`gpscat.core.reflected`) and ``alpha``; per true-energy bin the exposure (m² s) at the
target's offset; the energy-dispersion kernel ``P(reco bin | true-bin centre)``; and the
safe mask.  The conventions are gammapy's ``SpectrumDatasetMaker`` +
``ReflectedRegionsBackgroundMaker`` + ``SafeMaskMaker`` ones:

* IRFs at the centre of the ON circle (its offset from the pointing);
* exposure = A_eff(E_true centre, offset) × livetime, times the PSF containment within
  ``R`` at the bin centre when ``containment_correction`` (gammapy's
  ``containment_correction=True``: the fitted flux is a point source's total flux);
* safe mask per observation, at the target's offset: ``aeff-default`` (AEFF
  ``LO_THRES``/``HI_THRES``, else the obs-index), ``aeff-max`` (gammapy's ``irfs="DL3"``
  rule: lowest IRF true-energy edge with A_eff above the percentage of its maximum),
  ``edisp-bias``; a reco bin is kept when it lies fully inside the safe range;
* an observation without OFF circle gets an all-False safe mask.

**Stacking** (:func:`stack_spectra`, gammapy's ``SpectrumDatasetOnOff.stack``):
counts and OFF counts summed inside each observation's safe mask;
``alpha = Σ αᵢ n_off,ᵢ / Σ n_off,ᵢ`` per bin (each observation weighted by its OFF
counts, i.e. by its background), and where no OFF count was stacked the mean over all
bins ``Σ αn_off / Σ n_off`` (the mean of the observations' alphas if there is no OFF count
at all); exposure summed over the observations with a safe bin; the kernel is the
exposure-weighted mean of the kernels, each with its reco bins outside the observation's
safe mask set to zero — so the stacked prediction
``npred_k = Σ_j 1e4 · exposure_j · ∫flux_j · edisp_jk`` equals the sum of the
observations' predictions inside their safe masks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from gpscat.core import reduce as R
from gpscat.core.geom import MapAxis, angular_separation, to_frame
from gpscat.core.reflected import ReflectedRegions, in_circles, reflected_regions
from gpscat.core.stats import wstat_significance

__all__ = [
    "SAFE_METHODS",
    "OnOffSpectrum",
    "extract_spectrum",
    "safe_energy_range",
    "stack_spectra",
]

log = logging.getLogger(__name__)

#: Safe-mask methods that apply to an aperture spectrum.
SAFE_METHODS = ("aeff-default", "aeff-max", "edisp-bias")


@dataclass(frozen=True, eq=False)
class OnOffSpectrum:
    """ON/OFF counts and the response of one aperture (one observation or a stack).

    Attributes
    ----------
    energy, energy_true : MapAxis
        Reconstructed- and true-energy bins (TeV).
    counts, counts_off, alpha : ndarray, shape (n_reco,)
    exposure : ndarray, shape (n_true,)
        m² s (PSF containment included when it was corrected for).
    edisp : ndarray, shape (n_true, n_reco)
        Probability that a photon at the centre of true bin j lands in reco bin k.
    mask_safe : ndarray of bool, shape (n_reco,)
    livetime : float
        s (observations with a safe bin).
    name : str
    meta : dict
        ``obs_ids``, ``n_off_regions``, ``offset`` (per observation), ``radius``, ...
    """

    energy: MapAxis
    energy_true: MapAxis
    counts: np.ndarray
    counts_off: np.ndarray
    alpha: np.ndarray
    exposure: np.ndarray
    edisp: np.ndarray
    mask_safe: np.ndarray
    livetime: float = 0.0
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        nr, nt = self.energy.nbin, self.energy_true.nbin
        for key, shape in (("counts", (nr,)), ("counts_off", (nr,)), ("alpha", (nr,)), ("exposure", (nt,)), ("edisp", (nt, nr))):
            a = np.asarray(getattr(self, key), dtype=float)
            if a.shape != shape:
                raise ValueError(f"spectrum {self.name!r}: {key} has shape {a.shape}, expected {shape}")
            object.__setattr__(self, key, a)
        mask = np.asarray(self.mask_safe, dtype=bool)
        if mask.shape != (nr,):
            raise ValueError(f"spectrum {self.name!r}: mask_safe has shape {mask.shape}, expected {(nr,)}")
        object.__setattr__(self, "mask_safe", mask)

    @property
    def background(self) -> np.ndarray:
        """``alpha × counts_off`` per reco bin."""
        return self.alpha * self.counts_off

    @property
    def excess(self) -> np.ndarray:
        return self.counts - self.background

    def totals(self, mask: np.ndarray | None = None) -> dict[str, float]:
        """ON, OFF, alpha (OFF-weighted), excess and Li & Ma significance summed over ``mask``.

        ``mask`` defaults to the safe mask.  Empty: zeros, alpha NaN, significance 0.
        """
        m = self.mask_safe if mask is None else np.asarray(mask, dtype=bool)
        n_on, n_off = float(self.counts[m].sum()), float(self.counts_off[m].sum())
        bkg = float(self.background[m].sum())
        if n_off > 0:
            alpha = bkg / n_off
        else:
            alpha = float(np.mean(self.alpha[m])) if m.any() else math.nan
        sig = float(wstat_significance(n_on, n_off, alpha)) if np.isfinite(alpha) and alpha > 0 else 0.0
        return {"counts": n_on, "counts_off": n_off, "alpha": alpha, "excess": n_on - bkg, "sqrt_ts": sig}

    def npred_signal(self, integral_flux: np.ndarray) -> np.ndarray:
        """Predicted source counts per reco bin for ``∫ flux dE`` (cm⁻² s⁻¹) per true bin."""
        return (1e4 * self.exposure * np.asarray(integral_flux, dtype=float)) @ self.edisp


def safe_energy_range(obs, methods: Sequence[str], *, offset: float, aeff_percent: float = 10.0, bias_percent: float = 10.0) -> tuple[float | None, float | None]:
    """Safe reco-energy range (TeV, ``None`` = open) of one observation at ``offset`` deg.

    ``aeff-default``: AEFF ``LO_THRES``/``HI_THRES`` (else the obs-index); ``aeff-max``:
    :func:`gpscat.core.reduce.aeff_max_threshold`; ``edisp-bias``:
    :func:`gpscat.core.reduce.edisp_bias_threshold`; the lower bound is the largest of them.
    """
    unknown = [m for m in methods if m not in SAFE_METHODS]
    if unknown:
        raise ValueError(f"unknown safe-mask method(s) for spectra {unknown}; known: {list(SAFE_METHODS)}")
    lows: list[float] = []
    emax = None
    if "aeff-default" in methods:
        lo, hi = obs.safe_energy_range
        if lo is None and hi is None:  # callers say so once per observation
            log.debug("obs %s: no default safe energy range (AEFF LO_THRES/HI_THRES or obs-index)", obs.obs_id)
        lows += [lo] if lo is not None else []
        emax = hi
    if "aeff-max" in methods:
        lows.append(R.aeff_max_threshold(obs.aeff, percent=aeff_percent, offset=offset))
    if "edisp-bias" in methods:
        lows.append(R.edisp_bias_threshold(obs.edisp, percent=bias_percent, offset=offset))
    return (max(lows) if lows else None), emax


def _histogram(energy: np.ndarray, axis: MapAxis) -> np.ndarray:
    idx = axis.coord_to_idx(energy)
    return np.bincount(idx[idx >= 0], minlength=axis.nbin).astype(float)


def extract_spectrum(
    obs,
    lon: float,
    lat: float,
    radius: float,
    *,
    frame: str = "icrs",
    energy_axis: MapAxis,
    energy_true_axis: MapAxis,
    excluded: tuple[np.ndarray, np.ndarray] | None = None,
    safe_mask_methods: Sequence[str] = ("aeff-default",),
    aeff_percent: float = 10.0,
    bias_percent: float = 10.0,
    containment_correction: bool = True,
    reflected: dict | None = None,
    off_regions: ReflectedRegions | None = None,
    event_offsets: np.ndarray | None = None,
    name: str = "",
) -> OnOffSpectrum:
    """ON/OFF spectrum of one observation in a circle around a target.

    Parameters
    ----------
    obs : gpscat.io.dl3.Observation
        With events and the ``aeff``, ``edisp`` (and ``psf`` for the containment
        correction) IRFs.
    lon, lat, radius : float
        ON circle (deg) in ``frame``.
    energy_axis, energy_true_axis : MapAxis
        Reco and true energy bins (TeV).
    excluded : (ra, dec) arrays, optional
        Points sampling the excluded sky, ICRS (:func:`gpscat.core.reflected.excluded_points`).
    safe_mask_methods, aeff_percent, bias_percent
        See :func:`safe_energy_range`.
    containment_correction : bool
        Multiply the exposure by the PSF containment within ``radius``.
    reflected : dict, optional
        Keyword options of :func:`gpscat.core.reflected.reflected_regions`.
    off_regions : ReflectedRegions, optional
        OFF circles to use instead of finding them (ICRS; same radius and offset as the ON circle).
    event_offsets : ndarray, optional
        Distance (deg) of each event from the pointing, when already known (several
        targets in one observation).
    name : str
        Spectrum name (default ``obs_<id>``).
    """
    if obs.events is None or obs.aeff is None or obs.edisp is None:
        raise ValueError(f"obs {obs.obs_id}: extract_spectrum needs events and the aeff and edisp IRFs")
    if containment_correction and obs.psf is None:
        raise ValueError(f"obs {obs.obs_id}: containment_correction needs the PSF")
    ra, dec = (float(v) for v in to_frame(lon, lat, frame, "icrs"))
    p_ra, p_dec = obs.pointing
    if off_regions is None:
        regions = reflected_regions(ra, dec, radius, p_ra, p_dec, excluded=excluded, **(reflected or {}))
    else:
        regions = off_regions
    offset = float(angular_separation(ra, dec, p_ra, p_dec))
    ev = obs.events
    # events near the ring of circles only (a cheap cut before the per-circle distances)
    ev_off = angular_separation(ev.ra, ev.dec, p_ra, p_dec) if event_offsets is None else np.asarray(event_offsets)
    if ev_off.shape != ev.energy.shape:
        raise ValueError(f"event_offsets has shape {ev_off.shape}, expected {ev.energy.shape}")
    near = np.abs(ev_off - offset) < radius
    e_near = ev.energy[near]
    on = in_circles(ev.ra[near], ev.dec[near], [ra], [dec], radius) >= 0
    counts = _histogram(e_near[on], energy_axis)
    off_idx = in_circles(ev.ra[near], ev.dec[near], regions.lon, regions.lat, radius) if regions.n else np.zeros(0, int)
    counts_off = _histogram(e_near[off_idx >= 0], energy_axis) if regions.n else np.zeros(energy_axis.nbin)
    et = energy_true_axis.center
    exposure = np.asarray(obs.aeff.evaluate(et, offset), dtype=float) * obs.livetime
    containment = np.ones_like(et)
    if containment_correction:
        containment = np.asarray(obs.psf.containment(radius, et, offset), dtype=float)
        exposure = exposure * containment
    edisp = np.asarray(obs.edisp.kernel(energy_true_axis, energy_axis, offset), dtype=float)
    emin, emax = safe_energy_range(obs, safe_mask_methods, offset=offset, aeff_percent=aeff_percent, bias_percent=bias_percent)
    mask = R.energy_mask(energy_axis, emin, emax)
    if not regions.n:
        log.warning("obs %s: no OFF region for the circle at (%.3f, %.3f) r=%.3f (offset %.3f deg); safe mask set to False", obs.obs_id, ra, dec, radius, offset)
        mask = np.zeros_like(mask)
    alpha = np.full(energy_axis.nbin, regions.alpha if regions.n else 0.0)
    meta = {
        "obs_ids": [int(obs.obs_id)],
        "n_off_regions": [regions.n],
        "offset": [offset],
        "safe_energy": [[emin, emax]],
        "radius": float(radius),
        "position": [ra, dec],
        "off_regions": [np.column_stack([regions.lon, regions.lat]).tolist()],
        "containment_1tev": float(np.interp(0.0, np.log(et), containment)) if containment_correction else 1.0,
    }
    return OnOffSpectrum(
        energy_axis, energy_true_axis, counts, counts_off, alpha, exposure, edisp, mask,
        livetime=float(obs.livetime) if mask.any() else 0.0, name=name or f"obs_{obs.obs_id}", meta=meta,
    )


def stack_spectra(spectra: Sequence[OnOffSpectrum], *, name: str = "stacked") -> OnOffSpectrum:
    """Stack spectra of one aperture (same energy axes) as gammapy stacks ON/OFF datasets.

    See the module docstring for the rules.  An empty list raises ``ValueError``; spectra
    without a safe bin contribute nothing but are listed in ``meta["obs_ids_unused"]``.
    """
    spectra = list(spectra)
    if not spectra:
        raise ValueError("stack_spectra needs at least one spectrum, got none")
    first = spectra[0]
    for s in spectra[1:]:
        if s.energy != first.energy or s.energy_true != first.energy_true:
            raise ValueError(f"spectrum {s.name!r}: energy axes differ from those of {first.name!r}")
    m = np.array([s.mask_safe for s in spectra], dtype=float)  # (n_obs, n_reco)
    used = m.any(axis=1)
    counts = (np.array([s.counts for s in spectra]) * m).sum(axis=0)
    off = np.array([s.counts_off for s in spectra]) * m
    alpha_off = np.array([s.alpha for s in spectra]) * off
    total_off, total_alpha_off = off.sum(axis=0), alpha_off.sum(axis=0)
    if total_off.sum() > 0:
        mean_alpha = total_alpha_off.sum() / total_off.sum()
    else:
        mean_alpha = float(np.mean([s.alpha[0] for s, u in zip(spectra, used, strict=True) if u])) if used.any() else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(total_off > 0, total_alpha_off / total_off, mean_alpha)
    exposure = np.sum([s.exposure * u for s, u in zip(spectra, used, strict=True)], axis=0)
    weighted = np.sum([s.exposure[:, None] * s.edisp * s.mask_safe[None, :] for s in spectra], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        edisp = np.where(exposure[:, None] > 0, weighted / exposure[:, None], 0.0)
    meta: dict = {"radius": first.meta.get("radius"), "position": first.meta.get("position")}
    for key in ("obs_ids", "n_off_regions", "offset", "safe_energy", "off_regions"):
        meta[key] = [v for s, u in zip(spectra, used, strict=True) if u for v in s.meta.get(key, [])]
    meta["obs_ids_unused"] = [v for s, u in zip(spectra, used, strict=True) if not u for v in s.meta.get("obs_ids", [])]
    ct = [s.meta.get("containment_1tev", 1.0) for s, u in zip(spectra, used, strict=True) if u]
    meta["containment_1tev"] = float(np.mean(ct)) if ct else math.nan
    return replace(
        first, counts=counts, counts_off=total_off, alpha=alpha, exposure=exposure, edisp=edisp,
        mask_safe=m.astype(bool).any(axis=0), livetime=float(sum(s.livetime for s in spectra)), name=name, meta=meta,
    )
