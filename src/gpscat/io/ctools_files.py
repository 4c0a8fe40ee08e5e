"""The data files a ctools/GammaLib XML model references, read into plain arrays.

* ``FileFunction`` spectra: ASCII, two columns, energy (MeV) and intensity
  (ph cm⁻² s⁻¹ MeV⁻¹); ``#`` comments allowed.
* ``PhaseCurve`` / ``LightCurve``: a binary table in the first extension with columns
  ``PHASE`` / ``TIME`` (s) and ``NORM``.
* ``DiffuseMap``: the first image HDU with data (WCS with ``CDELT`` or a diagonal ``CD``).
* ``DiffuseMapCube``: a 3D image (energy, lat, lon) and an ``ENERGIES`` table (``Energy``,
  MeV unless the column says otherwise).

Every error is a ``ValueError``/``OSError`` that names the file.  Templates become
:class:`~gpscat.models.spatial.TemplateSpatialModel` maps of surface brightness (sr⁻¹)
with ``normalize=False``, already normalised the way GammaLib does it (∫ map dΩ = 1), so
that gammapy, which would normalise per pixel sum, reads the same brightness back.
"""

from __future__ import annotations

import os
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.models.spatial import TemplateSpatialModel

__all__ = [
    "cube_template",
    "light_curve_mean",
    "map_template",
    "phase_curve_mean",
    "read_file_function",
    "read_light_curve",
    "read_map_cube",
    "read_phase_curve",
    "read_sky_map",
]

_TEV_IN_MEV = 1e6


