"""Stage ``group``: seeds → groups of overlapping sources and their start models.

Reads the classified seed table (``results/seeds/seeds.fits``; ``seeds_associated.fits`` or
``seeds_detected.fits`` work too: a seed without ``Class`` is "unknown") and the stacked
datasets (for the PSF), keeps the seeds chosen by ``group.seed_selection``, links seeds
whose PSF-broadened extents plus ``group.margin`` overlap (:mod:`gpscat.core.grouping`),
splits groups above ``group.max_members``, and writes into ``output_dir``:

* ``groups.fits`` — HDU ``SEEDS`` (one row per grouped seed: ``Seed_ID``, ``Group_ID``,
  position, ``Link_Radius``, ``Start_Class``, start model kinds), HDU ``GROUPS`` (one
  row per group: centre, ``Radius`` enclosing the members' link circles, ``ROI_Radius`` =
  ``Radius`` + ``group.roi_margin``, ``N_Members``, ``Seed_IDs``, ``Neighbours`` — the
  groups whose sources can reach the region of interest) and HDU ``NOT_FITTED`` (seeds
  inside a shell seed, with ``group.nested_in_shell: drop``);
* ``group_<gid>.yaml`` — the start models of the group's seeds (gammapy model YAML);
* ``start_models.yaml`` — the start models of all grouped seeds (the frozen neighbours of
  the first fit pass).

Start models (docs/fit.md): the class gives the shape (point → point, extended →
Gaussian of the seed size, shell → shell of the Hough radius and width, unknown → the
generalised Gaussian), the spectrum is a power law (LogParabola for "unknown", as the GPS
prototype) of the seed's index, normalised to the seed's flux.
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
from gpscat.core.association import R68_PER_SIGMA
from gpscat.core.grouping import (
    group_geometry,
    link_groups,
    link_radius,
    neighbour_groups,
    split_large_groups,
)
from gpscat.core.source_models import (
    ShapeLimits,
    circle_fraction,
    make_spatial,
    make_spectral,
    wrap_lon,
)
from gpscat.io.atomic import atomic_path
from gpscat.io.dataset import read_dataset
from gpscat.io.fit_results import table_hdu
from gpscat.io.models_yaml import write_models
from gpscat.io.seeds import read_seeds
from gpscat.models.sky import Models, SkyModel
from gpscat.stages.associate import seed_radius
from gpscat.stages.detect import psf_sigma

__all__ = ["CLASS_START", "nested_in_shell", "run", "select_seeds", "source_name", "start_models"]

log = logging.getLogger(__name__)

#: seed class → (spatial kind, spectral kind) of the start model
CLASS_START = {
    "point": ("point", "pl"),
    "extended": ("gauss", "pl"),
    "shell": ("shell", "pl"),
    "unknown": ("gauss-general", "lp"),
}
_SELECTIONS = ("selected_non_spurious", "selected", "non_spurious", "all")


def source_name(seed_id: int) -> str:
    """Model name of the source started from seed ``seed_id``."""
    return f"S{int(seed_id)}"


def select_seeds(table: Table, *, selection: str) -> np.ndarray:
    """Boolean mask of the seeds to fit.

    ``selected``: the classifier's ``Selected`` column; ``non_spurious``: ``Class`` is not
    ``spurious``; ``selected_non_spurious`` both; ``all`` every seed.  A missing column
    selects every seed (an unclassified seed table).
    """
    if selection not in _SELECTIONS:
        raise ValueError(f"seed selection must be one of {_SELECTIONS}, got {selection!r}")
    keep = np.ones(len(table), dtype=bool)
    if selection in ("selected", "selected_non_spurious") and "Selected" in table.colnames:
        keep &= np.asarray(table["Selected"], dtype=bool)
    if selection in ("non_spurious", "selected_non_spurious") and "Class" in table.colnames:
        keep &= np.char.strip(np.asarray(table["Class"], dtype=str)) != "spurious"
    return keep


def nested_in_shell(table: Table, kept: np.ndarray | None = None) -> np.ndarray:
    """Seeds inside the extent of a shell seed (``Nest_Flag`` bit 1, ``Parent_ID`` a shell):
    fragments of its rim or sources the residual search must find against the shell.

    Only shells that are fitted count (``kept``: the seeds selected for fitting; default
    all); a seed more significant than its shell is a source of its own (a bright point
    on a faint shell), not a fragment, and so is a seed of the detection's residual search
    (``Search = 'residual'``: found with the shell modelled): neither is dropped.
    """
    if len(table) == 0:
        return np.zeros(0, dtype=bool)
    ids = np.asarray(table["ID"])
    is_shell = np.char.strip(np.asarray(table["Type"], dtype=str)) == "shell"
    if kept is not None:
        is_shell &= np.asarray(kept, dtype=bool)
    shell_ts = dict(zip(ids[is_shell].tolist(), np.asarray(table["Sqrt_TS"], float)[is_shell].tolist(), strict=True))
    parent = np.asarray(table["Parent_ID"])
    inside = (np.asarray(table["Nest_Flag"], int) & 1).astype(bool) & np.isin(parent, list(shell_ts))
    parent_ts = np.array([shell_ts.get(int(p), np.inf) for p in parent])
    residual = np.char.strip(np.asarray(table["Search"], dtype=str)) == "residual" if "Search" in table.colnames else False
    return inside & ~(np.asarray(table["Sqrt_TS"], float) > parent_ts) & ~residual


def _start_class(table: Table) -> np.ndarray:
    for col in ("Start_Class", "Class"):
        if col in table.colnames:
            cls = np.char.strip(np.asarray(table[col], dtype=str))
            return np.where(np.isin(cls, list(CLASS_START)), cls, "unknown")
    return np.full(len(table), "unknown")


def _dataset_ranges(cfg: Config) -> dict[str, tuple[float, float]]:
    return {d.name: (d.energy.min, d.energy.max) for d in cfg.datasets}


def start_models(table: Table, classes: np.ndarray, *, limits: ShapeLimits, energy_ranges: dict[str, tuple[float, float]],
                 lon_center: np.ndarray, default_index: float = 2.3, containment: float = 0.7,
                 psf_sigmas: dict[str, float] | None = None, default_psf_sigma: float = 0.0) -> list[SkyModel]:
    """One start :class:`SkyModel` per seed row (see the module docstring).

    ``lon_center`` (one per seed) is the longitude around which the model longitude is
    wrapped (the group centre), so that a group across l = 0 has continuous positions.
    The amplitude at 1 TeV makes the power law's integral over the seed's best dataset
    range equal to the seed flux divided by the fraction of the start model's flux that
    the seed's flux map sees: the flux within the correlation circle ``Radius_Best``
    around the seed, for the model convolved with the best dataset's PSF (``psf_sigmas``,
    deg, per dataset name, else ``default_psf_sigma``;
    :func:`~gpscat.core.source_models.circle_fraction`, at least 0.02).  Without
    ``psf_sigmas`` or ``Radius_Best`` the fraction is ``containment``.  A shell seen
    through a 0.2° circle at its centre shows ~12 % of its flux: with a fixed 0.7 its start
    amplitude was 6–8 times too low, and a frozen neighbour at that start model (pass 1)
    left most of its emission to the groups around it.
    """
    models = []
    for k, row in enumerate(table):
        cls = str(classes[k])
        spatial_kind, spectral_kind = CLASS_START[cls]
        lon = float(wrap_lon(row["GLON"], float(lon_center[k])))
        lat = float(row["GLAT"])
        is_shell_seed = str(row["Type"]).strip() == "shell"
        size = float(row["Size"]) if np.isfinite(row["Size"]) else float(np.nan_to_num(row["Size_Radius"], nan=0.05))
        if spatial_kind == "shell" and is_shell_seed and np.isfinite(row["Shell_Radius"]):
            width = float(np.nan_to_num(row["Shell_Width"], nan=0.25 * row["Shell_Radius"]))
            spatial = make_spatial("shell", lon, lat, float(row["Shell_Radius"]) + width, limits=limits, shell_width=width)
        elif spatial_kind == "shell":  # a peak seed classified as a shell: thin-ring moments, sigma = R / sqrt(2)
            spatial = make_spatial("shell", lon, lat, np.sqrt(2) * max(size, limits.min_size), limits=limits)
        else:
            spatial = make_spatial(spatial_kind, lon, lat, R68_PER_SIGMA * max(size, limits.min_size), limits=limits)
        index = next((float(row[c]) for c in ("Index_Datasets", "Index") if c in table.colnames and np.isfinite(row[c])), default_index)
        index = float(np.clip(index, 1.2, 4.0))
        emin, emax = energy_ranges.get(str(row["Dataset_Best"]).strip(), (1.0, 100.0))
        unit_flux = float(make_spectral("pl", amplitude=1.0, index=index).integral(emin, emax))
        flux = float(row["Flux"]) if np.isfinite(row["Flux"]) and row["Flux"] > 0 else 1e-12
        seen = containment
        radius_best = float(row["Radius_Best"]) if "Radius_Best" in table.colnames else np.nan
        if psf_sigmas is not None and np.isfinite(radius_best) and radius_best > 0:
            sigma = psf_sigmas.get(str(row["Dataset_Best"]).strip(), default_psf_sigma)
            seen = max(circle_fraction(spatial, radius_best, sigma), 0.02)
        spectral = make_spectral(spectral_kind, amplitude=flux / seen / unit_flux, index=index)
        models.append(SkyModel(spectral, spatial, name=source_name(int(row["ID"]))))
    return models


def _psf_r68(paths: Sequence[str | os.PathLike], default: float) -> dict[str, float]:
    out = {}
    for path in paths:
        ds = read_dataset(path)
        sigma = psf_sigma(ds)
        out[ds.name or Path(path).parent.name] = default if sigma is None else sigma * R68_PER_SIGMA
    return out


def run(cfg: Config, *, seeds: str | os.PathLike, output_dir: str | os.PathLike, datasets: Sequence[str | os.PathLike] = ()) -> Table:
    """Group the seeds of ``seeds`` and write ``output_dir`` (see the module docstring).

    Returns the ``GROUPS`` table.
    """
    g = cfg["group"]
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("group_*.yaml"):  # a rerun with fewer groups must not leave stale files
        old.unlink()
    margin = quantity(g["margin"], "deg", key="group.margin")
    roi_margin = quantity(g["roi_margin"], "deg", key="group.roi_margin")
    default_psf = quantity(g["psf_r68"], "deg", key="group.psf_r68")
    limits = ShapeLimits(quantity(g["start"]["min_size"], "deg", key="group.start.min_size"),
                         quantity(g["start"]["max_size"], "deg", key="group.start.max_size"),
                         quantity(g["start"]["max_shift"], "deg", key="group.start.max_shift"))
    table = read_seeds(seeds)
    keep = select_seeds(table, selection=g["seed_selection"])
    log.info("%s: %d seeds, %d kept for fitting (selection %s)", seeds, len(table), int(keep.sum()), g["seed_selection"])
    nested = nested_in_shell(table, keep) & keep if g["nested_in_shell"] == "drop" else np.zeros(len(table), bool)
    for row in table[nested]:
        log.info("seed %d lies in shell seed %d: not fitted (the residual search adds what the shell leaves)", row["ID"], row["Parent_ID"])
    dropped = Table({"Seed_ID": np.asarray(table["ID"][nested], dtype="i4"), "Parent_ID": np.asarray(table["Parent_ID"][nested], dtype="i4"),
                     "GLON": np.asarray(table["GLON"][nested], float), "GLAT": np.asarray(table["GLAT"][nested], float),
                     "Reason": np.array([f"inside shell seed {int(p)}" for p in table["Parent_ID"][nested]], dtype="U64")})
    table = table[keep & ~nested]
    psf = _psf_r68(datasets, default_psf)
    best = np.char.strip(np.asarray(table["Dataset_Best"], dtype=str)) if len(table) else np.zeros(0, str)
    seed_psf = np.array([psf.get(str(b), default_psf) for b in best], dtype=float)
    lon, lat = np.asarray(table["GLON"], float), np.asarray(table["GLAT"], float)
    radius = link_radius(seed_radius(table), seed_psf, margin=margin) if len(table) else np.zeros(0)
    brightness = np.asarray(table["Sqrt_TS"], float) if len(table) else np.zeros(0)
    groups = link_groups(lon, lat, radius, brightness=brightness)
    groups = split_large_groups(lon, lat, radius, groups, max_members=int(g["max_members"]), brightness=brightness)
    geo = group_geometry(lon, lat, radius, groups)
    neighbours = neighbour_groups(geo, margin=roi_margin)
    classes = _start_class(table)
    centre = {int(i): float(c) for i, c in zip(geo.group_id, wrap_lon(geo.lon), strict=True)}
    models = start_models(table, classes, limits=limits, energy_ranges=_dataset_ranges(cfg),
                          lon_center=np.array([centre[int(k)] for k in groups]), default_index=float(g["start"]["index"]),
                          psf_sigmas={name: r68 / R68_PER_SIGMA for name, r68 in psf.items()},
                          default_psf_sigma=default_psf / R68_PER_SIGMA)

    seeds_out = Table()
    seeds_out["Seed_ID"] = np.asarray(table["ID"], dtype="i4")
    seeds_out["Group_ID"] = groups.astype("i4")
    seeds_out["Source_ID"] = np.array([m.name for m in models], dtype="U16")
    seeds_out["GLON"] = lon
    seeds_out["GLAT"] = lat
    seeds_out["Link_Radius"] = radius
    seeds_out["Sqrt_TS"] = brightness
    seeds_out["Seed_Type"] = np.asarray(table["Type"], dtype="U5") if len(table) else np.zeros(0, "U5")
    seeds_out["Start_Class"] = classes.astype("U10")
    seeds_out["Start_Spatial"] = np.array([m.spatial_model.tag[0] for m in models], dtype="U32")
    seeds_out["Start_Spectral"] = np.array([m.spectral_model.tag[0] for m in models], dtype="U32")
    for c in ("GLON", "GLAT", "Link_Radius"):
        seeds_out[c].unit = "deg"
    grp = Table()
    grp["Group_ID"] = geo.group_id.astype("i4")
    grp["N_Members"] = geo.n_members.astype("i4")
    grp["GLON"] = geo.lon
    grp["GLAT"] = geo.lat
    grp["Radius"] = geo.radius
    grp["ROI_Radius"] = geo.radius + roi_margin
    grp["Seed_IDs"] = np.array([",".join(str(s) for s in np.sort(seeds_out["Seed_ID"][groups == k])) for k in geo.group_id], dtype="U256")
    grp["Neighbours"] = np.array([",".join(str(int(n)) for n in nb) for nb in neighbours], dtype="U256")
    for c in ("GLON", "GLAT", "Radius", "ROI_Radius"):
        grp[c].unit = "deg"
    header = {"NGROUPS": len(grp), "NSEEDS": len(seeds_out), "MARGIN": margin, "ROIMARG": roi_margin, "SELECT": g["seed_selection"],
              "MAXMEMB": int(g["max_members"]), "GPSCAT": "group"}
    hdus = fits.HDUList([fits.PrimaryHDU(), table_hdu(seeds_out, "SEEDS", header), table_hdu(grp, "GROUPS", header),
                         table_hdu(dropped, "NOT_FITTED", header)])
    with atomic_path(out_dir / "groups.fits") as tmp:
        hdus.writeto(tmp)
    for gid in geo.group_id:
        members = Models(m for m, k in zip(models, groups, strict=True) if k == gid)
        write_models(out_dir / f"group_{int(gid)}.yaml", members, write_covariance=False)
    write_models(out_dir / "start_models.yaml", Models(models), write_covariance=False)
    if len(grp) == 0:
        log.warning("no seeds to fit: zero groups (the catalog will be empty)")
    for row in grp:
        log.info("group %d: %d seed(s) [%s] at (%.3f, %.3f), radius %.2f deg, neighbours [%s]", row["Group_ID"], row["N_Members"],
                 row["Seed_IDs"], row["GLON"], row["GLAT"], row["Radius"], row["Neighbours"])
    log.info("wrote %d groups of %d seeds to %s", len(grp), len(seeds_out), out_dir)
    return grp
