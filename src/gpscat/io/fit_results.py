"""The tables of a group fit (``results/fit/pass<p>/group_<gid>.fits``): schemas and FITS I/O.

HDUs ``SOURCES`` (one row per source kept), ``FLUX_POINTS`` (one row per source and
energy bin, gammapy "gadf-sed" column names) and ``REJECTED`` (sources dropped, with the
reason).  Columns that depend on the run — per dataset (``Npred_<dataset>``,
``TS_<dataset>``, ``R68_<dataset>``) and per flux band (``Flux_50GeV_1TeV``…) — come from
:func:`source_columns`.  Empty tables keep every column.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table

from gpscat.core.source_results import N_COV, band_column
from gpscat.io.atomic import atomic_path
from gpscat.io.groups import unmask_strings

__all__ = [
    "FLUX_POINT_COLUMNS",
    "REJECTED_COLUMNS",
    "read_group_result",
    "source_columns",
    "table_from_rows",
    "table_hdu",
    "write_group_result",
]

Columns = dict[str, tuple[str, str, str]]

_HEAD: Columns = {
    "Source_ID": ("U24", "", "unique source id: S<seed id>, or G<group>N<k> for sources of the residual search"),
    "Seed_ID": ("i4", "", "seed the source started from (0: residual search)"),
    "Group_ID": ("i4", "", "fit group"),
    "Pass": ("i2", "", "fit pass of these values"),
    "Origin": ("U8", "", "'seed' or 'residual'"),
    "Spatial_Model": ("U40", "", "gammapy spatial model class"),
    "Spectral_Model": ("U40", "", "gammapy spectral model class"),
    "GLON": ("f8", "deg", "Galactic longitude [0, 360)"),
    "GLAT": ("f8", "deg", "Galactic latitude"),
    "GLON_Err": ("f8", "deg", "1 sigma error of GLON (the longitude parameter)"),
    "GLAT_Err": ("f8", "deg", "1 sigma error of GLAT"),
    "RA": ("f8", "deg", "right ascension (ICRS)"),
    "DEC": ("f8", "deg", "declination (ICRS)"),
    "Pos_Err_68": ("f8", "deg", "radius of the circle of the error ellipse's area holding 68% (1.51 sqrt(a b))"),
    "Pos_Err_95": ("f8", "deg", "the same for 95% (2.45 sqrt(a b))"),
    "Radius": ("f8", "deg", "size parameter: Gaussian sigma, disk r_0, generalised-Gaussian r_0, shell inner radius; 0 for points"),
    "Radius_Err": ("f8", "deg", "1 sigma error of Radius"),
    "Width": ("f8", "deg", "shell width (outer - inner radius); NaN for other shapes"),
    "Width_Err": ("f8", "deg", "1 sigma error of Width"),
    "Eta": ("f8", "", "generalised-Gaussian shape eta (0.5: Gaussian, 1: Laplace, -> 0: disk)"),
    "Eta_Err": ("f8", "", "1 sigma error of Eta"),
    "Elongation": ("f8", "", "eccentricity e of elongated shapes (0: circular)"),
    "Elongation_Err": ("f8", "", "1 sigma error of Elongation (NaN when not fitted)"),
    "Phi": ("f8", "deg", "position angle of the major axis, from north through east (NaN when circular)"),
    "Phi_Err": ("f8", "deg", "1 sigma error of Phi"),
    "R68_Model": ("f8", "deg", "68% containment radius of the model without PSF (shells: outer radius)"),
    "R68": ("f8", "deg", "68% containment radius of the PSF-convolved model (dataset of the highest TS)"),
}
_SPECTRAL: Columns = {
    "Index": ("f8", "", "spectral index (PowerLaw / ExpCutoffPowerLaw index, LogParabola alpha) at the reference energy"),
    "Index_Err": ("f8", "", "1 sigma error of Index"),
    "Beta": ("f8", "", "LogParabola curvature (natural log), NaN otherwise"),
    "Beta_Err": ("f8", "", "1 sigma error of Beta"),
    "Lambda": ("f8", "TeV-1", "ExpCutoffPowerLaw inverse cutoff energy lambda_, NaN otherwise"),
    "Lambda_Err": ("f8", "TeV-1", "1 sigma error of Lambda"),
    "Cutoff_Energy": ("f8", "TeV", "1 / Lambda"),
    "Cutoff_Energy_Err": ("f8", "TeV", "1 sigma error of Cutoff_Energy"),
    "Amplitude": ("f8", "cm-2 s-1 TeV-1", "dN/dE at Reference_Energy"),
    "Amplitude_Err": ("f8", "cm-2 s-1 TeV-1", "1 sigma error of Amplitude"),
    "Reference_Energy": ("f8", "TeV", "reference energy of the spectral model"),
    "DNDE_1TeV": ("f8", "cm-2 s-1 TeV-1", "dN/dE at 1 TeV"),
    "DNDE_1TeV_Err": ("f8", "cm-2 s-1 TeV-1", "1 sigma error of DNDE_1TeV (covariance)"),
}
_TAIL: Columns = {
    "TS_Ext": ("f8", "", "2 delta lnL of the best extended shape over a point (NaN: not tested)"),
    "TS_Curvature": ("f8", "", "2 delta lnL of the best curved spectrum over the power law (NaN: not tested)"),
    "TS_Elongation": ("f8", "", "2 delta lnL of the elongated over the circular shape (NaN: not tested)"),
    "Delta_AIC_Spatial": ("f8", "", "AIC of the next best spatial candidate minus AIC of the chosen one"),
    "Delta_AIC_Spectral": ("f8", "", "AIC of the next best spectral candidate minus AIC of the chosen one"),
    "N_Free": ("i2", "", "free parameters of the source"),
    "Pass_Shift": ("f8", "", "largest change of a parameter of the source in this pass, in sigma (NaN in pass 1)"),
    "Fit_Status": ("U160", "", "ok | not converged: <reason> | failed: <reason>"),
    "Flags": ("i4", "", "bit flags (docs/catalog.md): 1 not converged, 2 at bound, 4 near edge, 8 confused, 16 low exposure, 32 no covariance, 64 residual search, 128 still moving at the last pass, 256 fit failed"),
    "Covariance": ("f8", "", f"covariance of the free parameters ({N_COV}x{N_COV}, NaN padded; order in Covariance_Parameters; units as the YAML parameters)"),
    "Covariance_Parameters": ("U200", "", "comma-separated parameter names of the Covariance rows"),
}

FLUX_POINT_COLUMNS: Columns = {
    "Source_ID": ("U24", "", "source id (SOURCES table)"),
    "e_min": ("f8", "TeV", "bin lower edge"),
    "e_ref": ("f8", "TeV", "reference energy sqrt(e_min e_max)"),
    "e_max": ("f8", "TeV", "bin upper edge"),
    "norm": ("f8", "", "fitted amplitude / best-fit amplitude in the bin"),
    "norm_err": ("f8", "", "1 sigma error of norm"),
    "norm_ul": ("f8", "", "upper limit of norm (header ULSIGMA)"),
    "ts": ("f8", "", "TS of the source in the bin"),
    "sqrt_ts": ("f8", "", "sqrt(ts)"),
    "is_ul": ("?", "", "ts below the threshold (header ULMINTS): use the upper limit"),
    "dnde": ("f8", "cm-2 s-1 TeV-1", "dN/dE at e_ref"),
    "dnde_err": ("f8", "cm-2 s-1 TeV-1", "1 sigma error of dnde"),
    "dnde_ul": ("f8", "cm-2 s-1 TeV-1", "upper limit of dnde"),
    "e2dnde": ("f8", "erg cm-2 s-1", "e_ref^2 dnde"),
    "e2dnde_err": ("f8", "erg cm-2 s-1", "1 sigma error of e2dnde"),
    "e2dnde_ul": ("f8", "erg cm-2 s-1", "upper limit of e2dnde"),
    "npred": ("f8", "", "predicted counts of the source in the bin (region of interest)"),
}

REJECTED_COLUMNS: Columns = {
    "Source_ID": ("U24", "", "source id"),
    "Seed_ID": ("i4", "", "seed (0: residual search)"),
    "Group_ID": ("i4", "", "fit group"),
    "Pass": ("i2", "", "fit pass"),
    "Spatial_Model": ("U40", "", "gammapy spatial model class at rejection"),
    "Spectral_Model": ("U40", "", "gammapy spectral model class at rejection"),
    "GLON": ("f8", "deg", "Galactic longitude at rejection"),
    "GLAT": ("f8", "deg", "Galactic latitude at rejection"),
    "TS": ("f8", "", "TS at rejection"),
    "Reason": ("U120", "", "why the source is not in the catalog"),
}


def source_columns(datasets: Sequence[str], bands: Sequence[tuple[float, float]]) -> Columns:
    """The SOURCES columns for these dataset names and flux bands (TeV)."""
    cols: Columns = dict(_HEAD)
    for d in datasets:
        cols[f"R68_{d}"] = ("f8", "deg", f"68% containment radius of the PSF-convolved model in dataset {d}")
    cols.update(_SPECTRAL)
    for lo, hi in bands:
        name = band_column(lo, hi)
        cols[name] = ("f8", "cm-2 s-1", f"integral photon flux {lo:g}-{hi:g} TeV (true energy)")
        cols[name + "_Err"] = ("f8", "cm-2 s-1", f"1 sigma error of {name} (covariance)")
    cols["Energy_Flux"] = ("f8", "erg cm-2 s-1", "energy flux over the band of header EFLUXBND")
    cols["Energy_Flux_Err"] = ("f8", "erg cm-2 s-1", "1 sigma error of Energy_Flux")
    cols["Npred"] = ("f8", "", "predicted counts of the source, all datasets (safe bins)")
    for d in datasets:
        cols[f"Npred_{d}"] = ("f8", "", f"predicted counts in dataset {d} (safe bins)")
    cols["TS"] = ("f8", "", "test statistic: 2 delta lnL of the group fit without the source (refitted)")
    for d in datasets:
        cols[f"TS_{d}"] = ("f8", "", f"contribution of dataset {d} to TS")
    cols["Sqrt_TS"] = ("f8", "", "sqrt(TS)")
    cols.update(_TAIL)
    return cols


def table_from_rows(columns: Mapping[str, tuple[str, str, str]], rows: Sequence[Mapping]) -> Table:
    """A table with exactly ``columns`` (dtype, unit, description) filled from dict rows
    (missing values: NaN, 0, '' or False)."""
    t = Table()
    n = len(rows)
    for name, (dtype, unit, desc) in columns.items():
        shape = (n, N_COV, N_COV) if name == "Covariance" else (n,)
        fill = np.nan if dtype.startswith("f") else ("" if dtype.startswith("U") else 0)
        data = np.full(shape, fill, dtype=dtype)
        for i, row in enumerate(rows):
            if name in row and row[name] is not None:
                data[i] = row[name]
        t[name] = data
        t[name].unit = unit or None
        t[name].description = desc
    return t


def table_hdu(table: Table, name: str, header: Mapping | None = None) -> fits.BinTableHDU:
    """A binary-table HDU named ``name`` with the keywords of ``header``."""
    hdu = fits.table_to_hdu(table)
    hdu.name = name
    for k, v in (header or {}).items():
        hdu.header[k] = v
    return hdu


def write_group_result(path: str | os.PathLike, *, sources: Table, flux_points: Table, rejected: Table,
                       header: Mapping | None = None) -> None:
    """Write the three tables of a group fit to ``path`` atomically (``header`` on every HDU)."""
    header = dict(header or {})
    primary = fits.PrimaryHDU()
    for k, v in header.items():
        primary.header[k] = v
    hdus = fits.HDUList([primary, table_hdu(sources, "SOURCES", header), table_hdu(flux_points, "FLUX_POINTS", header),
                         table_hdu(rejected, "REJECTED", header)])
    with atomic_path(path) as tmp:
        hdus.writeto(tmp)


def read_group_result(path: str | os.PathLike) -> dict[str, Table]:
    """The ``SOURCES``, ``FLUX_POINTS`` and ``REJECTED`` tables of a group-fit file."""
    try:
        return {name: unmask_strings(Table.read(path, hdu=name, mask_invalid=False)) for name in ("SOURCES", "FLUX_POINTS", "REJECTED")}
    except (OSError, KeyError) as exc:
        raise type(exc)(f"{path}: cannot read the group fit tables: {exc}") from exc
