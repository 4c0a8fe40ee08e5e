"""MapDataset FITS I/O in the layout of gammapy's ``MapDataset.write``.

HDUs: COUNTS, EXPOSURE, BACKGROUND, PSF, PSF_EXPOSURE, EDISP, EDISP_EXPOSURE, MASK_SAFE,
MASK_FIT (each with its ``_BANDS`` table) and GTI.  The dataset name and ``meta`` travel in
the primary header (``NAME``, ``GPSMETA`` as JSON).  gammapy's ``MapDataset.read`` opens
these files; we open gammapy's.
"""

from __future__ import annotations

import json
import os

import numpy as np
from astropy.io import fits

from gpscat.core.dataset import MAP_NAMES, MapDataset
from gpscat.io.atomic import atomic_path
from gpscat.io.maps import map_from_hdulist, map_to_hdus

__all__ = ["read_dataset", "write_dataset"]


def write_dataset(path: str | os.PathLike, dataset: MapDataset, *, header: dict | None = None) -> None:
    """Write ``dataset`` to ``path`` atomically."""
    primary = fits.PrimaryHDU()
    primary.header["NAME"] = dataset.name
    primary.header["GPSMETA"] = json.dumps(dataset.meta, default=_json_default)
    for k, v in (header or {}).items():
        primary.header[k] = v
    hdus: list = [primary]
    for name, m in dataset.maps().items():
        if name.startswith("mask"):
            m = m.copy(data=m.data.astype(np.int16))
        hdus += map_to_hdus(m, name)
    hdus.append(_gti_hdu(dataset.gti, dataset.meta.get("mjdref", 51544.0)))
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def read_dataset(path: str | os.PathLike, *, name: str | None = None) -> MapDataset:
    """Read a dataset file (ours or gammapy's); errors name the file."""
    try:
        with fits.open(path, memmap=False) as hl:
            present = {h.name.lower() for h in hl}
            maps = {}
            for n in MAP_NAMES:
                if n in present:
                    m = map_from_hdulist(hl, n)
                    if n.startswith("mask"):
                        m = m.copy(data=m.data.astype(bool))
                    maps[n] = m
            gti = None
            if "GTI" in hl and len(hl["GTI"].data):
                gti = np.column_stack([hl["GTI"].data["START"], hl["GTI"].data["STOP"]]).astype(float)
            header = hl[0].header
            meta = json.loads(header.get("GPSMETA", "{}"))
            ds_name = name or header.get("NAME") or os.path.splitext(os.path.basename(path))[0]
    except OSError as exc:
        raise OSError(f"{path}: not a readable FITS dataset file: {exc}") from exc
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: invalid dataset file: {exc}") from exc
    return MapDataset(name=ds_name, gti=gti, meta=meta, **maps)


def _gti_hdu(gti, mjdref: float) -> fits.BinTableHDU:
    gti = np.zeros((0, 2)) if gti is None else np.asarray(gti, dtype=float).reshape(-1, 2)
    cols = [
        fits.Column("START", "D", unit="s", array=gti[:, 0]),
        fits.Column("STOP", "D", unit="s", array=gti[:, 1]),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="GTI")
    hdu.header["MJDREFI"] = int(np.floor(mjdref))
    hdu.header["MJDREFF"] = float(mjdref - np.floor(mjdref))
    hdu.header["TIMESYS"] = "tt"
    return hdu


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
