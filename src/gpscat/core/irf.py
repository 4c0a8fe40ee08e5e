"""Instrument response functions (IRFs): small dataclasses with vectorised evaluation.

Units inside (plain floats): energies TeV, angles deg, effective area m², PSF sr⁻¹,
energy dispersion dP/dμ (μ = E_reco / E_true), background rate s⁻¹ TeV⁻¹ sr⁻¹ (the
GADF files store s⁻¹ MeV⁻¹ sr⁻¹; :mod:`gpscat.io.irf` converts).  Axes are
:class:`~gpscat.core.geom.MapAxis` (edges); tables hold values at bin centres and are
interpolated as gammapy does (see :mod:`gpscat.core.interp`): energies on a log scale,
angles and migration linearly, background rates on the log of their values.

Every ``evaluate`` broadcasts its arguments.  The classes serve both the data reduction
(exposure, PSF and energy-dispersion kernels, background maps) and the event simulator
(sampling helpers: :meth:`EnergyDispersion2D.sample_migra`,
``PSF*.containment_radius`` for inverse-transform sampling of offsets,
:meth:`Background3D.integrate` for expected counts per energy bin).

The PSF classes live in :mod:`gpscat.core.irf_psf` and are re-exported here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from gpscat.core.geom import MapAxis
from gpscat.core.interp import grid_interp, integrate_loglog
from gpscat.core.irf_psf import PSF3Gauss, PSFTable

__all__ = [
    "Background2D",
    "Background3D",
    "EffectiveArea2D",
    "EnergyDispersion2D",
    "PSF3Gauss",
    "PSFTable",
]


def _bounds(axis: MapAxis) -> tuple[float, float]:
    return float(axis.edges[0]), float(axis.edges[-1])


def _along_offset(at_nodes: np.ndarray, offset_axis: MapAxis, offset) -> np.ndarray:
    """Interpolate ``at_nodes`` (..., n_offset_nodes) linearly in offset: (..., *offset.shape)."""
    offset = np.asarray(offset, dtype=float)
    lead = at_nodes.shape[:-1]
    table = np.moveaxis(at_nodes, -1, 0)  # (n_off, *lead)
    out = grid_interp(table, [offset_axis.center], [offset], scales=["lin"], bounds=[_bounds(offset_axis)])
    return np.moveaxis(out.reshape(offset.shape + lead), tuple(range(offset.ndim)), tuple(range(len(lead), len(lead) + offset.ndim)))


def _check_shape(name: str, data: np.ndarray, axes: tuple[MapAxis, ...]) -> np.ndarray:
    data = np.asarray(data, dtype=float)
    expected = tuple(a.nbin for a in axes)
    if data.shape != expected:
        raise ValueError(f"{name}: data shape {data.shape} does not match axes {[a.name for a in axes]} {expected}")
    data.setflags(write=False)
    return data


@dataclass(frozen=True, eq=False)
class EffectiveArea2D:
    """Effective area A(E_true, offset) in m² (GADF ``AEFF_2D``).

    ``meta`` keeps the header keywords, e.g. ``LO_THRES``/``HI_THRES`` (TeV), the
    default safe energy range of H.E.S.S. files.
    """

    energy_true: MapAxis
    offset: MapAxis
    data: np.ndarray
    meta: dict = field(default_factory=dict)
    tag: ClassVar[str] = "aeff_2d"

    def __post_init__(self):
        object.__setattr__(self, "data", _check_shape("AEFF_2D", self.data, (self.energy_true, self.offset)))

    def evaluate(self, energy_true, offset) -> np.ndarray:
        """Effective area (m²) at true energies (TeV) and offsets (deg), broadcast."""
        return grid_interp(
            self.data,
            [self.energy_true.center, self.offset.center],
            [energy_true, offset],
            scales=["log", "lin"],
            bounds=[_bounds(self.energy_true), _bounds(self.offset)],
        )

    def evaluate_grid(self, energy_true, offset) -> np.ndarray:
        """A_eff (m²) for every 1D ``energy_true`` value and every ``offset`` (any shape).

        Shape (n_energy, *offset.shape).  The same numbers as :meth:`evaluate` (bilinear
        interpolation is separable), computed by interpolating in energy at the table's
        offset nodes first: fast for maps.
        """
        at_nodes = self.evaluate(np.asarray(energy_true, float)[:, None], self.offset.center[None, :])
        return _along_offset(at_nodes, self.offset, offset)

    @property
    def thresholds(self) -> tuple[float | None, float | None]:
        """(LO_THRES, HI_THRES) header values in TeV, ``None`` when absent."""
        lo, hi = self.meta.get("LO_THRES"), self.meta.get("HI_THRES")
        return (float(lo) if lo else None, float(hi) if hi else None)


@dataclass(frozen=True, eq=False)
class EnergyDispersion2D:
    """Energy dispersion dP/dμ(E_true, μ, offset) with μ = E_reco / E_true (GADF ``EDISP_2D``).

    The table is normalised on construction to unit integral over its migration range at
    every (E_true, offset) node (as gammapy does when it builds kernels): producers differ
    (the CTA 1DC table integrates to ~750, prod5 to ~0.01, H.E.S.S. to 1).
    """

    energy_true: MapAxis
    migra: MapAxis
    offset: MapAxis
    data: np.ndarray
    meta: dict = field(default_factory=dict)
    tag: ClassVar[str] = "edisp_2d"

    def __post_init__(self):
        data = _check_shape("EDISP_2D", self.data, (self.energy_true, self.migra, self.offset))
        data = np.where(np.isfinite(data) & (data > 0), data, 0.0)
        total = np.einsum("emo,m->eo", data, self.migra.width)[:, None, :]
        data = np.divide(data, total, out=np.zeros_like(data), where=total > 0)
        data.setflags(write=False)
        object.__setattr__(self, "data", data)

    def evaluate(self, energy_true, migra, offset) -> np.ndarray:
        """dP/dμ at (E_true TeV, μ, offset deg), broadcast."""
        return grid_interp(
            self.data,
            [self.energy_true.center, self.migra.center, self.offset.center],
            [energy_true, migra, offset],
            scales=["log", "lin", "lin"],
            bounds=[_bounds(self.energy_true), _bounds(self.migra), _bounds(self.offset)],
        )

    def pdf_nodes(self, energy_true, offset) -> np.ndarray:
        """dP/dμ on the migration bins (centres) at (E_true, offset); shape (*broadcast, n_migra)."""
        table = np.moveaxis(self.data, 1, -1)  # (E, offset, migra)
        return grid_interp(
            table,
            [self.energy_true.center, self.offset.center],
            [energy_true, offset],
            scales=["log", "lin"],
            bounds=[_bounds(self.energy_true), _bounds(self.offset)],
        )

    def cdf(self, energy_true, offset) -> np.ndarray:
        """Cumulative probability at the migration edges, shape (*broadcast, n_migra + 1).

        Starts at 0 and ends at 1 (0 where the table is empty).  The pdf is taken constant
        within each migration bin.
        """
        p = self.pdf_nodes(energy_true, offset) * self.migra.width
        return np.concatenate([np.zeros(p.shape[:-1] + (1,)), np.cumsum(p, axis=-1)], axis=-1)

    def kernel(self, energy_true: MapAxis, energy: MapAxis, offset) -> np.ndarray:
        """Probability that a photon at the centre of true bin j lands in reco bin i.

        Parameters
        ----------
        energy_true : MapAxis
            True-energy bins (the kernel is evaluated at their centres).
        energy : MapAxis
            Reco-energy bins.
        offset : array_like
            Offsets (deg), any shape.

        Returns
        -------
        ndarray, shape (n_true, n_reco, *offset.shape)
            Computed at the table's offset nodes and interpolated linearly in offset (the
            kernel is linear in the pdf, which is interpolated linearly in offset).
        """
        et = energy_true.center
        cdf = self.cdf(et[:, None], self.offset.center[None, :])  # (n_true, n_off, n_m+1)
        mu = energy.edges[None, :] / et[:, None]  # (n_true, n_reco+1)
        xp = self.migra.edges
        idx = np.clip(np.searchsorted(xp, mu, side="right") - 1, 0, xp.size - 2)
        w = np.clip((mu - xp[idx]) / (xp[idx + 1] - xp[idx]), 0.0, 1.0)[:, None, :]
        rows = np.arange(et.size)[:, None, None]
        cols = np.arange(self.offset.nbin)[None, :, None]
        at_edges = cdf[rows, cols, idx[:, None, :]] * (1 - w) + cdf[rows, cols, idx[:, None, :] + 1] * w
        nodes = np.diff(at_edges, axis=-1)  # (n_true, n_off, n_reco)
        return _along_offset(np.moveaxis(nodes, 1, -1), self.offset, offset)

    def bias(self, energy_true, offset) -> np.ndarray:
        """Mean of μ − 1 at (E_true, offset), from the tabulated pdf; NaN where the pdf is zero."""
        p = self.pdf_nodes(energy_true, offset) * self.migra.width
        tot = p.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, (p * self.migra.center).sum(axis=-1) / tot - 1.0, np.nan)

    def sample_migra(self, energy_true, offset, *, rng: np.random.Generator, chunk: int = 20000) -> np.ndarray:
        """Draw μ for each (E_true, offset) pair (1D arrays of equal length) by inverse CDF.

        The CDF is normalised to the table's migration range; pairs where the pdf is zero
        everywhere get NaN.
        """
        energy_true = np.asarray(energy_true, dtype=float).ravel()
        offset = np.broadcast_to(np.asarray(offset, dtype=float), energy_true.shape).ravel()
        out = np.empty(energy_true.size)
        edges = self.migra.edges
        for start in range(0, energy_true.size, chunk):
            sl = slice(start, start + chunk)
            cdf = self.cdf(energy_true[sl], offset[sl])
            tot = cdf[:, -1:]
            u = rng.uniform(size=(cdf.shape[0], 1)) * tot
            i = np.clip((cdf < u).sum(axis=1) - 1, 0, edges.size - 2)
            rows = np.arange(cdf.shape[0])
            c0, c1 = cdf[rows, i], cdf[rows, i + 1]
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(c1 > c0, (u[:, 0] - c0) / (c1 - c0), 0.5)
            val = edges[i] + frac * (edges[i + 1] - edges[i])
            out[sl] = np.where(tot[:, 0] > 0, val, np.nan)
        return out


class _BackgroundIRF(ABC):
    """Shared evaluation of background rate tables (energy axis first, then spatial axes)."""

    energy: MapAxis
    data: np.ndarray

    @abstractmethod
    def _spatial(self) -> tuple[MapAxis, ...]:
        """The spatial axes of the table, in data order."""

    def evaluate(self, energy, *spatial) -> np.ndarray:
        """Rate (s⁻¹ TeV⁻¹ sr⁻¹) at reco energy (TeV) and spatial coordinates (deg), broadcast."""
        axes = (self.energy, *self._spatial())
        return grid_interp(
            self.data,
            [a.center for a in axes],
            [energy, *spatial],
            scales=["log"] + ["lin"] * len(spatial),
            values_scale="log",
            bounds=[_bounds(a) for a in axes],
        )

    def integrate(self, energy_edges, *spatial) -> np.ndarray:
        """Rate integrated over reco-energy bins (s⁻¹ sr⁻¹), shape (n_bins, *broadcast spatial).

        The log-log interpolant in energy is integrated exactly over each bin on the
        table's spatial nodes, then interpolated (log values) to the positions.
        """
        edges = np.asarray(energy_edges, dtype=float)
        spatial_axes = self._spatial()
        per_bin = integrate_loglog(self.data, self.energy.center, edges, bounds=_bounds(self.energy))
        table = np.moveaxis(per_bin, 0, -1)  # spatial..., bins
        out = grid_interp(
            table,
            [a.center for a in spatial_axes],
            list(spatial),
            scales=["lin"] * len(spatial_axes),
            values_scale="log",
            bounds=[_bounds(a) for a in spatial_axes],
        )
        return np.moveaxis(out, -1, 0)

    def fill_missing_energy(self):
        """Copy where zero or non-finite table values between valid ones along energy are filled.

        Log-linear interpolation in the energy index, as gammapy's ``interp_missing_data``
        (the default of its MapDatasetMaker); values below the first or above the last
        valid energy stay zero.
        """
        data = np.where(np.isfinite(self.data), self.data, 0.0)
        valid = data > 0
        n = data.shape[0]
        idx = np.arange(n).reshape((n,) + (1,) * (data.ndim - 1))
        prev_i = np.maximum.accumulate(np.where(valid, idx, -1), axis=0)
        next_i = np.flip(np.minimum.accumulate(np.flip(np.where(valid, idx, n), axis=0), axis=0), axis=0)
        fill = ~valid & (prev_i >= 0) & (next_i < n)
        with np.errstate(divide="ignore"):
            logd = np.where(valid, np.log(np.where(valid, data, 1.0)), 0.0)
        lo = np.take_along_axis(logd, np.clip(prev_i, 0, n - 1), axis=0)
        hi = np.take_along_axis(logd, np.clip(next_i, 0, n - 1), axis=0)
        span = np.where(fill, next_i - prev_i, 1)
        t = (idx - prev_i) / span
        filled = np.where(fill, np.exp(lo + t * (hi - lo)), data)
        return replace(self, data=filled)


@dataclass(frozen=True, eq=False)
class Background3D(_BackgroundIRF):
    """Background rate (s⁻¹ TeV⁻¹ sr⁻¹) in reco energy and FoV coordinates (GADF ``BKG_3D``).

    ``fov_alignment`` is the header's ``FOVALIGN`` (see :mod:`gpscat.core.fov` for the
    frame conventions).  The rate is per unit *observation* time (no dead-time
    correction): multiply by the ontime, not the livetime.
    """

    energy: MapAxis
    fov_lon: MapAxis
    fov_lat: MapAxis
    data: np.ndarray
    fov_alignment: str = "RADEC"
    meta: dict = field(default_factory=dict)
    tag: ClassVar[str] = "bkg_3d"

    def __post_init__(self):
        object.__setattr__(self, "data", _check_shape("BKG_3D", self.data, (self.energy, self.fov_lon, self.fov_lat)))

    def _spatial(self):
        return (self.fov_lon, self.fov_lat)


@dataclass(frozen=True, eq=False)
class Background2D(_BackgroundIRF):
    """Radially symmetric background rate (s⁻¹ TeV⁻¹ sr⁻¹) in reco energy and offset (``BKG_2D``)."""

    energy: MapAxis
    offset: MapAxis
    data: np.ndarray
    meta: dict = field(default_factory=dict)
    tag: ClassVar[str] = "bkg_2d"

    def __post_init__(self):
        object.__setattr__(self, "data", _check_shape("BKG_2D", self.data, (self.energy, self.offset)))

    def _spatial(self):
        return (self.offset,)

    def pad_offset(self) -> Background2D:
        """Copy with one more offset bin that repeats the last (gammapy's default edge padding)."""
        e = self.offset.edges
        axis = MapAxis(self.offset.name, np.append(e, 2 * e[-1] - e[-2]), self.offset.unit, self.offset.interp)
        return Background2D(self.energy, axis, np.concatenate([self.data, self.data[:, -1:]], axis=1), self.meta)
