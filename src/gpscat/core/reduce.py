"""Per-observation data reduction: pure functions from events and IRFs to binned maps.

Conventions (gammapy's, so that our per-observation datasets match its MapDatasetMaker):

* exposure = A_eff(E_true centre, offset of pixel centre) × livetime, m² s;
* IRF background = ∫ rate dE over each reco bin × pixel solid angle × *ontime* (the
  GADF background rate is per observation time, dead time included); the rate table's
  zero holes along energy are filled first (log interpolation), and ``BKG_2D`` tables
  get one more offset bin repeating the last;
* PSF map: dP/dΩ (sr⁻¹) at the centres of a ``rad`` axis on a coarse sky grid,
  normalised to Σ P · 2π r Δr = 1 per (E_true, pixel); its stacking weight is the
  exposure on that grid;
* energy-dispersion kernel: P(reco bin | true-bin centre) on the coarse grid;
* safe masks: spatial (offset-max) and per reco-energy bin (a bin is kept only if it
  lies fully inside the safe energy range).

Pointings are (RA, Dec) in deg (ICRS); geometries may be in any supported frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from gpscat.core.fov import rotate_fov, sky_to_fov
from gpscat.core.geom import MapAxis, WcsGeom, angular_separation, to_frame
from gpscat.core.irf import Background2D, Background3D, EffectiveArea2D, EnergyDispersion2D

__all__ = [
    "SAFE_MASK_METHODS",
    "aeff_max_threshold",
    "bkg_peak_threshold",
    "edisp_bias_threshold",
    "energy_mask",
    "make_background",
    "make_counts",
    "make_edisp_kernel",
    "make_exposure",
    "make_psf",
    "pixel_offsets",
]

log = logging.getLogger(__name__)

SAFE_MASK_METHODS = ("offset-max", "aeff-default", "aeff-max", "edisp-bias", "bkg-peak")


def pixel_offsets(geom: WcsGeom, pointing: tuple[float, float]) -> np.ndarray:
    """Angular distance (deg) of each pixel centre from the pointing (RA, Dec), shape (ny, nx)."""
    return geom.separation(pointing[0], pointing[1], frame="icrs")


def make_counts(ra, dec, energy, geom: WcsGeom, energy_axis: MapAxis) -> np.ndarray:
    """Count events per (reco energy, pixel); shape (n_energy, ny, nx), float.

    Parameters
    ----------
    ra, dec : array_like
        Event directions, deg (ICRS).
    energy : array_like
        Reco energies, TeV.
    geom, energy_axis
        Target grid; events outside it are dropped.
    """
    ra, dec, energy = (np.asarray(a, dtype=float) for a in (ra, dec, energy))
    if not (ra.shape == dec.shape == energy.shape):
        raise ValueError(f"ra, dec, energy must have equal shapes, got {ra.shape}, {dec.shape}, {energy.shape}")
    shape = (energy_axis.nbin, *geom.shape)
    ie = energy_axis.coord_to_idx(energy)
    keep = ie >= 0
    # cheap cut on the distance from the map centre before the frame transform
    lon_c, lat_c = to_frame(*geom.center_coord, geom.frame, "icrs")
    radius = 0.5 * np.hypot(*geom.width) + 2 * geom.binsz
    keep &= angular_separation(ra, dec, lon_c, lat_c) < radius
    lon, lat = to_frame(ra[keep], dec[keep], "icrs", geom.frame)
    ix, iy, inside = geom.coord_to_idx(lon, lat)
    ie = ie[keep]
    flat = np.ravel_multi_index((ie[inside], iy[inside], ix[inside]), shape)
    return np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape).astype(float)


def make_exposure(
    aeff: EffectiveArea2D,
    geom: WcsGeom,
    energy_true_axis: MapAxis,
    *,
    pointing: tuple[float, float],
    livetime: float,
    offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Exposure (m² s) per (true energy, pixel), shape (n_energy_true, ny, nx)."""
    if not livetime >= 0:
        raise ValueError(f"livetime must be >= 0 s, got {livetime}")
    off = pixel_offsets(geom, pointing) if offsets is None else offsets
    return aeff.evaluate_grid(energy_true_axis.center, off) * livetime


def _bkg_prepared(bkg, fill_missing: bool):
    if fill_missing:
        bkg = bkg.fill_missing_energy()
    if isinstance(bkg, Background2D):
        bkg = bkg.pad_offset()
    return bkg


