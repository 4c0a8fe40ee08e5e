"""Point spread functions: GADF ``PSF_3GAUSS`` and ``PSF_TABLE``.

Both classes give, broadcast over their arguments (rad and offset in deg, true energy
in TeV):

* ``evaluate(rad, energy_true, offset)`` — dP/dΩ in sr⁻¹;
* ``containment(rad, energy_true, offset)`` — fraction of events within ``rad``;
* ``containment_radius(fraction, energy_true, offset)`` — its inverse (deg), which also
  samples offsets by inverse transform: ``containment_radius(rng.uniform(size=n), e, o)``.

The triple Gaussian is normalised to unit integral in the small-angle approximation
(its ``SCALE`` column is ignored, as its definition differs between producers); its
parameters are interpolated linearly in (log E, offset), as gammapy does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from gpscat.core.geom import MapAxis
from gpscat.core.interp import grid_interp

__all__ = ["PSF3Gauss", "PSFTable"]

_DEG2RAD = np.pi / 180.0


class _PSFBase(ABC):
    """Interface of the PSF IRFs; ``_rad_scale`` is needed only by the generic
    :meth:`containment_radius` (``PSFTable`` overrides that)."""

    @abstractmethod
    def containment(self, rad, energy_true, offset) -> np.ndarray:
        """Fraction of the PSF within ``rad`` (deg)."""

    def _rad_scale(self, energy_true, offset) -> np.ndarray:
        raise TypeError(f"{type(self).__name__} defines no radius scale for the generic containment_radius")

    @abstractmethod
    def evaluate(self, rad, energy_true, offset) -> np.ndarray:
        """dP/dΩ (sr⁻¹) at ``rad`` (deg)."""

    def evaluate_grid(self, rad, energy_true, offset) -> np.ndarray:
        """dP/dΩ (sr⁻¹) for 1D ``energy_true`` × 1D ``rad`` × ``offset`` (any shape).

        Shape (n_energy, n_rad, *offset.shape).
        """
        rad, energy_true = np.asarray(rad, float), np.asarray(energy_true, float)
        offset = np.asarray(offset, float)
        extra = (1,) * offset.ndim
        return self.evaluate(rad.reshape((1, -1) + extra), energy_true.reshape((-1, 1) + extra), offset[None, None])

    def containment_radius(self, fraction, energy_true, offset, *, n_iter: int = 48) -> np.ndarray:
        """Radius (deg) containing ``fraction`` of the PSF; bisection, broadcast.

        ``fraction`` must lie in [0, 1); the result is accurate to ~1e-12 of the PSF width.
        """
        fraction = np.asarray(fraction, dtype=float)
        if np.any((fraction < 0) | (fraction >= 1)):
            raise ValueError(f"containment fraction must be in [0, 1), got {fraction.min()}..{fraction.max()}")
        fraction, energy_true, offset = np.broadcast_arrays(fraction, np.asarray(energy_true, float), np.asarray(offset, float))
        lo = np.zeros(fraction.shape)
        hi = np.broadcast_to(self._rad_scale(energy_true, offset), fraction.shape).copy()
        for _ in range(n_iter):
            mid = 0.5 * (lo + hi)
            below = self.containment(mid, energy_true, offset) < fraction
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return 0.5 * (lo + hi)


@dataclass(frozen=True, eq=False)
class PSF3Gauss(_PSFBase):
    """Sum of three 2D Gaussians in (E_true, offset) (GADF ``PSF_3GAUSS``).

    ``sigma_*`` in deg, ``ampl_*`` relative to the first Gaussian's peak; arrays of shape
    (n_energy_true, n_offset).
    """

    energy_true: MapAxis
    offset: MapAxis
    sigma_1: np.ndarray
    sigma_2: np.ndarray
    sigma_3: np.ndarray
    ampl_2: np.ndarray
    ampl_3: np.ndarray
    scale: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    tag: ClassVar[str] = "psf_3gauss"
    parameter_names: ClassVar[tuple[str, ...]] = ("sigma_1", "sigma_2", "sigma_3", "ampl_2", "ampl_3")

    def __post_init__(self):
        shape = (self.energy_true.nbin, self.offset.nbin)
        for name in (*self.parameter_names, "scale"):
            v = getattr(self, name)
            if v is None:
                v = np.ones(shape)
            v = np.asarray(v, dtype=float)
            if v.shape != shape:
                raise ValueError(f"PSF_3GAUSS {name}: shape {v.shape} does not match (energy_true, offset) {shape}")
            v.setflags(write=False)
            object.__setattr__(self, name, v)

    def parameters(self, energy_true, offset) -> dict[str, np.ndarray]:
        """Interpolated parameters at (E_true, offset); sigmas floored at 1e-6 deg."""
        out = {}
        for name in self.parameter_names:
            out[name] = grid_interp(
                getattr(self, name),
                [self.energy_true.center, self.offset.center],
                [energy_true, offset],
                scales=["log", "lin"],
            )
        for name in ("sigma_1", "sigma_2", "sigma_3"):
            out[name] = np.maximum(out[name], 1e-6)
        return out

    def _components(self, energy_true, offset):
        p = self.parameters(energy_true, offset)
        sig = [p["sigma_1"] * _DEG2RAD, p["sigma_2"] * _DEG2RAD, p["sigma_3"] * _DEG2RAD]
        amp = [np.ones_like(p["ampl_2"]), p["ampl_2"], p["ampl_3"]]
        weight = [a * s**2 for a, s in zip(amp, sig, strict=True)]  # ∝ integral of each Gaussian
        total = weight[0] + weight[1] + weight[2]
        return sig, amp, total

    def evaluate(self, rad, energy_true, offset) -> np.ndarray:
        """dP/dΩ (sr⁻¹) at angular distance ``rad`` (deg)."""
        sig, amp, total = self._components(energy_true, offset)
        r2 = (np.asarray(rad, dtype=float) * _DEG2RAD) ** 2
        val = sum(a * np.exp(-0.5 * r2 / s**2) for a, s in zip(amp, sig, strict=True))
        return val / (2 * np.pi * total)

    def containment(self, rad, energy_true, offset) -> np.ndarray:
        """Fraction of the PSF within ``rad`` (deg)."""
        sig, amp, total = self._components(energy_true, offset)
        r2 = (np.asarray(rad, dtype=float) * _DEG2RAD) ** 2
        val = sum(a * s**2 * -np.expm1(-0.5 * r2 / s**2) for a, s in zip(amp, sig, strict=True))
        return val / total

    def _rad_scale(self, energy_true, offset):
        p = self.parameters(energy_true, offset)
        return 12.0 * np.maximum(np.maximum(p["sigma_1"], p["sigma_2"]), p["sigma_3"])


@dataclass(frozen=True, eq=False)
class PSFTable(_PSFBase):
    """Tabulated PSF dP/dΩ (sr⁻¹) in (E_true, offset, rad) (GADF ``PSF_TABLE``).

    Containment is computed from the table normalised to its own rad range (the pdf is
    taken constant in each rad bin, integrated over the exact annulus solid angle).
    """

    energy_true: MapAxis
    offset: MapAxis
    rad: MapAxis
    data: np.ndarray
    meta: dict = field(default_factory=dict)
    tag: ClassVar[str] = "psf_table"

    def __post_init__(self):
        data = np.asarray(self.data, dtype=float)
        shape = (self.energy_true.nbin, self.offset.nbin, self.rad.nbin)
        if data.shape != shape:
            raise ValueError(f"PSF_TABLE: data shape {data.shape} does not match (energy_true, offset, rad) {shape}")
        data = np.where(np.isfinite(data) & (data > 0), data, 0.0)
        data.setflags(write=False)
        object.__setattr__(self, "data", data)
        r = self.rad.edges * _DEG2RAD
        annulus = 2 * np.pi * (np.cos(r[:-1]) - np.cos(r[1:]))
        cum = np.concatenate([np.zeros(shape[:2] + (1,)), np.cumsum(data * annulus, axis=-1)], axis=-1)
        total = cum[..., -1:]
        cum = np.divide(cum, total, out=np.zeros_like(cum), where=total > 0)
        cum.setflags(write=False)
        object.__setattr__(self, "_cumulative", cum)

    def evaluate(self, rad, energy_true, offset) -> np.ndarray:
        """dP/dΩ (sr⁻¹) at ``rad`` (deg); zero beyond the table's rad range."""
        return grid_interp(
            self.data,
            [self.energy_true.center, self.offset.center, self.rad.center],
            [energy_true, offset, rad],
            scales=["log", "lin", "lin"],
            bounds=[None, None, (0.0, float(self.rad.edges[-1]))],
        )

    def evaluate_grid(self, rad, energy_true, offset) -> np.ndarray:
        """dP/dΩ (sr⁻¹) for 1D ``energy_true`` × 1D ``rad`` × ``offset`` (any shape).

        Shape (n_energy, n_rad, *offset.shape); evaluated at the table's offset nodes, then
        interpolated linearly in offset (the same numbers as :meth:`evaluate`, faster).
        """
        rad, energy_true = np.asarray(rad, float), np.asarray(energy_true, float)
        offset = np.asarray(offset, float)
        nodes = self.offset.center
        at_nodes = self.evaluate(rad[None, :, None], energy_true[:, None, None], nodes[None, None, :])  # (E, rad, off)
        out = grid_interp(np.moveaxis(at_nodes, -1, 0), [nodes], [offset], scales=["lin"])  # (*offset, E, rad)
        return np.moveaxis(out, (-2, -1), (0, 1))

    def _cumulative_at(self, energy_true, offset) -> np.ndarray:
        """Containment at the rad edges, shape (*broadcast, n_rad + 1)."""
        return grid_interp(
            self._cumulative,
            [self.energy_true.center, self.offset.center],
            [energy_true, offset],
            scales=["log", "lin"],
        )

    def containment(self, rad, energy_true, offset) -> np.ndarray:
        """Fraction of the PSF within ``rad`` (deg)."""
        return np.clip(
            grid_interp(
                self._cumulative,
                [self.energy_true.center, self.offset.center, self.rad.edges],
                [energy_true, offset, np.minimum(rad, self.rad.edges[-1])],
                scales=["log", "lin", "lin"],
            ),
            0.0,
            1.0,
        )

    def containment_radius(self, fraction, energy_true, offset, *, n_iter: int = 0) -> np.ndarray:
        """Radius (deg) containing ``fraction``: exact inverse of the piecewise-linear containment."""
        fraction = np.asarray(fraction, dtype=float)
        if np.any((fraction < 0) | (fraction >= 1)):
            raise ValueError(f"containment fraction must be in [0, 1), got {fraction.min()}..{fraction.max()}")
        fraction, energy_true, offset = np.broadcast_arrays(fraction, np.asarray(energy_true, float), np.asarray(offset, float))
        cum = self._cumulative_at(energy_true, offset)
        cum = np.maximum.accumulate(cum, axis=-1)  # interpolation keeps it monotone; be safe
        edges = self.rad.edges
        i = np.clip((cum < fraction[..., None]).sum(axis=-1) - 1, 0, edges.size - 2)
        c0 = np.take_along_axis(cum, i[..., None], axis=-1)[..., 0]
        c1 = np.take_along_axis(cum, (i + 1)[..., None], axis=-1)[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(c1 > c0, (fraction - c0) / (c1 - c0), 0.0)
        return edges[i] + np.clip(t, 0.0, 1.0) * (edges[i + 1] - edges[i])
