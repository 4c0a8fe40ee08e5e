"""Sub-commands of ``gpscat``: arguments of each stage and the call into its module.

Each ``@command`` function adds its arguments to an argparse sub-parser and returns the
callable ``run(cfg, args)``.  Rules call these commands; nothing here does science.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable
from pathlib import Path

import yaml

from gpscat.config import Config
from gpscat.io.atomic import write_text_atomic

__all__ = ["COMMANDS", "command"]

log = logging.getLogger(__name__)

#: name → (help, add_arguments)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Callable]]] = {}


def _stage(name: str):
    """The stage module ``gpscat.stages.<name>``, imported when its command runs.

    Importing every stage up front (scipy.signal, matplotlib, scikit-learn, ...) costs
    about a second per Snakemake job; each job needs only its own stage.
    """
    return importlib.import_module(f"gpscat.stages.{name}")


def command(name: str, help_text: str):
    def deco(add_arguments):
        COMMANDS[name] = (help_text, add_arguments)
        return add_arguments

    return deco


@command("check-config", "validate a configuration and print it with defaults filled")
def _check_config(p: argparse.ArgumentParser):
    p.add_argument("--output", type=Path, default=None, help="write the resolved config as YAML")

    def run(cfg: Config, args):
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        if args.output:
            write_text_atomic(args.output, text)
        else:
            print(text)
        log.info("config OK (hash %s)", cfg.hash[:12])

    return run


@command("reduce", "reduce one observation of one dataset to a per-observation map dataset")
def _reduce(p: argparse.ArgumentParser):
    p.add_argument("--dataset", required=True, help="dataset name (config datasets[].name)")
    p.add_argument("--obs-id", required=True, type=int)
    p.add_argument("--output", required=True, type=Path)

    def run(cfg: Config, args):
        _stage("reduce").run(cfg, dataset=args.dataset, obs_id=args.obs_id, output=args.output)

    return run


@command("stack", "stack per-observation datasets into the survey maps of one dataset")
def _stack(p: argparse.ArgumentParser):
    p.add_argument("--dataset", required=True)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--provenance", type=Path, default=None, help="JSON: observations used and skipped")
    p.add_argument("--tile", default=None, help="stack the full region of this tile (config tiles) only")
    p.add_argument("inputs", nargs="*", type=Path, help="per-observation dataset files")

    def run(cfg: Config, args):
        _stage("stack").run(cfg, dataset=args.dataset, inputs=args.inputs, output=args.output, provenance=args.provenance,
                            tile=args.tile)

    return run


@command("exclusion", "exclusion mask (known sources + hysteresis of a first-pass significance)")
def _exclusion(p: argparse.ArgumentParser):
    p.add_argument("--dataset", required=True)
    p.add_argument("--stacked", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)

    def run(cfg: Config, args):
        _stage("exclusion").run(cfg, dataset=args.dataset, stacked=args.stacked, output=args.output)

    return run


@command("background", "background estimate: FoV normalisation per observation, ring, or IRF")
def _background(p: argparse.ArgumentParser):
    p.add_argument("--dataset", required=True)
    p.add_argument("--stacked", required=True, type=Path)
    p.add_argument("--exclusion", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--norms", type=Path, default=None)
    p.add_argument("observations", nargs="*", type=Path, help="per-observation dataset files")

    def run(cfg: Config, args):
        _stage("background").run(
            cfg,
            dataset=args.dataset,
            stacked=args.stacked,
            observations=args.observations,
            exclusion=args.exclusion,
            output=args.output,
            norms=args.norms,
        )

    return run


@command("significance", "correlated significance, excess and flux maps for every correlation radius")
def _significance(p: argparse.ArgumentParser):
    p.add_argument("--dataset", required=True)
    p.add_argument("--input", required=True, type=Path, help="dataset.fits or onoff.fits")
    p.add_argument("--output-dir", required=True, type=Path)

    def run(cfg: Config, args):
        _stage("significance").run(cfg, dataset=args.dataset, input=args.input, output_dir=args.output_dir)

    return run


@command("simulate-irf", "write the IRF file of a simulated survey (built-in CTA-South-like or simulation.irf)")
def _simulate_irf(p: argparse.ArgumentParser):
    p.add_argument("--output", required=True, type=Path, help="IRF file (<store>/irf.fits)")

    def run(cfg: Config, args):
        _stage("simulate").run_irf(cfg, output=args.output)

    return run


@command("simulate-obs", "simulate the DL3 event file of one pointing of the simulated survey")
def _simulate_obs(p: argparse.ArgumentParser):
    p.add_argument("--obs-id", required=True, type=int)
    p.add_argument("--irf", required=True, type=Path, help="IRF file written by simulate-irf")
    p.add_argument("--output", required=True, type=Path, help="event file (<store>/events/events_<obs_id>.fits)")

    def run(cfg: Config, args):
        _stage("simulate").run_obs(cfg, obs_id=args.obs_id, irf=args.irf, output=args.output)

    return run


@command("simulate-index", "write the obs-index and hdu-index of a simulated data store")
def _simulate_index(p: argparse.ArgumentParser):
    p.add_argument("--irf", required=True, type=Path)
    p.add_argument("--obs-index", required=True, type=Path)
    p.add_argument("--hdu-index", required=True, type=Path)
    p.add_argument("events", nargs="+", type=Path, help="event files")

    def run(cfg: Config, args):
        _stage("simulate").run_index(cfg, events=args.events, irf=args.irf, obs_index=args.obs_index, hdu_index=args.hdu_index)

    return run


@command("simulate-truth", "write the injected models (YAML) and the truth table of a simulated survey")
def _simulate_truth(p: argparse.ArgumentParser):
    p.add_argument("--irf", required=True, type=Path)
    p.add_argument("--truth", required=True, type=Path, help="truth table (<store>/truth/truth.fits)")
    p.add_argument("--models", required=True, type=Path, help="injected models (<store>/truth/models.yaml)")

    def run(cfg: Config, args):
        _stage("simulate").run_truth(cfg, irf=args.irf, truth=args.truth, models_out=args.models)

    return run


def _seed_outputs(p: argparse.ArgumentParser) -> None:
    """The products of detect (and of merge-seeds, the same for tiles)."""
    p.add_argument("--seeds", required=True, type=Path)
    p.add_argument("--regions", required=True, type=Path)
    p.add_argument("--index-map", required=True, type=Path)
    p.add_argument("--exclusion", required=True, type=Path)
    p.add_argument("--plot", type=Path, default=None)


@command("detect", "seeds: peaks and Hough shells on the significance maps of all datasets and radii")
def _detect(p: argparse.ArgumentParser):
    p.add_argument("--significance", nargs="+", type=Path, required=True, help="significance_r*.fits files")
    p.add_argument("--bands", nargs="*", type=Path, default=[], help="bands_r*.fits files (index map)")
    p.add_argument("--datasets", nargs="*", type=Path, default=[], help="stacked dataset.fits files (PSF)")
    _seed_outputs(p)

    def run(cfg: Config, args):
        _stage("detect").run(
            cfg,
            significance_files=args.significance,
            band_files=args.bands,
            datasets=args.datasets,
            seeds=args.seeds,
            regions=args.regions,
            index_map=args.index_map,
            exclusion=args.exclusion,
            plot=args.plot,
        )

    return run


@command("merge-seeds", "tiles: merge the tiles' seeds (kept by the tile whose core holds them), index maps and detection exclusions")
def _merge_seeds(p: argparse.ArgumentParser):
    p.add_argument("--tiles", nargs="+", required=True, help="tile names, in the order of the files")
    p.add_argument("--tile-seeds", nargs="+", type=Path, required=True, help="each tile's seeds_detected.fits")
    p.add_argument("--tile-index-maps", nargs="+", type=Path, required=True, help="each tile's index_map.fits")
    p.add_argument("--tile-exclusions", nargs="+", type=Path, required=True, help="each tile's detection_exclusion.fits")
    p.add_argument("--tile-plot-maps", nargs="*", type=Path, default=[], help="each tile's significance file shown in the PNG")
    _seed_outputs(p)

    def run(cfg: Config, args):
        _stage("tiles").merge_seeds(
            cfg, tiles=args.tiles, seed_files=args.tile_seeds, index_maps=args.tile_index_maps, exclusions=args.tile_exclusions,
            seeds=args.seeds, regions=args.regions, index_map=args.index_map, exclusion=args.exclusion,
            plot_maps=args.tile_plot_maps, plot=args.plot,
        )

    return run


def _merge_per_dataset(name: str, what: str, function: str, inputs_help: str):
    """A ``merge-<what>`` command: one dataset's per-tile files → its survey-wide product."""

    @command(name, f"tiles: {what}")
    def add(p: argparse.ArgumentParser):
        p.add_argument("--dataset", required=True)
        p.add_argument("--tiles", nargs="+", required=True, help="tile names, in the order of the files")
        p.add_argument("--output", required=True, type=Path)
        p.add_argument("inputs", nargs="+", type=Path, help=inputs_help)

        def run(cfg: Config, args):
            getattr(_stage("tiles"), function)(cfg, dataset=args.dataset, tiles=args.tiles, inputs=args.inputs, output=args.output)

        return run


