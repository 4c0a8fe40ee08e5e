# Config validation, observation list → wildcards, small get_* helpers.
import os
import shlex

from snakemake.utils import validate

from gpscat.config import SCHEMA_PATH
from gpscat.io.groups import group_neighbours
from gpscat.workflow import (
    observation_ids,
    resources_for,
    significance_outputs,
    stage_params,
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


wildcard_constraints:
    dataset="|".join(DATASETS),
    obs_id=r"\d+",


def reduced_files(wildcards):
    return expand("results/reduce/{dataset}/{obs_id}.fits", dataset=wildcards.dataset, obs_id=OBS_IDS)


def store_index_files():
    """The data store's index tables (inputs of every reduction job)."""
    store = config["data"]["store"]
    obs = config["data"]["obs_index"] or os.path.join(store, "obs-index.fits.gz")
    hdu = config["data"]["hdu_index"] or os.path.join(store, "hdu-index.fits.gz")
    return {"obs_index": obs, "hdu_index": hdu}


def background_outputs():
    if BACKGROUND_METHOD == "ring":
        return {"output": "results/maps/{dataset}/onoff.fits", "norms": "results/maps/{dataset}/background_norms.fits"}
    return {"output": "results/maps/{dataset}/dataset.fits", "norms": "results/maps/{dataset}/background_norms.fits"}


def significance_input(wildcards):
    name = "onoff.fits" if BACKGROUND_METHOD == "ring" else "dataset.fits"
    return f"results/maps/{wildcards.dataset}/{name}"


def significance_files(kind):
    """significance_r*.fits (kind "significance") or bands_r*.fits files of all datasets."""
    files = []
    for ds in DATASETS:
        files += [f for f in significance_outputs(config, ds) if f.endswith(".fits") and os.path.basename(f).startswith(kind)]
    return files


def stacked_datasets():
    """Final stacked dataset of every dataset (FoV/IRF background; the ring keeps on/off)."""
    if BACKGROUND_METHOD == "ring":
        return []
    return expand("results/maps/{dataset}/dataset.fits", dataset=DATASETS)


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
        out += significance_outputs(config, ds)
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
    inputs = {"groups": groups, "datasets": stacked_datasets()}
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
    """The optional arguments of `gpscat fit-group` (pass >= 2)."""
    args = ""
    if "previous" in input.keys():
        args += f" --previous {input.previous}"
    if "previous_neighbours" in input.keys():
        args += " --previous-neighbours " + " ".join(input.previous_neighbours)
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
