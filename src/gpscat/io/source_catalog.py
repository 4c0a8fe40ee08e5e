"""The released source catalog ``catalog.fits``: column schema and FITS I/O.

HDUs: ``CATALOG`` (one row per source, :func:`catalog_columns`), ``FLUX_POINTS`` (the
group fits' flux points with ``Source_Name``), ``REJECTED`` (fitted or seeded sources not in
the catalog, with the reason) and ``OBSERVATIONS`` (dataset, observation id: the input
observations).  Every HDU carries the provenance header (config hash, software versions,
datasets, bands).  Columns and their meaning: docs/catalog.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from astropy.io import fits
from astropy.table import Table

from gpscat.io.atomic import atomic_path
from gpscat.io.fit_results import FLUX_POINT_COLUMNS, REJECTED_COLUMNS, source_columns, table_hdu
from gpscat.io.groups import unmask_strings

__all__ = ["CATALOG_EXTRA", "catalog_columns", "flux_point_columns", "read_catalog_fits", "rejected_columns", "write_catalog_fits"]

Columns = dict[str, tuple[str, str, str]]

#: columns the catalog adds to the group-fit SOURCES columns
CATALOG_EXTRA: Columns = {
    "Source_Name": ("U32", "", "IAU-style name '<prefix> JHHMM+DDd' (RA/Dec J2000, truncated; suffix A, B, ... if ambiguous)"),
    "Seed_Class": ("U10", "", "class of the seed (classifier: point / extended / shell / spurious; 'unknown' if unclassified; '' for residual-search sources)"),
    "Seed_Rank": ("i4", "", "rank of the seed by the classifier's P_Real (1 = best; 0 if unranked)"),
    "Seed_P_Real": ("f8", "", "classifier probability that the seed is a real source (NaN if unclassified)"),
    "Seed_Sqrt_TS": ("f8", "", "significance of the seed in the maps"),
    "Nest_Flag": ("i2", "", "bit 1: inside another source's R68 (and smaller); bit 2: contains another source"),
    "Parent": ("U32", "", "Source_Name of the smallest source containing this one ('' for none)"),
    "Association": ("U64", "", "best associated known source (surface overlap; '' if none)"),
    "Association_Catalog": ("U32", "", "catalog tag of Association"),
    "Association_Overlap": ("f8", "", "overlap fraction of the PSF-broadened circles (0 if none)"),
    "Association_Separation": ("f8", "deg", "separation from Association (NaN if none)"),
    "N_Associations": ("i4", "", "known sources with overlap >= associate.min_overlap"),
}
_RENAME = {"RA": "RAJ2000", "DEC": "DEJ2000"}
_ORDER_FIRST = ("Source_Name", "Source_ID")
_ORDER_AFTER = {  # catalog extras placed after these group-fit columns
    "Group_ID": ("Seed_Class", "Seed_Rank", "Seed_P_Real", "Seed_Sqrt_TS", "Nest_Flag", "Parent", "Association",
                 "Association_Catalog", "Association_Overlap", "Association_Separation", "N_Associations"),
}


def catalog_columns(datasets: Sequence[str], bands: Sequence[tuple[float, float]]) -> Columns:
    """The CATALOG columns (name → dtype, unit, description) for these datasets and bands."""
    base = source_columns(datasets, bands)
    out: Columns = {k: CATALOG_EXTRA[k] if k in CATALOG_EXTRA else base[k] for k in _ORDER_FIRST}
    for name, spec in base.items():
        if name in out:
            continue
        if name in _RENAME:
            desc = spec[2].replace("right ascension", "right ascension J2000").replace("declination", "declination J2000")
            out[_RENAME[name]] = (spec[0], spec[1], desc)
        else:
            out[name] = spec
        for extra in _ORDER_AFTER.get(name, ()):
            out[extra] = CATALOG_EXTRA[extra]
    return out


def flux_point_columns() -> Columns:
    return {"Source_Name": CATALOG_EXTRA["Source_Name"], **FLUX_POINT_COLUMNS}


def rejected_columns() -> Columns:
    return dict(REJECTED_COLUMNS)


def write_catalog_fits(path: str | os.PathLike, *, catalog: Table, flux_points: Table, rejected: Table, observations: Table,
                       header: Mapping) -> None:
    """Write the four catalog HDUs atomically; ``header`` (provenance) goes on every HDU."""
    primary = fits.PrimaryHDU()
    for k, v in header.items():
        primary.header[k] = v
    hdus = [primary] + [table_hdu(t, n, header) for t, n in ((catalog, "CATALOG"), (flux_points, "FLUX_POINTS"),
                                                        (rejected, "REJECTED"), (observations, "OBSERVATIONS"))]
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def read_catalog_fits(path: str | os.PathLike) -> dict[str, Table]:
    """The ``CATALOG``, ``FLUX_POINTS``, ``REJECTED`` and ``OBSERVATIONS`` tables."""
    try:
        return {n: unmask_strings(Table.read(path, hdu=n, mask_invalid=False)) for n in ("CATALOG", "FLUX_POINTS", "REJECTED", "OBSERVATIONS")}
    except (OSError, KeyError) as exc:
        raise type(exc)(f"{path}: cannot read the catalog: {exc}") from exc
