"""The pipeline through a real SLURM cluster (Snakemake's slurm executor + our profile).

Needs a running single-node cluster: `.ci/run` starts one with `.ci/slurm.sh` and sets
GPSCAT_SLURM=1.  Elsewhere these tests skip with that reason.
"""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
import yaml
from astropy.table import Table
from test_workflow import REPO, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

SLURM_ARGS = (
    "--workflow-profile",
    str(REPO / "workflow/profiles/slurm"),
    "--cores",
    "2",
    "--seconds-between-status-checks",
    "2",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
)
#: the run's final catalog (and the seeds it starts from) must be identical locally and via SLURM
PRODUCTS = ("results/seeds/seeds_detected.fits", "results/catalog/catalog.fits")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same small survey run locally and through SLURM."""
    if os.environ.get("GPSCAT_SLURM") != "1" or shutil.which("sbatch") is None:
        pytest.skip("no SLURM cluster: start one with `source .ci/slurm.sh; slurm_start` and set GPSCAT_SLURM=1")
    root = tmp_path_factory.mktemp("slurm")
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["simulation"]["pointings"].update({"lon_min": "-0.5 deg", "lon_max": "0.5 deg"})
    cfg["survey"]["width"] = ["3 deg", "2 deg"]
    # two isolated sources of the demo sky (a point and a 0.1 deg Gaussian) moved into the
    # small survey, a small classifier training set and one fit pass: the two full runs
    # take minutes (the demo's shell and triplet in this field made them ~15 min in CI)
    demo = yaml.safe_load((REPO / "src/gpscat/data/demo_models.yaml").read_text())["components"]
    sky = [dict(m) for m in demo if m["name"] in ("demo-point-a", "demo-gauss-small")]
    for model, lon in zip(sky, (-0.5, 0.6), strict=True):
        next(p for p in model["spatial"]["parameters"] if p["name"] == "lon_0")["value"] = lon
    (root / "sky.yaml").write_text(yaml.safe_dump({"components": sky}))
    cfg["simulation"]["models"] = str(root / "sky.yaml")
    cfg.setdefault("classify", {}).setdefault("training", {})["n_skies"] = 12
    cfg.setdefault("fit", {})["passes"] = 1
    path = root / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    local, cluster = root / "local", root / "slurm"
    local.mkdir()
    cluster.mkdir()
    res = snakemake(local, "--configfile", str(path), "--cores", "2", timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    res = snakemake(cluster, "--configfile", str(path), *SLURM_ARGS, timeout=1500)
    return {"config": path, "local": local, "slurm": cluster, "result": res}


def test_jobs_went_through_slurm(runs):
    res = runs["result"]
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    job_ids = set(re.findall(r"SLURM jobid (\d+)", out))
    assert len(job_ids) >= 4, out[-3000:]  # simulate group, reduce batch, map chains, detect
    logs = {p.stem for p in (runs["slurm"] / ".snakemake/slurm_logs").rglob("*.log")}
    assert logs >= job_ids


@pytest.mark.parametrize("product", PRODUCTS)
def test_slurm_products_equal_local_products(runs, product):
    a, b = Table.read(runs["local"] / product), Table.read(runs["slurm"] / product)
    assert len(a) == len(b) > 0
    for name in a.colnames:
        if a[name].dtype.kind == "f":
            np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)
        else:
            assert list(a[name]) == list(b[name]), name


def test_failing_slurm_job_fails_the_run_and_is_named(runs):
    workdir = runs["slurm"]
    stacked = next((workdir / "results/maps").glob("*/stacked.fits"))
    stacked.write_bytes(b"not a FITS file")  # now newer than its consumers: exclusion reruns
    res = snakemake(workdir, "--configfile", str(runs["config"]), *SLURM_ARGS, "--until", "exclusion", "--restart-times", "0", timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "SLURM jobid" in out
    assert re.search(r"Error in (group job|rule) .*exclusion", out, re.S), out[-3000:]
