"""Spatial models with gammapy's tags, parameter names, units and defaults.

Angles are degrees; ``evaluate`` returns the surface brightness in sr⁻¹ (normalised so
that the integral over the sky is 1).  :func:`integrate_geom` turns a model into the
fraction of its flux in each pixel of a :class:`~gpscat.core.geom.WcsGeom`, sampling each
pixel on a sub-grid fine enough for the model's smallest scale.

Elongated models (``e``, ``phi``) follow gammapy: the major semi-axis is the size
parameter, the minor one ``size·sqrt(1-e²)``, and ``phi`` is the position angle of the
major axis, counted from north through east.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.special import erf, gamma

from gpscat.core.geom import Map, WcsGeom, angular_separation, to_frame
from gpscat.models.parameters import ModelBase, Parameter, par

__all__ = [
    "DiskSpatialModel",
    "GaussianSpatialModel",
    "GeneralizedGaussianSpatialModel",
    "PointSpatialModel",
    "Shell2SpatialModel",
    "ShellSpatialModel",
    "SpatialModel",
    "TemplateSpatialModel",
    "integrate_geom",
    "oversampling_factor",
    "position_angle",
]

_MAX_OVERSAMPLE = 16
_EDGE_95 = 2.326174307353347  # erf argument scale: the edge drops 95% → 5% over edge_width


def position_angle(lon0, lat0, lon, lat):
    """Position angle (rad, north through east) of (lon, lat) seen from (lon0, lat0), deg in."""
    l0, b0, l1, b1 = (np.radians(a) for a in (lon0, lat0, lon, lat))
    dl = l1 - l0
    return np.arctan2(np.sin(dl) * np.cos(b1), np.cos(b0) * np.sin(b1) - np.sin(b0) * np.cos(b1) * np.cos(dl))


def _elliptical_radius(lon, lat, lon_0, lat_0, major, e, phi):
    """Radius (deg) of the ellipse boundary in the direction of each point, and the minor axis."""
    minor = major * np.sqrt(1.0 - e**2)
    if e == 0:
        return np.full(np.shape(lon), float(major)), minor
    dphi = np.radians(phi) - position_angle(lon_0, lat_0, lon, lat)
    den = np.hypot(major * np.sin(dphi), minor * np.cos(dphi))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, major * minor / den, major)
    return r, minor


@dataclass(eq=False)
class SpatialModel(ModelBase):
    """Base of the spatial models: a position (``lon_0``, ``lat_0``) in ``frame``."""

    tag = ("SpatialModel",)
    is_point = False
    frame: str = "icrs"

    def __post_init__(self):
        super().__post_init__()
        if self.frame not in ("icrs", "galactic"):
            raise ValueError(f"spatial model frame must be 'icrs' or 'galactic', got {self.frame!r}")

    @property
    def position(self) -> tuple[float, float]:
        """(lon_0, lat_0) in deg, in the model's frame."""
        return self.lon_0.value, self.lat_0.value

    def position_in(self, frame: str) -> tuple[float, float]:
        lon, lat = to_frame(self.lon_0.value, self.lat_0.value, self.frame, frame)
        return float(lon), float(lat)

    def __call__(self, lon, lat) -> np.ndarray:
        """Surface brightness (sr⁻¹) at (lon, lat) deg in the model's frame."""
        return self.evaluate(np.asarray(lon, float), np.asarray(lat, float), **self.values())

    def evaluate_sampled(self, lon, lat, *, sample_size: float) -> np.ndarray:
        """Like ``__call__`` on a grid of spacing ``sample_size`` (deg); edges may be softened."""
        return self(lon, lat)

    @property
    def evaluation_radius(self) -> float:
        """Radius (deg) outside which the model is negligible."""
        return 0.0

    @property
    def sample_size(self) -> float:
        """Largest sampling step (deg) that resolves the model."""
        return np.inf


