"""The pipeline from a data store to the catalog, in process (as the workflow runs the stages).

``map_chain`` runs reduce → stack → exclusion → background → significance for every
dataset, then detect and associate; ``catalog_chain`` runs group → fit (every pass, every
group) → catalog.  Both return the paths of what they wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fit_sky import make_dataset, simulate
from test_detect_stage import _maps

from gpscat.core.geom import angular_separation
from gpscat.io.dataset import write_dataset
from gpscat.io.groups import group_neighbours
from gpscat.io.seeds import empty_seed_table, write_seeds
from gpscat.models.sky import SkyModel
from gpscat.models.spatial import GaussianSpatialModel, PointSpatialModel
from gpscat.models.spectral import PowerLawSpectralModel
from gpscat.stages import associate as associate_stage
from gpscat.stages import catalog as catalog_stage
from gpscat.stages import detect as detect_stage
from gpscat.stages import fit as fit_stage
from gpscat.stages import group as group_stage

__all__ = ["SMALL_SKY", "catalog_chain", "compare_with_truth", "map_chain", "seed_table", "small_models", "small_survey"]


def map_chain(cfg, folder: Path) -> dict:
    """Maps of every dataset, seeds (detect) and associated seeds."""
    sig, datasets = [], []
    for d in cfg.datasets:
        files, dataset = _maps(cfg, d.name, folder / "maps" / d.name)
        sig += files
        datasets.append(dataset)
    seeds = folder / "seeds"
    detect_stage.run(cfg, significance_files=sig, datasets=datasets, seeds=seeds / "seeds_detected.fits",
                     regions=seeds / "seeds_detected.reg", index_map=folder / "maps" / "index_map.fits",
                     exclusion=folder / "maps" / "detection_exclusion.fits")
    associate_stage.run(cfg, seeds=seeds / "seeds_detected.fits", output=seeds / "seeds_associated.fits", datasets=datasets)
    return {"datasets": datasets, "seeds": seeds / "seeds_associated.fits"}


def fit_pass(cfg, folder: Path, gid: int, p: int, neighbours: list[int], datasets) -> None:
    """One fit job, with the inputs the workflow gives it (workflow/rules/fit.smk)."""
    groups, fit = folder / "groups", folder / "fit"
    out = {"output": fit / f"pass{p}" / f"group_{gid}.fits", "output_models": fit / f"pass{p}" / f"group_{gid}.yaml"}
    if p == 1:
        fit_stage.run(cfg, group_id=gid, pass_=1, groups=groups / "groups.fits", models=groups / f"group_{gid}.yaml",
                      neighbours=[groups / "start_models.yaml"], datasets=datasets, **out)
        return
    prev_nb = [groups / "start_models.yaml"] if p == 2 else [fit / f"pass{p - 2}" / f"group_{n}.yaml" for n in neighbours]
    fit_stage.run(cfg, group_id=gid, pass_=p, groups=groups / "groups.fits", models=fit / f"pass{p - 1}" / f"group_{gid}.yaml",
                  previous=fit / f"pass{p - 1}" / f"group_{gid}.fits", previous_neighbours=prev_nb,
                  neighbours=[fit / f"pass{p - 1}" / f"group_{n}.yaml" for n in neighbours], datasets=datasets, **out)


def catalog_chain(cfg, folder: Path, *, seeds: Path, datasets) -> dict:
    """group → every fit pass of every group → catalog; returns the catalog product paths."""
    group_stage.run(cfg, seeds=seeds, output_dir=folder / "groups", datasets=datasets)
    nb = group_neighbours(folder / "groups" / "groups.fits")
    passes = int(cfg["fit"]["passes"])
    for p in range(1, passes + 1):
        for gid in sorted(nb):
            fit_pass(cfg, folder, gid, p, nb[gid], datasets)
    last = folder / "fit" / f"pass{passes}"
    catalog_stage.run(cfg, fits=[last / f"group_{g}.fits" for g in sorted(nb)], models=[last / f"group_{g}.yaml" for g in sorted(nb)],
                      groups=folder / "groups" / "groups.fits", seeds=seeds, datasets=datasets, output_dir=folder / "catalog")
    return catalog_stage.output_paths(folder / "catalog")


def seed_table(rows, *, dataset: str = "a"):
    """A seed table (io.seeds schema) with the given columns per row; ids 1, 2, ...; one dataset."""
    t = empty_seed_table([dataset], [0.1], nrows=len(rows))
    for k, row in enumerate(rows):
        t["ID"][k] = k + 1
        t["Type"][k] = row.get("Type", "peak")
        t["Dataset_Best"][k] = row.get("Dataset_Best", dataset)
        for name in ("GLON", "GLAT", "Size", "Sqrt_TS", "Flux", "Shell_Radius", "Shell_Width"):
            if name in row:
                t[name][k] = row[name]
        t["Nest_Flag"][k] = row.get("Nest_Flag", 0)
        t["Parent_ID"][k] = row.get("Parent_ID", 0)
    return t


#: the synthetic group of ``small_survey``: (kind, lon, lat, sigma, amplitude at 1 TeV, index, seeded)
SMALL_SKY = (
    ("point", 0.15, 0.05, 0.0, 4e-13, 2.2, True),
    ("gauss", -0.12, -0.06, 0.1, 1.2e-12, 2.5, True),
    ("point", 0.0, 0.22, 0.0, 2.5e-13, 2.0, False),  # no seed: the residual search must add it
)


def small_models(sky=SMALL_SKY):
    """The injected models of ``small_survey`` (names T1, T2, ...)."""
    out = []
    for k, (kind, lon, lat, sigma, amp, index, _) in enumerate(sky):
        spatial = (PointSpatialModel(lon_0=lon, lat_0=lat, frame="galactic") if kind == "point"
                   else GaussianSpatialModel(lon_0=lon, lat_0=lat, sigma=sigma, frame="galactic"))
        out.append(SkyModel(PowerLawSpectralModel(index=index, amplitude=amp), spatial, name=f"T{k + 1}"))
    return out


def small_survey(folder: Path, *, seed: int = 3, sky=SMALL_SKY) -> dict:
    """Two datasets ("low" 0.1-1 TeV, "high" 1-30 TeV, 1 deg at 0.02 deg) with Poisson counts of
    ``sky``, written to ``folder``; a seed table of the seeded sources (rough positions, classes)."""
    rng = np.random.default_rng(seed)
    models = small_models(sky)
    paths = []
    for name, ereco in (("low", (0.1, 1.0)), ("high", (1.0, 30.0))):
        ds = make_dataset(npix=50, ereco=ereco, nreco=2, name=name, background=1.0)
        ds = simulate(ds, models, rng)
        paths.append(folder / f"{name}.fits")
        write_dataset(paths[-1], ds)
    rows = [{"GLON": lon % 360 + 0.01, "GLAT": lat - 0.01, "Size": max(sigma, 0.02), "Sqrt_TS": 30.0 - k, "Flux": 1e-12,
             "Dataset_Best": "high"} for k, (_, lon, lat, sigma, _, _, seeded) in enumerate(sky) if seeded]
    seeds = seed_table(rows, dataset="high")
    seeds["Start_Class"] = [{"point": "point", "gauss": "extended"}[k[0]] for k in sky if k[6]]
    write_seeds(folder / "seeds.fits", seeds)
    return {"datasets": paths, "seeds": folder / "seeds.fits", "models": models}


_MORPHOLOGY = {"PointSpatialModel": "point", "GaussianSpatialModel": "extended", "DiskSpatialModel": "extended",
               "GeneralizedGaussianSpatialModel": "extended", "ShellSpatialModel": "shell", "Shell2SpatialModel": "shell"}
#: 2 dof: the "2 sigma" (95.45 %) region of a 2D Gaussian error
_CHI2_2SIGMA_2DOF = 6.18


def compare_with_truth(cat, truth, *, min_sqrt_ts: float = 7.0, band_columns=(("Flux_50GeV_1TeV", "Flux_0p05_1TeV"),
                                                                                     ("Flux_1TeV_100TeV", "Flux_1_100TeV"))) -> dict:
    """Catalog vs injected truth (the acceptance numbers of issue 8).

    Each injected source is matched to the nearest catalog source within max(0.1 deg, its
    68 % radius), one-to-one, brightest first.  Returns per injected source above
    ``min_sqrt_ts``: found, position chi2 (2 dof), flux pulls per band, morphology right;
    and the catalog rows above TS 25 matched to no injected source.
    """
    glon, glat = np.asarray(cat["GLON"], float), np.asarray(cat["GLAT"], float)
    taken = np.zeros(len(cat), bool)
    rows = []
    for k in np.argsort(-np.asarray(truth["Sqrt_TS"], float)):
        t = truth[k]
        d = angular_separation(glon, glat, t["GLON"], t["GLAT"])
        d[taken] = np.inf
        j = int(np.argmin(d)) if len(cat) else -1
        found = j >= 0 and d[j] <= max(0.1, float(t["R68_Model"]))
        rec = {"name": str(t["Name"]), "sqrt_ts": float(t["Sqrt_TS"]), "found": bool(found)}
        if found:
            taken[j] = True
            c = cat[j]
            coslat = np.cos(np.radians(t["GLAT"]))
            dl = ((c["GLON"] - t["GLON"] + 180.0) % 360.0 - 180.0) * coslat
            rec["chi2"] = float((dl / (c["GLON_Err"] * coslat)) ** 2 + ((c["GLAT"] - t["GLAT"]) / c["GLAT_Err"]) ** 2)
            rec["flux_pulls"] = [float((c[a] - t[b]) / c[a + "_Err"]) for a, b in band_columns]
            rec["morphology"] = (_MORPHOLOGY[str(t["Spatial_Model"])], _MORPHOLOGY[str(c["Spatial_Model"])])
            rec["source"] = str(c["Source_Name"])
        rows.append(rec)
    bright = [r for r in rows if r["sqrt_ts"] > min_sqrt_ts]
    found = [r for r in bright if r["found"]]
    spurious = [str(c["Source_Name"]) for c, t in zip(cat, taken, strict=True) if not t and c["TS"] > 25]
    pulls = np.array([p for r in found for p in r["flux_pulls"]])
    return {
        "rows": rows,
        "n_bright": len(bright),
        "found": len(found) / max(len(bright), 1),
        "missed": [r["name"] for r in bright if not r["found"]],
        "position_ok": float(np.mean([r["chi2"] <= _CHI2_2SIGMA_2DOF for r in found])) if found else 0.0,
        "flux_ok": float(np.mean(np.abs(pulls) <= 2)) if pulls.size else 0.0,
        "morphology_ok": float(np.mean([a == b for a, b in (r["morphology"] for r in found)])) if found else 0.0,
        "spurious": spurious,
        "spurious_fraction": len(spurious) / max(len(cat), 1),
    }
