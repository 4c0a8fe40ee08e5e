"""Random skies of injected sources for training the seed classifier.

:func:`random_sky` draws point-like, extended (Gaussian, disk) and shell sources in a
region, with sizes, spectral indexes and fluxes spread around the detection threshold,
from one explicit :class:`numpy.random.Generator`.  :func:`sky_truth` summarises the
injected models (position, true class, size scale) for matching seeds to them
(:func:`gpscat.core.classify.match_seeds`).

Fluxes are drawn through a *nominal significance* ``s`` (log-uniform in
``significance``): the amplitude at 1 TeV is ``amplitude_ref × s / 10`` times the
background-limited penalty of spreading the flux over a larger area,
``sqrt(1 + (R / psf_radius)²)`` with ``R`` the source's 68 % containment radius.  The
scaling is rough by design — it only has to put the population across the threshold; the
labels never use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from gpscat.core.geom import angular_separation, to_frame
from gpscat.models.sky import SkyModel
from gpscat.models.spatial import (
    DiskSpatialModel,
    GaussianSpatialModel,
    PointSpatialModel,
    ShellSpatialModel,
)
from gpscat.models.spectral import PowerLawSpectralModel

__all__ = ["CLASS_OF_MORPHOLOGY", "SkyParams", "match_radius", "random_sky", "sky_truth"]

#: injected morphology → true class of its seeds
CLASS_OF_MORPHOLOGY = {"point": "point", "gauss": "extended", "disk": "extended", "shell": "shell"}
#: 68 % containment radius per size parameter (no PSF): Gaussian 1.5096 sigma, disk 0.8246 r
_R68 = {"point": 0.0, "gauss": 1.5096, "disk": 0.8246}


@dataclass(frozen=True)
class SkyParams:
    """Distributions of the injected sources (angles deg, amplitude cm⁻² s⁻¹ TeV⁻¹ at 1 TeV).

    Attributes
    ----------
    n_sources : int
        Sources per sky.
    lon_range, lat_range : (float, float)
        Region (Galactic, deg; longitudes may be negative) where source centres are drawn.
    fractions : mapping
        Relative frequency of ``point``, ``gauss``, ``disk``, ``shell``.
    gauss_sigma, disk_radius, shell_radius : (float, float)
        Log-uniform ranges of the size parameters.
    shell_width : (float, float)
        Uniform range of the shell width as a fraction of its radius.
    max_elongation : float
        Gaussians get an eccentricity ``e`` uniform in [0, max_elongation] (half of them; the
        others are symmetric).
    index : (float, float)
        Mean and spread of the (clipped) normal distribution of power-law indexes.
    significance : (float, float)
        Log-uniform range of the nominal significance that sets the flux.
    amplitude_ref : float
        Amplitude at 1 TeV of a point source of nominal significance 10.
    psf_radius : float
        Resolution (deg) in the flux penalty of extended sources.
    min_separation : float
        Centres are at least ``min_separation + 0.5 (R_i + R_j)`` apart (R: outer radius).
    """

    n_sources: int = 8
    lon_range: tuple[float, float] = (-1.5, 1.5)
    lat_range: tuple[float, float] = (-0.8, 0.8)
    fractions: Mapping[str, float] = None  # type: ignore[assignment]
    gauss_sigma: tuple[float, float] = (0.08, 0.4)
    disk_radius: tuple[float, float] = (0.1, 0.4)
    shell_radius: tuple[float, float] = (0.2, 0.6)
    shell_width: tuple[float, float] = (0.1, 0.3)
    max_elongation: float = 0.6
    index: tuple[float, float] = (2.4, 0.3)
    significance: tuple[float, float] = (3.0, 40.0)
    amplitude_ref: float = 6.0e-13
    psf_radius: float = 0.08
    min_separation: float = 0.2

    def __post_init__(self):
        if self.fractions is None:
            object.__setattr__(self, "fractions", {"point": 0.35, "gauss": 0.3, "disk": 0.1, "shell": 0.25})
        unknown = set(self.fractions) - set(CLASS_OF_MORPHOLOGY)
        if unknown:
            raise ValueError(f"fractions: unknown morphologies {sorted(unknown)}; known {sorted(CLASS_OF_MORPHOLOGY)}")
        if not sum(self.fractions.values()) > 0 or min(self.fractions.values()) < 0:
            raise ValueError(f"fractions must be >= 0 with a positive sum, got {dict(self.fractions)}")
        if self.n_sources < 0:
            raise ValueError(f"n_sources must be >= 0, got {self.n_sources}")
        for name in ("gauss_sigma", "disk_radius", "shell_radius", "shell_width", "significance", "lon_range", "lat_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi or (name not in ("lon_range", "lat_range") and lo <= 0):
                raise ValueError(f"{name} must be an increasing positive range, got {(lo, hi)}")


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _outer_radius(kind: str, size: float, width: float) -> float:
    return {"point": 0.0, "gauss": 2.0 * size, "disk": size, "shell": size + width}[kind]


def random_sky(rng: np.random.Generator, params: SkyParams, *, prefix: str = "inj") -> list[SkyModel]:
    """Draw ``params.n_sources`` sources (gammapy-style sky models in the Galactic frame).

    Centres are drawn uniformly in the region and rejected when closer than the minimum
    separation to an earlier source (at most 200 tries each; a source that never fits is
    dropped, so crowded settings give fewer sources).  Model names are
    ``<prefix>-<k>-<morphology>``.
    """
    kinds = np.array(list(params.fractions))
    p = np.array([params.fractions[k] for k in kinds], dtype=float)
    n = params.n_sources
    kind = kinds[rng.choice(kinds.size, size=n, p=p / p.sum())] if n else np.array([], dtype=str)
    size = np.zeros(n)
    width = np.zeros(n)
    for k, rng_range in (("gauss", params.gauss_sigma), ("disk", params.disk_radius), ("shell", params.shell_radius)):
        sel = kind == k
        size[sel] = _loguniform(rng, *rng_range, int(sel.sum()))
    sel = kind == "shell"
    width[sel] = size[sel] * rng.uniform(*params.shell_width, int(sel.sum()))
    elong = np.where((kind == "gauss") & (rng.uniform(size=n) < 0.5), rng.uniform(0.0, params.max_elongation, n), 0.0)
    phi = rng.uniform(-90.0, 90.0, n)
    index = np.clip(rng.normal(params.index[0], params.index[1], n), 1.6, 3.4)
    signif = _loguniform(rng, *params.significance, n)
    # candidate positions: drawn in one go, accepted in order
    n_try = 200
    lon_c = rng.uniform(*params.lon_range, (n, n_try))
    lat_c = rng.uniform(*params.lat_range, (n, n_try))
    models, placed = [], []  # placed: (lon, lat, outer radius)
    for i in range(n):
        r_out = _outer_radius(kind[i], size[i], width[i])
        ok = np.ones(n_try, bool)
        for lon_j, lat_j, r_j in placed:
            ok &= angular_separation(lon_c[i], lat_c[i], lon_j, lat_j) >= params.min_separation + 0.5 * (r_out + r_j)
        if not ok.any():
            continue
        t = int(np.argmax(ok))
        lon, lat = float(lon_c[i, t]), float(lat_c[i, t])
        placed.append((lon, lat, r_out))
        r68 = _R68.get(kind[i], 1.0) * size[i] if kind[i] != "shell" else size[i] + 0.5 * width[i]
        amplitude = params.amplitude_ref * signif[i] / 10.0 * np.sqrt(1.0 + (r68 / params.psf_radius) ** 2)
        pos = {"lon_0": lon, "lat_0": lat, "frame": "galactic"}
        if kind[i] == "point":
            spatial = PointSpatialModel(**pos)
        elif kind[i] == "gauss":
            spatial = GaussianSpatialModel(**pos, sigma=float(size[i]), e=float(elong[i]), phi=float(phi[i]))
        elif kind[i] == "disk":
            spatial = DiskSpatialModel(**pos, r_0=float(size[i]))
        else:
            spatial = ShellSpatialModel(**pos, radius=float(size[i]), width=float(width[i]))
        spectral = PowerLawSpectralModel(index=float(index[i]), amplitude=float(amplitude), reference=1.0)
        models.append(SkyModel(spectral, spatial, name=f"{prefix}-{i + 1}-{kind[i]}"))
    return models


def match_radius(kind: str, size: float, width: float = 0.0) -> float:
    """Outer scale (deg) of an injected source for matching: 0 for points, 2 sigma for
    Gaussians (major axis), r for disks, radius + width for shells."""
    return _outer_radius(kind, size, width)


_KIND_OF_TAG = {
    "PointSpatialModel": "point",
    "GaussianSpatialModel": "gauss",
    "GeneralizedGaussianSpatialModel": "gauss",
    "DiskSpatialModel": "disk",
    "ShellSpatialModel": "shell",
    "Shell2SpatialModel": "shell",
}


def sky_truth(models: Sequence[SkyModel]) -> Table:
    """Truth summary of injected models: ``Name, Morphology, Class, GLON, GLAT, Size,
    Shell_Width, Match_Radius, Amplitude, Index`` (deg; GLON in [0, 360)).

    Point sources have size 0; Gaussians their (major) sigma, disks ``r_0``, shells their
    inner radius (Shell2: ``(1 - eta) r_0``) and width.
    """
    rows = []
    for m in models:
        sp = m.spatial_model
        tag = sp.tag[0]
        if tag not in _KIND_OF_TAG:
            raise ValueError(f"model {m.name!r}: spatial model {tag} has no training class")
        kind = _KIND_OF_TAG[tag]
        v = sp.values()
        if tag == "Shell2SpatialModel":
            size, width = (1 - v["eta"]) * v["r_0"], v["eta"] * v["r_0"]
        else:
            size = {"point": 0.0, "gauss": v.get("sigma", v.get("r_0", 0.0)), "disk": v.get("r_0", 0.0), "shell": v.get("radius", 0.0)}[kind]
            width = v.get("width", 0.0) if kind == "shell" else 0.0
        lon, lat = (float(x) for x in to_frame(v["lon_0"], v["lat_0"], sp.frame, "galactic"))
        spec = m.spectral_model.values()
        rows.append((m.name, kind, CLASS_OF_MORPHOLOGY[kind], lon % 360.0, lat, float(size), float(width), match_radius(kind, size, width),
                     float(spec.get("amplitude", np.nan)), float(spec.get("index", np.nan))))
    names = ("Name", "Morphology", "Class", "GLON", "GLAT", "Size", "Shell_Width", "Match_Radius", "Amplitude", "Index")
    dtypes = ("U64", "U8", "U10", "f8", "f8", "f8", "f8", "f8", "f8", "f8")
    if not rows:
        return Table(names=names, dtype=dtypes)
    return Table(rows=rows, names=names, dtype=dtypes)