@dataclass(eq=False)
class PointSpatialModel(SpatialModel):
    """A point source; maps evaluate it through the PSF (see :mod:`gpscat.core.npred`)."""

    tag = ("PointSpatialModel", "point")
    is_point = True
    lon_0: Parameter = par("lon_0", 0.0, "deg")
    lat_0: Parameter = par("lat_0", 0.0, "deg", min=-90, max=90)

    @staticmethod
    def evaluate(lon, lat, lon_0, lat_0):
        """Zero everywhere (a delta function has no finite surface brightness)."""
        return np.zeros(np.broadcast(lon, lat).shape)


@dataclass(eq=False)
class GaussianSpatialModel(SpatialModel):
    """Gaussian; symmetric case normalised exactly on the sphere (as gammapy)."""

    tag = ("GaussianSpatialModel", "gauss")
    lon_0: Parameter = par("lon_0", 0.0, "deg")
    lat_0: Parameter = par("lat_0", 0.0, "deg", min=-90, max=90)
    sigma: Parameter = par("sigma", 1.0, "deg", min=0)
    e: Parameter = par("e", 0.0, min=0, max=1, frozen=True)
    phi: Parameter = par("phi", 0.0, "deg", min=-180, max=180, frozen=True)

    @staticmethod
    def evaluate(lon, lat, lon_0, lat_0, sigma, e, phi):
        sep = np.radians(angular_separation(lon, lat, lon_0, lat_0))
        if e == 0:
            a = 1.0 - np.cos(np.radians(sigma))
            norm = 1.0 / (4 * np.pi * a * -np.expm1(-1.0 / a))
        else:
            r_eff, minor = _elliptical_radius(lon, lat, lon_0, lat_0, sigma, e, phi)
            a = 1.0 - np.cos(np.radians(r_eff))
            norm = 1.0 / (2 * np.pi * np.radians(sigma) * np.radians(minor))
        return norm * np.exp(-0.5 * (1.0 - np.cos(sep)) / a)

    @property
    def evaluation_radius(self) -> float:
        return 5.0 * self.sigma.value

    @property
    def sample_size(self) -> float:
        return self.sigma.value * np.sqrt(1 - self.e.value**2) / 3.0


@dataclass(eq=False)
class GeneralizedGaussianSpatialModel(SpatialModel):
    """exp(-(r/r_eff)^(1/eta)): disk-like as eta → 0, Gaussian at 0.5, Laplace at 1."""

    tag = ("GeneralizedGaussianSpatialModel", "gauss-general")
    lon_0: Parameter = par("lon_0", 0.0, "deg")
    lat_0: Parameter = par("lat_0", 0.0, "deg", min=-90, max=90)
    r_0: Parameter = par("r_0", 1.0, "deg")
    eta: Parameter = par("eta", 0.5, min=0.01, max=1.0)
    e: Parameter = par("e", 0.0, min=0, max=1, frozen=True)
    phi: Parameter = par("phi", 0.0, "deg", min=-180, max=180, frozen=True)

    @staticmethod
    def evaluate(lon, lat, lon_0, lat_0, r_0, eta, e, phi):
        sep = angular_separation(lon, lat, lon_0, lat_0)
        r_eff, minor = _elliptical_radius(lon, lat, lon_0, lat_0, r_0, e, phi)
        norm = 1.0 / (2 * np.pi * np.radians(minor) * np.radians(r_0) * eta * gamma(2 * eta))
        return norm * np.exp(-((sep / r_eff) ** (1.0 / eta)))

    @property
    def evaluation_radius(self) -> float:
        return self.r_0.value * (1 + 8 * self.eta.value)

    @property
    def sample_size(self) -> float:
        return self.r_0.value / (3 + 8 * self.eta.value) / (1 + self.e.value)


