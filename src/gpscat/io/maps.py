"""Map FITS I/O in the gammapy "gadf" layout.

Each map is an image HDU (WCS header, ``BUNIT``, ``BANDSHDU``) plus a ``<NAME>_BANDS``
table with one row per non-spatial bin (``CHANNEL``, then per axis the centre and
``_MIN``/``_MAX`` columns).  The reco energy axis uses the legacy column names
``E_MIN``/``E_MAX`` and the column ``ENERGY``, exactly as gammapy 2.1 writes them, so
that ``gammapy.maps.Map.read`` and DS9 open our files and we open theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache

import numpy as np
from astropy.io import fits

from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.io.atomic import atomic_path

__all__ = ["map_to_hdus", "map_from_hdulist", "read_map", "write_maps"]

#: building and parsing a BANDS table costs astropy several ms (its per-column and per-card
#: machinery), more than the image it describes; a run writes and reads the same few axes
#: thousands of times, so both directions are cached (bounded)
_BANDS_CACHE_SIZE = 64


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
        hdus.append(_bands_hdu(tuple((a.name, a.edges.tobytes(), a.unit, a.interp) for a in m.axes), f"{name}_BANDS"))
    return hdus


@lru_cache(maxsize=_BANDS_CACHE_SIZE)
def _bands_hdu(key: tuple, name: str) -> fits.BinTableHDU:
    """The BANDS table of the axes described by ``key`` ((name, edges bytes, unit, interp)
    per axis).  Cached: the same HDU object goes into every file with these axes, so it must
    not be modified (writing it does not: the bytes written are identical each time)."""
    axes = [MapAxis(n, np.frombuffer(e, dtype=float), u, i) for n, e, u, i in key]
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
        axes = _bands_axes(hdulist, bands_name, header)
    data = np.asarray(hdu.data)
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    unit = header.get("BUNIT", "")
    try:
        meta = json.loads(header.get("META", "{}"))
    except json.JSONDecodeError:
        meta = {}
    return Map(geom, data, tuple(axes), unit.strip(), meta)


def _raw_hdu_key(hdu) -> str | None:
    """SHA-1 of the bytes (header and data) of ``hdu`` as stored in the file it was read
    from, or None for an HDU that was not read from a file."""
    info = hdu.fileinfo()
    f = info.get("file") if info else None
    if f is None or info.get("hdrLoc") is None or not hasattr(f, "seek"):
        return None
    pos = f.tell()
    try:
        f.seek(info["hdrLoc"])
        raw = f.read(info["datLoc"] - info["hdrLoc"] + info["datSpan"])
    finally:
        f.seek(pos)
    return hashlib.sha1(raw).hexdigest()


_AXES_CACHE: dict[tuple, tuple[MapAxis, ...]] = {}


def _bands_axes(hdulist: fits.HDUList, bands_name: str, header: fits.Header) -> tuple[MapAxis, ...]:
    """The non-spatial axes described by table ``bands_name`` (and the image ``header``'s
    ``AXCOLSi``/``INTERPi`` where the table has none); cached by the table's raw bytes."""
    fallback = tuple((k, header[k]) for k in header if k.startswith(("AXCOLS", "INTERP")))
    bands = hdulist[bands_name]
    raw = _raw_hdu_key(bands)
    key = None if raw is None else (raw, fallback)
    if key is not None and key in _AXES_CACHE:
        return _AXES_CACHE[key]
    table, bh = bands.data, bands.header
    axes = []
    i = 1
    while f"AXCOLS{i}" in bh or f"AXCOLS{i}" in header:
        lo, hi = (bh.get(f"AXCOLS{i}") or header[f"AXCOLS{i}"]).split(",")
        interp = bh.get(f"INTERP{i}", header.get(f"INTERP{i}", "lin"))
        unit = bands.columns[lo].unit or ""
        lo_v = np.unique(np.asarray(table[lo], dtype=float))
        hi_v = np.unique(np.asarray(table[hi], dtype=float))
        edges = np.unique(np.concatenate([lo_v, hi_v]))
        # rounding noise in float32 tables: merge edges closer than 1e-6 relative
        keep = np.concatenate([[True], np.diff(edges) > 1e-6 * np.abs(edges[1:])])
        edges = edges[keep]
        axes.append(MapAxis(_axis_name_from_col(lo), edges, unit, interp))
        i += 1
    result = tuple(axes)
    if key is not None:
        if len(_AXES_CACHE) >= _BANDS_CACHE_SIZE:
            _AXES_CACHE.pop(next(iter(_AXES_CACHE)))
        _AXES_CACHE[key] = result
    return result


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
