"""Stage ``catalog``: the last fit pass of every group → the released catalog products.

Writes into ``output_dir`` (docs/catalog.md):

* ``catalog.fits`` — HDUs CATALOG, FLUX_POINTS, REJECTED, OBSERVATIONS
  (:mod:`gpscat.io.source_catalog`) with the provenance header;
* ``catalog.yaml`` (+ ``catalog_covariance.dat``) — gammapy model YAML of every catalog
  source, named by ``Source_Name``, with the covariance of each group's fit (blocks);
* ``catalog.reg`` — DS9 regions: R68 circles (PSF-convolved) of point sources, 68 %
  circles / ellipses of extended ones, annuli of shells;
* ``overview.png`` — significance maps (counts vs background, top-hat of
  ``catalog.correlation_radius``) of each dataset with the sources drawn;
* ``residual_significance.fits`` / ``.png`` — the same significance of the counts against
  the background plus all catalog sources (one image HDU per dataset), with the
  distribution of its values.

Zero groups give every product, with an empty table of the full schema.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table, vstack
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from regions import CircleAnnulusSkyRegion, CircleSkyRegion, EllipseSkyRegion, Regions

from gpscat import __version__
from gpscat.config import Config, quantity
from gpscat.core.association import associate
from gpscat.core.catalog import confused, iau_names, nesting
from gpscat.core.convolve import disk_kernel
from gpscat.core.geom import Map
from gpscat.core.residuals import residual_maps
from gpscat.core.significance import cash_maps
from gpscat.core.source_results import FLAGS
from gpscat.io.atomic import atomic_path, write_text_atomic
from gpscat.io.catalogs import read_catalogs
from gpscat.io.dataset import read_dataset
from gpscat.io.fit_results import read_group_result, table_from_rows
from gpscat.io.groups import read_groups
from gpscat.io.maps import write_maps
from gpscat.io.models_yaml import read_models, write_models
from gpscat.io.seeds import read_seeds
from gpscat.io.source_catalog import (
    catalog_columns,
    flux_point_columns,
    rejected_columns,
    write_catalog_fits,
)
from gpscat.models.sky import Models
from gpscat.stages.fit import flux_bands

__all__ = ["PRODUCTS", "build_catalog", "output_paths", "run"]

log = logging.getLogger(__name__)

PRODUCTS = {
    "catalog": "catalog.fits",
    "yaml": "catalog.yaml",
    "covariance": "catalog_covariance.dat",
    "regions": "catalog.reg",
    "overview": "overview.png",
    "residual": "residual_significance.fits",
    "residual_png": "residual_significance.png",
}
_VERSIONS = ("numpy", "scipy", "astropy", "iminuit", "regions")


def output_paths(output_dir: str | os.PathLike) -> dict[str, Path]:
    """The products of the stage, by key of :data:`PRODUCTS`."""
    return {k: Path(output_dir) / v for k, v in PRODUCTS.items()}


def _rows(table: Table) -> list[dict]:
    return [{k: (row[k].item() if hasattr(row[k], "item") and np.ndim(row[k]) == 0 else np.asarray(row[k]))
             for k in table.colnames} for row in table]


def _unfitted_seeds(path, fitted: set[int]) -> list[dict]:
    """REJECTED rows of the seeds the group stage did not take (classifier's selection)."""
    t = read_seeds(path)
    rows = []
    for row in t:
        if int(row["ID"]) in fitted:
            continue
        why = [f"{c}={row[c]}" for c in ("Class", "Selected") if c in t.colnames]
        if "P_Real" in t.colnames:
            why.append(f"P_Real={row['P_Real']:.2f}")
        rows.append({"Source_ID": "", "Seed_ID": int(row["ID"]), "Group_ID": 0, "Pass": 0, "GLON": float(row["GLON"]),
                     "GLAT": float(row["GLAT"]), "TS": np.nan, "Reason": "seed not selected for fitting (" + ", ".join(why) + ")"})
    return rows


def _seed_info(path) -> dict[int, dict]:
    t = read_seeds(path)
    cls = np.char.strip(np.asarray(t["Class"], dtype=str)) if "Class" in t.colnames else np.full(len(t), "unknown")
    rank = np.asarray(t["Rank"], int) if "Rank" in t.colnames else np.zeros(len(t), int)
    preal = np.asarray(t["P_Real"], float) if "P_Real" in t.colnames else np.full(len(t), np.nan)
    return {int(i): {"Seed_Class": str(c), "Seed_Rank": int(r), "Seed_P_Real": float(p), "Seed_Sqrt_TS": float(s)}
            for i, c, r, p, s in zip(t["ID"], cls, rank, preal, np.asarray(t["Sqrt_TS"], float), strict=True)}


def _associate(cat: Table, cfg: Config) -> None:
    a = cfg["associate"]
    specs = [{**c, "path": cfg.path(c["path"])} for c in a["catalogs"]]
    cat["Association_Overlap"][:] = 0.0
    if not specs or len(cat) == 0:
        return
    known = read_catalogs(specs)
    if len(known) == 0:
        return
    extent = np.nan_to_num(np.asarray(cat["R68_Model"], float), nan=0.0)
    psf = np.sqrt(np.clip(np.asarray(cat["R68"], float) ** 2 - extent**2, 0, None))
    psf = np.where(np.isfinite(psf) & (psf > 0), psf, quantity(a["psf_r68"], "deg", key="associate.psf_r68"))
    res = associate(np.asarray(cat["GLON"], float), np.asarray(cat["GLAT"], float), extent, np.asarray(known["GLON"], float),
                    np.asarray(known["GLAT"], float), np.asarray(known["Radius"], float), psf_r68=psf,
                    min_overlap=float(a["min_overlap"]))
    cat["N_Associations"][:] = np.bincount(res.seed, minlength=len(cat))
    best = res.rank == 1
    s, j = res.seed[best], res.source[best]
    cat["Association"][s] = np.asarray(known["Name"])[j]
    cat["Association_Catalog"][s] = np.asarray(known["Catalog"])[j]
    cat["Association_Overlap"][s] = res.overlap[best]
    cat["Association_Separation"][s] = res.separation[best]


def build_catalog(sources: Table, *, datasets: Sequence[str], bands, prefix: str, seed_info: dict[int, dict],
                  confusion_overlap: float) -> Table:
    """CATALOG table from the merged SOURCES rows: names, seed info, nesting, confusion flag,
    sorted by Galactic longitude in (−180°, 180°] (then latitude)."""
    rows = _rows(sources)
    cols = catalog_columns(datasets, bands)
    for r in rows:
        r["RAJ2000"], r["DEJ2000"] = r.pop("RA", np.nan), r.pop("DEC", np.nan)
        r.update(seed_info.get(int(r.get("Seed_ID", 0)), {"Seed_Class": "", "Seed_Rank": 0, "Seed_P_Real": np.nan, "Seed_Sqrt_TS": np.nan}))
    cat = table_from_rows(cols, rows)
    if len(cat) == 0:
        return cat
    lon = (np.asarray(cat["GLON"], float) + 180.0) % 360.0 - 180.0
    cat = cat[np.lexsort((np.asarray(cat["GLAT"], float), lon))]
    cat["Source_Name"] = iau_names(cat["RAJ2000"], cat["DEJ2000"], prefix=prefix, glon=(np.asarray(cat["GLON"]) + 180) % 360 - 180)
    r68 = np.asarray(cat["R68"], float)
    flag, parent = nesting(cat["GLON"], cat["GLAT"], r68)
    cat["Nest_Flag"] = flag
    cat["Parent"] = np.where(parent >= 0, np.asarray(cat["Source_Name"])[np.maximum(parent, 0)], "")
    conf = confused(cat["GLON"], cat["GLAT"], r68, min_overlap=confusion_overlap)
    cat["Flags"] = np.asarray(cat["Flags"]) | np.where(conf, FLAGS["CONFUSED"], 0)
    return cat


def _catalog_models(model_files, names: dict[str, str]) -> Models:
    """All catalog sources from the group YAML files, renamed, with block covariances."""
    out, blocks, params = Models(), [], []
    for path in model_files:
        group = read_models(path)
        keep = [m for m in group.sky_models if m.name in names]
        ps = [p for m in keep for p in m.parameters]
        if keep:
            blocks.append(group.covariance_of(ps))
            params += ps
        for m in keep:
            m.name = names[m.name]
            out.append(m)
    order = {n: k for k, n in enumerate(sorted(names.values()))}
    out = Models(sorted(out, key=lambda m: order[m.name]))
    if params:
        n = len(params)
        cov = np.zeros((n, n))
        k = 0
        for b in blocks:
            cov[k:k + len(b), k:k + len(b)] = b
            k += len(b)
        out.set_covariance(params, cov)
    return out


def _regions(cat: Table) -> Regions:
    shapes = []
    if len(cat) == 0:
        return Regions(shapes)
    coords = SkyCoord(np.asarray(cat["GLON"], float), np.asarray(cat["GLAT"], float), unit="deg", frame="galactic")
    for c, row in zip(coords, cat, strict=True):
        meta = {"text": str(row["Source_Name"])}
        kind = str(row["Spatial_Model"])
        if kind == "ShellSpatialModel":
            inner, width = float(row["Radius"]), float(np.nan_to_num(row["Width"], nan=0.01))
            shapes.append(CircleAnnulusSkyRegion(c, inner * u.deg, (inner + max(width, 1e-3)) * u.deg, meta=meta, visual={"color": "magenta"}))
        elif kind == "PointSpatialModel":
            shapes.append(CircleSkyRegion(c, max(float(np.nan_to_num(row["R68"], nan=0.05)), 1e-3) * u.deg, meta=meta,
                                          visual={"color": "cyan"}))
        elif float(np.nan_to_num(row["Elongation"])) > 0:
            e, a = float(row["Elongation"]), float(row["R68_Model"]) / np.sqrt(np.sqrt(1 - float(row["Elongation"]) ** 2))
            b = a * np.sqrt(1 - e**2)
            shapes.append(EllipseSkyRegion(c, 2 * b * u.deg, 2 * a * u.deg, angle=float(np.nan_to_num(row["Phi"])) * u.deg, meta=meta,
                                           visual={"color": "green"}))
        else:
            shapes.append(CircleSkyRegion(c, max(float(row["R68_Model"]), 1e-3) * u.deg, meta=meta, visual={"color": "green"}))
    return Regions(shapes)


def _panel(fig, spec, geom, data, title: str, regions: Regions, *, label: str):
    ax = fig.add_subplot(spec, projection=geom.wcs)
    finite = data[np.isfinite(data)]
    top = float(np.clip(finite.max(), 6.0, 20.0)) if finite.size else 6.0
    im = ax.imshow(data, origin="lower", cmap="RdBu_r", norm=TwoSlopeNorm(vmin=-5.0, vcenter=0.0, vmax=top), interpolation="nearest")
    for reg in regions:
        pix = reg.to_pixel(geom.wcs)
        pix.plot(ax=ax, edgecolor=reg.visual.get("color", "green"), facecolor="none", lw=0.8)
        x, y = pix.center.x, pix.center.y
        ax.text(x, y, reg.meta.get("text", "").split(" ")[-1], color="k", fontsize=5, ha="center", va="bottom")
    ax.coords[0].set_axislabel("GLON" if geom.frame == "galactic" else "RA")
    ax.coords[1].set_axislabel("GLAT" if geom.frame == "galactic" else "Dec")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=label, shrink=0.8, pad=0.01)
    return ax


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _maps(full, models, radius: float) -> tuple[dict, dict]:
    sig, res = {}, {}
    for ds in full:
        mask = ds.mask()
        n = np.where(mask, np.asarray(ds.counts.data, float), 0.0).sum(axis=0)
        b = np.where(mask, np.asarray(ds.background.data, float), 0.0).sum(axis=0)
        sig[ds.name] = cash_maps(n, b, kernel=disk_kernel(radius / ds.geom.binsz), mask=mask.any(axis=0))["sqrt_ts"]
        res[ds.name] = residual_maps(ds, list(models), radius=radius)["sqrt_ts"]
    return sig, res


