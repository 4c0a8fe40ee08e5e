"""Sky models, the FoV background model and the :class:`Models` collection.

A :class:`SkyModel` is a spectral model times a spatial model, optionally restricted to
some datasets (``datasets_names``).  A :class:`FoVBackgroundModel` scales the background
map of one dataset by ``norm · (E/reference)^-tilt``.  :class:`Models` is an ordered
collection with name lookup, the unique parameters (linked parameters once, in the order
gammapy uses for its covariance file: each model's spectral, then spatial parameters) and
the covariance of the last fit.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from gpscat.models.parameters import Parameter, Parameters, unique_parameters
from gpscat.models.spatial import SpatialModel
from gpscat.models.spectral import PowerLawNormSpectralModel, SpectralModel

__all__ = ["FoVBackgroundModel", "Models", "SkyModel"]


def _make_name() -> str:
    return uuid.uuid4().hex[:8]


@dataclass(eq=False)
class SkyModel:
    """Source model: ``spectral_model`` × ``spatial_model``.

    Parameters
    ----------
    spectral_model : SpectralModel
    spatial_model : SpatialModel
        Required to predict maps.
    name : str
        Unique name in a :class:`Models` collection (random if empty, as gammapy).
    datasets_names : list of str, optional
        Datasets the model applies to; ``None`` means all.
    """

    spectral_model: SpectralModel
    spatial_model: SpatialModel | None = None
    name: str = ""
    datasets_names: list[str] | None = None
    tag = ("SkyModel", "sky-model")

    def __post_init__(self):
        if not self.name:
            self.name = _make_name()
        if self.datasets_names is not None:
            self.datasets_names = list(self.datasets_names)

    @property
    def parameters(self) -> Parameters:
        spatial = self.spatial_model.parameters if self.spatial_model is not None else ()
        return Parameters((*self.spectral_model.parameters, *spatial))

    def parameter_labels(self) -> list[str]:
        """gammapy's unique names ``<model>.<spectral|spatial>.<parameter>``."""
        labels = [f"{self.name}.spectral.{p.name}" for p in self.spectral_model.parameters]
        if self.spatial_model is not None:
            labels += [f"{self.name}.spatial.{p.name}" for p in self.spatial_model.parameters]
        return labels

    def applies_to(self, dataset_name: str) -> bool:
        return self.datasets_names is None or dataset_name in self.datasets_names

    def freeze(self) -> None:
        self.spectral_model.freeze()
        if self.spatial_model is not None:
            self.spatial_model.freeze()

    def unfreeze(self) -> None:
        self.spectral_model.unfreeze()
        if self.spatial_model is not None:
            self.spatial_model.unfreeze()

    def copy(self, *, name: str | None = None) -> SkyModel:
        """Deep copy with new parameter objects (and a new name if given)."""
        new = copy.deepcopy(self)
        if name is not None:
            new.name = name
        return new


@dataclass(eq=False)
class FoVBackgroundModel:
    """Background normalisation of one dataset: ``norm · (E/reference)^-tilt``."""

    dataset_name: str
    spectral_model: PowerLawNormSpectralModel = field(default_factory=PowerLawNormSpectralModel)
    tag = ("FoVBackgroundModel", "fov-bkg")

    def __post_init__(self):
        if not self.dataset_name:
            raise ValueError("FoVBackgroundModel needs a dataset name")

    @property
    def name(self) -> str:
        return f"{self.dataset_name}-bkg"

    @property
    def datasets_names(self) -> list[str]:
        return [self.dataset_name]

    @property
    def parameters(self) -> Parameters:
        return self.spectral_model.parameters

    def parameter_labels(self) -> list[str]:
        return [f"{self.name}.spectral.{p.name}" for p in self.parameters]

    def applies_to(self, dataset_name: str) -> bool:
        return dataset_name == self.dataset_name

    def freeze(self) -> None:
        self.spectral_model.freeze()

    def unfreeze(self) -> None:
        self.spectral_model.unfreeze()


