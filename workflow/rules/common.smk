# Config validation, observation list → wildcards, small get_* helpers.
import os
import shlex

from snakemake.utils import validate

from gpscat.config import SCHEMA_PATH
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
    return [
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
    args = ["--snakefile", workflow.main_snakefile, "--nolock"]
    for f in workflow.config_settings.configfiles:
        args += ["--configfile", str(f)]
    return " ".join(shlex.quote(a) for a in args)


def final_outputs():
    out = []
    for ds in DATASETS:
        out += significance_outputs(config, ds)
    out += ["results/seeds/seeds_detected.fits", "results/seeds/seeds_detected.reg"]
    out += ["results/seeds/seeds_associated.fits", "results/seeds/seeds.fits", "results/seeds/seeds.reg"]
    if config["simulation"]["enabled"]:
        out += [os.path.join(config["data"]["store"], "truth", "truth.fits")]
    return out
