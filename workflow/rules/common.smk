# Config validation, observation list → wildcards, small get_* helpers.
import os
import shlex

from snakemake.utils import validate

from gpscat.config import SCHEMA_PATH
from gpscat.io.groups import group_neighbours
from gpscat.workflow import (
    group_tile,
    observation_ids,
    resources_for,
    seed_plot_map,
    significance_outputs,
    stage_params,
    tile_names,
    tile_observations,
)

validate(config, str(SCHEMA_PATH))

# Every job is single-threaded numpy; parallelism comes from Snakemake's scheduling. A
# multi-threaded BLAS per job oversubscribes the cores (measured: a likelihood evaluation
# 0.5 ms → 15 ms on 2 shared cores). Jobs inherit these unless the user set them.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# one software environment for every rule (for --sdm conda); relative to the rule files
CONDA_ENV = "../../envs/gpscat.yaml"

OBS_IDS = observation_ids(config)
# the catalog stage's products (gpscat.stages.catalog.PRODUCTS, without importing the stage)
CATALOG_PRODUCTS = [
    "catalog.fits",
    "catalog.yaml",
    "catalog_covariance.dat",
    "catalog.reg",
    "overview.png",
    "residual_significance.fits",
    "residual_significance.png",
    "aperture_spectra.fits",
]
DATASETS = [d["name"] for d in config["datasets"]]
BACKGROUND_METHOD = config["background"]["method"]
# survey tiles (docs/workflow.md, "Tiles"): [] = one tile, the untiled workflow and its paths
TILES = tile_names(config)


wildcard_constraints:
    dataset="|".join(DATASETS),
    obs_id=r"\d+",
    tile=r"x\d+y\d+",


def reduced_files(wildcards):
    """Per-observation files of a stack/background job: all, or those overlapping its tile."""
    ids = tile_observations(config, wildcards.dataset, wildcards.tile) if TILES else OBS_IDS
    return expand("results/reduce/{dataset}/{obs_id}.fits", dataset=wildcards.dataset, obs_id=ids)


def map_path(name):
    """A per-dataset map product: results/maps/{dataset}/<name>, per tile under tiles/{tile}/."""
    return f"results/maps/{{dataset}}/tiles/{{tile}}/{name}" if TILES else f"results/maps/{{dataset}}/{name}"


def job_file(kind, stage, suffix):
    """logs/<stage>/{dataset}.log (benchmarks/…tsv); per tile {dataset}/{tile}."""
    return f"{kind}/{stage}/{{dataset}}/{{tile}}{suffix}" if TILES else f"{kind}/{stage}/{{dataset}}{suffix}"


def tile_arg(wildcards):
    """`--tile <name>` for a stage command of a tile's job, else nothing."""
    return f"--tile {wildcards.tile}" if TILES else ""


def map_folder(wildcards):
    """Folder of a map job's products (the significance stage's --output-dir)."""
    return os.path.dirname(map_path("x").format(dataset=wildcards.dataset, tile=getattr(wildcards, "tile", "")))


def tile_files(dataset, name):
    """A per-tile product of ``dataset`` for every tile, in tile order."""
    return [f"results/maps/{dataset}/tiles/{t}/{name}" for t in TILES]


def tile_inputs(name):
    """Input function: the per-tile product ``name`` of the job's dataset, every tile."""

    def files(wildcards):
        return tile_files(wildcards.dataset, name)

    return files


def store_index_files():
    """The data store's index tables (inputs of every reduction job)."""
    store = config["data"]["store"]
    obs = config["data"]["obs_index"] or os.path.join(store, "obs-index.fits.gz")
    hdu = config["data"]["hdu_index"] or os.path.join(store, "hdu-index.fits.gz")
    return {"obs_index": obs, "hdu_index": hdu}


def background_outputs():
    if BACKGROUND_METHOD == "ring":
        return {"output": map_path("onoff.fits"), "norms": map_path("background_norms.fits")}
    return {"output": map_path("dataset.fits"), "norms": map_path("background_norms.fits")}


def significance_input(wildcards):
    name = "onoff.fits" if BACKGROUND_METHOD == "ring" else "dataset.fits"
    return map_path(name).format(dataset=wildcards.dataset, tile=getattr(wildcards, "tile", ""))


def significance_files(kind, tile=None):
    """significance_r*.fits (kind "significance") or bands_r*.fits files of all datasets (of ``tile``)."""
    files = []
    for ds in DATASETS:
        files += [f for f in significance_outputs(config, ds, tile) if f.endswith(".fits") and os.path.basename(f).startswith(kind)]
    return files


def tile_significance_files(kind):
    """Input function: significance_files(kind) of the job's tile."""

    def files(wildcards):
        return significance_files(kind, wildcards.tile)

    return files


def plot_significance_files():
    """Per tile, the map the seed PNG shows (the finest dataset's smallest correlation radius)."""
    return [seed_plot_map(config, t) for t in TILES]


def stacked_datasets():
    """Final stacked dataset of every dataset (FoV/IRF background; the ring keeps on/off);
    with tiles, every tile's."""
    if BACKGROUND_METHOD == "ring":
        return []
    if TILES:
        return [f for ds in DATASETS for f in tile_files(ds, "dataset.fits")]
    return expand("results/maps/{dataset}/dataset.fits", dataset=DATASETS)


def psf_datasets():
    """Dataset files read for their PSF only (detect, associate, group): the stacked datasets,
    with tiles the merged survey PSF (results/maps/<dataset>/psf.fits) — never the whole cube."""
    if BACKGROUND_METHOD == "ring":
        return []
    if TILES:
        return expand("results/maps/{dataset}/psf.fits", dataset=DATASETS)
    return stacked_datasets()


