"""Files of a simulated data store: DL3 event files, the index tables, the truth table.

Event files follow the GADF (and CTA 1DC) layout: an ``EVENTS`` table (EVENT_ID, TIME,
RA, DEC, ENERGY, MC_ID) and a ``GTI`` table, with the pointing, times and dead time in the
header.  Nothing in them depends on the wall clock (no ``DATE`` keyword), so the same
events give the same bytes.  The index tables are gzipped with a zero gzip time stamp for
the same reason.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from gpscat import __version__
from gpscat.io.atomic import atomic_path

__all__ = [
    "HDUDOC",
    "MJDREF",
    "TRUTH_COLUMNS",
    "read_event_header",
    "read_truth",
    "time_keywords",
    "write_events",
    "write_index_tables",
    "write_truth",
]

HDUDOC = "https://github.com/open-gamma-ray-astro/gamma-astro-data-formats"
#: reference epoch of the simulated times (MJD, TT), as CTA 1DC
MJDREF = (51544, 0.5)
_TT_MINUS_UTC = 69.184  # s, since 2017-01-01
_COLUMN_UNITS = {"TIME": "s", "RA": "deg", "DEC": "deg", "ENERGY": "TeV"}
_TIME_KEYS = {"MJDREFI": MJDREF[0], "MJDREFF": MJDREF[1], "TIMEUNIT": "s", "TIMESYS": "TT", "TIMEREF": "LOCAL"}

#: truth table: column → (dtype, unit, description)
TRUTH_COLUMNS: dict[str, tuple[str, str, str]] = {
    "Name": ("U32", "", "model name in the injected models YAML"),
    "MC_ID": ("i4", "", "MC_ID of the source's events (1 = first model)"),
    "Spatial_Model": ("U40", "", "gammapy spatial model tag"),
    "Spectral_Model": ("U40", "", "gammapy spectral model tag"),
    "GLON": ("f8", "deg", "Galactic longitude [0, 360)"),
    "GLAT": ("f8", "deg", "Galactic latitude"),
    "RA": ("f8", "deg", "right ascension (ICRS)"),
    "DEC": ("f8", "deg", "declination (ICRS)"),
    "Size": ("f8", "deg", "size parameter: Gaussian sigma, disk/Shell2/generalized-Gaussian r_0, shell inner radius; 0 for points"),
    "Shell_Width": ("f8", "deg", "shell thickness (Shell: width, Shell2: eta r_0), else 0"),
    "Elongation": ("f8", "", "model eccentricity e"),
    "Phi": ("f8", "deg", "position angle of the major axis (model phi)"),
    "R68_Model": ("f8", "deg", "radius containing 68% of the model's flux (no PSF); 0 for points"),
    "Flux_0p05_1TeV": ("f8", "cm-2 s-1", "integral flux 0.05-1 TeV (true energy)"),
    "Flux_1_100TeV": ("f8", "cm-2 s-1", "integral flux 1-100 TeV (true energy)"),
    "DNDE_1TeV": ("f8", "cm-2 s-1 TeV-1", "differential flux at 1 TeV"),
    "Npred": ("f8", "", "expected photons in the fields of view, all energies, summed over observations"),
    "N_Obs": ("i4", "", "observations whose field of view holds the source"),
    "Npred_Band": ("f8", "", "expected events per reco-energy band (axis: BANDS)"),
    "R68_Band": ("f8", "deg", "radius around the position holding 68% of the source's reconstructed events"),
    "Npred_R68_Band": ("f8", "", "expected source events within R68_Band"),
    "Bkg_R68_Band": ("f8", "", "expected IRF background events within R68_Band"),
    "Sqrt_TS_Band": ("f8", "", "expected significance in the R68_Band circle (Asimov, known background)"),
    "Sqrt_TS": ("f8", "", "expected significance, bands combined (TS added)"),
}
_TRUTH_KEYS = {
    "Name": "name", "MC_ID": "mc_id", "Spatial_Model": "spatial", "Spectral_Model": "spectral", "GLON": "glon",
    "GLAT": "glat", "RA": "ra", "DEC": "dec", "Size": "size", "Shell_Width": "width", "Elongation": "e", "Phi": "phi",
    "R68_Model": "r68", "Flux_0p05_1TeV": "flux_lo", "Flux_1_100TeV": "flux_hi", "DNDE_1TeV": "dnde_1tev",
    "Npred": "npred", "N_Obs": "n_obs", "Npred_Band": "npred_band", "R68_Band": "r68_band",
    "Npred_R68_Band": "npred_r68_band", "Bkg_R68_Band": "bkg_r68_band", "Sqrt_TS_Band": "sqrt_ts_band", "Sqrt_TS": "sqrt_ts",
}


def time_keywords(tstart: float, tstop: float) -> dict:
    """DATE-OBS/TIME-OBS/DATE-END/TIME-END (UTC) of MET seconds since :data:`MJDREF` (TT).

    UTC = TT − 69.184 s, exact since 2017 (no leap-second table, hence no download).
    """
    mjdref = MJDREF[0] + MJDREF[1]
    out = {}
    for key, t in (("OBS", tstart), ("END", tstop)):
        iso = Time(mjdref + (t - _TT_MINUS_UTC) / 86400.0, format="mjd", scale="tt", precision=3).isot
        date, clock = iso.split("T")
        out[f"DATE-{key}"] = date
        out[f"TIME-{key}"] = clock
    return out


def _write_hdul(path, hdul: fits.HDUList, *, gzipped: bool) -> None:
    with atomic_path(path) as tmp:
        if gzipped:
            buf = io.BytesIO()
            hdul.writeto(buf)
            tmp.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
        else:
            hdul.writeto(tmp)


def write_events(
    path: str | os.PathLike,
    columns: Mapping[str, np.ndarray],
    *,
    header: Mapping,
    gti: tuple[float, float],
) -> None:
    """Write an EVENTS + GTI DL3 file atomically.

    Parameters
    ----------
    columns : mapping
        EVENT_ID, TIME, RA, DEC, ENERGY, MC_ID arrays (dtypes kept).
    header : mapping
        Observation keywords (OBS_ID, RA_PNT, DEC_PNT, ONTIME, LIVETIME, DEADC, ...).
    gti : (float, float)
        Start and stop, s since :data:`MJDREF`.
    """
    cols = [fits.Column(name, format=_fits_format(np.asarray(a)), unit=_COLUMN_UNITS.get(name), array=np.asarray(a)) for name, a in columns.items()]
    events = fits.BinTableHDU.from_columns(cols, name="EVENTS")
    h = events.header
    h.update({"HDUCLASS": "GADF", "HDUDOC": HDUDOC, "HDUVERS": "0.3", "HDUCLAS1": "EVENTS"})
    h.update(_TIME_KEYS)
    h.update({"TSTART": gti[0], "TSTOP": gti[1], **time_keywords(*gti)})
    h.update({"EQUINOX": 2000.0, "RADECSYS": "ICRS", "EUNIT": "TeV", "OBS_MODE": "POINTING", "CREATOR": f"gpscat {__version__}"})
    for k, v in header.items():
        h[k] = v
    g = fits.BinTableHDU.from_columns(
        [fits.Column("START", "D", unit="s", array=[gti[0]]), fits.Column("STOP", "D", unit="s", array=[gti[1]])], name="GTI"
    )
    g.header.update({"HDUCLASS": "GADF", "HDUDOC": HDUDOC, "HDUVERS": "0.3", "HDUCLAS1": "GTI", **_TIME_KEYS})
    _write_hdul(path, fits.HDUList([fits.PrimaryHDU(), events, g]), gzipped=str(path).endswith(".gz"))


def _fits_format(a: np.ndarray) -> str:
    return {"i8": "K", "i4": "J", "i2": "I", "f8": "D", "f4": "E"}[a.dtype.str[1:]]


def read_event_header(path: str | os.PathLike) -> dict:
    """EVENTS header keywords and the number of events of an event file."""
    with fits.open(path, memmap=False) as hl:
        h = hl["EVENTS"].header
        out = {k: h[k] for k in h if k and k not in ("COMMENT", "HISTORY") and not k.startswith(("TTYPE", "TFORM", "TUNIT", "NAXIS"))}
        out["EVENT_COUNT"] = int(h["NAXIS2"])
    return out


def write_index_tables(
    store: str | os.PathLike,
    observations: Sequence[Mapping],
    *,
    irf_file: str,
    irf_hdus: Mapping[str, tuple[str, str]],
    obs_index: str | os.PathLike | None = None,
    hdu_index: str | os.PathLike | None = None,
) -> None:
    """Write ``obs-index.fits.gz`` and ``hdu-index.fits.gz`` of a store folder.

    Parameters
    ----------
    observations : sequence of mapping
        One per observation: the obs-index columns (OBS_ID, RA_PNT, DEC_PNT, GLON_PNT,
        GLAT_PNT, ONTIME, LIVETIME, DEADC, TSTART, TSTOP, DATE-OBS, TIME-OBS, DATE-END,
        TIME-END, EVENT_COUNT, OBJECT, ...) and ``events_file``, relative to the hdu-index folder.
    irf_file : str
        IRF file, relative to the hdu-index folder (the ``FILE_DIR`` convention).
    irf_hdus : mapping
        ``{hdu_type: (hdu_class, hdu_name)}``, e.g. ``{"aeff": ("aeff_2d", "EFFECTIVE AREA")}``.
    """
    rows = [{k: v for k, v in o.items() if k != "events_file"} for o in observations]
    obs = Table(rows=rows, names=list(rows[0]) if rows else ["OBS_ID"]) if rows else Table(names=["OBS_ID"], dtype=[">i8"])
    for c, unit in (("RA_PNT", "deg"), ("DEC_PNT", "deg"), ("GLON_PNT", "deg"), ("GLAT_PNT", "deg"), ("ONTIME", "s"), ("LIVETIME", "s"), ("TSTART", "s"), ("TSTOP", "s")):
        if c in obs.colnames:
            obs[c].unit = unit
    obs.meta.update({"HDUCLASS": "GADF", "HDUDOC": HDUDOC, "HDUVERS": "0.3", "HDUCLAS1": "INDEX", "HDUCLAS2": "OBS", **_TIME_KEYS})
    hdu_rows = []
    for o in observations:
        oid = int(o["OBS_ID"])
        folder, name = os.path.split(str(o["events_file"]))
        hdu_rows.append((oid, "events", "events", folder or ".", name, "EVENTS"))
        hdu_rows.append((oid, "gti", "gti", folder or ".", name, "GTI"))
        ifolder, iname = os.path.split(irf_file)
        for hdu_type, (hdu_class, hdu_name) in irf_hdus.items():
            hdu_rows.append((oid, hdu_type, hdu_class, ifolder or ".", iname, hdu_name))
    names = ["OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR", "FILE_NAME", "HDU_NAME"]
    hdu = Table(rows=hdu_rows, names=names, dtype=[">i8", "U6", "U10", "U64", "U64", "U32"]) if hdu_rows else Table(names=names, dtype=[">i8", "U6", "U10", "U64", "U64", "U32"])
    hdu.meta.update({"HDUCLASS": "GADF", "HDUDOC": HDUDOC, "HDUVERS": "0.3", "HDUCLAS1": "INDEX", "HDUCLAS2": "HDU"})
    store = os.fspath(store)
    for table, name, default in ((obs, "OBS_INDEX", "obs-index.fits.gz"), (hdu, "HDU_INDEX", "hdu-index.fits.gz")):
        target = {"OBS_INDEX": obs_index, "HDU_INDEX": hdu_index}[name] or os.path.join(store, default)
        t = fits.table_to_hdu(table)
        t.name = name
        _write_hdul(target, fits.HDUList([fits.PrimaryHDU(), t]), gzipped=str(target).endswith(".gz"))


def write_truth(path: str | os.PathLike, columns: Mapping[str, np.ndarray], *, bands: Sequence[tuple[float, float]], meta: Mapping | None = None) -> Table:
    """Write the truth table (:data:`TRUTH_COLUMNS`) from :func:`gpscat.core.truth.source_truth` columns.

    The band axis of the ``*_Band`` columns is in the header keyword ``BANDS``
    (``"0.1:1,1:100"``, reco energy in TeV).  Returns the table.
    """
    n = len(columns["name"]) if "name" in columns else 0
    t = Table(meta={"BANDS": ",".join(f"{lo:g}:{hi:g}" for lo, hi in bands), "EXTNAME": "TRUTH", **(meta or {})})
    for name, (dtype, unit, desc) in TRUTH_COLUMNS.items():
        value = np.asarray(columns.get(_TRUTH_KEYS[name], []))
        shape = (n, len(bands)) if name.endswith("_Band") else (n,)
        t[name] = value.reshape(shape).astype(dtype) if value.size else np.zeros(shape, dtype=dtype)
        t[name].unit = unit or None
        t[name].description = desc
    hdu = fits.table_to_hdu(t)
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)
    return t


def read_truth(path: str | os.PathLike) -> Table:
    """Read a truth table; ``table.meta["bands"]`` holds the band edges as (min, max) tuples (TeV)."""
    t = Table.read(path, hdu="TRUTH")
    bands = str(t.meta.get("BANDS", "")).strip()
    t.meta["bands"] = [tuple(float(x) for x in b.split(":")) for b in bands.split(",")] if bands else []
    return t