@dataclass(eq=False)
class DiskSpatialModel(SpatialModel):
    """Uniform (elliptical) disk with an erf edge of relative 95%→5% width ``edge_width``."""

    tag = ("DiskSpatialModel", "disk")
    lon_0: Parameter = par("lon_0", 0.0, "deg")
    lat_0: Parameter = par("lat_0", 0.0, "deg", min=-90, max=90)
    r_0: Parameter = par("r_0", 1.0, "deg", min=0)
    e: Parameter = par("e", 0.0, min=0, max=1, frozen=True)
    phi: Parameter = par("phi", 0.0, "deg", min=-180, max=180, frozen=True)
    edge_width: Parameter = par("edge_width", 0.01, min=0, max=1, frozen=True)

    @staticmethod
    def area(r_0: float, e: float) -> float:
        """Solid angle (sr) inside the spherical ellipse of semi-axes r_0, r_0·sqrt(1-e²)."""
        if e == 0:
            return 2 * np.pi * (1 - np.cos(np.radians(r_0)))
        psi = np.linspace(0, 2 * np.pi, 721)[:-1]
        a, b = r_0, r_0 * np.sqrt(1 - e**2)
        r = a * b / np.hypot(a * np.sin(psi), b * np.cos(psi))
        return float(np.mean(1 - np.cos(np.radians(r))) * 2 * np.pi)

    @staticmethod
    def evaluate(lon, lat, lon_0, lat_0, r_0, e, phi, edge_width):
        sep = angular_separation(lon, lat, lon_0, lat_0)
        r_eff, _ = _elliptical_radius(lon, lat, lon_0, lat_0, r_0, e, phi)
        norm = 1.0 / DiskSpatialModel.area(r_0, e)
        if edge_width <= 0:
            return norm * (sep <= r_eff)
        return norm * 0.5 * (1 - erf(_EDGE_95 * (sep - r_eff) / (r_eff * edge_width)))

    def evaluate_sampled(self, lon, lat, *, sample_size: float) -> np.ndarray:
        # soften the edge to the sampling step so that the pixel integral is smooth in r_0
        p = self.values()
        p["edge_width"] = float(np.hypot(p["edge_width"], sample_size / max(p["r_0"], 1e-12)))
        return self.evaluate(np.asarray(lon, float), np.asarray(lat, float), **p)

    @property
    def evaluation_radius(self) -> float:
        return 1.1 * self.r_0.value * (1 + self.edge_width.value)

    @property
    def sample_size(self) -> float:
        return self.r_0.value * np.sqrt(1 - self.e.value**2) * (1 - self.edge_width.value) / 10.0


def _shell_profile(sep, r_in, r_out):
    """Projected uniform spherical shell (sr⁻¹), radii in deg (flat-sky norm as gammapy)."""
    s, ri, ro = np.radians(sep), np.radians(r_in), np.radians(r_out)
    norm = 3.0 / (2 * np.pi * (ro**3 - ri**3))
    outer = np.sqrt(np.clip(ro**2 - s**2, 0, None))
    inner = np.sqrt(np.clip(ri**2 - s**2, 0, None))
    return norm * (outer - inner)


def _sphere_enclosed(r, radius):
    """Fraction of a projected uniform sphere of ``radius`` within projected radius ``r``."""
    x = np.clip(r / radius, 0, 1) if radius > 0 else np.ones_like(r)
    return 1.0 - (1.0 - x**2) ** 1.5


def _shell_sampled(sep, r_in, r_out, h):
    """Shell brightness (sr⁻¹) averaged over radial bins of width ``h`` (deg) around ``sep``.

    From the enclosed flux, which is smooth where the profile has infinite slopes (the
    shell edges): pixel sums of this are smooth in the radii and the position.
    """
    w_out, w_in = r_out**3, max(r_in, 0.0) ** 3
    def enclosed(r):
        return (w_out * _sphere_enclosed(r, r_out) - w_in * _sphere_enclosed(r, max(r_in, 0.0))) / (w_out - w_in)
    r1 = np.clip(sep - 0.5 * h, 0, None)
    r2 = r1 + h
    area = np.pi * (np.radians(r2) ** 2 - np.radians(r1) ** 2)
    return (enclosed(r2) - enclosed(r1)) / area