def known_catalogs():
    """Known-source catalog files of ``associate.catalogs`` (an edit reruns association)."""
    return [c["path"] for c in config["associate"]["catalogs"]]


def release_products():
    """Result files shipped in a release (catalog products, seeds)."""
    return [f"results/catalog/{name}" for name in CATALOG_PRODUCTS] + [
        "results/seeds/seeds_detected.fits",
        "results/seeds/seeds_detected.reg",
        "results/seeds/seeds_associated.fits",
        "results/seeds/seeds.fits",
        "results/seeds/seeds.reg",
        "results/classify/training_report.json",
    ]


def release_archive():
    name = config["run"]["name"]
    return f"release/{name}-{config['release']['version']}.tar.gz"


def workflow_config_files():
    """Config files of this run: the --configfile(s), else the embedded default."""
    files = [str(f) for f in workflow.config_settings.configfiles]
    return files or [os.path.join(workflow.basedir, "config/config.yaml")]


def report_command_args():
    """Arguments for a `snakemake --report` of this very run (same Snakefile and configs)."""
    # --cores: rules whose threads scale with the core count need it even for a report.
    args = ["--snakefile", workflow.main_snakefile, "--nolock", "--cores", "1"]
    for f in workflow.config_settings.configfiles:
        args += ["--configfile", str(f)]
    return " ".join(shlex.quote(a) for a in args)


def final_outputs():
    out = []
    for ds in DATASETS:
        for tile in TILES or [None]:
            out += significance_outputs(config, ds, tile)
    out += ["results/seeds/seeds_detected.fits", "results/seeds/seeds_detected.reg"]
    out += ["results/seeds/seeds_associated.fits", "results/seeds/seeds.fits", "results/seeds/seeds.reg"]
    out += [f"results/catalog/{name}" for name in CATALOG_PRODUCTS]
    if config["simulation"]["enabled"]:
        out += [os.path.join(config["data"]["store"], "truth", "truth.fits")]
    return out

# ---------------------------------------------------- grouped fits and catalog (group/fit/catalog.smk)

FIT_PASSES = int(config["fit"]["passes"])


def grouping_seeds():
    """The classified seed table when a classify rule exists, else the associated seeds."""
    return "results/seeds/seeds.fits" if hasattr(rules, "classify") else "results/seeds/seeds_associated.fits"


def groups_file():
    return os.path.join(checkpoints.group.get().output[0], "groups.fits")


def group_ids():
    """Group ids written by the grouping checkpoint."""
    return sorted(group_neighbours(groups_file()))


def fit_group_inputs(wildcards):
    p, gid = int(wildcards.fit_pass), int(wildcards.gid)
    groups = groups_file()
    neighbours = group_neighbours(groups)[gid]
    datasets = stacked_datasets()
    if TILES and datasets:  # the stacked datasets of the tile whose core holds the group centre
        tile = group_tile(config, groups, gid)
        datasets = [f"results/maps/{ds}/tiles/{tile}/dataset.fits" for ds in DATASETS]
    inputs = {"groups": groups, "datasets": datasets}
    if config["fit"]["footprints"]:  # per-observation footprints (docs/fitting.md)
        tile = group_tile(config, groups, gid) if TILES else None
        inputs["observations"] = [
            f"results/reduce/{ds}/{obs_id}.fits"
            for ds in DATASETS
            for obs_id in (tile_observations(config, ds, tile) if TILES else OBS_IDS)
        ]
    if p == 1:
        inputs["models"] = f"results/groups/group_{gid}.yaml"
        inputs["neighbours"] = ["results/groups/start_models.yaml"]
        return inputs
    inputs["models"] = f"results/fit/pass{p - 1}/group_{gid}.yaml"
    inputs["previous"] = f"results/fit/pass{p - 1}/group_{gid}.fits"
    inputs["neighbours"] = [f"results/fit/pass{p - 1}/group_{n}.yaml" for n in neighbours]
    if p == 2:
        inputs["previous_neighbours"] = ["results/groups/start_models.yaml"]
    else:
        inputs["previous_neighbours"] = [f"results/fit/pass{p - 2}/group_{n}.yaml" for n in neighbours]
    return inputs


def fit_group_args(wildcards, input):
    """The optional arguments of `gpscat fit-group` (pass >= 2; the tile)."""
    args = ""
    if TILES:
        args += f" --tile {group_tile(config, input.groups, int(wildcards.gid))}"
    if "previous" in input.keys():
        args += f" --previous {input.previous}"
    if "previous_neighbours" in input.keys():
        args += " --previous-neighbours " + " ".join(input.previous_neighbours)
    if "observations" in input.keys():
        args += " --observations " + " ".join(input.observations)
    return args


def final_fits(wildcards):
    """results/fit/pass<last>/group_<gid>.fits of every group (after the checkpoint)."""
    return [f"results/fit/pass{FIT_PASSES}/group_{g}.fits" for g in group_ids()]


def final_models(wildcards):
    """results/fit/pass<last>/group_<gid>.yaml of every group."""
    return [f"results/fit/pass{FIT_PASSES}/group_{g}.yaml" for g in group_ids()]


def catalog_outputs():
    return {
        "catalog": "results/catalog/catalog.fits",
        "yaml": "results/catalog/catalog.yaml",
        "covariance": "results/catalog/catalog_covariance.dat",
        "regions": "results/catalog/catalog.reg",
        "residual": "results/catalog/residual_significance.fits",
    }