def make_background(
    bkg: Background3D | Background2D,
    geom: WcsGeom,
    energy_axis: MapAxis,
    *,
    pointing: tuple[float, float],
    ontime: float,
    fill_missing: bool = True,
    offsets: np.ndarray | None = None,
    altaz: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Predicted IRF background counts per (reco energy, pixel), shape (n_energy, ny, nx).

    ``BKG_3D`` is evaluated in FoV coordinates of the pixel centres (alignment from the
    IRF), ``BKG_2D`` at their offsets; the rate is integrated exactly over each reco
    bin (log-log interpolant), times the pixel solid angle and the ontime (s).  An
    ALTAZ-aligned table needs ``altaz = (weights, matrices)`` from
    :func:`gpscat.core.fov.altaz_rotations`: the rate is averaged over those time nodes.
    """
    if not ontime >= 0:
        raise ValueError(f"ontime must be >= 0 s, got {ontime}")
    bkg = _bkg_prepared(bkg, fill_missing)
    if isinstance(bkg, Background3D):
        ra, dec = geom.get_coord(frame="icrs")
        if bkg.fov_alignment == "ALTAZ":
            if altaz is None:
                raise ValueError("an ALTAZ-aligned BKG_3D needs altaz=(weights, matrices) from gpscat.core.fov.altaz_rotations")
            fov_lon, fov_lat = sky_to_fov(ra, dec, pointing[0], pointing[1])
            rate = sum(w * bkg.integrate(energy_axis.edges, *rotate_fov(fov_lon, fov_lat, m)) for w, m in zip(*altaz, strict=True))
        else:
            fov_lon, fov_lat = sky_to_fov(ra, dec, pointing[0], pointing[1], alignment=bkg.fov_alignment)
            rate = bkg.integrate(energy_axis.edges, fov_lon, fov_lat)
    elif isinstance(bkg, Background2D):
        off = pixel_offsets(geom, pointing) if offsets is None else offsets
        rate = bkg.integrate(energy_axis.edges, off)
    else:
        raise TypeError(f"bkg must be a Background3D or Background2D, got {type(bkg).__name__}")
    return rate * (geom.solid_angle() * ontime)[None]


def make_psf(psf, geom: WcsGeom, energy_true_axis: MapAxis, rad_axis: MapAxis, *, pointing: tuple[float, float]) -> np.ndarray:
    """PSF profile dP/dΩ (sr⁻¹) per (true energy, rad, pixel) on a coarse grid.

    Returns shape (n_energy_true, n_rad, ny, nx), normalised to Σ_r P · 2π r Δr = 1 (flat
    sky, r in radians) wherever the PSF is non-zero.
    """
    off = pixel_offsets(geom, pointing)
    r = rad_axis.center
    values = psf.evaluate_grid(r, energy_true_axis.center, off)
    jac = (2 * np.pi * np.radians(r) * np.radians(rad_axis.width))[None, :, None, None]
    norm = (values * jac).sum(axis=1, keepdims=True)
    return np.divide(values, norm, out=np.zeros_like(values), where=norm > 0)


def make_edisp_kernel(
    edisp: EnergyDispersion2D,
    geom: WcsGeom,
    energy_axis: MapAxis,
    energy_true_axis: MapAxis,
    *,
    pointing: tuple[float, float],
) -> np.ndarray:
    """Energy-dispersion kernel per (true energy, reco energy, pixel) on a coarse grid.

    Returns shape (n_energy_true, n_energy, ny, nx): the probability that a photon at the
    centre of true bin j is reconstructed in reco bin i.
    """
    off = pixel_offsets(geom, pointing)
    return edisp.kernel(energy_true_axis, energy_axis, off)


# ------------------------------------------------------------------------ safe mask


def energy_mask(energy_axis: MapAxis, emin: float | None = None, emax: float | None = None) -> np.ndarray:
    """Reco-energy bins fully inside [emin, emax] (TeV; None = open), shape (n_energy,)."""
    lo, hi = energy_axis.lo, energy_axis.hi
    mask = np.ones(energy_axis.nbin, dtype=bool)
    if emin is not None:
        mask &= lo >= emin * (1 - 1e-6)
    if emax is not None:
        mask &= hi <= emax * (1 + 1e-6)
    return mask


def aeff_max_threshold(aeff: EffectiveArea2D, *, percent: float, offset: float = 0.0) -> float:
    """Lowest energy (TeV) where A_eff at ``offset`` exceeds ``percent`` % of its maximum.

    Evaluated on the IRF's true-energy edges, as gammapy's ``aeff-max`` safe-mask method.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"aeff percent must be in [0, 100], got {percent}")
    e = aeff.energy_true.edges
    values = aeff.evaluate(e, offset)
    if not np.any(values > 0):
        raise ValueError(f"effective area is zero at offset {offset} deg: no aeff-max threshold")
    return float(e[values > percent / 100.0 * values.max()].min())


def edisp_bias_threshold(edisp: EnergyDispersion2D, *, percent: float, offset: float = 0.0) -> float:
    """Lowest true energy (TeV) above which |bias| stays below ``percent`` % at ``offset``.

    Scans the IRF's true-energy nodes from the top down to the first node with a larger
    bias (or no data), and interpolates the crossing in log energy.
    """
    if not percent > 0:
        raise ValueError(f"bias percent must be > 0, got {percent}")
    e = edisp.energy_true.center
    b = np.abs(edisp.bias(e, offset))
    ok = np.isfinite(b) & (b <= percent / 100.0)
    if not np.any(ok):
        raise ValueError(f"energy bias exceeds {percent}% at all energies (offset {offset} deg)")
    top = int(np.flatnonzero(ok).max())
    bad = np.flatnonzero(~ok[: top + 1])
    if bad.size == 0:
        return float(edisp.energy_true.edges[0])
    j = int(bad.max())  # last bad node below a good stretch
    if not np.isfinite(b[j]):
        return float(e[j + 1])
    t = (b[j] - percent / 100.0) / (b[j] - b[j + 1])
    return float(np.exp(np.log(e[j]) + t * (np.log(e[j + 1]) - np.log(e[j]))))


def bkg_peak_threshold(background: np.ndarray, energy_axis: MapAxis) -> float:
    """Lower edge (TeV) of the reco bin where the (spatially summed) background peaks."""
    spectrum = np.asarray(background, dtype=float).reshape(energy_axis.nbin, -1).sum(axis=1)
    return float(energy_axis.lo[int(np.argmax(spectrum))])


def check_safe_mask_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of safe-mask method names."""
    unknown = [m for m in methods if m not in SAFE_MASK_METHODS]
    if unknown:
        raise ValueError(f"unknown safe-mask method(s) {unknown}; known: {list(SAFE_MASK_METHODS)}")
    return tuple(methods)
