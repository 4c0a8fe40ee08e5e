"""HGPS-style aperture spectra of catalog sources: ``gpscat aperture``.

For each source of the input table: an ON circle of radius ``R_spec`` (:func:`spectral_radius`)
at its position; per observation whose pointing is within ``aperture.offset_max`` (the
whole ON circle inside), reflected OFF circles that avoid the exclusion mask
(:mod:`gpscat.core.reflected`) and the ON/OFF spectrum (:mod:`gpscat.core.spectrum`); the
spectra stacked; a WStat fit of ``aperture.model`` and flux points
(:mod:`gpscat.core.spectrum_fit`).  Each observation is read once for all its sources.

Input: one or several FITS tables (HDU ``SOURCES`` if present — the fit stage's per-group
files —, else the first table HDU) with an identifier (``Source_ID``, else
``Source_Name``, ``ID`` or ``Name``), a position (``GLON``/``GLAT``, else
``RAJ2000``/``DEJ2000`` or ``RA``/``DEC``) and optionally a size (``R_Spec``, ``R68`` or
``Size``, deg; see :func:`spectral_radius`).

Output ``results/catalog/aperture_spectra.fits`` (every table has its full schema, also
when empty):

* ``SPECTRA`` — one row per source, :data:`SPECTRA_COLUMNS`;
* ``FLUX_POINTS`` — one row per source and energy bin: ``Source_ID`` +
  :data:`gpscat.core.spectrum_fit.FLUX_POINT_COLUMNS`;
* ``OBSERVATIONS`` — one row per (source, observation) used: :data:`OBSERVATION_COLUMNS`;
* ``SPECTRUM_BINS`` — the stacked spectra: one row per source and reco bin
  (:data:`BIN_COLUMNS`).
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from gpscat.config import Config, EnergyAxisConfig, quantity
from gpscat.core.association import R68_PER_SIGMA
from gpscat.core.fluxes import band_flux
from gpscat.core.geom import angular_separation, to_frame
from gpscat.core.reduce import energy_mask
from gpscat.core.reflected import excluded_points
from gpscat.core.spectrum import OnOffSpectrum, extract_spectrum, stack_spectra
from gpscat.core.spectrum_fit import FLUX_POINT_COLUMNS, fit_spectrum, flux_points
from gpscat.core.stats import excess_error_wstat
from gpscat.io.atomic import atomic_path
from gpscat.io.catalogs import empty_table
from gpscat.io.dl3 import DataStore, DL3Error
from gpscat.io.maps import read_map
from gpscat.models.spectral import (
    ExpCutoffPowerLawSpectralModel,
    LogParabolaSpectralModel,
    PowerLawSpectralModel,
    SpectralModel,
)
from gpscat.stages.reduce import open_store, select_observations

__all__ = ["BIN_COLUMNS", "OBSERVATION_COLUMNS", "SPECTRA_COLUMNS", "aperture_spectra", "run", "spectral_radius", "start_model"]

log = logging.getLogger(__name__)

_DIFF = "cm-2 s-1 TeV-1"
#: SPECTRA columns (after Source_ID): name → (dtype, unit, description).
SPECTRA_COLUMNS: dict[str, tuple[str, str, str]] = {
    "GLON": ("f8", "deg", "ON-circle centre, Galactic longitude"),
    "GLAT": ("f8", "deg", "ON-circle centre, Galactic latitude"),
    "R_Spec": ("f8", "deg", "ON-circle radius"),
    "N_Obs": ("i4", "", "observations with a safe bin and OFF circles"),
    "Livetime": ("f8", "s", "livetime of those observations"),
    "Energy_Min": ("f8", "TeV", "lowest reco edge of the fitted bins"),
    "Energy_Max": ("f8", "TeV", "highest reco edge of the fitted bins"),
    "N_On": ("i8", "", "ON counts in the fitted bins"),
    "N_Off": ("i8", "", "OFF counts in the fitted bins"),
    "Alpha": ("f8", "", "ON/OFF acceptance ratio (OFF-count weighted over bins and observations)"),
    "Excess": ("f8", "", "N_On - Alpha N_Off"),
    "Excess_Err": ("f8", "", "sqrt(N_On + Alpha^2 N_Off)"),
    "Sqrt_TS": ("f8", "", "Li & Ma significance of the excess (signed)"),
    "Containment_1TeV": ("f8", "", "PSF containment within R_Spec at 1 TeV (mean over observations; 1 without correction)"),
    "Spectral_Model": ("U40", "", "gammapy tag of the fitted model"),
    "Index": ("f8", "", "power-law index (ecpl: index; lp: alpha)"),
    "Index_Err": ("f8", "", ""),
    "Amplitude": ("f8", _DIFF, "dN/dE at Reference"),
    "Amplitude_Err": ("f8", _DIFF, ""),
    "Reference": ("f8", "TeV", "reference energy"),
    "Lambda": ("f8", "TeV-1", "ecpl: inverse cut-off energy"),
    "Lambda_Err": ("f8", "TeV-1", ""),
    "Beta": ("f8", "", "lp: curvature"),
    "Beta_Err": ("f8", "", ""),
    "Flux_1TeV_100TeV": ("f8", "cm-2 s-1", "integral flux 1-100 TeV of the fitted model"),
    "Flux_1TeV_100TeV_Err": ("f8", "cm-2 s-1", ""),
    "TS": ("f8", "", "WStat(no source) - WStat(best fit) in the fitted bins"),
    "Fit_Stat": ("f8", "", "WStat at the best fit"),
    "Npred": ("f8", "", "predicted source counts in the fitted bins"),
    "Fit_Success": ("bool", "", "Migrad converged"),
    "Fit_Status": ("U80", "", "ok, or why the fit failed or did not run"),
}
#: OBSERVATIONS columns (after Source_ID).
OBSERVATION_COLUMNS: dict[str, tuple[str, str, str]] = {
    "OBS_ID": ("i8", "", "observation"),
    "Offset": ("f8", "deg", "source - pointing distance"),
    "N_Off_Regions": ("i4", "", "reflected OFF circles"),
    "Alpha": ("f8", "", "1 / N_Off_Regions"),
    "N_On": ("i8", "", "ON counts in the safe range"),
    "N_Off": ("i8", "", "OFF counts in the safe range"),
    "Livetime": ("f8", "s", ""),
    "Safe_Energy_Min": ("f8", "TeV", "NaN = open"),
    "Safe_Energy_Max": ("f8", "TeV", "NaN = open"),
}
#: SPECTRUM_BINS columns (after Source_ID).
BIN_COLUMNS: dict[str, tuple[str, str, str]] = {
    "Energy_Min": ("f8", "TeV", "reco bin"),
    "Energy_Max": ("f8", "TeV", ""),
    "Counts": ("f8", "", "ON counts"),
    "Counts_Off": ("f8", "", "OFF counts"),
    "Alpha": ("f8", "", ""),
    "Excess": ("f8", "", ""),
    "Npred": ("f8", "", "predicted source counts of the best fit"),
    "Mask_Safe": ("bool", "", ""),
    "Mask_Fit": ("bool", "", "safe and inside the fit range"),
}
_ID_COLUMNS = ("Source_ID", "Source_Name", "ID", "Name")
_POSITION_COLUMNS = (("GLON", "GLAT", "galactic"), ("RAJ2000", "DEJ2000", "icrs"), ("RA", "DEC", "icrs"))
_PARAMS = {"Index": ("index", "alpha"), "Amplitude": ("amplitude",), "Lambda": ("lambda_",), "Beta": ("beta",)}


def _column(table: Table, name: str) -> np.ndarray:
    col = table[name]
    return np.asarray(col.filled(np.nan) if hasattr(col, "filled") else col, dtype=float)


def spectral_radius(table: Table, *, containment: float = 0.7, rmin: float = 0.15, rmax: float = 0.5, psf_r68: float = 0.1) -> np.ndarray:
    """ON-circle radius R_spec (deg) per source.

    R_spec is the radius containing ``containment`` of the PSF-convolved source, clipped to
    [rmin, rmax] — the HGPS rule (70 %, 0.15°–0.5°; its ``RSpec`` column).  Per row, the
    first finite value of: ``R_Spec`` (used as given, no clipping); ``R68`` (68 % radius of
    the PSF-convolved source, scaled to ``containment`` as for a Gaussian); ``Size``
    (Gaussian sigma, combined in quadrature with a Gaussian PSF of 68 % radius
    ``psf_r68``); nothing (point-like: the PSF alone).
    """
    if not 0 < containment < 1:
        raise ValueError(f"containment must be in (0, 1), got {containment}")
    if not 0 < rmin <= rmax:
        raise ValueError(f"need 0 < rmin <= rmax, got {rmin}, {rmax}")
    n = len(table)
    k = math.sqrt(-2.0 * math.log(1.0 - containment))
    nan = np.full(n, np.nan)
    size = _column(table, "Size") if "Size" in table.colnames else nan
    sigma = np.hypot(np.nan_to_num(size, nan=0.0), psf_r68 / R68_PER_SIGMA)
    r = np.clip(k * sigma, rmin, rmax)
    if "R68" in table.colnames:
        r68 = _column(table, "R68")
        r = np.where(np.isfinite(r68) & (r68 > 0), np.clip(r68 * k / R68_PER_SIGMA, rmin, rmax), r)
    if "R_Spec" in table.colnames:
        given = _column(table, "R_Spec")
        r = np.where(np.isfinite(given) & (given > 0), given, r)
    return r


def start_model(tag: str) -> SpectralModel:
    """Start model of ``aperture.model`` (reference 1 TeV; the amplitude is rescaled to the excess)."""
    if tag == "pl":
        return PowerLawSpectralModel(index=2.5, amplitude=1e-12, reference=1.0)
    if tag == "ecpl":
        return ExpCutoffPowerLawSpectralModel(index=2.0, amplitude=1e-12, reference=1.0, lambda_=0.1)
    if tag == "lp":
        return LogParabolaSpectralModel(amplitude=1e-12, reference=1.0, alpha=2.5, beta=0.1)
    raise ValueError(f"aperture.model must be one of pl, ecpl, lp, got {tag!r}")


def _source_positions(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """(GLON, GLAT) deg of each source."""
    for lon, lat, frame in _POSITION_COLUMNS:
        if lon in table.colnames and lat in table.colnames:
            return to_frame(_column(table, lon), _column(table, lat), frame, "galactic")
    raise ValueError(f"source table needs GLON/GLAT, RAJ2000/DEJ2000 or RA/DEC columns, has {table.colnames}")


def _source_ids(table: Table) -> np.ndarray:
    for name in _ID_COLUMNS:
        if name in table.colnames:
            return np.asarray(table[name])
    raise ValueError(f"source table needs one of the columns {list(_ID_COLUMNS)}, has {table.colnames}")


def _settings(cfg: Config) -> dict:
    a = cfg["aperture"]
    key = "aperture"
    r, refl, sm, fp = a["radius"], a["reflected"], a["safe_mask"], a["flux_points"]
    fit_range = None
    if a.get("fit_range"):
        fit_range = tuple(quantity(v, "TeV", key=f"{key}.fit_range[{i}]") for i, v in enumerate(a["fit_range"]))
    fp_axis = EnergyAxisConfig.from_dict(fp["energy"], key=f"{key}.flux_points.energy").axis("energy")
    return {
        "radius": {
            "containment": float(r["containment"]),
            "rmin": quantity(r["min"], "deg", key=f"{key}.radius.min"),
            "rmax": quantity(r["max"], "deg", key=f"{key}.radius.max"),
            "psf_r68": quantity(r["psf_r68"], "deg", key=f"{key}.radius.psf_r68"),
        },
        "offset_max": quantity(a["offset_max"], "deg", key=f"{key}.offset_max"),
        "energy_axis": EnergyAxisConfig.from_dict(a["energy"], key=f"{key}.energy").axis("energy"),
        "energy_true_axis": EnergyAxisConfig.from_dict(a["energy_true"], key=f"{key}.energy_true").axis("energy_true"),
        "safe_mask_methods": tuple(sm["methods"]),
        "aeff_percent": float(sm["aeff_percent"]),
        "bias_percent": float(sm["bias_percent"]),
        "containment_correction": bool(a["containment_correction"]),
        "reflected": {
            "angle_increment": quantity(refl["angle_increment"], "deg", key=f"{key}.reflected.angle_increment"),
            "min_distance": quantity(refl["min_distance"], "deg", key=f"{key}.reflected.min_distance"),
            "min_distance_input": quantity(refl["min_distance_input"], "deg", key=f"{key}.reflected.min_distance_input"),
            "max_regions": int(refl["max_regions"]),
        },
        "min_regions": int(refl["min_regions"]),
        "sampling": quantity(refl["sampling"], "deg", key=f"{key}.reflected.sampling"),
        "model": a["model"],
        "fit_range": fit_range,
        "flux_point_edges": fp_axis.edges,
        "ul_sigma": float(fp["ul_sigma"]),
        "sqrt_ts_ul": float(fp["sqrt_ts_ul"]),
    }


def _with_ids(columns: dict, ids: np.ndarray) -> Table:
    t = empty_table(columns, len(ids))
    t.add_column(ids, name="Source_ID", index=0)
    return t


def _observation_rows(source_id, spec: OnOffSpectrum) -> list[dict]:
    m = spec.mask_safe
    (emin, emax), = spec.meta["safe_energy"]
    return [{
        "Source_ID": source_id, "OBS_ID": spec.meta["obs_ids"][0], "Offset": spec.meta["offset"][0],
        "N_Off_Regions": spec.meta["n_off_regions"][0], "Alpha": float(spec.alpha[0]),
        "N_On": int(spec.counts[m].sum()), "N_Off": int(spec.counts_off[m].sum()), "Livetime": spec.livetime,
        "Safe_Energy_Min": math.nan if emin is None else emin, "Safe_Energy_Max": math.nan if emax is None else emax,
    }]


def _fit_row(row, spec: OnOffSpectrum, s: dict, name: str) -> tuple[dict | None, np.ndarray]:
    """Fill the totals and fit columns of one SPECTRA row; return the flux points and npred."""
    fit_mask = spec.mask_safe & energy_mask(spec.energy, *(s["fit_range"] or (None, None)))
    tot = spec.totals(fit_mask)
    used = np.flatnonzero(fit_mask)
    row["N_Obs"], row["Livetime"] = len(spec.meta["obs_ids"]), spec.livetime
    row["Containment_1TeV"] = spec.meta.get("containment_1tev", math.nan)
    row["N_On"], row["N_Off"], row["Alpha"] = int(tot["counts"]), int(tot["counts_off"]), tot["alpha"]
    row["Excess"], row["Sqrt_TS"] = tot["excess"], tot["sqrt_ts"]
    if np.isfinite(tot["alpha"]):
        row["Excess_Err"] = float(excess_error_wstat(tot["counts"], tot["counts_off"], tot["alpha"]))
    npred = np.zeros(spec.energy.nbin)
    if not used.size:
        row["Fit_Status"] = "no safe bin in the fit range"
        return None, npred
    row["Energy_Min"], row["Energy_Max"] = spec.energy.lo[used[0]], spec.energy.hi[used[-1]]
    if tot["counts"] == 0:
        row["Fit_Status"] = "no ON counts in the fit range"
        return None, npred
    model = start_model(s["model"])
    res = fit_spectrum(spec, model, fit_range=s["fit_range"], name=name)
    row["Spectral_Model"] = model.tag[0]
    for col, names in _PARAMS.items():
        par = next((p for p in model.parameters if p.name in names), None)
        if par is not None:
            row[col], row[f"{col}_Err"] = par.value, par.error if res.covariance is not None else math.nan
    row["Reference"] = model.reference.value
    flux, flux_err = band_flux(res.models[name], res.models, 1.0, 100.0)
    row["Flux_1TeV_100TeV"], row["Flux_1TeV_100TeV_Err"] = float(flux), float(flux_err) if res.covariance is not None else math.nan
    row["TS"], row["Fit_Stat"], row["Npred"] = res.ts, res.fit.total_stat, res.npred
    row["Fit_Success"] = res.success
    row["Fit_Status"] = "ok" if res.success else res.fit.message[:80]
    npred = spec.npred_signal(model.integral(spec.energy_true.lo, spec.energy_true.hi))
    if not res.success:
        return None, npred
    fp = flux_points(spec, model, energy_edges=s["flux_point_edges"], fit_range=s["fit_range"], ul_sigma=s["ul_sigma"], sqrt_ts_ul=s["sqrt_ts_ul"])
    return fp, npred


def aperture_spectra(
    sources: Table,
    store: DataStore,
    obs_ids: Sequence[int],
    *,
    exclusion=None,
    skip_bad_observations: bool = True,
    **settings,
) -> dict[str, Table]:
    """Aperture spectra, fits and flux points of ``sources`` from the observations ``obs_ids``.

    Parameters
    ----------
    sources : Table
        Source table (identifier, position, optional size; see the module docstring).
    store : DataStore
    obs_ids : sequence of int
    exclusion : (WcsGeom, ndarray of bool), optional
        Geometry and *excluded* pixels (True = excluded) of the exclusion mask.
    skip_bad_observations : bool
        Log and skip an observation that cannot be read (else raise ``DL3Error``).
    **settings
        The aperture settings (:func:`_settings` of the config).

    Returns
    -------
    dict of Table
        ``SPECTRA``, ``FLUX_POINTS``, ``OBSERVATIONS``, ``SPECTRUM_BINS``.
    """
    s = settings
    ids = _source_ids(sources)
    glon, glat = _source_positions(sources)
    radius = spectral_radius(sources, **s["radius"])
    ra, dec = to_frame(glon, glat, "galactic", "icrs")
    per_source: dict[int, list[OnOffSpectrum]] = defaultdict(list)
    obs_rows: list[dict] = []
    irfs = ("aeff", "edisp", "psf") if s["containment_correction"] else ("aeff", "edisp")
    for oid in obs_ids:
        info = store.obs_info(oid)
        p_ra, p_dec = float(info["RA_PNT"]), float(info["DEC_PNT"])
        sep = angular_separation(p_ra, p_dec, ra, dec)
        use = np.flatnonzero((sep + radius <= s["offset_max"]) & (sep > radius))
        if not use.size:
            continue
        try:
            obs = store.load(oid, irfs=irfs)
        except DL3Error as exc:
            if not skip_bad_observations:
                raise
            log.warning("skipping observation %d: %s", oid, exc)
            continue
        if "aeff-default" in s["safe_mask_methods"] and obs.safe_energy_range == (None, None):
            log.warning("obs %d: no default safe energy range (AEFF LO_THRES/HI_THRES or obs-index): aeff-default cuts nothing", oid)
        ev_off = angular_separation(obs.events.ra, obs.events.dec, p_ra, p_dec)
        excluded = None
        if exclusion is not None:
            excluded = excluded_points(*exclusion, center=(p_ra, p_dec), rmin=float((sep - radius)[use].min()),
                                       rmax=float((sep + radius)[use].max()), frame="icrs", sampling=s["sampling"])
        for i in use:
            spec = extract_spectrum(
                obs, float(ra[i]), float(dec[i]), float(radius[i]), frame="icrs", energy_axis=s["energy_axis"],
                energy_true_axis=s["energy_true_axis"], excluded=excluded, safe_mask_methods=s["safe_mask_methods"],
                aeff_percent=s["aeff_percent"], bias_percent=s["bias_percent"],
                containment_correction=s["containment_correction"], reflected=s["reflected"], event_offsets=ev_off,
                name=f"obs_{oid}",
            )
            if spec.meta["n_off_regions"][0] < s["min_regions"] or not spec.mask_safe.any():
                log.info("source %s, obs %d: not used (%d OFF circles, %d safe bins)", ids[i], oid, spec.meta["n_off_regions"][0], spec.mask_safe.sum())
                continue
            per_source[int(i)].append(spec)
            obs_rows += _observation_rows(ids[i], spec)
    spectra = _with_ids(SPECTRA_COLUMNS, ids)
    spectra["GLON"], spectra["GLAT"], spectra["R_Spec"] = glon, glat, radius
    spectra["N_Obs"], spectra["Livetime"] = 0, 0.0
    spectra["Fit_Status"] = "no observation"
    fp_rows, bin_rows = [], []
    for i in range(len(sources)):
        if not per_source.get(i):
            log.warning("source %s: no usable observation within %.2f deg", ids[i], s["offset_max"])
            continue
        stacked = stack_spectra(per_source[i], name=str(ids[i]))
        row = {}
        fp, npred = _fit_row(row, stacked, s, name=f"src{i}")
        for k, v in row.items():
            spectra[k][i] = v
        log.info("source %s: R_spec %.3f deg, %d obs, ON %d OFF %d alpha %.4f excess %.1f (%.1f sigma); %s",
                 ids[i], radius[i], row["N_Obs"], row["N_On"], row["N_Off"], row["Alpha"], row["Excess"], row["Sqrt_TS"], row["Fit_Status"])
        if fp is not None:
            fp_rows += [{"Source_ID": ids[i], **{k: fp[k][j] for k in FLUX_POINT_COLUMNS}} for j in range(fp["e_ref"].size)]
        fit_mask = stacked.mask_safe & energy_mask(stacked.energy, *(s["fit_range"] or (None, None)))
        e = stacked.energy
        bin_rows += [{"Source_ID": ids[i], "Energy_Min": e.lo[k], "Energy_Max": e.hi[k], "Counts": stacked.counts[k],
                      "Counts_Off": stacked.counts_off[k], "Alpha": stacked.alpha[k], "Excess": stacked.excess[k],
                      "Npred": npred[k], "Mask_Safe": stacked.mask_safe[k], "Mask_Fit": fit_mask[k]} for k in range(e.nbin)]
    fp_cols = {k: ("bool" if k in ("is_ul", "success") else "f8", unit, desc) for k, (unit, desc) in FLUX_POINT_COLUMNS.items()}
    return {
        "SPECTRA": spectra,
        "FLUX_POINTS": _rows_table(fp_cols, fp_rows, ids),
        "OBSERVATIONS": _rows_table(OBSERVATION_COLUMNS, obs_rows, ids),
        "SPECTRUM_BINS": _rows_table(BIN_COLUMNS, bin_rows, ids),
    }


def _rows_table(columns: dict, rows: list[dict], ids: np.ndarray) -> Table:
    """Table of ``rows`` (dicts with Source_ID and ``columns``), the full schema when empty."""
    t = _with_ids(columns, np.asarray([r["Source_ID"] for r in rows], dtype=ids.dtype))
    for name, (dtype, unit, desc) in columns.items():
        if rows:
            t[name] = np.asarray([r[name] for r in rows], dtype=dtype)
            t[name].unit, t[name].description = unit or None, desc
    return t


def _read_sources(paths: Sequence[str | os.PathLike]) -> Table:
    """The sources of one or several files (HDU ``SOURCES`` if present, else the first table)."""
    tables = []
    for path in paths:
        with fits.open(path) as hdus:
            hdu = hdus["SOURCES"] if "SOURCES" in hdus else next((h for h in hdus if isinstance(h, fits.BinTableHDU)), None)
            if hdu is None:
                raise ValueError(f"{path}: no table HDU with the sources")
            tables.append(Table.read(hdu))
    if not tables:
        raise ValueError("no source file given")
    return tables[0] if len(tables) == 1 else vstack(tables, join_type="outer", metadata_conflicts="silent")


def run(
    cfg: Config,
    *,
    sources: str | os.PathLike | Sequence[str | os.PathLike] | Table,
    output: str | os.PathLike,
    exclusion: str | os.PathLike | None = None,
    store: DataStore | None = None,
    obs_ids: Sequence[int] | None = None,
) -> dict[str, Table]:
    """Aperture spectra of the sources of ``sources``; write ``output`` atomically.

    Parameters
    ----------
    cfg : Config
        Reads ``aperture``, and ``data`` (store, selection) unless ``store``/``obs_ids`` are given.
    sources : path-like, sequence of path-like, or Table
        Source table(s): HDU ``SOURCES`` of each FITS file if present (the fit stage's
        per-group files), else its first table HDU; several files are stacked.
    output : path-like
        ``results/catalog/aperture_spectra.fits``.
    exclusion : path-like, optional
        ``exclusion.fits`` (HDU ``EXCLUSION_MASK``, 1 = usable); without it no region is excluded.
    store : DataStore, optional
        Default: ``data.store``.
    obs_ids : sequence of int, optional
        Default: the run's observation selection.
    """
    s = _settings(cfg)
    if isinstance(sources, Table):
        table = sources
    else:
        table = _read_sources([sources] if isinstance(sources, str | os.PathLike) else list(sources))
    store = store or open_store(cfg)
    obs_ids = list(obs_ids) if obs_ids is not None else select_observations(cfg, store)
    excl = None
    if exclusion is not None:
        m = read_map(exclusion, "EXCLUSION_MASK")
        excl = (m.geom, ~np.asarray(m.data, dtype=bool).reshape(m.geom.shape))
    else:
        log.warning("no exclusion mask: OFF circles may contain other sources")
    if len(table) == 0:
        log.warning("no source in the input table: writing empty aperture tables")
    tables = aperture_spectra(table, store, obs_ids, exclusion=excl, skip_bad_observations=cfg["data"].get("skip_bad_observations", True), **s)
    header = fits.Header()
    header["GPSCAT"] = "aperture"
    header["CFGHASH"] = cfg.hash[:16]
    header["MODEL"] = s["model"]
    header["CONTCORR"] = s["containment_correction"]
    header["NOBS"] = len(obs_ids)
    hdus = [fits.PrimaryHDU(header=header)]
    for name, t in tables.items():
        hdu = fits.table_to_hdu(t)
        hdu.name = name
        hdus.append(hdu)
    with atomic_path(output) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    log.info("wrote %s (%d sources, %d fitted)", output, len(table), int(np.sum(tables["SPECTRA"]["Fit_Success"])))
    return tables