_merge_per_dataset("merge-exclusion", "the survey exclusion mask of one dataset from the cores of the tiles' masks",
                   "merge_exclusion", "each tile's exclusion.fits")
_merge_per_dataset("merge-psf", "the survey's stacked PSF of one dataset from the tiles' stacked files", "merge_psf",
                   "each tile's stacked.fits")


@command("convert-xml", "convert a ctools/GammaLib XML sky model to gammapy model YAML (+ JSON summary)")
def _convert_xml(p: argparse.ArgumentParser):
    p.add_argument("input", type=Path, help="ctools XML model file")
    p.add_argument("output", type=Path, help="gammapy model YAML to write")
    p.add_argument("--summary", type=Path, default=None, help="JSON summary (default: <output>.summary.json)")

    def run(cfg: Config, args):
        _stage("convert_xml").run(cfg, input=args.input, output=args.output, summary=args.summary)

    return run


@command("associate", "associate the detected seeds with known-source catalogs by surface overlap")
def _associate(p: argparse.ArgumentParser):
    p.add_argument("--seeds", required=True, type=Path, help="seeds_detected.fits")
    p.add_argument("--output", required=True, type=Path, help="seeds_associated.fits")
    p.add_argument("--datasets", nargs="*", type=Path, default=[], help="stacked dataset.fits files (PSF)")

    def run(cfg: Config, args):
        _stage("associate").run(cfg, seeds=args.seeds, output=args.output, datasets=args.datasets)

    return run


