"""Source models for the grouped fits: start models from seeds, shape conversions, bounds.

Spatial kinds are gammapy's short tags: ``point``, ``gauss``, ``disk``, ``shell``,
``gauss-general`` (the generalised Gaussian, "Sersic-like", of the GPS prototype);
spectral kinds ``pl``, ``lp``, ``ecpl``.  A conversion keeps the position and the 68 %
containment radius of the model (without PSF) — :func:`model_r68` — so that a candidate
shape starts where the previous fit left the source:

============== ============================ =========================================
kind           size parameter               68 % radius R (shells: outer radius)
============== ============================ =========================================
point          —                            0
gauss          sigma                        1.5096 sigma
disk           r_0                          sqrt(0.68) r_0
gauss-general  r_0 (eta)                    r_0 · P⁻¹(2η, 0.68)^η   (η = 0.5: Gaussian)
shell          radius, width                radius + width  (start: width = R / 4)
============== ============================ =========================================

Spectral conversions keep the amplitude at the reference energy and the slope there
(LogParabola alpha, ExpCutoffPowerLaw index = the power-law index) and start the
curvature small.  Bounds are set on every free parameter (positions within
``max_shift`` of the start, sizes within ``[min_size, max_size]``, indexes in [0.5, 5]),
so that fits of faint sources stay in the region of interest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gpscat.core.association import R68_PER_SIGMA, extent_radius
from gpscat.core.geom import WcsGeom
from gpscat.models import spatial as sm
from gpscat.models import spectral as sp
from gpscat.models.sky import SkyModel

__all__ = [
    "SPATIAL_KINDS",
    "SPECTRAL_KINDS",
    "ShapeLimits",
    "circle_fraction",
    "convert_spatial",
    "convert_spectral",
    "copy_source",
    "make_spatial",
    "make_spectral",
    "model_r68",
    "set_position_bounds",
    "spatial_kind",
    "spectral_kind",
    "wrap_lon",
]

SPATIAL_KINDS = ("point", "gauss", "disk", "shell", "gauss-general")
SPECTRAL_KINDS = ("pl", "lp", "ecpl")
_SPATIAL = {"point": sm.PointSpatialModel, "gauss": sm.GaussianSpatialModel, "disk": sm.DiskSpatialModel,
            "shell": sm.ShellSpatialModel, "gauss-general": sm.GeneralizedGaussianSpatialModel}
_SPECTRAL = {"pl": sp.PowerLawSpectralModel, "lp": sp.LogParabolaSpectralModel, "ecpl": sp.ExpCutoffPowerLawSpectralModel}
_DISK_R68 = float(np.sqrt(0.68))


@dataclass(frozen=True)
class ShapeLimits:
    """Bounds of the free shape parameters (deg): sizes and the position shift from the start."""

    min_size: float = 0.01
    max_size: float = 1.5
    max_shift: float = 0.3

    def __post_init__(self):
        if not 0 < self.min_size < self.max_size:
            raise ValueError(f"need 0 < min_size < max_size, got {self.min_size}, {self.max_size}")
        if not self.max_shift > 0:
            raise ValueError(f"max_shift must be > 0, got {self.max_shift}")


def wrap_lon(lon, center: float = 0.0) -> np.ndarray:
    """Longitudes (deg) wrapped into (center − 180, center + 180]: continuous around ``center``."""
    return center - ((center - np.asarray(lon, dtype=float) + 180.0) % 360.0 - 180.0)


def spatial_kind(model) -> str:
    """Short tag of a spatial model (``point``, ``gauss``, ...)."""
    return model.tag[1] if len(model.tag) > 1 else model.tag[0]


def spectral_kind(model) -> str:
    return model.tag[1] if len(model.tag) > 1 else model.tag[0]


def model_r68(spatial) -> float:
    """68 % containment radius (deg) of a spatial model without PSF (shells: outer radius)."""
    kind = spatial_kind(spatial)
    elong = np.sqrt(np.sqrt(1.0 - spatial.e.value**2)) if hasattr(spatial, "e") else 1.0  # circle of equal area
    if kind == "point":
        return 0.0
    if kind == "gauss":
        return float(extent_radius("gauss", spatial.sigma.value * elong))
    if kind == "disk":
        return float(extent_radius("disk", spatial.r_0.value * elong))
    if kind == "gauss-general":
        return float(extent_radius("gauss-general", spatial.r_0.value * elong, eta=spatial.eta.value))
    if kind == "shell":
        return float(spatial.radius.value + spatial.width.value)
    if kind == "shell2":
        return float(spatial.r_0.value)
    raise ValueError(f"no 68% radius for spatial model {type(spatial).__name__}")


def circle_fraction(spatial, radius: float, psf_sigma: float) -> float:
    """Fraction of the flux of ``spatial``, convolved with a Gaussian PSF of ``psf_sigma``
    (deg), within ``radius`` (deg) of the model's centre.

    On a tangent-plane :class:`~gpscat.core.geom.WcsGeom` around the centre (a few hundred
    pixels a side, finer than the PSF, the radius and the model's own structure); points
    analytically.  What a correlated flux map
    sampled at a source's centre sees of it: a shell seen through a 0.2° top-hat at its
    centre, for example, shows a small part of its flux.
    """
    if not radius > 0:
        return 0.0
    psf_sigma = max(float(psf_sigma), 0.0)
    if spatial_kind(spatial) == "point":
        return float(1.0 - np.exp(-0.5 * (radius / psf_sigma) ** 2)) if psf_sigma > 0 else 1.0
    half = max(spatial.evaluation_radius, radius) + 4.0 * psf_sigma
    step = min(spatial.sample_size, radius / 10.0, psf_sigma / 3.0 if psf_sigma > 0 else np.inf)
    step = max(step, half / 200.0)
    geom = WcsGeom.create(spatial.position, (2 * np.ceil(half / step) + 1) * step, step, frame=spatial.frame, proj="TAN")
    image = np.nan_to_num(spatial.evaluate_sampled(*geom.get_coord(), sample_size=step)) * geom.solid_angle()
    if psf_sigma > 0:
        image = ndimage.gaussian_filter(image, psf_sigma / step, mode="constant")
    total = image.sum()
    return float(image[geom.separation(*spatial.position) <= radius].sum() / total) if total > 0 else 0.0


def make_spatial(kind: str, lon: float, lat: float, r68: float, *, limits: ShapeLimits, frame: str = "galactic",
                 shell_width: float | None = None):
    """A spatial model of ``kind`` at (lon, lat) whose 68 % radius is ``r68`` (deg).

    Sizes are clipped to ``limits``; shells get ``width = shell_width`` (default r68 / 4)
    and ``radius = r68 − width``.  Positions are bounded within ``limits.max_shift``.
    """
    if kind not in _SPATIAL:
        raise ValueError(f"unknown spatial kind {kind!r}; known: {SPATIAL_KINDS}")
    r68 = float(np.nan_to_num(r68, nan=0.0))
    lo, hi = limits.min_size, limits.max_size
    if kind == "point":
        model = sm.PointSpatialModel(lon_0=lon, lat_0=lat, frame=frame)
    elif kind == "gauss":
        model = sm.GaussianSpatialModel(lon_0=lon, lat_0=lat, sigma=np.clip(r68 / R68_PER_SIGMA, lo, hi), frame=frame)
    elif kind == "disk":
        model = sm.DiskSpatialModel(lon_0=lon, lat_0=lat, r_0=np.clip(r68 / _DISK_R68, lo, hi), frame=frame)
    elif kind == "gauss-general":
        # eta = 0.5 is the Gaussian: r_0 = sqrt(2) sigma
        model = sm.GeneralizedGaussianSpatialModel(lon_0=lon, lat_0=lat, r_0=np.clip(r68 / R68_PER_SIGMA * np.sqrt(2), lo, hi),
                                                   eta=0.5, frame=frame)
        model.eta.min, model.eta.max = 0.1, 1.0
    else:
        outer = max(r68, 2 * lo)
        width = float(np.clip(shell_width if shell_width and np.isfinite(shell_width) else outer / 4, lo, outer / 2))
        model = sm.ShellSpatialModel(lon_0=lon, lat_0=lat, radius=np.clip(outer - width, lo, hi), width=width, frame=frame)
        model.width.min, model.width.max = lo, hi
    for name in ("sigma", "r_0", "radius"):
        if hasattr(model, name):
            p = getattr(model, name)
            p.min, p.max = lo, hi
    set_position_bounds(model, lon, lat, limits.max_shift)
    return model


def set_position_bounds(model, lon: float, lat: float, max_shift: float) -> None:
    """Bound ``lon_0``/``lat_0`` to within ``max_shift`` (deg, lon scaled by 1/cos lat) of (lon, lat)."""
    dlon = max_shift / max(np.cos(np.radians(lat)), 0.05)
    model.lon_0.min, model.lon_0.max = lon - dlon, lon + dlon
    model.lat_0.min, model.lat_0.max = max(lat - max_shift, -90.0), min(lat + max_shift, 90.0)


def convert_spatial(spatial, kind: str, *, limits: ShapeLimits):
    """A new spatial model of ``kind`` at the position and 68 % radius of ``spatial``.

    The position bounds of ``spatial`` are kept (they refer to the seed, not the fit).
    """
    lon, lat = spatial.lon_0.value, spatial.lat_0.value
    width = spatial.width.value if spatial_kind(spatial) == "shell" else None
    r68 = model_r68(spatial)
    if spatial_kind(spatial) == "point":
        r68 = max(r68, 3 * limits.min_size)
    new = make_spatial(kind, lon, lat, r68, limits=limits, frame=spatial.frame, shell_width=width)
    for name in ("lon_0", "lat_0"):
        old, p = getattr(spatial, name), getattr(new, name)
        p.min, p.max = old.min, old.max
    return new


def make_spectral(kind: str, *, amplitude: float, index: float, reference: float = 1.0):
    """A spectral model of ``kind`` with dN/dE(reference) = amplitude and local slope ``index``."""
    if kind not in _SPECTRAL:
        raise ValueError(f"unknown spectral kind {kind!r}; known: {SPECTRAL_KINDS}")
    amplitude = float(amplitude)
    index = float(np.clip(np.nan_to_num(index, nan=2.3), 1.0, 4.5))
    if kind == "pl":
        model = sp.PowerLawSpectralModel(index=index, amplitude=amplitude, reference=reference)
        model.index.min, model.index.max = 0.5, 5.0
    elif kind == "lp":
        model = sp.LogParabolaSpectralModel(amplitude=amplitude, reference=reference, alpha=index, beta=0.05)
        model.alpha.min, model.alpha.max = 0.5, 5.0
        model.beta.min, model.beta.max = -0.2, 1.0
    else:
        model = sp.ExpCutoffPowerLawSpectralModel(index=max(index - 0.3, 0.6), amplitude=amplitude, reference=reference, lambda_=0.05)
        model.index.min, model.index.max = 0.5, 5.0
        model.lambda_.min, model.lambda_.max = 0.0, 10.0
    model.amplitude.min = 0.0
    return model


def convert_spectral(spectral, kind: str):
    """A new spectral model of ``kind`` with the amplitude and local slope of ``spectral`` at 1 TeV."""
    ref = 1.0
    amp = float(spectral(ref))
    e1, e2 = ref / 1.05, ref * 1.05
    slope = -float(np.log(spectral(e2) / spectral(e1)) / np.log(e2 / e1)) if amp > 0 else 2.3
    new = make_spectral(kind, amplitude=max(amp, 1e-16), index=slope, reference=ref)
    if kind == "ecpl":  # start near the power law: the cutoff far out, the index at the slope
        new.index.value = float(np.clip(slope - 0.05, 0.6, 4.9))
        new.lambda_.value = 0.05
    return new


def copy_source(model: SkyModel, *, spatial=None, spectral=None) -> SkyModel:
    """A new SkyModel with the same name and new (or copied) spatial and spectral parts."""
    return SkyModel(spectral if spectral is not None else model.spectral_model.copy(),
                    spatial if spatial is not None else model.spatial_model.copy(), name=model.name,
                    datasets_names=model.datasets_names)

