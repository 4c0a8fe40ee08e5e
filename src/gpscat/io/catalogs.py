"""Known-source catalogs read into one source table (:data:`CATALOG_COLUMNS`).

Formats (``format="auto"`` guesses from the suffix and the content):

* ``hgps`` — HGPS-style FITS (``Source_Name``, ``Spatial_Model``, ``Size``,
  ``Flux_Spec_Int_1TeV``);
* ``lhaaso`` — the 1LHAASO FITS table (two components per source, ``r39``);
* ``fits`` — any FITS table with positions (``GLON/GLAT`` or ``RA(J2000)/DE(C)(J2000)``)
  and optionally a Gaussian-sigma-like size column (as the exclusion stage reads it);
* ``3hwc`` — gammapy's 3HWC YAML (a list of sources with ``flux measurements``);
* ``gammapy-yaml`` — gammapy model YAML, also the GPS prototype's legacy names (``r_eff``);
* ``ctools-xml`` — ctools/GammaLib XML, through :mod:`gpscat.io.ctools_xml`.

``Size`` keeps each catalog's own definition (documented per catalog in
``docs/association.md``); ``Radius`` is the common extent used for association (68 %
containment, shells: outer radius; :func:`gpscat.core.association.extent_radius`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits
from astropy.table import Table, vstack

from gpscat.core.association import R68_PER_SIGMA, extent_radius, weighted_extent
from gpscat.core.exclusion import POSITION_COLUMNS, SIZE_COLUMNS
from gpscat.core.geom import to_frame
from gpscat.io.ctools_xml import read_ctools_xml
from gpscat.io.models_yaml import read_models
from gpscat.models import spatial as spm
from gpscat.models.extra import ConstantSpatialModel
from gpscat.models.sky import Models
from gpscat.models.spectral import PowerLawSpectralModel

__all__ = [
    "CATALOG_COLUMNS",
    "FORMATS",
    "empty_catalog_table",
    "empty_table",
    "read_catalog",
    "read_catalogs",
    "sources_from_models",
]

log = logging.getLogger(__name__)

#: name → (dtype, unit, description); the column order of the source table.
CATALOG_COLUMNS: dict[str, tuple[str, str, str]] = {
    "Name": ("U64", "", "source name in its catalog"),
    "Catalog": ("U32", "", "catalog tag"),
    "GLON": ("f8", "deg", "Galactic longitude"),
    "GLAT": ("f8", "deg", "Galactic latitude"),
    "RA": ("f8", "deg", "right ascension (ICRS)"),
    "DEC": ("f8", "deg", "declination (ICRS)"),
    "Morphology": ("U16", "", "point, gauss, gauss-general, disk, shell or template"),
    "Size": ("f8", "deg", "the catalog's own size (per catalog: docs/association.md); 0 for point sources"),
    "Radius": ("f8", "deg", "extent for association: 68% containment radius (shells: outer radius)"),
    "Flux_1TeV": ("f8", "cm-2 s-1", "integral flux above 1 TeV (NaN when the catalog gives none)"),
}
FORMATS = ("auto", "hgps", "lhaaso", "fits", "3hwc", "gammapy-yaml", "ctools-xml")
_EMAX = 1e4  # TeV: "above 1 TeV" integrals stop here


def empty_table(columns: Mapping[str, tuple[str, str, str]], nrows: int = 0) -> Table:
    """A table with ``columns`` (name → (dtype, unit, description)) and ``nrows`` rows of
    NaN / 0 / empty strings."""
    t = Table()
    for name, (dtype, unit, desc) in columns.items():
        fill = np.nan if dtype.startswith("f") else ("" if dtype.startswith("U") else 0)
        t[name] = np.full(nrows, fill, dtype=dtype)
        t[name].unit = unit or None
        t[name].description = desc
    return t


def empty_catalog_table(nrows: int = 0) -> Table:
    """A source table with every column of :data:`CATALOG_COLUMNS` and ``nrows`` rows."""
    return empty_table(CATALOG_COLUMNS, nrows)


def _table(tag: str, name, lon, lat, frame: str, morph, size, flux, *, radius=None, eta=None) -> Table:
    t = empty_catalog_table(len(np.atleast_1d(name)))
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    glon, glat = to_frame(lon, lat, frame, "galactic")
    ra, dec = to_frame(lon, lat, frame, "icrs")
    size = np.broadcast_to(np.asarray(size, float), lon.shape)
    morph = np.broadcast_to(np.asarray(morph, dtype=str), lon.shape)
    unresolved = (morph != "point") & ~(np.isfinite(size) & (size >= 0))
    if np.any(unresolved) and radius is None:  # e.g. HGPS sources with only a size upper limit
        log.info("catalog %s: %d source(s) without a size taken as point-like", tag, int(unresolved.sum()))
        morph = np.where(unresolved, "point", morph)
    size = np.where(morph == "point", 0.0, size)
    names = [(n.decode() if isinstance(n, bytes) else str(n)).strip() for n in np.atleast_1d(name)]
    cols = {"Name": names, "Catalog": tag, "GLON": glon % 360.0, "GLAT": glat,
            "RA": ra % 360.0, "DEC": dec, "Morphology": morph, "Size": size, "Flux_1TeV": flux,
            "Radius": extent_radius(morph, size, eta=eta) if radius is None else radius}
    for k, v in cols.items():
        t[k][:] = v
    return t


def _pl_flux(amplitude, index, reference) -> np.ndarray:
    """Power-law integral flux above 1 TeV (amplitude cm⁻² s⁻¹ TeV⁻¹ at reference TeV)."""
    return PowerLawSpectralModel.evaluate_integral(1.0, _EMAX, np.asarray(index, float), np.asarray(amplitude, float), np.asarray(reference, float))


def _col(table: Table, name: str, fill=np.nan) -> np.ndarray:
    c = table[name]
    if hasattr(c, "mask"):
        c = c.filled(fill)
    return np.asarray(c)


def _read_hgps(path: Path, tag: str) -> Table:
    t = Table.read(path, hdu="HGPS_SOURCES") if _has_hdu(path, "HGPS_SOURCES") else Table.read(path, hdu=1)
    model = np.char.strip(_col(t, "Spatial_Model", "").astype(str))
    morph = np.where(model == "Shell", "shell", np.where(model == "Point-Like", "point", "gauss"))
    flux = _col(t, "Flux_Spec_Int_1TeV") if "Flux_Spec_Int_1TeV" in t.colnames else np.full(len(t), np.nan)
    return _table(tag, _col(t, "Source_Name", ""), _col(t, "GLON"), _col(t, "GLAT"), "galactic", morph, _col(t, "Size"), flux)


def _read_lhaaso(path: Path, tag: str) -> Table:
    t = Table.read(path, hdu=1)
    r39 = _col(t, "r39")
    morph = np.where(np.isfinite(r39) & (r39 > 0), "gauss", "point")  # r39: 39% containment = Gaussian sigma
    # flux above 1 TeV: the WCDA component's power law (E0 = 3 TeV) when there is one, else KM2A's, extrapolated
    f_a = _pl_flux(_col(t, "N0"), _col(t, "gamma"), _col(t, "E0"))
    f_b = _pl_flux(_col(t, "N0_b"), _col(t, "gamma_b"), _col(t, "E0_b"))
    wcda_a = np.char.startswith(np.char.strip(_col(t, "Model_a", "").astype(str)), "WCDA") & np.isfinite(f_a)
    wcda_b = np.char.startswith(np.char.strip(_col(t, "Model_b", "").astype(str)), "WCDA") & np.isfinite(f_b)
    flux = np.where(wcda_a, f_a, np.where(wcda_b, f_b, f_a))
    return _table(tag, _col(t, "Source_Name", ""), _col(t, "RAJ2000"), _col(t, "DECJ2000"), "icrs", morph, r39, flux)


def _read_fits(path: Path, tag: str) -> Table:
    t = Table.read(path, hdu=1)
    names = set(t.colnames)
    found = next(((lo, la, fr) for lo, la, fr in POSITION_COLUMNS if lo in names and la in names), None)
    if found is None:
        raise ValueError(f"{path}: no position columns (one of {[p[:2] for p in POSITION_COLUMNS]})")
    size_col = next((c for c in SIZE_COLUMNS if c in names), None)
    size = np.nan_to_num(_col(t, size_col), nan=0.0) if size_col else np.zeros(len(t))
    if size_col is None and "R68" in names:  # a 68% radius (the GPS prototype's table): its Gaussian sigma
        size = np.nan_to_num(_col(t, "R68"), nan=0.0) / R68_PER_SIGMA
    name_col = next((c for c in ("Source_Name", "Name", "NAME", "name", "ID") if c in names), None)
    name = _col(t, name_col, "") if name_col else [f"{tag} {i + 1}" for i in range(len(t))]
    morph = np.where(size > 0, "gauss", "point")
    return _table(tag, name, _col(t, found[0]), _col(t, found[1]), found[2], morph, size, np.full(len(t), np.nan))


def _read_3hwc(data: list, path: Path, tag: str) -> Table:
    rows = []
    for i, src in enumerate(data):
        try:
            meas = (src.get("flux measurements") or [{}])[0]
            radius = float(src.get("search radius", 0.0))
            flux = float(_pl_flux(meas["flux"], -float(meas["index"]), 7.0)) if "flux" in meas else np.nan
            rows.append((src["name"], float(src["RA"]), float(src["Dec"]), "disk" if radius > 0 else "point", radius, flux))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: 3HWC entry {i} ({src.get('name') if isinstance(src, dict) else src!r}): {exc}") from exc
    if not rows:
        return empty_catalog_table()
    name, ra, dec, morph, size, flux = (np.array(c) for c in zip(*rows, strict=True))
    return _table(tag, name, ra, dec, "icrs", morph, size, flux)


def _model_morphology(sp) -> tuple[str, float, float, float, float, float]:
    """(morphology, size, radius, eta, lon, lat) of a spatial model, positions galactic."""
    if isinstance(sp, spm.TemplateSpatialModel):
        data = np.asarray(sp.map.data, float)
        image = data.reshape((-1,) + sp.map.geom.shape).mean(axis=0) * sp.map.geom.solid_angle()
        lon, lat = sp.map.geom.get_coord(frame="galactic")
        glon, glat, r68 = weighted_extent(lon, lat, image)
        return "template", r68, r68, np.nan, glon, glat
    glon, glat = sp.position_in("galactic")
    if isinstance(sp, spm.PointSpatialModel):
        return "point", 0.0, 0.0, np.nan, glon, glat
    elong = np.sqrt(np.sqrt(1.0 - sp.e.value**2)) if hasattr(sp, "e") else 1.0  # circle of equal area
    if isinstance(sp, spm.GaussianSpatialModel):
        return "gauss", sp.sigma.value * elong, np.nan, np.nan, glon, glat
    if isinstance(sp, spm.GeneralizedGaussianSpatialModel):
        return "gauss-general", sp.r_0.value * elong, np.nan, sp.eta.value, glon, glat
    if isinstance(sp, spm.DiskSpatialModel):
        return "disk", sp.r_0.value * elong, np.nan, np.nan, glon, glat
    if isinstance(sp, spm.ShellSpatialModel):
        return "shell", sp.radius.value + sp.width.value, np.nan, np.nan, glon, glat
    if isinstance(sp, spm.Shell2SpatialModel):
        return "shell", sp.r_0.value, np.nan, np.nan, glon, glat
    raise ValueError(f"spatial model {type(sp).__name__} has no known extent")


def sources_from_models(models: Models, *, tag: str) -> Table:
    """Source table of the sky models (isotropic and position-less models are skipped).

    ``Size``: Gaussian sigma, generalised-Gaussian ``r_0``, disk radius (elongated shapes:
    the geometric mean of the semi-axes), shell outer radius, template 68 % radius.
    ``Flux_1TeV``: the spectral model integrated from 1 TeV to 10 PeV.
    """
    rows = []
    for m in models.sky_models:
        if m.spatial_model is None or isinstance(m.spatial_model, ConstantSpatialModel):
            log.info("catalog %s: %s has no position (isotropic or no spatial model), skipped", tag, m.name)
            continue
        morph, size, radius, eta, glon, glat = _model_morphology(m.spatial_model)
        flux = float(m.spectral_model.integral(1.0, _EMAX))
        rows.append((m.name, glon, glat, morph, size, radius, eta, flux))
    if not rows:
        return empty_catalog_table()
    name, glon, glat, morph, size, radius, eta, flux = (np.array(c) for c in zip(*rows, strict=True))
    t = _table(tag, name, glon.astype(float), glat.astype(float), "galactic", morph, size.astype(float), flux.astype(float),
               eta=np.where(np.isfinite(eta.astype(float)), eta.astype(float), 0.5))
    has_radius = np.isfinite(radius.astype(float))
    t["Radius"][has_radius] = radius.astype(float)[has_radius]
    return t


def _has_hdu(path: Path, name: str) -> bool:
    with fits.open(path, memmap=False) as hl:
        return name in hl


def _guess_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".xml"):
        return "ctools-xml"
    if name.endswith((".yaml", ".yml")):
        return "yaml"
    if name.endswith((".fits", ".fits.gz", ".fit", ".fits.fz")):
        if _has_hdu(path, "HGPS_SOURCES"):
            return "hgps"
        cols = set(Table.read(path, hdu=1).colnames)
        if "Spatial_Model" in cols and "Source_Name" in cols:
            return "hgps"
        if "r39" in cols and "Model_a" in cols:
            return "lhaaso"
        return "fits"
    raise ValueError(f"{path}: cannot tell the catalog format from the file name; give format= one of {FORMATS[1:]}")


def read_catalog(path: str | os.PathLike, *, tag: str | None = None, format: str = "auto") -> Table:
    """Read one known-source catalog into the source table.

    Parameters
    ----------
    path : path-like
        The catalog file.
    tag : str, optional
        Catalog tag written in every row (default: the file name without suffixes).
    format : str
        One of :data:`FORMATS`.

    Returns
    -------
    astropy.table.Table
        Columns :data:`CATALOG_COLUMNS`; ``meta["CATALOG"]`` is the tag.
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"{path}: unknown catalog format {format!r}; known: {FORMATS}")
    tag = tag or path.name.split(".")[0]
    if not path.exists():
        raise OSError(f"{path}: catalog file not found")
    fmt = _guess_format(path) if format == "auto" else format
    if fmt in ("yaml", "3hwc", "gammapy-yaml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, list) and fmt != "gammapy-yaml":
            table = _read_3hwc(data, path, tag)
        elif isinstance(data, dict) and "components" in data and fmt != "3hwc":
            table = sources_from_models(read_models(path), tag=tag)
        else:
            raise ValueError(f"{path}: YAML is neither a gammapy model file ('components') nor a 3HWC-style source list")
    elif fmt == "ctools-xml":
        models, report = read_ctools_xml(path)
        for f in report.failed:
            log.warning("catalog %s: source #%d %r left out: %s", tag, f["index"], f["name"], f["reason"])
        table = sources_from_models(models, tag=tag)
    else:
        reader = {"hgps": _read_hgps, "lhaaso": _read_lhaaso, "fits": _read_fits}[fmt]
        try:
            table = reader(path, tag)
        except KeyError as exc:
            raise ValueError(f"{path}: not a {fmt} catalog, column {exc} missing") from exc
    bad = ~(np.isfinite(table["GLON"]) & np.isfinite(table["GLAT"]))
    if np.any(bad):
        log.warning("catalog %s: %d source(s) without a position left out", tag, int(bad.sum()))
        table = table[~bad]
    table.meta["CATALOG"] = tag
    log.info("catalog %s (%s, %s): %d sources", tag, fmt, path, len(table))
    return table


def read_catalogs(specs: Iterable[Mapping | str | os.PathLike]) -> Table:
    """Read several catalogs into one table; ``specs`` are paths or ``{path, tag, format}``."""
    tables = []
    for spec in specs:
        spec = {"path": spec} if not isinstance(spec, Mapping) else spec
        tables.append(read_catalog(spec["path"], tag=spec.get("tag"), format=spec.get("format", "auto")))
    if not tables:
        return empty_catalog_table()
    return vstack(tables, join_type="exact", metadata_conflicts="silent")