@command("aperture", "aperture spectra of catalog sources: reflected-region ON/OFF spectra, WStat fits, flux points")
def _aperture(p: argparse.ArgumentParser):
    p.add_argument("--sources", required=True, type=Path, nargs="+", help="source table(s) (FITS: Source_ID, GLON, GLAT, optional R_Spec/R68/Size; HDU SOURCES if present)")
    p.add_argument("--output", required=True, type=Path, help="results/catalog/aperture_spectra.fits")
    p.add_argument("--exclusion", type=Path, default=None, help="exclusion.fits (HDU EXCLUSION_MASK, 1 = usable)")

    def run(cfg: Config, args):
        _stage("aperture").run(cfg, sources=args.sources, output=args.output, exclusion=args.exclusion)

    return run


@command("classify-train", "train the seed classifier on simulated skies (survey IRFs, the run's map and detect settings)")
def _classify_train(p: argparse.ArgumentParser):
    p.add_argument("--output", required=True, type=Path, help="classifier model (results/classify/model.joblib)")
    p.add_argument("--report", required=True, type=Path, help="training report JSON (a Markdown summary is written next to it)")
    p.add_argument("--confusion", required=True, type=Path, help="cross-validated confusion matrix PNG")
    p.add_argument("--training-table", type=Path, default=None, help="also write the labelled training seeds (FITS)")
    p.add_argument("--workdir", type=Path, default=None, help="folder for the training skies' temporary files")
    p.add_argument("--threads", type=int, default=None, help="skies simulated in parallel (default classify.training.n_jobs)")

    def run(cfg: Config, args):
        _stage("classify").train(
            cfg,
            output_model=args.output,
            report=args.report,
            confusion_png=args.confusion,
            training_table=args.training_table,
            workdir=args.workdir,
            n_jobs=args.threads,
        )

    return run


@command("classify", "classify and rank seeds: class probabilities, P_Real, Rank, Selected; DS9 regions by class")
def _classify(p: argparse.ArgumentParser):
    p.add_argument("--seeds", required=True, type=Path, help="seeds_associated.fits (or seeds_detected.fits)")
    p.add_argument("--model", required=True, type=Path, help="classifier model written by classify-train")
    p.add_argument("--output", required=True, type=Path, help="results/seeds/seeds.fits")
    p.add_argument("--regions", required=True, type=Path, help="results/seeds/seeds.reg")

    def run(cfg: Config, args):
        _stage("classify").apply(cfg, seeds=args.seeds, model=args.model, output=args.output, regions=args.regions)

    return run


@command("release", "bundle the catalog products, exact config, input checksums and versions into a verifiable archive")
def _release(p: argparse.ArgumentParser):
    p.add_argument("--output", required=True, type=Path, help="release/<name>-<version>.tar.gz")
    p.add_argument("--products", nargs="+", type=Path, required=True, help="catalog products and other result files")
    p.add_argument("--obs-ids", nargs="*", type=int, default=[], help="input observation ids (their files are hashed)")
    p.add_argument("--config-files", nargs="*", type=Path, default=[], help="the config file(s) given to the run")
    p.add_argument("--report", type=Path, default=None, help="Snakemake report to include")

    def run(cfg: Config, args):
        _stage("release").run(
            cfg,
            products=args.products,
            output=args.output,
            obs_ids=args.obs_ids,
            config_files=args.config_files,
            report=args.report,
        )

    return run