class Models:
    """Ordered collection of sky and background models with name lookup and covariance.

    Parameters
    ----------
    models : iterable of SkyModel or FoVBackgroundModel
    """

    def __init__(self, models: Iterable = ()):
        self._models: list = []
        self._cov_params: tuple[Parameter, ...] = ()
        self._cov: np.ndarray | None = None
        for m in models:
            self.append(m)

    # -- list behaviour
    def __iter__(self):
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __getitem__(self, key):
        if isinstance(key, str):
            for m in self._models:
                if m.name == key:
                    return m
            raise KeyError(f"no model named {key!r}; models are {self.names}")
        return self._models[key]

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __repr__(self) -> str:
        return f"Models({self.names})"

    @property
    def names(self) -> list[str]:
        return [m.name for m in self._models]

    def append(self, model) -> None:
        if model.name in self.names:
            raise ValueError(f"model name {model.name!r} is already in the collection")
        self._models.append(model)

    def extend(self, models: Iterable) -> None:
        for m in models:
            self.append(m)

    def remove(self, name: str) -> None:
        self._models.remove(self[name])

    def without(self, name: str) -> Models:
        """A new collection (same model objects) without model ``name``."""
        out = Models(m for m in self._models if m.name != name)
        if self._cov is not None:
            out.set_covariance(self._cov_params, self._cov)
        return out

    def for_dataset(self, dataset_name: str) -> list:
        """Models that apply to the dataset ``dataset_name``."""
        return [m for m in self._models if m.applies_to(dataset_name)]

    @property
    def sky_models(self) -> list[SkyModel]:
        return [m for m in self._models if isinstance(m, SkyModel)]

    @property
    def background_models(self) -> list[FoVBackgroundModel]:
        return [m for m in self._models if isinstance(m, FoVBackgroundModel)]

    # -- parameters
    @property
    def parameters(self) -> Parameters:
        """Unique parameters: linked ones once, at their first appearance."""
        return unique_parameters(p for m in self._models for p in m.parameters)

    def parameter_labels(self) -> list[str]:
        """gammapy's ``<model>.<kind>.<name>`` label of each unique parameter."""
        seen: set[int] = set()
        labels = []
        for m in self._models:
            for p, label in zip(m.parameters, m.parameter_labels(), strict=True):
                if id(p) not in seen:
                    seen.add(id(p))
                    labels.append(label)
        return labels

    def freeze(self) -> None:
        for m in self._models:
            m.freeze()

    # -- covariance
    @property
    def covariance(self) -> np.ndarray:
        """Covariance aligned with :attr:`parameters` (zeros where unknown, errors² on the
        diagonal of parameters outside the last fit)."""
        params = self.parameters
        n = len(params)
        cov = np.zeros((n, n))
        for i, p in enumerate(params):
            cov[i, i] = p.error**2
        if self._cov is None:
            return cov
        where = {id(p): i for i, p in enumerate(self._cov_params)}
        idx = np.array([where.get(id(p), -1) for p in params])
        ok = idx >= 0
        sub = self._cov[np.ix_(idx[ok], idx[ok])]
        cov[np.ix_(ok, ok)] = sub
        return cov

    @covariance.setter
    def covariance(self, matrix) -> None:
        self.set_covariance(self.parameters, matrix)

    def set_covariance(self, parameters, matrix) -> None:
        """Store the covariance of ``parameters`` (others keep their errors only)."""
        matrix = np.asarray(matrix, dtype=float)
        parameters = tuple(parameters)
        if matrix.shape != (len(parameters), len(parameters)):
            raise ValueError(f"covariance shape {matrix.shape} does not match {len(parameters)} parameters")
        self._cov_params = parameters
        self._cov = matrix.copy()
        for i, p in enumerate(parameters):
            p.error = float(np.sqrt(max(matrix[i, i], 0.0)))

    def covariance_of(self, parameters) -> np.ndarray:
        """Sub-matrix of the covariance for the given parameter objects."""
        params = list(self.parameters)
        where = {id(p): i for i, p in enumerate(params)}
        try:
            idx = [where[id(p)] for p in parameters]
        except KeyError as exc:
            raise ValueError("parameter not in this collection") from exc
        return self.covariance[np.ix_(idx, idx)]

    def copy(self) -> Models:
        """Deep copy that keeps links between the copied models and the covariance."""
        return copy.deepcopy(self)