def _tile_info(paths) -> tuple[list[str], list[tuple[str, int]], dict[str, str]]:
    """Dataset names, (dataset, obs id) pairs and the tile of each file, from the primary
    headers of the tiles' dataset files (no map is read)."""
    names, obs, tiles = [], set(), {}
    for p in paths:
        header = fits.getheader(p, 0)
        meta = json.loads(header.get("GPSMETA", "{}"))
        name = header.get("NAME") or Path(p).parent.name
        if "tile" not in meta:
            raise ValueError(f"{p}: not a tile's dataset (no 'tile' in its meta); the config has tiles.size set")
        tiles[str(p)] = meta["tile"]
        if name not in names:
            names.append(name)
        obs |= {(name, int(o)) for o in meta.get("obs_ids", [])}
    return names, sorted(obs, key=lambda x: (names.index(x[0]), x[1])), tiles


def _tile_maps(cfg: Config, paths, models, radius: float, tiles: dict[str, str]) -> tuple[dict, dict, dict]:
    """Significance and residual images of each dataset over the survey, one tile in memory
    at a time: each tile's maps are computed on its full region and its core pasted."""
    grid = cfg.tiles
    sig, res, geoms = {}, {}, {}
    for p in paths:
        ds = read_dataset(p)
        survey = cfg.survey.geom(ds.geom.binsz)
        if ds.name not in geoms:
            geoms[ds.name] = survey
            sig[ds.name], res[ds.name] = np.full(survey.shape, np.nan), np.full(survey.shape, np.nan)
        s, r = _maps([ds], models, radius)
        grid.paste_core(s[ds.name], ds.geom, sig[ds.name], survey, tiles[str(p)])
        grid.paste_core(r[ds.name], ds.geom, res[ds.name], survey, tiles[str(p)])
        log.info("tile %s of %s: residual maps pasted", tiles[str(p)], ds.name)
    return sig, res, geoms