@dataclass(eq=False)
class ShellSpatialModel(SpatialModel):
    """Projected shell of inner radius ``radius`` and thickness ``width``."""

    tag = ("ShellSpatialModel", "shell")
    lon_0: Parameter = par("lon_0", 0.0, "deg")
    lat_0: Parameter = par("lat_0", 0.0, "deg", min=-90, max=90)
    radius: Parameter = par("radius", 1.0, "deg")
    width: Parameter = par("width", 0.2, "deg")

    @staticmethod
    def evaluate(lon, lat, lon_0, lat_0, radius, width):
        return _shell_profile(angular_separation(lon, lat, lon_0, lat_0), radius, radius + width)

    def evaluate_sampled(self, lon, lat, *, sample_size: float) -> np.ndarray:
        sep = angular_separation(lon, lat, self.lon_0.value, self.lat_0.value)
        return _shell_sampled(sep, self.radius.value, self.radius.value + self.width.value, sample_size)

    @property
    def evaluation_radius(self) -> float:
        return self.radius.value + self.width.value

    @property
    def sample_size(self) -> float:
        return max(self.width.value, 1e-4) / 3.0


@dataclass(eq=False)
class Shell2SpatialModel(SpatialModel):
    """Projected shell of outer radius ``r_0`` and relative thickness ``eta``."""

    tag = ("Shell2SpatialModel", "shell2")
    lon_0: Parameter = par("lon_0", 0.0, "deg")
    lat_0: Parameter = par("lat_0", 0.0, "deg", min=-90, max=90)
    r_0: Parameter = par("r_0", 1.0, "deg")
    eta: Parameter = par("eta", 0.2, min=0.02, max=1)

    @staticmethod
    def evaluate(lon, lat, lon_0, lat_0, r_0, eta):
        return _shell_profile(angular_separation(lon, lat, lon_0, lat_0), (1 - eta) * r_0, r_0)

    def evaluate_sampled(self, lon, lat, *, sample_size: float) -> np.ndarray:
        sep = angular_separation(lon, lat, self.lon_0.value, self.lat_0.value)
        return _shell_sampled(sep, (1 - self.eta.value) * self.r_0.value, self.r_0.value, sample_size)

    @property
    def evaluation_radius(self) -> float:
        return self.r_0.value

    @property
    def sample_size(self) -> float:
        return max(self.eta.value * self.r_0.value, 1e-4) / 3.0


