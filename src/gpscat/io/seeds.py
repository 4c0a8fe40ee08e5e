"""The seed table: its column schema, FITS and DS9 I/O.

The detect stage writes ``results/seeds/seeds_detected.fits`` (this schema, documented in
``docs/seeds.md``) and ``seeds_detected.reg``; the classify, group and fit stages read
it with :func:`read_seeds`.  An empty seed list is a table with every column and zero
rows, never a missing file.

Per-map significances are one 3D column, ``Sqrt_TS_Grid`` of shape
``(n_seeds, n_datasets, n_radii)``; its axes are the header keywords ``DATASETS`` (comma
separated names) and ``RADII`` (comma separated correlation radii, deg), also in
``table.meta``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from regions import CircleAnnulusSkyRegion, CircleSkyRegion, Regions

from gpscat.io.atomic import atomic_path, write_text_atomic

__all__ = ["SEED_COLUMNS", "empty_seed_table", "read_seeds", "seed_regions", "write_seed_regions", "write_seeds"]

#: name → (dtype, unit, description); the order is the column order of the file.
SEED_COLUMNS: dict[str, tuple[str, str, str]] = {
    "ID": ("i4", "", "seed number, 1 = most significant"),
    "Type": ("U5", "", "'peak' (local maximum) or 'shell' (Hough ring)"),
    "GLON": ("f8", "deg", "Galactic longitude"),
    "GLAT": ("f8", "deg", "Galactic latitude"),
    "RA": ("f8", "deg", "right ascension (ICRS)"),
    "DEC": ("f8", "deg", "declination (ICRS)"),
    "Position": ("U10", "", "how the position was measured: 'peak' (correlated-map maximum), 'centroid' (windowed excess centroid), 'likelihood' (Poisson fit to the counts), 'shell' (ring fit)"),
    "Search": ("U8", "", "where the seed was found: 'maps' (the significance maps) or 'residual' (the maps with the detected shells modelled; its significances are above the shells)"),
    "Sqrt_TS": ("f8", "", "highest significance over datasets and correlation radii"),
    "Dataset_Best": ("U32", "", "dataset of the highest significance"),
    "Radius_Best": ("f8", "deg", "correlation radius of the highest significance"),
    "Sqrt_TS_Grid": ("f8", "", "significance per (dataset, radius), axes in DATASETS/RADII; NaN outside a map"),
    "Excess": ("f8", "", "correlated excess counts at the best dataset and radius"),
    "Flux": ("f8", "cm-2 s-1", "integral flux within the best correlation radius over the best dataset's energy range"),
    "Size": ("f8", "deg", "Gaussian sigma: Size_Moments bracketed by the significance-vs-radius curve, else Size_Radius; shells: rim mid radius"),
    "Size_Moments": ("f8", "deg", "sqrt(sigma_major sigma_minor) of the excess in the seed's basin, truncation-corrected, kernel and PSF deconvolved"),
    "Size_Radius": ("f8", "deg", "sigma from the best correlation radius (r_best / 1.585, PSF deconvolved)"),
    "Extent": ("f8", "deg", "radius used for nesting and regions: extent_factor x Size (>= Radius_Best); shells: outer radius"),
    "Elongation": ("f8", "", "1 - sigma_minor / sigma_major (deconvolved)"),
    "Angle": ("f8", "deg", "position angle of the major axis in the maps' frame (header FRAME), from +lat towards +lon, in [0, 180)"),
    "Shell_Radius": ("f8", "deg", "shells: fitted inner radius (gammapy ShellSpatialModel radius)"),
    "Shell_Width": ("f8", "deg", "shells: fitted width (outer - inner radius)"),
    "Hough_Score": ("f8", "", "shells: fraction of the circle covered by emission contours"),
    "Rim_Sqrt_TS": ("f8", "", "shells: mean significance on the rim"),
    "Rim_Contrast": ("f8", "", "shells: rim minus interior mean significance"),
    "Rim_Sqrt_TS_Sum": ("f8", "", "shells: significance of the excess integrated over the rim (NaN when not measured)"),
    "N_Absorbed": ("i4", "", "shells: number of peak seeds merged into the shell"),
    "N_Peaks": ("i4", "", "map peaks (datasets x radii) merged into this seed"),
    "Index": ("f8", "", "power-law index fitted to the band maps at the seed (Radius_Best band maps)"),
    "Index_Err": ("f8", "", "error of Index"),
    "Index_Datasets": ("f8", "", "power-law index fitted across the datasets' energy ranges"),
    "Index_Datasets_Err": ("f8", "", "error of Index_Datasets"),
    "Hardness": ("f8", "", "flux ratio highest-energy / lowest-energy dataset at Radius_Best"),
    "Nest_Flag": ("i2", "", "bit 1: inside another seed's extent; bit 2: contains another seed"),
    "Parent_ID": ("i4", "", "ID of the smallest seed whose extent contains this one, 0 for none"),
}


def empty_seed_table(datasets: Sequence[str], radii: Sequence[float], *, nrows: int = 0) -> Table:
    """A seed table with every column of :data:`SEED_COLUMNS` and ``nrows`` default rows.

    Floats are NaN, integers 0, strings empty; ``Sqrt_TS_Grid`` has shape
    ``(nrows, len(datasets), len(radii))``.
    """
    nd, nr = len(datasets), len(radii)
    t = Table(meta={"DATASETS": ",".join(datasets), "RADII": ",".join(f"{r:.4f}" for r in radii)})
    for name, (dtype, unit, desc) in SEED_COLUMNS.items():
        shape = (nrows, nd, nr) if name == "Sqrt_TS_Grid" else (nrows,)
        fill = np.nan if dtype.startswith("f") else ("" if dtype.startswith("U") else 0)
        t[name] = np.full(shape, fill, dtype=dtype)
        t[name].unit = unit or None
        t[name].description = desc
    return t


def write_seeds(path: str | os.PathLike, table: Table, *, header: dict | None = None) -> None:
    """Write a seed table to FITS atomically (HDU ``SEEDS``); ``header`` adds keywords."""
    missing = [c for c in SEED_COLUMNS if c not in table.colnames]
    if missing:
        raise ValueError(f"seed table lacks columns {missing}")
    out = table.copy(copy_data=False)
    for k, v in (header or {}).items():
        out.meta[k] = v
    out.meta["EXTNAME"] = "SEEDS"
    with atomic_path(path) as tmp:
        out.write(tmp, format="fits")


def read_seeds(path: str | os.PathLike) -> Table:
    """Read a seed table (units restored; ``meta['DATASETS']``/``['RADII']`` strings)."""
    try:
        return Table.read(path, hdu="SEEDS")
    except (OSError, KeyError) as exc:
        raise type(exc)(f"{path}: cannot read the seed table: {exc}") from exc


def seed_regions(table: Table, *, frame: str = "galactic") -> Regions:
    """DS9 shapes of the seeds: circles of radius ``Extent`` (peaks), annuli (shells).

    Labels are the seed IDs; peaks are drawn in ``green``, shells in ``cyan``, and seeds
    nested in another (``Nest_Flag & 1``) in ``yellow``.
    """
    shapes = []
    if len(table) == 0:
        return Regions(shapes)
    def column(name, fill):  # masked entries (tables read back with NaNs or blanks) → fill
        return np.ma.filled(np.ma.asarray(table[name]), fill)

    c = SkyCoord(column("GLON", np.nan).astype(float), column("GLAT", np.nan).astype(float), unit="deg", frame="galactic")
    if frame != "galactic":
        c = c.transform_to(frame)
    ids = column("ID", -1).astype(int)
    kinds = column("Type", "").astype(str)
    nest = column("Nest_Flag", 0).astype(int)
    extent = np.nan_to_num(column("Extent", np.nan).astype(float), nan=0.05)
    shell_r = column("Shell_Radius", np.nan).astype(float) if "Shell_Radius" in table.colnames else np.full(len(table), np.nan)
    shell_w = np.nan_to_num(column("Shell_Width", 0.0).astype(float)) if "Shell_Width" in table.colnames else np.zeros(len(table))
    for i in range(len(table)):
        text = {"text": f"{ids[i]}"}
        if kinds[i] == "shell":
            inner = max(np.nan_to_num(shell_r[i], nan=extent[i]), 1e-4)
            outer = max(inner + shell_w[i], inner * 1.01)
            shapes.append(CircleAnnulusSkyRegion(c[i], inner * u.deg, outer * u.deg, meta=text, visual={"color": "cyan"}))
        else:
            color = "yellow" if nest[i] & 1 else "green"
            shapes.append(CircleSkyRegion(c[i], max(extent[i], 1e-3) * u.deg, meta=text, visual={"color": color}))
    return Regions(shapes)


def write_seed_regions(path: str | os.PathLike, table: Table, *, frame: str = "galactic") -> None:
    """Write the seeds as a DS9 region file (see :func:`seed_regions`), atomically."""
    regions = seed_regions(table, frame=frame)
    text = regions.serialize(format="ds9") if len(regions) else f"# Region file format: DS9\n{frame}\n"
    write_text_atomic(path, text)
