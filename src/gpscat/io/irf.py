"""GADF IRF HDUs ↔ :mod:`gpscat.core.irf` classes.

Reads ``AEFF_2D``, ``EDISP_2D``, ``PSF_3GAUSS``, ``PSF_TABLE``, ``BKG_3D`` and ``BKG_2D``
one-row BINTABLE HDUs ("FITS arrays" convention), and writes them back in the layout the
GADF recommends (axis columns in the recommended order, TDIM in that order).

Array layout.  OGIP/GADF: the first ``TDIM`` dimension (fastest varying) is the axis
of the first ``*_LO`` column.  A file whose data array has the column-order shape
instead of the reversed one is read as well.  ``BKG_3D`` follows gammapy, whose writer
made most files in use: the energy axis is located by its column (first or last), and
``fov_lon`` is the middle array dimension; for files listing ``ENERG`` first (GADF order,
e.g. CTA prod5) this is exactly the OGIP rule, for legacy files listing ``ENERG`` last
(H.E.S.S. DL3 DR1, CTA 1DC) it reproduces gammapy's reading.

Units come from ``TUNIT``; non-standard strings (CTA 1DC ``1/s/MeV/sr``) are repaired
and missing background units assumed to be the GADF ``s-1 MeV-1 sr-1``, each with a
logged warning.  Errors name the file, the HDU and what was expected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import astropy.units as u
import numpy as np
from astropy.io import fits

from gpscat.core.geom import MapAxis
from gpscat.core.irf import (
    Background2D,
    Background3D,
    EffectiveArea2D,
    EnergyDispersion2D,
    PSF3Gauss,
    PSFTable,
)
from gpscat.io.atomic import atomic_path

__all__ = ["IRF_CLASSES", "IRFError", "irf_from_hdu", "irf_to_hdu", "read_irf", "write_irfs"]

log = logging.getLogger(__name__)

IRF_CLASSES = {c.tag: c for c in (EffectiveArea2D, EnergyDispersion2D, PSF3Gauss, PSFTable, Background3D, Background2D)}

# axis name → (column prefixes, unit, interp)
_AXES = {
    "energy_true": (("ENERG", "ETRUE"), "TeV", "log"),
    "energy": (("ENERG",), "TeV", "log"),
    "offset": (("THETA",), "deg", "lin"),
    "migra": (("MIGRA",), "", "lin"),
    "rad": (("RAD",), "deg", "lin"),
    "fov_lon": (("DETX",), "deg", "lin"),
    "fov_lat": (("DETY",), "deg", "lin"),
}
# tag → (canonical axes, data columns, data unit, HDUCLAS2, EXTNAME)
_SPEC = {
    "aeff_2d": (("energy_true", "offset"), ("EFFAREA",), "m2", "EFF_AREA", "EFFECTIVE AREA"),
    "edisp_2d": (("energy_true", "migra", "offset"), ("MATRIX",), "", "EDISP", "ENERGY DISPERSION"),
    "psf_table": (("energy_true", "offset", "rad"), ("RPSF",), "sr-1", "PSF", "POINT SPREAD FUNCTION"),
    "psf_3gauss": (("energy_true", "offset"), ("SCALE", "SIGMA_1", "AMPL_2", "SIGMA_2", "AMPL_3", "SIGMA_3"), "", "PSF", "POINT SPREAD FUNCTION"),
    "bkg_3d": (("energy", "fov_lon", "fov_lat"), ("BKG", "BGD"), "s-1 MeV-1 sr-1", "BKG", "BACKGROUND"),
    "bkg_2d": (("energy", "offset"), ("BKG", "BGD"), "s-1 MeV-1 sr-1", "BKG", "BACKGROUND"),
}
_STRUCTURAL = ("XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "TFIELDS", "TTYPE", "TFORM", "TUNIT", "TDIM", "EXTNAME", "COMMENT", "HISTORY", "CREF", "TZERO", "TSCAL")
_BKG_UNIT = "s-1 TeV-1 sr-1"  # inside gpscat


class IRFError(ValueError):
    """An IRF HDU is missing, of an unknown kind or malformed (the message names file and HDU)."""


def _where(source: str, hdu: fits.BinTableHDU) -> str:
    return f"{source or '(in memory)'} HDU {hdu.name!r}"


def parse_unit(text: str | None, *, default: str, where: str) -> u.UnitBase:
    """Parse a FITS unit string; repair known quirks and assume ``default`` when empty (warned)."""
    text = (text or "").strip()
    if not text:
        if default:
            log.warning("%s: no unit given; assuming %r", where, default)
        return u.Unit(default)
    try:
        return u.Unit(text, format="fits")
    except ValueError:
        pass
    parts = [p.strip() for p in text.split("/")]
    if len(parts) > 2 and all(parts):
        repaired = f"{parts[0]} / ({' '.join(parts[1:])})"
        try:
            unit = u.Unit(repaired)
        except ValueError:
            unit = None
        if unit is not None:
            log.warning("%s: non-standard unit %r read as %s", where, text, unit.to_string())
            return unit
    try:
        unit = u.Unit(text)
    except ValueError:
        log.warning("%s: unrecognised unit %r; assuming %r", where, text, default)
        return u.Unit(default)
    log.warning("%s: non-FITS unit %r read as %s", where, text, unit.to_string())
    return unit


def _factor(unit: u.UnitBase, target: str, where: str) -> float:
    try:
        return float(unit.to(target))
    except u.UnitConversionError:
        raise IRFError(f"{where}: unit {unit.to_string()!r} is not convertible to {target!r}") from None


def _find_axis_prefix(names: list[str], name: str, where: str) -> str:
    for prefix in _AXES[name][0]:
        if f"{prefix}_LO" in names and f"{prefix}_HI" in names:
            return prefix
    raise IRFError(f"{where}: missing axis columns for {name!r} (expected one of {[p + '_LO/_HI' for p in _AXES[name][0]]})")


def _read_axis(hdu: fits.BinTableHDU, name: str, prefix: str, where: str) -> MapAxis:
    _, unit, interp = _AXES[name]
    cols = hdu.columns
    lo = np.asarray(hdu.data[f"{prefix}_LO"][0], dtype=float).ravel()
    hi = np.asarray(hdu.data[f"{prefix}_HI"][0], dtype=float).ravel()
    if unit:
        f = _factor(parse_unit(cols[f"{prefix}_LO"].unit, default=unit, where=f"{where} column {prefix}_LO"), unit, where)
        lo, hi = lo * f, hi * f
    if lo.shape != hi.shape or lo.size == 0:
        raise IRFError(f"{where}: {prefix}_LO/_HI must be non-empty arrays of equal length, got {lo.shape}, {hi.shape}")
    if lo.size > 1 and np.allclose(lo, hi, rtol=1e-6, atol=0):
        edges = _edges_from_nodes(lo, interp, f"{where} {prefix}")
    elif not np.allclose(lo[1:], hi[:-1], rtol=1e-4, atol=1e-6):
        raise IRFError(f"{where}: {prefix} bins are not contiguous (HI[i] != LO[i+1])")
    else:
        edges = np.append(lo, hi[-1])
    try:
        return MapAxis(name, edges, unit, interp)
    except ValueError as exc:
        raise IRFError(f"{where}: invalid {prefix} axis: {exc}") from None


def _edges_from_nodes(nodes: np.ndarray, interp: str, where: str) -> np.ndarray:
    """Bin edges whose centres are ``nodes`` (files that give node values with LO == HI).

    Exact for evenly spaced nodes (in the axis' scale), which is what such files use
    (H.E.S.S. DL3 DR1 offsets); otherwise the centres are close to the nodes (logged).
    """
    x = np.log(nodes) if interp == "log" else np.asarray(nodes, float)
    mid = 0.5 * (x[1:] + x[:-1])
    e = np.concatenate([[2 * x[0] - mid[0]], mid, [2 * x[-1] - mid[-1]]])
    if not np.allclose(np.diff(x), np.diff(x)[0], rtol=1e-3):
        log.info("%s: unevenly spaced node values; bin centres approximate the nodes", where)
    log.debug("%s: axis given as node values (LO == HI); edges derived from the nodes", where)
    return np.exp(e) if interp == "log" else e


def _read_array(hdu: fits.BinTableHDU, col: str, prefixes: list[str], sizes: dict[str, int], where: str, tag: str) -> np.ndarray:
    """Data column as an array with axes in column order of ``prefixes``."""
    arr = np.asarray(hdu.data[col][0], dtype=float)
    in_cols = [sizes[p] for p in prefixes]
    if tag == "bkg_3d":
        return _bkg3d_array(arr, prefixes, sizes, where, col)
    if arr.shape == tuple(reversed(in_cols)):
        return arr.T
    if arr.shape == tuple(in_cols):
        log.debug("%s: column %s stored in column order (not OGIP-reversed)", where, col)
        return arr
    raise IRFError(f"{where}: column {col} has shape {arr.shape}; expected {tuple(reversed(in_cols))} from the axis columns {prefixes}")


def _bkg3d_array(arr, prefixes, sizes, where, col):
    """BKG_3D array in column order of ``prefixes``, read with gammapy's convention."""
    n_e = sizes["ENERG"]
    if arr.ndim != 3:
        raise IRFError(f"{where}: column {col} must be 3-dimensional, got shape {arr.shape}")
    if arr.shape[-1] == n_e and (prefixes[0] == "ENERG" or arr.shape[0] != n_e):
        arr = arr.T  # stored (b, a, E) -> (E, a, b)
    elif arr.shape[0] != n_e:
        raise IRFError(f"{where}: column {col} has shape {arr.shape}; expected the {n_e} energy bins first or last")
    # (E, a, b): a, the middle stored dimension, is fov_lon
    if arr.shape[1:] != (sizes["DETX"], sizes["DETY"]):
        if arr.shape[1:] != (sizes["DETY"], sizes["DETX"]):
            raise IRFError(f"{where}: column {col} spatial shape {arr.shape[1:]} does not match the DETX/DETY bins")
        log.warning("%s: column %s read with DETX as the last array dimension (OGIP order)", where, col)
        arr = np.swapaxes(arr, 1, 2)
    order = [("ENERG", "DETX", "DETY").index(p) for p in prefixes]
    return np.transpose(arr, order)


def _detect_tag(hdu: fits.BinTableHDU, where: str) -> str:
    h = hdu.header
    c2 = str(h.get("HDUCLAS2", "")).strip().upper()
    c4 = str(h.get("HDUCLAS4", "")).strip().upper()
    names = [n.upper() for n in hdu.columns.names]
    if c4 in ("AEFF_2D", "EDISP_2D", "PSF_TABLE", "PSF_3GAUSS", "BKG_3D", "BKG_2D"):
        return c4.lower()
    if c2 == "EFF_AREA" or "EFFAREA" in names:
        return "aeff_2d"
    if c2 == "EDISP" or "MATRIX" in names:
        return "edisp_2d"
    if c2 in ("RPSF", "PSF") or "RPSF" in names or "SIGMA_1" in names:
        return "psf_3gauss" if ("3GAUSS" in c4 or "SIGMA_1" in names) else "psf_table"
    if c2 in ("BKG", "BGD") or "BKG" in names or "BGD" in names:
        return "bkg_3d" if "DETX_LO" in names else "bkg_2d"
    raise IRFError(f"{where}: cannot tell the IRF kind (HDUCLAS2={c2!r}, HDUCLAS4={c4!r}, columns {names})")


def _meta(header: fits.Header) -> dict:
    return {k: v for k, v in header.items() if k and not k.startswith(_STRUCTURAL)}


def irf_from_hdu(hdu: fits.BinTableHDU, *, kind: str | None = None, source: str = ""):
    """Build the IRF object of one GADF HDU.

    Parameters
    ----------
    hdu : BinTableHDU
        One-row IRF table.
    kind : str, optional
        ``aeff_2d``, ``edisp_2d``, ``psf_3gauss``, ``psf_table``, ``bkg_3d`` or ``bkg_2d``
        (the hdu-index ``HDU_CLASS``); detected from the header when omitted.
    source : str
        File name for error messages.
    """
    where = _where(source, hdu)
    if not isinstance(hdu, fits.BinTableHDU) or hdu.data is None or len(hdu.data) < 1:
        raise IRFError(f"{where}: expected a BINTABLE with one row of IRF arrays")
    tag = (kind or _detect_tag(hdu, where)).lower()
    if tag not in _SPEC:
        raise IRFError(f"{where}: unsupported IRF class {tag!r}; supported: {sorted(_SPEC)}")
    axes_names, data_cols, data_unit, _, _ = _SPEC[tag]
    names = [n.upper() for n in hdu.columns.names]
    prefixes = {a: _find_axis_prefix(names, a, where) for a in axes_names}
    axes = {a: _read_axis(hdu, a, p, where) for a, p in prefixes.items()}
    in_file = sorted(prefixes.values(), key=lambda p: names.index(f"{p}_LO"))
    sizes = {p: axes[a].nbin for a, p in prefixes.items()}
    to_canon = [in_file.index(prefixes[a]) for a in axes_names]

    def column(col: str) -> np.ndarray:
        return np.transpose(_read_array(hdu, col, in_file, sizes, where, tag), to_canon)

    meta = _meta(hdu.header)
    try:
        if tag == "psf_3gauss":
            missing = [c for c in data_cols if c not in names]
            if missing:
                raise IRFError(f"{where}: PSF_3GAUSS columns {missing} missing")
            pars = {c.lower(): column(c) for c in data_cols}
            for s in ("sigma_1", "sigma_2", "sigma_3"):
                unit = parse_unit(hdu.columns[s.upper()].unit, default="deg", where=f"{where} column {s.upper()}")
                pars[s] = pars[s] * _factor(unit, "deg", where)
            return PSF3Gauss(axes["energy_true"], axes["offset"], meta=meta, **pars)
        col = next((c for c in data_cols if c in names), None)
        if col is None:
            raise IRFError(f"{where}: data column {' or '.join(data_cols)} missing")
        data = column(col)
        unit = parse_unit(hdu.columns[col].unit, default=data_unit, where=f"{where} column {col}")
        if tag == "aeff_2d":
            return EffectiveArea2D(axes["energy_true"], axes["offset"], data * _factor(unit, "m2", where), meta)
        if tag == "edisp_2d":
            return EnergyDispersion2D(axes["energy_true"], axes["migra"], axes["offset"], data, meta)
        if tag == "psf_table":
            return PSFTable(axes["energy_true"], axes["offset"], axes["rad"], data * _factor(unit, "sr-1", where), meta)
        data = np.where(np.isfinite(data), data, 0.0) * _factor(unit, _BKG_UNIT, where)
        if tag == "bkg_3d":
            align = str(hdu.header.get("FOVALIGN", "RADEC")).strip().upper() or "RADEC"
            return Background3D(axes["energy"], axes["fov_lon"], axes["fov_lat"], data, align, meta)
        return Background2D(axes["energy"], axes["offset"], data, meta)
    except IRFError:
        raise
    except (ValueError, KeyError, IndexError) as exc:
        raise IRFError(f"{where}: malformed {tag.upper()} HDU: {exc}") from exc


def read_irf(path: str | os.PathLike, hdu: str | int, *, kind: str | None = None):
    """Read one IRF HDU from a FITS file (gzip is fine); errors name the file and HDU."""
    try:
        with fits.open(path, memmap=False) as hl:
            try:
                h = hl[hdu]
            except (KeyError, IndexError):
                raise IRFError(f"{path}: HDU {hdu!r} not found; the file has {[x.name for x in hl]}") from None
            return irf_from_hdu(h, kind=kind, source=str(path))
    except OSError as exc:
        raise IRFError(f"{path}: cannot read FITS file for IRF HDU {hdu!r}: {exc}") from exc


# ------------------------------------------------------------------------ writing


def _axis_columns(axis: MapAxis, prefix: str) -> list[fits.Column]:
    n = axis.nbin
    unit = axis.unit or None
    return [
        fits.Column(f"{prefix}_LO", f"{n}E", unit=unit, array=axis.lo[None, :].astype(np.float32)),
        fits.Column(f"{prefix}_HI", f"{n}E", unit=unit, array=axis.hi[None, :].astype(np.float32)),
    ]


def _array_column(name: str, data: np.ndarray, unit: str | None) -> fits.Column:
    stored = np.ascontiguousarray(np.asarray(data, dtype=np.float32).T)[None]
    dim = "(" + ",".join(str(s) for s in reversed(stored.shape[1:])) + ")"
    return fits.Column(name, f"{stored[0].size}E", unit=unit or None, dim=dim, array=stored)


def irf_to_hdu(irf, *, name: str | None = None) -> fits.BinTableHDU:
    """GADF BINTABLE HDU of an IRF object (axis columns in canonical order, TDIM to match)."""
    tag = irf.tag
    axes_names, data_cols, data_unit, clas2, extname = _SPEC[tag]
    prefix = {"energy_true": "ENERG", "energy": "ENERG", "offset": "THETA", "migra": "MIGRA", "rad": "RAD", "fov_lon": "DETX", "fov_lat": "DETY"}
    cols: list[fits.Column] = []
    for a in axes_names:
        cols += _axis_columns(getattr(irf, a), prefix[a])
    if tag == "psf_3gauss":
        for c in data_cols:
            cols.append(_array_column(c, getattr(irf, c.lower()), "deg" if c.startswith("SIGMA") else None))
    elif tag in ("bkg_3d", "bkg_2d"):
        cols.append(_array_column("BKG", irf.data * float(u.Unit(_BKG_UNIT).to(data_unit)), data_unit))
    else:
        cols.append(_array_column(data_cols[0], irf.data, data_unit))
    hdu = fits.BinTableHDU.from_columns(cols, name=name or extname)
    for k, v in irf.meta.items():
        if len(k) <= 8 and isinstance(v, str | int | float | bool) and k not in hdu.header:
            hdu.header[k] = v
    hdu.header.update(
        {
            "HDUCLASS": "GADF",
            "HDUDOC": "https://github.com/open-gamma-ray-astro/gamma-astro-data-formats",
            "HDUVERS": "0.2",
            "HDUCLAS1": "RESPONSE",
            "HDUCLAS2": clas2,
            "HDUCLAS3": "FULL-ENCLOSURE",
            "HDUCLAS4": tag.upper(),
        }
    )
    if tag == "bkg_3d":
        hdu.header["FOVALIGN"] = irf.fov_alignment
    return hdu


def write_irfs(path: str | os.PathLike, irfs: Mapping[str, object], *, header: Mapping | None = None) -> None:
    """Write IRFs (``{EXTNAME: irf}``) into one FITS file atomically."""
    primary = fits.PrimaryHDU()
    for k, v in (header or {}).items():
        primary.header[k] = v
    hdus = [primary] + [irf_to_hdu(irf, name=n) for n, irf in irfs.items()]
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
