"""Associate the detected seeds with known sources by surface overlap: ``gpscat associate``.

Inputs: ``results/seeds/seeds_detected.fits``, the catalogs of ``associate.catalogs``
(read into one table by :func:`gpscat.io.catalogs.read_catalogs`) and optionally the
stacked ``dataset.fits`` files, whose PSF gives each seed's PSF 68 % radius (its
``Dataset_Best``; ``associate.psf_r68`` otherwise).

Output ``results/seeds/seeds_associated.fits``:

* HDU ``SEEDS`` — the seed table plus :data:`ASSOCIATION_COLUMNS` (best candidate);
* HDU ``ASSOCIATIONS`` — every candidate pair kept, ranked per seed
  (:data:`PAIR_COLUMNS`);
* HDU ``KNOWN_SOURCES`` — the known-source table used.

Zero seeds or zero catalogs give the full schema with empty columns (and a log line).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from gpscat.config import Config, quantity
from gpscat.core.association import R68_PER_SIGMA, associate
from gpscat.io.atomic import atomic_path
from gpscat.io.catalogs import empty_catalog_table, empty_table, read_catalogs
from gpscat.io.dataset import read_dataset
from gpscat.io.seeds import read_seeds
from gpscat.stages.detect import psf_sigma

__all__ = ["ASSOCIATION_COLUMNS", "PAIR_COLUMNS", "associate_seeds", "run", "seed_radius"]

log = logging.getLogger(__name__)

#: Columns added to the seed table: name → (dtype, unit, description).
ASSOCIATION_COLUMNS: dict[str, tuple[str, str, str]] = {
    "Association": ("U64", "", "best associated known source (highest overlap), empty if none"),
    "Association_Catalog": ("U32", "", "catalog tag of Association"),
    "Association_Overlap": ("f8", "", "overlap area / smaller circle area of the best association (0 if none)"),
    "Association_Separation": ("f8", "deg", "seed - best association separation (NaN if none)"),
    "N_Associations": ("i4", "", "number of known sources above associate.min_overlap"),
}
#: Columns of the ASSOCIATIONS HDU (one row per candidate pair, by Seed_ID then Rank).
PAIR_COLUMNS: dict[str, tuple[str, str, str]] = {
    "Seed_ID": ("i4", "", "seed ID"),
    "Rank": ("i4", "", "1 = best candidate of the seed"),
    "Name": ("U64", "", "known source"),
    "Catalog": ("U32", "", "catalog tag"),
    "Overlap": ("f8", "", "overlap area / smaller circle area"),
    "Separation": ("f8", "deg", "seed - source separation"),
    "Seed_Radius": ("f8", "deg", "seed circle: sqrt(extent^2 + psf68^2)"),
    "Source_Radius": ("f8", "deg", "source circle: sqrt(Radius^2 + psf68^2)"),
    "Morphology": ("U16", "", "source morphology"),
    "Source_GLON": ("f8", "deg", "source Galactic longitude"),
    "Source_GLAT": ("f8", "deg", "source Galactic latitude"),
    "Flux_1TeV": ("f8", "cm-2 s-1", "source integral flux above 1 TeV"),
}


def seed_radius(seeds: Table) -> np.ndarray:
    """Seed extent radius (deg) before PSF broadening.

    Peaks: 68 % containment of the Gaussian ``Size`` (``Size_Radius`` when ``Size`` is
    NaN; 0 when both are); shells: the outer radius ``Shell_Radius + Shell_Width``.
    """
    size = np.asarray(seeds["Size"], float) if len(seeds) else np.zeros(0)
    if "Size_Radius" in seeds.colnames:
        size = np.where(np.isfinite(size), size, np.asarray(seeds["Size_Radius"], float))
    radius = R68_PER_SIGMA * np.nan_to_num(size, nan=0.0)
    is_shell = np.char.strip(np.asarray(seeds["Type"], dtype=str)) == "shell"
    outer = np.asarray(seeds["Shell_Radius"], float) + np.nan_to_num(np.asarray(seeds["Shell_Width"], float))
    return np.where(is_shell & np.isfinite(outer), outer, np.clip(radius, 0.0, None))


def associate_seeds(
    seeds: Table,
    sources: Table,
    *,
    psf_r68: np.ndarray | float,
    min_overlap: float,
    max_candidates: int | None = None,
) -> tuple[Table, Table]:
    """Seed table with :data:`ASSOCIATION_COLUMNS`, and the candidate pairs table.

    Parameters
    ----------
    seeds : Table
        Seed table (``GLON``, ``GLAT``, ``ID``, ``Type``, ``Size``, shell columns).
    sources : Table
        Known-source table (:data:`gpscat.io.catalogs.CATALOG_COLUMNS`).
    psf_r68 : float or array
        PSF 68 % radius (deg), scalar or one per seed.
    min_overlap, max_candidates
        See :func:`gpscat.core.association.associate`.
    """
    out = seeds.copy()
    new = empty_table(ASSOCIATION_COLUMNS, len(seeds))
    new["Association_Overlap"][:] = 0.0
    pairs = empty_table(PAIR_COLUMNS)
    if len(seeds) and len(sources):
        res = associate(
            np.asarray(seeds["GLON"], float), np.asarray(seeds["GLAT"], float), seed_radius(seeds),
            np.asarray(sources["GLON"], float), np.asarray(sources["GLAT"], float), np.asarray(sources["Radius"], float),
            psf_r68=psf_r68, min_overlap=min_overlap,
        )
        new["N_Associations"][:] = np.bincount(res.seed, minlength=len(seeds))
        keep = res.rank <= (max_candidates or np.inf)
        s, j = res.seed[keep], res.source[keep]
        res = type(res)(*(getattr(res, f)[keep] for f in res.__dataclass_fields__))
        pairs = empty_table(PAIR_COLUMNS, len(res))
        values = {"Seed_ID": np.asarray(seeds["ID"])[s], "Rank": res.rank, "Name": np.asarray(sources["Name"])[j],
                  "Catalog": np.asarray(sources["Catalog"])[j], "Overlap": res.overlap, "Separation": res.separation,
                  "Seed_Radius": res.seed_radius, "Source_Radius": res.source_radius,
                  "Morphology": np.asarray(sources["Morphology"])[j], "Source_GLON": np.asarray(sources["GLON"])[j],
                  "Source_GLAT": np.asarray(sources["GLAT"])[j], "Flux_1TeV": np.asarray(sources["Flux_1TeV"])[j]}
        for k, v in values.items():
            pairs[k][:] = v
        best = res.rank == 1
        new["Association"][s[best]] = pairs["Name"][best]
        new["Association_Catalog"][s[best]] = pairs["Catalog"][best]
        new["Association_Overlap"][s[best]] = res.overlap[best]
        new["Association_Separation"][s[best]] = res.separation[best]
    for name in ASSOCIATION_COLUMNS:
        out[name] = new[name]
    return out, pairs


def _psf_r68_by_dataset(paths: Sequence[str | os.PathLike]) -> dict[str, float]:
    """PSF 68 % radius (deg) of each stacked dataset file, by dataset name."""
    out = {}
    for path in paths:
        ds = read_dataset(path)
        sigma = psf_sigma(ds)
        name = ds.name or Path(path).parent.name
        if sigma is None:
            log.warning("dataset %s (%s): no PSF; seeds of it use associate.psf_r68", name, path)
            continue
        out[name] = sigma * R68_PER_SIGMA
        log.info("dataset %s: PSF 68%% radius %.3f deg", name, out[name])
    return out


def _hdu(table: Table, name: str, header: dict | None = None) -> fits.BinTableHDU:
    hdu = fits.table_to_hdu(table)
    hdu.name = name
    for k, v in (header or {}).items():
        hdu.header[k] = v
    return hdu


def run(
    cfg: Config,
    *,
    seeds: str | os.PathLike,
    output: str | os.PathLike,
    datasets: Sequence[str | os.PathLike] = (),
) -> Table:
    """Associate the seeds of ``seeds`` with the configured catalogs; write ``output``.

    Parameters
    ----------
    cfg : Config
        Reads ``associate`` (catalogs, min_overlap, max_candidates, psf_r68).
    seeds : path-like
        ``seeds_detected.fits``.
    output : path-like
        ``seeds_associated.fits`` (HDUs SEEDS, ASSOCIATIONS, KNOWN_SOURCES).
    datasets : sequence of path-like
        Stacked ``dataset.fits`` files: the PSF of each seed's ``Dataset_Best``.

    Returns
    -------
    astropy.table.Table
        The seed table with the association columns.
    """
    a = cfg["associate"]
    min_overlap = float(a["min_overlap"])
    default_psf = quantity(a["psf_r68"], "deg", key="associate.psf_r68")
    table = read_seeds(seeds)
    specs = [{**c, "path": cfg.path(c["path"])} for c in a["catalogs"]]
    sources = read_catalogs(specs) if specs else empty_catalog_table()
    if not specs:
        log.warning("no known-source catalog configured (associate.catalogs): no seed is associated")
    if len(table) == 0:
        log.warning("%s: no seeds to associate", seeds)
    psf_by_name = _psf_r68_by_dataset(datasets)
    best = np.char.strip(np.asarray(table["Dataset_Best"], dtype=str)) if len(table) else np.zeros(0, str)
    psf = np.array([psf_by_name.get(str(n), default_psf) for n in best], dtype=float)
    out, pairs = associate_seeds(table, sources, psf_r68=psf, min_overlap=min_overlap, max_candidates=int(a["max_candidates"]))
    n_assoc = int(np.sum(out["N_Associations"] > 0)) if len(out) else 0
    log.info("%d of %d seeds associated with %d known sources of %d catalog(s) (min overlap %.2f); %d candidate pairs",
             n_assoc, len(out), len(sources), len(specs), min_overlap, len(pairs))
    for row in out[out["N_Associations"] > 0] if len(out) else []:
        log.info("seed %d: %s (%s), overlap %.2f, %.3f deg, %d candidate(s)", row["ID"], row["Association"],
                 row["Association_Catalog"], row["Association_Overlap"], row["Association_Separation"], row["N_Associations"])
    header = {"MINOVER": min_overlap, "PSFR68": default_psf, "NCATSRC": len(sources),
              "CATALOGS": ",".join(dict.fromkeys(str(c) for c in sources["Catalog"])), "GPSCAT": "associate"}
    seeds_hdu = _hdu(out, "SEEDS", header)
    hdus = fits.HDUList([fits.PrimaryHDU(), seeds_hdu, _hdu(pairs, "ASSOCIATIONS", header), _hdu(sources, "KNOWN_SOURCES")])
    with atomic_path(output) as tmp:
        hdus.writeto(tmp)
    log.info("wrote %s", output)
    return out
