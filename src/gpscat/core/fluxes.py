"""Derived source quantities with errors from the fit covariance.

* :func:`band_flux` / :func:`band_energy_flux` — integral photon / energy flux in energy
  bands, errors by linear propagation ``σ² = gᵀ C g`` with the gradient ``g`` of the
  integral with respect to the free spectral parameters (central differences);
* :func:`source_npred` — predicted counts of one source in a dataset (masked bins);
* :func:`position_error` — the 1σ error ellipse of a fitted position.

Units: TeV, cm⁻² s⁻¹, TeV cm⁻² s⁻¹ (``TEV_TO_ERG`` converts energy fluxes to erg).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpscat.core.dataset import MapDataset
from gpscat.core.npred import DatasetEvaluator
from gpscat.models.sky import Models, SkyModel

__all__ = [
    "TEV_TO_ERG",
    "PositionError",
    "band_energy_flux",
    "band_flux",
    "propagate_error",
    "position_error",
    "source_npred",
]

TEV_TO_ERG = 1.602176634

_CHI2_2DOF_95 = 2.447746830680816  # sqrt(-2 ln 0.05): 95% radius of a 2D Gaussian in σ


def propagate_error(func: Callable[[], np.ndarray], parameters, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value of ``func()`` and its 1σ error from the covariance of ``parameters``.

    ``func`` reads the current parameter values; each parameter is moved by ±h (a
    hundredth of its error, or a relative 1e-6 when the error is unknown) and restored.
    """
    value = np.asarray(func(), dtype=float)
    params = list(parameters)
    cov = np.asarray(covariance, dtype=float)
    if not params:
        return value, np.zeros_like(value)
    grads = []
    for p in params:
        v0 = p.value
        h = 0.01 * p.error if p.error > 0 else 1e-6 * max(abs(v0), 1e-30)
        try:
            p.value = v0 + h
            up = np.asarray(func(), dtype=float)
            p.value = v0 - h
            down = np.asarray(func(), dtype=float)
        finally:
            p.value = v0
        grads.append((up - down) / (2 * h))
    g = np.stack(grads, axis=-1)  # (..., n_par)
    var = np.einsum("...i,ij,...j->...", g, cov, g)
    return value, np.sqrt(np.clip(var, 0, None))


def _spectral_free(model: SkyModel, models: Models):
    params = [p for p in model.spectral_model.parameters if not p.frozen]
    return params, models.covariance_of(params)


def band_flux(model: SkyModel, models: Models, emin, emax) -> tuple[np.ndarray, np.ndarray]:
    """Integral photon flux (cm⁻² s⁻¹) of ``model`` in [emin, emax] TeV, and its error."""
    params, cov = _spectral_free(model, models)
    return propagate_error(lambda: model.spectral_model.integral(emin, emax), params, cov)


def band_energy_flux(model: SkyModel, models: Models, emin, emax) -> tuple[np.ndarray, np.ndarray]:
    """Energy flux (TeV cm⁻² s⁻¹) of ``model`` in [emin, emax] TeV, and its error."""
    params, cov = _spectral_free(model, models)
    return propagate_error(lambda: model.spectral_model.energy_flux(emin, emax), params, cov)


def source_npred(dataset: MapDataset, model: SkyModel, *, masked: bool = True) -> float:
    """Predicted counts of ``model`` in ``dataset`` (in the fit mask by default)."""
    npred = DatasetEvaluator(dataset, [model]).npred_source(model)
    if masked:
        npred = npred[dataset.mask()]
    return float(npred.sum())


@dataclass(frozen=True)
class PositionError:
    """1σ position errors (deg): along lon (times cos lat) and lat, and the error ellipse.

    ``angle`` is the position angle (deg, from the +lat axis towards +lon) of the major
    axis; ``r95`` the radius of the circle of the same area containing 95%.
    """

    sigma_lon: float
    sigma_lat: float
    correlation: float
    semi_major: float
    semi_minor: float
    angle: float

    @property
    def r95(self) -> float:
        return _CHI2_2DOF_95 * float(np.sqrt(self.semi_major * self.semi_minor))


def position_error(model: SkyModel, models: Models) -> PositionError:
    """Error ellipse of the position of ``model`` from the covariance in ``models``."""
    sp = model.spatial_model
    if sp is None:
        raise ValueError(f"model {model.name!r} has no spatial model")
    cov = models.covariance_of([sp.lon_0, sp.lat_0])
    c = np.cos(np.radians(sp.lat_0.value))
    cov = cov * np.outer([c, 1.0], [c, 1.0])  # lon errors as great-circle angles
    s_lon, s_lat = np.sqrt(max(cov[0, 0], 0.0)), np.sqrt(max(cov[1, 1], 0.0))
    rho = cov[0, 1] / (s_lon * s_lat) if s_lon > 0 and s_lat > 0 else 0.0
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, 1]
    angle = float(np.degrees(np.arctan2(major[0], major[1])) % 180.0)
    return PositionError(float(s_lon), float(s_lat), float(rho), float(np.sqrt(max(evals[1], 0))), float(np.sqrt(max(evals[0], 0))), angle)
