"""Model types that the known-source readers and the ctools XML converter need on top of
the core set: gammapy's :class:`ConstantSpatialModel` (an isotropic sky, ctools'
``DiffuseIsotropic`` / ``ConstantValue``).

gammapy serialises the constant spatial model without parameters (its ``value`` is always
1 sr⁻¹), so a converter folds any other value into the spectral model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpscat.models.parameters import Parameter, par
from gpscat.models.spatial import SpatialModel

__all__ = ["ConstantSpatialModel"]


@dataclass(eq=False)
class ConstantSpatialModel(SpatialModel):
    """Isotropic surface brightness ``value`` (sr⁻¹) everywhere; it has no position."""

    tag = ("ConstantSpatialModel", "const")
    value: Parameter = par("value", 1.0, "sr-1", frozen=True)

    @property
    def position(self) -> tuple[float, float]:
        raise ValueError("ConstantSpatialModel (isotropic) has no position")

    def position_in(self, frame: str) -> tuple[float, float]:
        raise ValueError("ConstantSpatialModel (isotropic) has no position")

    @staticmethod
    def evaluate(lon, lat, value):
        return np.full(np.broadcast(lon, lat).shape, value, dtype=float)

    @property
    def evaluation_radius(self) -> float:
        return np.inf
