"""Map FITS I/O in the gammapy "gadf" layout.

Each map is an image HDU (WCS header, ``BUNIT``, ``BANDSHDU``) plus a ``<NAME>_BANDS``
table with one row per non-spatial bin (``CHANNEL``, then per axis the centre and
``_MIN``/``_MAX`` columns).  The reco energy axis uses the legacy column names
``E_MIN``/``E_MAX`` and the column ``ENERGY``, exactly as gammapy 2.1 writes them, so
that ``gammapy.maps.Map.read`` and DS9 open our files and we open theirs.
"""

from __future__ import annotations

import json
import os

import numpy as np
from astropy.io import fits

from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.io.atomic import atomic_path

__all__ = ["map_to_hdus", "map_from_hdulist", "read_map", "write_maps"]




def _axis_colnames(axis: MapAxis) -> tuple[str, str, str]:
    if axis.name == "energy":
        return "ENERGY", "E_MIN", "E_MAX"
    n = axis.name.upper()
    return n, f"{n}_MIN", f"{n}_MAX"


def map_to_hdus(m: Map, name: str, *, primary: bool = False) -> list[fits.hdu.base.ExtensionHDU]:
    """Image HDU and (if the map has axes) its BANDS table, named ``name``."""
    header = m.geom.to_header()
    name = name.upper()
    data = m.data
    if data.dtype == bool:
        data = data.astype(np.int16)
    for i, ax in enumerate(m.axes, start=1):
        _, lo, hi = _axis_colnames(ax)
        header[f"AXCOLS{i}"] = f"{lo},{hi}"
        header[f"INTERP{i}"] = ax.interp
    header["WCSSHAPE"] = "(" + ",".join(str(n) for n in (*m.geom.npix, *(a.nbin for a in m.axes))) + ")"
    hdus = []
    if m.axes:
        header["BANDSHDU"] = f"{name}_BANDS"
    header["META"] = json.dumps(m.meta, default=str)
    header["BUNIT"] = m.unit
    if primary:
        image = fits.PrimaryHDU(data=data, header=header)
    else:
        header["EXTNAME"] = name
        image = fits.ImageHDU(data=data, header=header, name=name)
    hdus.append(image)
    if m.axes:
        hdus.append(_bands_hdu(m.axes, f"{name}_BANDS"))
    return hdus


def _bands_hdu(axes: tuple[MapAxis, ...], name: str) -> fits.BinTableHDU:
    sizes = [a.nbin for a in axes]
    idx = np.indices(sizes[::-1]).reshape(len(sizes), -1)[::-1]  # first axis fastest
    cols = [fits.Column("CHANNEL", "K", array=np.arange(idx.shape[1]))]
    header = fits.Header()
    for i, (ax, ii) in enumerate(zip(axes, idx, strict=True), start=1):
        c, lo, hi = _axis_colnames(ax)
        unit = ax.unit or None
        cols += [
            fits.Column(c, "D", unit=unit, array=ax.center[ii]),
            fits.Column(lo, "D", unit=unit, array=ax.lo[ii]),
            fits.Column(hi, "D", unit=unit, array=ax.hi[ii]),
        ]
        header[f"AXCOLS{i}"] = f"{lo},{hi}"
        header[f"INTERP{i}"] = ax.interp
    hdu = fits.BinTableHDU.from_columns(cols, header=header, name=name)
    return hdu


def _axis_name_from_col(col: str) -> str:
    if col in ("E_MIN", "ENERGY_MIN"):
        return "energy"
    return col[: -len("_MIN")].lower()


def map_from_hdulist(hdulist: fits.HDUList, name: str | None = None) -> Map:
    """Read a map from an open HDU list (``name`` ``None`` → first image HDU with data)."""
    if name is None:
        hdu = next((h for h in hdulist if h.is_image and h.data is not None), None)
        if hdu is None:
            raise ValueError("no image HDU with data found")
    else:
        try:
            hdu = hdulist[name.upper()]
        except KeyError:
            names = [h.name for h in hdulist]
            raise KeyError(f"HDU {name!r} not found; the file has {names}") from None
    header = hdu.header
    geom = WcsGeom.from_header(header)
    axes: list[MapAxis] = []
    bands_name = header.get("BANDSHDU")
    if bands_name:
        if bands_name not in hdulist:
            raise KeyError(f"BANDS HDU {bands_name!r} referenced by HDU {hdu.name!r} is missing")
        table = hdulist[bands_name].data
        bh = hdulist[bands_name].header
        i = 1
        while f"AXCOLS{i}" in bh or f"AXCOLS{i}" in header:
            lo, hi = (bh.get(f"AXCOLS{i}") or header[f"AXCOLS{i}"]).split(",")
            interp = bh.get(f"INTERP{i}", header.get(f"INTERP{i}", "lin"))
            unit = hdulist[bands_name].columns[lo].unit or ""
            lo_v = np.unique(np.asarray(table[lo], dtype=float))
            hi_v = np.unique(np.asarray(table[hi], dtype=float))
            edges = np.unique(np.concatenate([lo_v, hi_v]))
            # rounding noise in float32 tables: merge edges closer than 1e-6 relative
            keep = np.concatenate([[True], np.diff(edges) > 1e-6 * np.abs(edges[1:])])
            edges = edges[keep]
            axes.append(MapAxis(_axis_name_from_col(lo), edges, unit, interp))
            i += 1
    data = np.asarray(hdu.data)
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    unit = header.get("BUNIT", "")
    try:
        meta = json.loads(header.get("META", "{}"))
    except json.JSONDecodeError:
        meta = {}
    return Map(geom, data, tuple(axes), unit.strip(), meta)


def read_map(path: str | os.PathLike, hdu: str | None = None) -> Map:
    """Read one map from a FITS file; errors name the file and HDU."""
    try:
        with fits.open(path, memmap=False) as hl:
            return map_from_hdulist(hl, hdu)
    except (OSError, KeyError, ValueError) as exc:
        raise type(exc)(f"{path}: cannot read map HDU {hdu or '(first image)'}: {exc}") from exc


def write_maps(path: str | os.PathLike, maps: dict[str, Map], *, header: dict | None = None) -> None:
    """Write named maps into one FITS file atomically (empty primary HDU + one HDU pair per map)."""
    primary = fits.PrimaryHDU()
    for k, v in (header or {}).items():
        primary.header[k] = v
    hdus = [primary]
    for name, m in maps.items():
        hdus += map_to_hdus(m, name)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
