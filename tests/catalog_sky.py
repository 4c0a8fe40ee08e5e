"""The pipeline from a data store to the catalog, in process (as the workflow runs the stages).

``map_chain`` runs reduce → stack → exclusion → background → significance for every
dataset, then detect and associate; ``catalog_chain`` runs group → fit (every pass, every
group) → catalog.  Both return the paths of what they wrote.
"""

from __future__ import annotations

from pathlib import Path

from gpscat.io.groups import group_neighbours
from gpscat.stages import associate as associate_stage
from gpscat.stages import background as background_stage
from gpscat.stages import catalog as catalog_stage
from gpscat.stages import detect as detect_stage
from gpscat.stages import exclusion as exclusion_stage
from gpscat.stages import fit as fit_stage
from gpscat.stages import group as group_stage
from gpscat.stages import reduce as reduce_stage
from gpscat.stages import significance as significance_stage
from gpscat.stages import stack as stack_stage

__all__ = ["catalog_chain", "map_chain"]


def _maps(cfg, name: str, folder: Path) -> tuple[list[Path], Path]:
    folder.mkdir(parents=True, exist_ok=True)
    store = reduce_stage.open_store(cfg)
    paths = []
    for obs_id in reduce_stage.select_observations(cfg, store):
        paths.append(folder / f"obs_{obs_id}.fits")
        reduce_stage.run(cfg, dataset=name, obs_id=obs_id, output=paths[-1], store=store)
    stack_stage.run(cfg, dataset=name, inputs=paths, output=folder / "stacked.fits")
    exclusion_stage.run(cfg, dataset=name, stacked=folder / "stacked.fits", output=folder / "exclusion.fits")
    background_stage.run(cfg, dataset=name, stacked=folder / "stacked.fits", observations=paths, exclusion=folder / "exclusion.fits",
                         output=folder / "dataset.fits", norms=folder / "norms.fits")
    written = significance_stage.run(cfg, dataset=name, input=folder / "dataset.fits", output_dir=folder)
    return [p for p in written if p.name.startswith("significance_") and p.suffix == ".fits"], folder / "dataset.fits"


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