def _versions() -> dict[str, str]:
    out = {"GPSCAT": __version__, "PYTHON": platform.python_version()}
    for pkg in _VERSIONS:
        try:
            out[pkg.upper()[:8]] = version(pkg)
        except PackageNotFoundError:
            out[pkg.upper()[:8]] = "absent"
    return out


def run(cfg: Config, *, fits: Sequence[str | os.PathLike], models: Sequence[str | os.PathLike], groups: str | os.PathLike,
        seeds: str | os.PathLike, datasets: Sequence[str | os.PathLike], output_dir: str | os.PathLike) -> Table:
    """Merge the group fits into the catalog products (see the module docstring).

    ``fits`` and ``models`` are the last pass's ``group_<gid>.fits`` / ``.yaml`` files;
    returns the CATALOG table.
    """
    c = cfg["catalog"]
    paths = output_paths(output_dir)
    bands = flux_bands(cfg)
    radius = quantity(c["correlation_radius"], "deg", key="catalog.correlation_radius")
    if cfg.tiles is None:
        full = [read_dataset(p) for p in datasets]
        names = [d.name for d in full]
        obs = [(d.name, int(o)) for d in full for o in d.meta.get("obs_ids", [])]
    else:  # one tile's dataset in memory at a time, for the maps only
        full = None
        names, obs, tiles = _tile_info(datasets)
    results = [read_group_result(p) for p in sorted(fits, key=str)]
    sources = vstack([r["SOURCES"] for r in results], metadata_conflicts="silent") if results else Table()
    cat = build_catalog(sources, datasets=names, bands=bands, prefix=c["name_prefix"], seed_info=_seed_info(seeds),
                        confusion_overlap=float(c["confusion_overlap"]))
    _associate(cat, cfg)
    id_to_name = dict(zip((str(s) for s in cat["Source_ID"]), (str(n) for n in cat["Source_Name"]), strict=True))
    fp_rows = _rows(vstack([r["FLUX_POINTS"] for r in results], metadata_conflicts="silent")) if results else []
    for r in fp_rows:
        r["Source_Name"] = id_to_name.get(str(r["Source_ID"]), "")
    fp_rows.sort(key=lambda r: (r["Source_Name"], r["e_ref"]))
    flux_points = table_from_rows(flux_point_columns(), fp_rows)
    rej_rows = _rows(vstack([r["REJECTED"] for r in results], metadata_conflicts="silent")) if results else []
    grouped, _, not_fitted = read_groups(groups)
    fitted = {int(i) for t in (grouped, not_fitted) if "Seed_ID" in t.colnames for i in t["Seed_ID"]}
    rej_rows += _unfitted_seeds(seeds, fitted)
    for r in not_fitted:
        rej_rows.append({"Source_ID": "", "Seed_ID": int(r["Seed_ID"]), "Group_ID": 0, "Pass": 0, "GLON": float(r["GLON"]),
                         "GLAT": float(r["GLAT"]), "TS": np.nan, "Reason": f"not fitted: {r['Reason']}"})
    rejected = table_from_rows(rejected_columns(), sorted(rej_rows, key=lambda r: (r["Group_ID"], str(r["Source_ID"]), r["Seed_ID"])))
    observations = Table(rows=obs, names=("Dataset", "OBS_ID"), dtype=("U32", "i8")) if obs else Table(names=("Dataset", "OBS_ID"), dtype=("U32", "i8"))
    header = {"CATNAME": cfg["run"]["name"][:68], "CFGHASH": cfg.hash, "NSOURCES": len(cat), "NREJECT": len(rejected),
              "TSTHRESH": float(cfg["fit"]["ts_threshold"]), "NPASSES": int(cfg["fit"]["passes"]), "DATASETS": ",".join(names),
              "BANDS": ",".join(f"{lo:g}:{hi:g}" for lo, hi in bands), "NOBS": len({o for _, o in obs}), "GPSCATST": "catalog", **_versions()}
    write_catalog_fits(paths["catalog"], catalog=cat, flux_points=flux_points, rejected=rejected, observations=observations, header=header)
    cat_models = _catalog_models(sorted(models, key=str), id_to_name)
    write_models(paths["yaml"], cat_models)
    if not cat_models.parameters:  # no source: an empty covariance file keeps the product list fixed
        write_text_atomic(paths["covariance"], "")
    regions = _regions(cat)
    write_text_atomic(paths["regions"], regions.serialize(format="ds9") if len(regions) else "# Region file format: DS9\ngalactic\n")
    if full is not None:
        sig, res = _maps(full, cat_models, radius)
        geoms = {d.name: d.geom for d in full}
    else:
        sig, res, geoms = _tile_maps(cfg, datasets, cat_models, radius, tiles)
    write_maps(paths["residual"], {n.upper(): Map(geoms[n], res[n]) for n in names},
               header={"R_CORR": radius, "CONTENT": "Cash significance of counts vs background + catalog sources"})
    fig = Figure(figsize=(12, 3.6 * len(names)))
    grid = fig.add_gridspec(len(names), 1)
    for k, n in enumerate(names):
        _panel(fig, grid[k, 0], geoms[n], sig[n], f"{n}: significance (r = {radius:g} deg), {len(cat)} sources",
               regions, label="significance")
    _save(fig, paths["overview"])
    fig = Figure(figsize=(15, 3.8 * len(names)), layout="constrained")
    grid = fig.add_gridspec(len(names), 2, width_ratios=(3, 1))
    for k, n in enumerate(names):
        _panel(fig, grid[k, 0], geoms[n], res[n], f"{n}: residual significance (r = {radius:g} deg)", regions,
               label="significance")
        ax = fig.add_subplot(grid[k, 1])
        v = res[n][np.isfinite(res[n])]
        if v.size:
            ax.hist(v, bins=np.linspace(-6, 8, 57), histtype="step", color="k")
            ax.set_title(f"mean {v.mean():.2f}, width {v.std():.2f}", fontsize=9)
            ax.set_yscale("log")
        ax.set_xlabel("residual significance")
    _save(fig, paths["residual_png"])
    log.info("catalog: %d sources, %d rejected -> %s", len(cat), len(rejected), output_dir)
    for row in cat:
        log.info("  %s (%s): %s + %s, TS %.1f, flags %d, association %s", row["Source_Name"], row["Source_ID"], row["Spatial_Model"],
                 row["Spectral_Model"], row["TS"], row["Flags"], row["Association"] or "-")
    return cat