@command("verify-release", "check a release archive against its SHA-256 manifest")
def _verify_release(p: argparse.ArgumentParser):
    p.add_argument("archive", type=Path)

    def run(cfg: Config, args):
        problems = _stage("release").verify_release(args.archive)
        for problem in problems:
            log.error("%s", problem)
        if problems:
            raise ValueError(f"{args.archive}: {len(problems)} problem(s); the release does not verify")
        log.info("%s verifies against its manifest", args.archive)

    return run


@command("group", "group overlapping seeds for the fits; write groups.fits and the start models (the checkpoint)")
def _group(p: argparse.ArgumentParser):
    p.add_argument("--seeds", required=True, type=Path, help="seeds.fits (or seeds_associated.fits / seeds_detected.fits)")
    p.add_argument("--output-dir", required=True, type=Path, help="results/groups")
    p.add_argument("--datasets", nargs="*", type=Path, default=[], help="stacked dataset.fits files (PSF)")

    def run(cfg: Config, args):
        _stage("group").run(cfg, seeds=args.seeds, output_dir=args.output_dir, datasets=args.datasets)

    return run


@command("fit-group", "fit one group of sources in one pass (model selection, TS, fluxes, flux points)")
def _fit_group(p: argparse.ArgumentParser):
    p.add_argument("--group-id", required=True, type=int)
    p.add_argument("--pass", dest="pass_", required=True, type=int, help="fit pass (1, 2, ...)")
    p.add_argument("--groups", required=True, type=Path, help="results/groups/groups.fits")
    p.add_argument("--models", required=True, type=Path, help="the group's start models (pass 1) or its previous-pass YAML")
    p.add_argument("--neighbours", nargs="*", type=Path, default=[], help="model YAML of the other groups (pass 1: start_models.yaml)")
    p.add_argument("--previous-neighbours", nargs="*", type=Path, default=[], help="the neighbours' YAML of the pass before (pass >= 2)")
    p.add_argument("--previous", type=Path, default=None, help="the group's previous-pass FITS (pass >= 2)")
    p.add_argument("--datasets", nargs="+", type=Path, required=True, help="stacked dataset.fits files")
    p.add_argument("--output", required=True, type=Path, help="results/fit/pass<p>/group_<gid>.fits")
    p.add_argument("--output-models", required=True, type=Path, help="results/fit/pass<p>/group_<gid>.yaml")
    p.add_argument("--tile", default=None, help="tiles: the tile whose core holds the group centre (the datasets are its)")
    p.add_argument("--observations", nargs="*", type=Path, default=[],
                   help="per-observation dataset files (results/reduce/<dataset>/<obs_id>.fits): their footprints make "
                        "the prediction exact at safe-mask boundaries (fit.footprints)")

    def run(cfg: Config, args):
        _stage("fit").run(
            cfg,
            group_id=args.group_id,
            pass_=args.pass_,
            groups=args.groups,
            models=args.models,
            neighbours=args.neighbours,
            previous_neighbours=args.previous_neighbours,
            previous=args.previous,
            datasets=args.datasets,
            output=args.output,
            output_models=args.output_models,
            observations=args.observations,
            tile=args.tile,
        )

    return run


@command("catalog", "merge the group fits into catalog.fits/.yaml/.reg, the overview and residual maps")
def _catalog(p: argparse.ArgumentParser):
    p.add_argument("--fits", nargs="*", type=Path, default=[], help="results/fit/pass<last>/group_*.fits")
    p.add_argument("--models", nargs="*", type=Path, default=[], help="results/fit/pass<last>/group_*.yaml")
    p.add_argument("--groups", required=True, type=Path, help="results/groups/groups.fits")
    p.add_argument("--seeds", required=True, type=Path, help="the seed table the groups came from")
    p.add_argument("--datasets", nargs="+", type=Path, required=True, help="stacked dataset.fits files")
    p.add_argument("--output-dir", required=True, type=Path, help="results/catalog")

    def run(cfg: Config, args):
        _stage("catalog").run(
            cfg,
            fits=args.fits,
            models=args.models,
            groups=args.groups,
            seeds=args.seeds,
            datasets=args.datasets,
            output_dir=args.output_dir,
        )

    return run