def read_file_function(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Energies (MeV) and intensities (ph cm⁻² s⁻¹ MeV⁻¹) of a ``FileFunction`` file."""
    try:
        data = np.loadtxt(path, comments="#", ndmin=2, dtype=float)
    except (OSError, ValueError) as exc:
        raise type(exc)(f"{path}: cannot read FileFunction spectrum: {exc}") from exc
    if data.shape[1] < 2 or data.shape[0] < 1:
        raise ValueError(f"{path}: FileFunction spectrum needs two columns (energy MeV, intensity), got shape {data.shape}")
    energy, values = data[:, 0], data[:, 1]
    if np.any(~(energy > 0)) or np.any(np.diff(energy) <= 0):
        raise ValueError(f"{path}: FileFunction energies must be positive and increasing")
    if np.any(~np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"{path}: FileFunction intensities must be finite and >= 0")
    return energy, values


def _table_columns(path, names: tuple[str, str], *, steps: bool = False) -> tuple[np.ndarray, np.ndarray, fits.Header]:
    try:
        with fits.open(path, memmap=False) as hl:
            if len(hl) < 2 or not isinstance(hl[1], fits.BinTableHDU):
                raise ValueError("no binary table in the first extension")
            table, header = hl[1].data, hl[1].header.copy()
            cols = [n.upper() for n in hl[1].columns.names]
            missing = [n for n in names if n not in cols]
            if missing:
                raise ValueError(f"columns {missing} missing (has {cols})")
            a = np.asarray(table[names[0]], dtype=float)
            b = np.asarray(table[names[1]], dtype=float)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: cannot read {names[0]}/{names[1]} table: {exc}") from exc
    bad_order = np.any(np.diff(a) < 0) if steps else np.any(np.diff(a) <= 0)
    if a.size < 2 or bad_order or np.any(~np.isfinite(b)):
        order = "non-decreasing" if steps else "increasing"
        raise ValueError(f"{path}: need >= 2 rows with {order} {names[0]} and finite {names[1]}")
    return a, b, header


def read_phase_curve(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Phases (in [0, 1], non-decreasing: a repeated phase is a step) and relative
    normalisations of a ``PhaseCurve`` file."""
    phase, norm, _ = _table_columns(path, ("PHASE", "NORM"), steps=True)
    if phase[0] < 0 or phase[-1] > 1:
        raise ValueError(f"{path}: phases must lie in [0, 1], got {phase[0]}..{phase[-1]}")
    return phase, norm


def read_light_curve(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Times (s from the table's reference time) and relative normalisations of a ``LightCurve`` file."""
    time, norm, _ = _table_columns(path, ("TIME", "NORM"))
    return time, norm


def _geom_from_header(header: fits.Header, path) -> WcsGeom:
    h = header.copy()
    if "CDELT1" not in h and "CD1_1" in h:
        if h.get("CD1_2", 0.0) != 0.0 or h.get("CD2_1", 0.0) != 0.0:
            raise ValueError(f"{path}: rotated WCS (CD matrix with off-diagonal terms) is not supported")
        h["CDELT1"], h["CDELT2"] = h["CD1_1"], h["CD2_2"]
    for key in ("PC1_2", "PC2_1", "CROTA2"):
        if h.get(key, 0.0) not in (0, 0.0):
            raise ValueError(f"{path}: rotated WCS ({key} = {h[key]}) is not supported")
    h.pop("WCSSHAPE", None)
    try:
        return WcsGeom.from_header(h)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: unsupported map WCS: {exc}") from exc


def _clean(data: np.ndarray) -> np.ndarray:
    """Float copy with NaN and negative pixels set to 0 (they carry no flux)."""
    data = np.array(data, dtype=float)
    data[~np.isfinite(data) | (data < 0)] = 0.0
    return data


def _read_image(path, *, cube: bool) -> tuple[np.ndarray, fits.Header, np.ndarray | None]:
    """Data and header of the first image HDU with data; with ``cube`` the ENERGIES (MeV)."""
    path = Path(path)
    if not path.exists():
        raise OSError(f"{path}: template file not found")
    energy = None
    with fits.open(path, memmap=False) as hl:
        hdu = next((h for h in hl if h.is_image and h.data is not None), None)
        if hdu is None:
            raise ValueError(f"{path}: no image HDU with data")
        data, header = np.asarray(hdu.data), hdu.header.copy()
        if cube:
            if "ENERGIES" not in hl:
                raise ValueError(f"{path}: map cube has no ENERGIES extension")
            col = hl["ENERGIES"].columns[0]
            unit = u.Unit(col.unit) if col.unit else u.MeV
            energy = (np.asarray(hl["ENERGIES"].data[col.name], dtype=float) * unit).to_value("MeV")
    return data, header, energy


def read_sky_map(path: str | os.PathLike) -> tuple[WcsGeom, np.ndarray]:
    """Geometry and image (NaN and negative pixels → 0) of a ``DiffuseMap`` file."""
    data, header, _ = _read_image(path, cube=False)
    data = np.squeeze(data)
    if data.ndim != 2:
        raise ValueError(f"{path}: DiffuseMap needs a 2D image, got shape {data.shape}")
    geom = _geom_from_header(header, path)
    if data.shape != geom.shape:
        raise ValueError(f"{path}: image shape {data.shape} does not match the WCS {geom.shape}")
    return geom, _clean(data)


def read_map_cube(path: str | os.PathLike) -> tuple[WcsGeom, np.ndarray, np.ndarray]:
    """Geometry, cube ``(n_energy, ny, nx)`` (ph cm⁻² s⁻¹ MeV⁻¹ sr⁻¹) and energies (MeV).

    NaN and negative pixels are set to 0.
    """
    data, header, energy = _read_image(path, cube=True)
    if data.ndim != 3 or data.shape[0] != energy.size:
        raise ValueError(f"{path}: cube shape {data.shape} does not match {energy.size} energies")
    if np.any(~(energy > 0)) or np.any(np.diff(energy) <= 0):
        raise ValueError(f"{path}: cube energies must be positive and increasing")
    geom = _geom_from_header(header, path)
    if data.shape[1:] != geom.shape:
        raise ValueError(f"{path}: cube planes {data.shape[1:]} do not match the WCS {geom.shape}")
    return geom, _clean(data), energy


def map_template(path: str | os.PathLike, *, normalize: bool = True) -> TemplateSpatialModel:
    """``DiffuseMap`` → template of brightness (sr⁻¹); ``normalize``: ∫ map dΩ = 1."""
    geom, data = read_sky_map(path)
    if normalize:
        total = float(np.sum(data * geom.solid_angle()))
        if not total > 0:
            raise ValueError(f"{path}: template map has no positive pixel")
        data = data / total
    return TemplateSpatialModel(map=Map(geom, data, unit="sr-1"), filename=Path(path).name, normalize=False)


def cube_template(path: str | os.PathLike) -> tuple[TemplateSpatialModel, np.ndarray, np.ndarray]:
    """``DiffuseMapCube`` → (normalised template per energy plane, energies TeV, flux cm⁻² s⁻¹ TeV⁻¹).

    The cube is split exactly into its spectrum ``F(E_k) = Σ cube_k dΩ`` and planes of
    unit integral; their product is the cube at every node.
    """
    geom, cube, energy = read_map_cube(path)
    flux = np.sum(cube * geom.solid_angle(), axis=(-2, -1))  # ph cm-2 s-1 MeV-1 per plane
    with np.errstate(invalid="ignore", divide="ignore"):
        planes = np.where(flux[:, None, None] > 0, cube / flux[:, None, None], 0.0)
    axis = _node_axis(energy / _TEV_IN_MEV)
    tmpl = TemplateSpatialModel(map=Map(geom, planes, (axis,), unit="sr-1"), filename=Path(path).name, normalize=False)
    return tmpl, energy / _TEV_IN_MEV, flux * _TEV_IN_MEV


def _node_axis(nodes: np.ndarray) -> MapAxis:
    """A log energy axis whose bin centres are ``nodes`` (TeV): edges at the geometric
    midpoints (exact centres for log-uniform nodes, as ctools cubes have)."""
    if nodes.size == 1:
        return MapAxis("energy_true", np.array([nodes[0] / 1.1, nodes[0] * 1.1]), "TeV", "log")
    ln = np.log(nodes)
    mid = 0.5 * (ln[1:] + ln[:-1])
    edges = np.concatenate([[ln[0] - (mid[0] - ln[0])], mid, [ln[-1] + (ln[-1] - mid[-1])]])
    return MapAxis("energy_true", np.exp(edges), "TeV", "log")


def phase_curve_mean(phase: np.ndarray, norm: np.ndarray) -> float:
    """Mean over one period of the periodic, piecewise-linear phase curve.

    Repeated phases (steps) are allowed: each segment of the node sequence, wrapped
    around with the last node at ``phase - 1`` and the first at ``phase + 1``, is
    integrated over its overlap with [0, 1].
    """
    phase, norm = np.asarray(phase, float), np.asarray(norm, float)
    x = np.concatenate([[phase[-1] - 1.0], phase, [phase[0] + 1.0]])
    y = np.concatenate([[norm[-1]], norm, [norm[0]]])
    x0, x1, y0, y1 = x[:-1], x[1:], y[:-1], y[1:]
    a, b = np.clip(x0, 0.0, 1.0), np.clip(x1, 0.0, 1.0)
    width = x1 - x0
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(width > 0, (y1 - y0) / width, 0.0)
    ya, yb = y0 + slope * (a - x0), y0 + slope * (b - x0)
    return float(np.sum(np.where(b > a, 0.5 * (ya + yb) * (b - a), 0.0)))


def light_curve_mean(time: np.ndarray, norm: np.ndarray) -> float:
    """Time average of the piecewise-linear light curve over its span."""
    time, norm = np.asarray(time, float), np.asarray(norm, float)
    return float(np.sum(0.5 * (norm[1:] + norm[:-1]) * np.diff(time)) / (time[-1] - time[0]))
