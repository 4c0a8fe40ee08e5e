"""Spectral models with gammapy's tags, parameter names, units and defaults.

Energies are TeV, differential fluxes cm⁻² s⁻¹ TeV⁻¹, integral fluxes cm⁻² s⁻¹ and
energy fluxes TeV cm⁻² s⁻¹ (plain floats).  Each model has a static pure ``evaluate``;
:meth:`SpectralModel.integral` is analytic where a closed form exists (power laws, broken
power law) and otherwise an accurate Gauss–Legendre quadrature in log-energy, vectorised
over all bins (:func:`integrate_spectrum`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gpscat.models.parameters import ModelBase, Parameter, Parameters, par

__all__ = [
    "BrokenPowerLawSpectralModel",
    "CompoundSpectralModel",
    "ConstantSpectralModel",
    "ExpCutoffPowerLawSpectralModel",
    "LogParabolaSpectralModel",
    "PowerLaw2SpectralModel",
    "PowerLawNormSpectralModel",
    "PowerLawSpectralModel",
    "SmoothBrokenPowerLawSpectralModel",
    "SpectralModel",
    "TemplateSpectralModel",
    "integrate_spectrum",
]

_DIFF = "cm-2 s-1 TeV-1"
_GL_X, _GL_W = np.polynomial.legendre.leggauss(5)


def integrate_spectrum(func: Callable, emin, emax, *, per_decade: float = 20.0, moment: int = 0) -> np.ndarray:
    """∫ E^moment func(E) dE from ``emin`` to ``emax`` (arrays, TeV), vectorised.

    Each interval is split in log-energy into ``ceil(decades * per_decade)`` pieces, each
    integrated with 5-point Gauss–Legendre in ln E (exact for smooth spectra to ~1e-10).
    """
    emin, emax = np.broadcast_arrays(np.asarray(emin, float), np.asarray(emax, float))
    shape = emin.shape
    if np.any(~(emin > 0)) or np.any(~(emax >= emin)):
        raise ValueError(f"integration bounds must satisfy 0 < emin <= emax, got {emin}, {emax}")
    lo, hi = np.log(emin.ravel()), np.log(emax.ravel())
    nsub = np.maximum(np.ceil((hi - lo) / np.log(10.0) * per_decade), 1).astype(int)
    m = int(nsub.max()) if nsub.size else 1
    k = np.arange(m + 1)
    frac = np.minimum(k[None, :] / nsub[:, None], 1.0)  # (n, m+1); padded pieces have zero width
    edges = lo[:, None] + frac * (hi - lo)[:, None]
    a, b = edges[:, :-1], edges[:, 1:]
    half = 0.5 * (b - a)
    x = (a + half)[..., None] + half[..., None] * _GL_X  # (n, m, 5) in ln E
    energy = np.exp(x)
    vals = func(energy) * energy ** (1 + moment)
    out = np.sum(vals * _GL_W * half[..., None], axis=(-2, -1))
    return out.reshape(shape)


@dataclass(eq=False)
class SpectralModel(ModelBase):
    """Base of the spectral models."""

    tag = ("SpectralModel",)

    def __call__(self, energy) -> np.ndarray:
        """Differential flux (cm⁻² s⁻¹ TeV⁻¹) at ``energy`` (TeV)."""
        return self.evaluate(np.asarray(energy, dtype=float), **self.values())

    def integral(self, emin, emax) -> np.ndarray:
        """Integral flux (cm⁻² s⁻¹) between ``emin`` and ``emax`` (TeV)."""
        analytic = getattr(self, "evaluate_integral", None)
        if analytic is not None:
            return analytic(np.asarray(emin, float), np.asarray(emax, float), **self.values())
        return integrate_spectrum(self, emin, emax)

    def energy_flux(self, emin, emax) -> np.ndarray:
        """Energy flux (TeV cm⁻² s⁻¹) between ``emin`` and ``emax`` (TeV)."""
        analytic = getattr(self, "evaluate_energy_flux", None)
        if analytic is not None:
            return analytic(np.asarray(emin, float), np.asarray(emax, float), **self.values())
        return integrate_spectrum(self, emin, emax, moment=1)


def _pl_integral(emin, emax, index, reference, moment):
    """∫ E^moment (E/E0)^-index dE, stable at index == moment + 1."""
    g = moment + 1.0 - index
    x1, x2 = emin / reference, emax / reference
    with np.errstate(divide="ignore", invalid="ignore"):
        lin = np.log(x2 / x1)
        gen = (x2**g - x1**g) / g
    val = np.where(np.abs(g) < 1e-10, lin, gen)
    return val * reference ** (moment + 1)


@dataclass(eq=False)
class PowerLawSpectralModel(SpectralModel):
    """dN/dE = amplitude · (E / reference)^-index."""

    tag = ("PowerLawSpectralModel", "pl")
    index: Parameter = par("index", 2.0)
    amplitude: Parameter = par("amplitude", 1e-12, _DIFF)
    reference: Parameter = par("reference", 1.0, "TeV", frozen=True)

    @staticmethod
    def evaluate(energy, index, amplitude, reference):
        return amplitude * (energy / reference) ** (-index)

    @staticmethod
    def evaluate_integral(energy_min, energy_max, index, amplitude, reference):
        return amplitude * _pl_integral(energy_min, energy_max, index, reference, 0)

    @staticmethod
    def evaluate_energy_flux(energy_min, energy_max, index, amplitude, reference):
        return amplitude * _pl_integral(energy_min, energy_max, index, reference, 1)


@dataclass(eq=False)
class PowerLaw2SpectralModel(SpectralModel):
    """Power law normalised by its integral flux ``amplitude`` (cm⁻² s⁻¹) in [emin, emax]."""

    tag = ("PowerLaw2SpectralModel", "pl-2")
    amplitude: Parameter = par("amplitude", 1e-12, "cm-2 s-1")
    index: Parameter = par("index", 2.0)
    emin: Parameter = par("emin", 0.1, "TeV", frozen=True)
    emax: Parameter = par("emax", 100.0, "TeV", frozen=True)

    @staticmethod
    def evaluate(energy, amplitude, index, emin, emax):
        norm = _pl_integral(emin, emax, index, emax, 0)
        return amplitude * (energy / emax) ** (-index) / norm

    @staticmethod
    def evaluate_integral(energy_min, energy_max, amplitude, index, emin, emax):
        norm = _pl_integral(emin, emax, index, emax, 0)
        return amplitude * _pl_integral(energy_min, energy_max, index, emax, 0) / norm

    @staticmethod
    def evaluate_energy_flux(energy_min, energy_max, amplitude, index, emin, emax):
        norm = _pl_integral(emin, emax, index, emax, 0)
        return amplitude * _pl_integral(energy_min, energy_max, index, emax, 1) / norm


@dataclass(eq=False)
class ExpCutoffPowerLawSpectralModel(SpectralModel):
    """dN/dE = amplitude · (E/reference)^-index · exp(-(lambda_ · E)^alpha)."""

    tag = ("ExpCutoffPowerLawSpectralModel", "ecpl")
    index: Parameter = par("index", 1.5)
    amplitude: Parameter = par("amplitude", 1e-12, _DIFF)
    reference: Parameter = par("reference", 1.0, "TeV", frozen=True)
    lambda_: Parameter = par("lambda_", 0.1, "TeV-1")
    alpha: Parameter = par("alpha", 1.0, frozen=True)

    @staticmethod
    def evaluate(energy, index, amplitude, reference, lambda_, alpha):
        return amplitude * (energy / reference) ** (-index) * np.exp(-((energy * lambda_) ** alpha))


@dataclass(eq=False)
class LogParabolaSpectralModel(SpectralModel):
    """dN/dE = amplitude · (E/reference)^(-alpha - beta · ln(E/reference))."""

    tag = ("LogParabolaSpectralModel", "lp")
    amplitude: Parameter = par("amplitude", 1e-12, _DIFF)
    reference: Parameter = par("reference", 10.0, "TeV", frozen=True)
    alpha: Parameter = par("alpha", 2.0)
    beta: Parameter = par("beta", 1.0)

    @staticmethod
    def evaluate(energy, amplitude, reference, alpha, beta):
        x = energy / reference
        return amplitude * x ** (-alpha - beta * np.log(x))


@dataclass(eq=False)
class BrokenPowerLawSpectralModel(SpectralModel):
    """amplitude · (E/ebreak)^-index1 below ``ebreak``, ^-index2 above."""

    tag = ("BrokenPowerLawSpectralModel", "bpl")
    index1: Parameter = par("index1", 2.0)
    index2: Parameter = par("index2", 2.0)
    amplitude: Parameter = par("amplitude", 1e-12, _DIFF)
    ebreak: Parameter = par("ebreak", 1.0, "TeV")

    @staticmethod
    def evaluate(energy, index1, index2, amplitude, ebreak):
        x = energy / ebreak
        return amplitude * np.where(x < 1, x ** (-index1), x ** (-index2))

    @staticmethod
    def _moment(energy_min, energy_max, index1, index2, amplitude, ebreak, moment):
        lo1, hi1 = np.minimum(energy_min, ebreak), np.minimum(energy_max, ebreak)
        lo2, hi2 = np.maximum(energy_min, ebreak), np.maximum(energy_max, ebreak)
        part1 = _pl_integral(lo1, hi1, index1, ebreak, moment)
        part2 = _pl_integral(lo2, hi2, index2, ebreak, moment)
        return amplitude * (part1 + part2)

    @classmethod
    def evaluate_integral(cls, energy_min, energy_max, **p):
        return cls._moment(energy_min, energy_max, moment=0, **p)

    @classmethod
    def evaluate_energy_flux(cls, energy_min, energy_max, **p):
        return cls._moment(energy_min, energy_max, moment=1, **p)


@dataclass(eq=False)
class SmoothBrokenPowerLawSpectralModel(SpectralModel):
    """amplitude · (E/reference)^-index1 · [1 + (E/ebreak)^((index2-index1)/beta')]^-beta'.

    ``beta' = beta · sign(index2 - index1)`` as in gammapy.
    """

    tag = ("SmoothBrokenPowerLawSpectralModel", "sbpl")
    index1: Parameter = par("index1", 2.0)
    index2: Parameter = par("index2", 2.0)
    amplitude: Parameter = par("amplitude", 1e-12, _DIFF)
    ebreak: Parameter = par("ebreak", 1.0, "TeV")
    reference: Parameter = par("reference", 1.0, "TeV", frozen=True)
    beta: Parameter = par("beta", 1.0, frozen=True)

    @staticmethod
    def evaluate(energy, index1, index2, amplitude, ebreak, reference, beta):
        b = beta * np.sign(index2 - index1) if index2 != index1 else beta
        pwl = amplitude * (energy / reference) ** (-index1)
        return pwl * (1.0 + (energy / ebreak) ** ((index2 - index1) / b)) ** (-b)


@dataclass(eq=False)
class PowerLawNormSpectralModel(SpectralModel):
    """Dimensionless norm · (E/reference)^-tilt (background and template scaling)."""

    tag = ("PowerLawNormSpectralModel", "pl-norm")
    tilt: Parameter = par("tilt", 0.0, frozen=True)
    norm: Parameter = par("norm", 1.0)
    reference: Parameter = par("reference", 1.0, "TeV", frozen=True)

    @staticmethod
    def evaluate(energy, tilt, norm, reference):
        return norm * (energy / reference) ** (-tilt)

    @staticmethod
    def evaluate_integral(energy_min, energy_max, tilt, norm, reference):
        return norm * _pl_integral(energy_min, energy_max, tilt, reference, 0)


@dataclass(eq=False)
class ConstantSpectralModel(SpectralModel):
    """dN/dE = const."""

    tag = ("ConstantSpectralModel", "const")
    const: Parameter = par("const", 1e-12, _DIFF)

    @staticmethod
    def evaluate(energy, const):
        return np.full(np.shape(energy), const, dtype=float)

    @staticmethod
    def evaluate_integral(energy_min, energy_max, const):
        return const * (energy_max - energy_min)


@dataclass(eq=False)
class TemplateSpectralModel(SpectralModel):
    """Tabulated spectrum: ``values`` (cm⁻² s⁻¹ TeV⁻¹) at ``energy`` nodes (TeV).

    Interpolated and extrapolated linearly in log(E)–log(value), as gammapy does.  No
    free parameters: multiply by a :class:`PowerLawNormSpectralModel` through
    :class:`CompoundSpectralModel` to fit a normalisation.
    """

    tag = ("TemplateSpectralModel", "template")
    energy: np.ndarray = field(default_factory=lambda: np.array([1.0, 10.0]))
    values: np.ndarray = field(default_factory=lambda: np.array([1e-12, 1e-14]))

    def __post_init__(self):
        super().__post_init__()
        self.energy = np.asarray(self.energy, dtype=float)
        self.values = np.asarray(self.values, dtype=float)
        if self.energy.ndim != 1 or self.energy.size < 2 or self.energy.shape != self.values.shape:
            raise ValueError(f"template spectrum needs >= 2 matching energy/values nodes, got {self.energy.shape} and {self.values.shape}")
        if np.any(np.diff(self.energy) <= 0) or self.energy[0] <= 0:
            raise ValueError(f"template spectrum energies must be positive and increasing, got {self.energy}")

    def __call__(self, energy) -> np.ndarray:
        return self.evaluate(np.asarray(energy, float), self.energy, self.values)

    def value_key(self) -> tuple[float, ...]:
        return ()

    def integral(self, emin, emax) -> np.ndarray:
        return self._moment(emin, emax, 0)

    def energy_flux(self, emin, emax) -> np.ndarray:
        return self._moment(emin, emax, 1)

    def _moment(self, emin, emax, moment: int) -> np.ndarray:
        """Exact: each log-log segment is a power law (the outer ones extend to 0 / ∞)."""
        emin, emax = np.broadcast_arrays(np.asarray(emin, float), np.asarray(emax, float))
        if np.any(~(emin > 0)) or np.any(~(emax >= emin)):
            raise ValueError(f"integration bounds must satisfy 0 < emin <= emax, got {emin}, {emax}")
        e, y = self.energy, np.clip(self.values, 1e-300, None)
        index = -np.diff(np.log(y)) / np.diff(np.log(e))  # (n_seg,)
        lo = np.concatenate([[0.0], e[1:-1]])
        hi = np.concatenate([e[1:-1], [np.inf]])
        a = np.clip(emin[..., None], lo, hi)
        b = np.clip(emax[..., None], lo, hi)
        seg = y[:-1] * _pl_integral(a, np.maximum(a, b), index, e[:-1], moment)
        return seg.sum(axis=-1)

    @staticmethod
    def evaluate(energy, nodes, values):
        x = np.log(energy)
        xn = np.log(nodes)
        yn = np.log(np.clip(values, 1e-300, None))
        idx = np.clip(np.searchsorted(xn, x) - 1, 0, xn.size - 2)
        t = (x - xn[idx]) / (xn[idx + 1] - xn[idx])
        return np.exp(yn[idx] + t * (yn[idx + 1] - yn[idx]))


@dataclass(eq=False)
class CompoundSpectralModel(SpectralModel):
    """``model1 <operator> model2`` with operator ``mul`` or ``add`` (gammapy's compound)."""

    tag = ("CompoundSpectralModel", "compound")
    model1: SpectralModel = field(default_factory=PowerLawSpectralModel)
    model2: SpectralModel = field(default_factory=PowerLawNormSpectralModel)
    operator: str = "mul"

    def __post_init__(self):
        super().__post_init__()
        if self.operator not in ("mul", "add"):
            raise ValueError(f"compound operator must be 'mul' or 'add', got {self.operator!r}")

    @property
    def parameters(self) -> Parameters:
        return Parameters((*self.model1.parameters, *self.model2.parameters))

    def value_key(self) -> tuple[float, ...]:
        return (*self.model1.value_key(), *self.model2.value_key())

    def __call__(self, energy) -> np.ndarray:
        a, b = self.model1(energy), self.model2(energy)
        return a * b if self.operator == "mul" else a + b

    def integral(self, emin, emax) -> np.ndarray:
        if self.operator == "add":
            return self.model1.integral(emin, emax) + self.model2.integral(emin, emax)
        return integrate_spectrum(self, emin, emax)

    def energy_flux(self, emin, emax) -> np.ndarray:
        if self.operator == "add":
            return self.model1.energy_flux(emin, emax) + self.model2.energy_flux(emin, emax)
        return integrate_spectrum(self, emin, emax, moment=1)

    def freeze(self) -> None:
        self.model1.freeze()
        self.model2.freeze()

    def unfreeze(self) -> None:
        self.model1.unfreeze()
        self.model2.unfreeze()
