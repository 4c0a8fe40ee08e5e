"""Registries of model classes by gammapy type tag (class name and short alias).

``SPATIAL_MODELS["point"] is SPATIAL_MODELS["PointSpatialModel"] is PointSpatialModel``.
Legacy names written by older gammapy versions are mapped in :data:`LEGACY_SPATIAL`.
"""

from __future__ import annotations

from gpscat.models import extra, spatial, spectral

__all__ = ["LEGACY_PARAMETERS", "LEGACY_SPATIAL", "SPATIAL_MODELS", "SPECTRAL_MODELS", "get_spatial", "get_spectral"]


def _by_tags(classes) -> dict[str, type]:
    out: dict[str, type] = {}
    for cls in classes:
        for tag in cls.tag:
            out[tag] = cls
    return out


SPATIAL_MODELS: dict[str, type] = _by_tags(
    [
        spatial.PointSpatialModel,
        spatial.GaussianSpatialModel,
        spatial.GeneralizedGaussianSpatialModel,
        spatial.DiskSpatialModel,
        spatial.ShellSpatialModel,
        spatial.Shell2SpatialModel,
        spatial.TemplateSpatialModel,
        extra.ConstantSpatialModel,
    ]
)

SPECTRAL_MODELS: dict[str, type] = _by_tags(
    [
        spectral.PowerLawSpectralModel,
        spectral.PowerLaw2SpectralModel,
        spectral.ExpCutoffPowerLawSpectralModel,
        spectral.LogParabolaSpectralModel,
        spectral.BrokenPowerLawSpectralModel,
        spectral.SmoothBrokenPowerLawSpectralModel,
        spectral.PowerLawNormSpectralModel,
        spectral.ConstantSpectralModel,
        spectral.TemplateSpectralModel,
        spectral.CompoundSpectralModel,
    ]
)

#: Spatial types of older gammapy / the GPS prototype: tag → (class, {old name: new name}).
LEGACY_SPATIAL: dict[str, tuple[type, dict[str, str]]] = {
    "ShellOutSpatialModel": (spatial.Shell2SpatialModel, {"r_eff": "r_0", "fwidth": "eta"}),
}

#: Renamed parameters of current types in older files.
LEGACY_PARAMETERS: dict[type, dict[str, str]] = {
    spatial.GeneralizedGaussianSpatialModel: {"r_eff": "r_0"},
}


def get_spatial(tag: str) -> type:
    try:
        return SPATIAL_MODELS[tag]
    except KeyError:
        raise ValueError(f"unknown spatial model type {tag!r}; known: {sorted(SPATIAL_MODELS)}") from None


def get_spectral(tag: str) -> type:
    try:
        return SPECTRAL_MODELS[tag]
    except KeyError:
        raise ValueError(f"unknown spectral model type {tag!r}; known: {sorted(SPECTRAL_MODELS)}") from None
