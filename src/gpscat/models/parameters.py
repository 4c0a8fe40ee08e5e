"""Model parameters: plain mutable records shared by identity.

A :class:`Parameter` holds a value in the parameter's canonical unit (the unit gammapy
uses by default for that parameter: deg, TeV, cm⁻² s⁻¹ TeV⁻¹, ...), its bounds, whether it
is frozen, and the 1σ error of the last fit.

Linking: two models share a parameter when the *same* :class:`Parameter` object stands in
both (``model_b.spectral_model.index = model_a.spectral_model.index``).  The fit collects
parameters by identity, so a linked parameter is one degree of freedom; the YAML writer
marks it with a ``link`` label as gammapy does.

Models are dataclasses whose parameter fields are declared with :func:`par`; the
:class:`ModelBase` base turns plain numbers, strings with units (``"0.2 deg"``) or
astropy quantities given to the constructor into parameters with the class defaults.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import astropy.units as u
import numpy as np

__all__ = [
    "ModelBase",
    "Parameter",
    "Parameters",
    "par",
    "to_canonical",
    "unique_parameters",
]


@dataclass(eq=False)
class Parameter:
    """One model parameter.

    Parameters
    ----------
    name : str
        gammapy's parameter name (``index``, ``lon_0``, ...).
    value : float
        Value in ``unit``.
    unit : str
        Canonical unit string (astropy-parsable, ``""`` for dimensionless).
    min, max : float
        Bounds; NaN means unbounded.
    frozen : bool
        Frozen parameters are not varied by the fit.
    error : float
        1σ error from the last covariance estimate (0 when unknown).
    """

    name: str
    value: float
    unit: str = ""
    min: float = np.nan
    max: float = np.nan
    frozen: bool = False
    error: float = 0.0

    def __post_init__(self):
        self.value = float(self.value)
        self.min = float(self.min)
        self.max = float(self.max)
        self.error = float(self.error)
        self.frozen = bool(self.frozen)

    def copy(self) -> Parameter:
        return replace(self)

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """(min, max) with ``None`` for unbounded sides (iminuit's convention)."""
        lo = None if math.isnan(self.min) else self.min
        hi = None if math.isnan(self.max) else self.max
        return lo, hi

    def at_bound(self, rtol: float = 1e-3) -> bool:
        """Whether the value sits at a bound: within ``rtol`` of the range (of the bound's
        or the value's magnitude when one side is open)."""
        lo, hi = self.bounds
        span = (hi - lo) if lo is not None and hi is not None else None
        for b in (lo, hi):
            if b is not None and abs(self.value - b) <= (rtol * span if span else rtol * max(abs(b), abs(self.value), 1e-30)):
                return True
        return False

    @property
    def quantity(self) -> u.Quantity:
        return u.Quantity(self.value, self.unit)

    def __repr__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        flag = " (frozen)" if self.frozen else ""
        return f"Parameter({self.name}={self.value:.6g}{unit} ± {self.error:.3g}{flag})"


class Parameters(tuple):
    """An ordered tuple of parameters that can also be indexed by name."""

    def __getitem__(self, key):
        if isinstance(key, str):
            for p in self:
                if p.name == key:
                    return p
            raise KeyError(f"no parameter {key!r}; parameters are {self.names}")
        return tuple.__getitem__(self, key)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self]

    @property
    def free(self) -> Parameters:
        return Parameters(p for p in self if not p.frozen)

    @property
    def values(self) -> np.ndarray:
        return np.array([p.value for p in self], dtype=float)


def unique_parameters(params) -> Parameters:
    """Parameters in order of first appearance, each object once (linked ones count once)."""
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return Parameters(out)


def to_canonical(value: Any, unit: str, *, name: str = "") -> float:
    """Convert a number, ``"<number> <unit>"`` string or Quantity to a float in ``unit``."""
    if isinstance(value, str):
        value = u.Quantity(value)
    if isinstance(value, u.Quantity):
        try:
            return float(value.to_value(unit or u.dimensionless_unscaled))
        except u.UnitConversionError as exc:
            raise ValueError(f"parameter {name!r}: cannot convert {value} to {unit!r}") from exc
    return float(value)


def par(name: str, value: float, unit: str = "", *, min: float = np.nan, max: float = np.nan, frozen: bool = False):
    """Declare a parameter field of a model dataclass with gammapy's default."""
    default = Parameter(name, value, unit, min, max, frozen)
    return field(default_factory=default.copy, metadata={"parameter": default})


@dataclass(eq=False)
class ModelBase:
    """Base of spatial and spectral models: parameter fields declared with :func:`par`.

    Subclasses set ``tag`` (a tuple: gammapy's class name first, then its short alias) and
    implement a static ``evaluate`` taking the parameter values as keyword arguments.
    """

    tag = ("ModelBase",)

    def __post_init__(self):
        for f in fields(self):
            default = f.metadata.get("parameter")
            if default is None:
                continue
            v = getattr(self, f.name)
            if not isinstance(v, Parameter):
                p = default.copy()
                p.value = to_canonical(v, default.unit, name=f.name)
                setattr(self, f.name, p)

    @classmethod
    def default_parameters(cls) -> Parameters:
        """Fresh copies of the class's default parameters, in gammapy's order."""
        return Parameters(f.metadata["parameter"].copy() for f in fields(cls) if "parameter" in f.metadata)

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if "parameter" in f.metadata]

    @property
    def parameters(self) -> Parameters:
        return Parameters(getattr(self, n) for n in self.parameter_names())

    def values(self) -> dict[str, float]:
        """Parameter values keyed by field name: the keyword arguments of ``evaluate``."""
        return {n: getattr(self, n).value for n in self.parameter_names()}

    def value_key(self) -> tuple[float, ...]:
        """Hashable snapshot of the parameter values (for caches)."""
        return tuple(getattr(self, n).value for n in self.parameter_names())

    def freeze(self) -> None:
        for p in self.parameters:
            p.frozen = True

    def unfreeze(self) -> None:
        """Restore the default frozen state of every parameter."""
        for p, d in zip(self.parameters, self.default_parameters(), strict=True):
            p.frozen = d.frozen

    def copy(self):
        """Deep copy: new parameter objects (links to other models are not kept)."""
        return copy.deepcopy(self)

    @classmethod
    def from_parameters(cls, parameters, **kwargs):
        """Build from parameters (matched by name; missing ones take the defaults)."""
        by_name = {p.name: p for p in parameters}
        kw = {n: by_name[n] for n in cls.parameter_names() if n in by_name}
        kw.update(kwargs)
        return cls(**kw)