@dataclass(eq=False)
class TemplateSpatialModel(SpatialModel):
    """A sky map (sr⁻¹), optionally shifted so that its centre sits at (lon_0, lat_0).

    ``map`` is a 2D :class:`~gpscat.core.geom.Map` (an ``energy_true`` axis is allowed: the
    template is then evaluated at the nearest log-energy node).  With ``normalize`` the
    map is scaled so that it integrates to 1 over its own grid, as gammapy does.
    """

    tag = ("TemplateSpatialModel", "template")
    lon_0: Parameter = par("lon_0", np.nan, "deg", frozen=True)
    lat_0: Parameter = par("lat_0", np.nan, "deg", min=-90, max=90, frozen=True)
    map: Map | None = None
    filename: str | None = None
    normalize: bool = True
    unit: str = "sr-1"

    def __post_init__(self):
        if self.map is None:
            raise ValueError("TemplateSpatialModel needs a map")
        self.frame = self.map.geom.frame
        super().__post_init__()
        if self.normalize:
            # a brightness map (sr⁻¹) is scaled to integrate to 1 (idempotent); other maps are
            # per-pixel weights, divided by their sum and the pixel solid angle (as gammapy)
            data = np.asarray(self.map.data, dtype=float)
            omega = self.map.geom.solid_angle()
            weights = data * omega if self.map.unit.replace(" ", "") in ("sr-1", "1/sr") else data
            total = weights.sum(axis=(-2, -1), keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                data = np.where(total > 0, weights / total, 0.0) / omega
            self.map = self.map.copy(data=data, unit="sr-1")
        self.unit = self.map.unit or "sr-1"
        lon_c, lat_c = self.map.geom.center_coord
        if np.isnan(self.lon_0.value):
            self.lon_0.value = lon_c
        if np.isnan(self.lat_0.value):
            self.lat_0.value = lat_c

    @property
    def energy_nodes(self) -> np.ndarray | None:
        axes = [a for a in self.map.axes if a.name == "energy_true"]
        return axes[0].center if axes else None

    def __call__(self, lon, lat, energy=None) -> np.ndarray:
        lon_c, lat_c = self.map.geom.center_coord
        dlon = (self.lon_0.value - lon_c + 180.0) % 360.0 - 180.0
        x, y = self.map.geom.coord_to_pix(np.asarray(lon, float) - dlon, np.asarray(lat, float) - (self.lat_0.value - lat_c))
        planes = self.map.data.reshape((-1,) + self.map.geom.shape)
        nodes = self.energy_nodes
        if nodes is not None and energy is not None:
            idx = np.abs(np.log(nodes)[:, None] - np.log(np.atleast_1d(energy))[None, :]).argmin(axis=0)
            planes = planes[idx]
        elif nodes is not None:
            planes = planes.mean(axis=0, keepdims=True)
        out = [map_coordinates(p, [np.ravel(y), np.ravel(x)], order=1, mode="constant", cval=0.0) for p in planes]
        out = np.clip(np.array(out), 0, None).reshape((len(planes),) + np.shape(x))
        return out[0] if energy is None or nodes is None else out

    @property
    def evaluation_radius(self) -> float:
        w = self.map.geom.width
        return 0.5 * float(np.hypot(*w))

    @property
    def sample_size(self) -> float:
        return self.map.geom.binsz


def oversampling_factor(model: SpatialModel, binsz: float) -> int:
    """Sub-pixels per pixel and axis so that the sub-pixel size resolves the model."""
    size = model.sample_size
    if not np.isfinite(size) or size <= 0:
        return 1
    return int(np.clip(np.ceil(binsz / size), 1, _MAX_OVERSAMPLE))


def integrate_geom(
    model: SpatialModel,
    geom: WcsGeom,
    *,
    oversample: int | None = None,
    energy=None,
    fine: WcsGeom | None = None,
) -> np.ndarray:
    """Fraction of the model's flux in each pixel of ``geom``: shape (ny, nx).

    Each pixel is sampled on ``oversample``² sub-pixels (default: :func:`oversampling_factor`)
    and the surface brightness times the sub-pixel solid angle is summed.  Templates with
    an energy axis and ``energy`` given return (n_energy, ny, nx).  Point sources put all
    their flux in the pixel that contains them (use the PSF-aware prediction for maps).
    ``fine`` is ``geom.upsample(oversample)`` kept by a caller that integrates often on the
    same grid (its coordinates and solid angles are cached on the grid object).
    """
    if model.is_point:
        out = np.zeros(geom.shape)
        ix, iy, inside = geom.coord_to_idx(model.lon_0.value, model.lat_0.value, model.frame)
        if inside:
            out[int(iy), int(ix)] = 1.0
        return out
    f = oversampling_factor(model, geom.binsz) if oversample is None else int(oversample)
    if f < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    if fine is None:
        fine = geom.upsample(f) if f > 1 else geom
    elif fine.npix != (geom.npix[0] * f, geom.npix[1] * f):
        raise ValueError(f"fine grid {fine.npix} is not geom {geom.npix} upsampled {f} times")
    lon, lat = fine.get_coord(frame=model.frame)
    if isinstance(model, TemplateSpatialModel) and energy is not None:
        values = model(lon, lat, energy)
    else:
        values = model.evaluate_sampled(lon, lat, sample_size=fine.binsz)
    values = values * fine.solid_angle()
    ny, nx = geom.shape
    return values.reshape(values.shape[:-2] + (ny, f, nx, f)).sum(axis=(-3, -1))

