"""Workflow tests: the Snakefile parses, lints clean, fans out per observation and runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from catalog_sky import compare_with_truth
from classify_sky import check_heldout_floor, check_heldout_targets, heldout_seeds

from gpscat.config import load_config
from gpscat.io.classifier import read_classifier
from gpscat.io.simulation import read_truth
from gpscat.io.source_catalog import read_catalog_fits
from gpscat.stages.release import verify_release

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def _cta1dc_config(tmp_path: Path, shared_data: Path, datasets: list[dict] | None = None) -> Path:
    cfg = yaml.safe_load((REPO / "config/examples/cta1dc_gc.yaml").read_text())
    cfg["data"]["store"] = str(shared_data / "cta-1dc/index/gps")
    if datasets is not None:
        cfg["datasets"] = datasets
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.mark.realdata
def test_dry_run_fans_out_per_dataset_and_observation(tmp_path, shared_data):
    datasets = [
        {"name": "subtev", "binsz": "0.06 deg", "energy": {"min": "0.1 TeV", "max": "1 TeV", "per_decade": 10}, "offset_max": "2.5 deg"},
        {"name": "posttev", "binsz": "0.03 deg", "energy": {"min": "1 TeV", "max": "100 TeV", "per_decade": 10}, "offset_max": "3.5 deg"},
    ]
    cfg = _cta1dc_config(tmp_path, shared_data, datasets)
    res = snakemake(tmp_path, "--configfile", str(cfg), "-n", "--cores", "1")
    assert res.returncode == 0, res.stderr + res.stdout
    counts = _job_counts(res.stdout)
    assert counts["reduce"] == 3 * 2  # N observations × datasets
    assert counts["stack"] == 2
    assert counts["significance"] == 2


@pytest.mark.realdata
def test_lint_clean(tmp_path, shared_data):
    cfg = _cta1dc_config(tmp_path, shared_data)
    res = snakemake(tmp_path, "--configfile", str(cfg), "--lint")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.realdata
def test_bad_config_stops_before_any_job(tmp_path, shared_data):
    cfg = yaml.safe_load(_cta1dc_config(tmp_path, shared_data).read_text())
    cfg["survey"]["binsz"] = "0.02 deg"  # not a survey key
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake(tmp_path, "--configfile", str(tmp_path / "bad.yaml"), "-n")
    assert res.returncode != 0
    assert "binsz" in res.stderr + res.stdout


# ----------------------------------------------------------------- the default demo run


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The README's main job: the embedded default config, run once for this module."""
    workdir = tmp_path_factory.mktemp("demo")
    res = snakemake(workdir, "--cores", "2", timeout=3000)  # ~5 min on 2 idle cores
    if res.returncode != 0:  # pytest.fail, not assert: the strict xfail below expects AssertionError only
        pytest.fail(res.stdout[-3000:] + res.stderr[-3000:])
    return workdir


def test_demo_runs_to_the_final_outputs(demo_run):
    for path in ("results/seeds/seeds_detected.fits", "results/seeds/seeds_detected.reg", "data/demo/truth/truth.fits"):
        assert (demo_run / path).is_file(), path
    logs = list((demo_run / "logs").rglob("*.log"))
    bench = list((demo_run / "benchmarks").rglob("*.tsv"))
    assert len(logs) >= 30 and len(bench) == len(logs)


def test_demo_catalog_against_the_truth(demo_run):
    """Issue 8's acceptance on the main job's catalog: every injected source above 7 sigma
    found, positions and band fluxes within 2 sigma, morphology right, no spurious source,
    the overlapping triplet resolved into three sources."""
    cat = read_catalog_fits(demo_run / "results/catalog/catalog.fits")["CATALOG"]
    r = compare_with_truth(cat, read_truth(demo_run / "data/demo/truth/truth.fits"))
    summary = {k: v for k, v in r.items() if k != "rows"}
    assert r["n_bright"] >= 8 and r["found"] == 1.0, summary
    assert r["position_ok"] >= 0.9, summary
    assert r["flux_ok"] >= 0.9, summary
    assert r["morphology_ok"] >= 0.85, summary
    assert r["spurious_fraction"] <= 0.05, summary
    triplet = [row["source"] for row in r["rows"] if row["name"].startswith("demo-triplet") and row["found"]]
    assert len(set(triplet)) == 3, r["rows"]


@pytest.fixture(scope="module")
def heldout(demo_run, tmp_path_factory):
    """The demo run's classifier (classify_train: 100 skies of the demo config) on 40 skies it never saw."""
    report = json.loads((demo_run / "results/classify/training_report.json").read_text())
    model = read_classifier(demo_run / "results/classify/model.joblib")
    cfg = load_config(REPO / "config/config.yaml")
    return report, model, heldout_seeds(cfg, model, tmp_path_factory.mktemp("heldout"))


@pytest.mark.slow
def test_demo_classifier_heldout_regression_floor(heldout):
    print(check_heldout_floor(*heldout))  # the confusion matrix in the output (pytest -s, or on failure)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "issue 7 targets not reached with honest simulations (docs/classify.md, 'Measured performance'): "
    "held-out accuracy 0.884 and spurious recall 0.821 at 95 % recall of the real seeds above 7 sigma "
    "(cross-validated 0.901 and 0.846; measured 2026-12-08); the residual errors are fragments of large sources "
    "and duplicates next to brighter ones"))
def test_demo_classifier_heldout_issue_targets(heldout):
    _, model, held = heldout
    check_heldout_targets(model, held)


def test_demo_second_invocation_does_nothing(demo_run):
    res = snakemake(demo_run, "-n", "--cores", "2")
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr


def _dry_run_with_edit(workdir: Path, tmp_path: Path, section: str, key: str, value) -> dict[str, int]:
    """Jobs a dry run plans after setting ``section.key = value`` in the embedded default config."""
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg.setdefault(section, {})[key] = value
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(path))
    assert res.returncode == 0, res.stderr
    return _job_counts(res.stdout)


def test_demo_config_edit_reruns_only_affected_jobs(demo_run, tmp_path):
    counts = _dry_run_with_edit(demo_run, tmp_path, "detect", "threshold", 5.5)
    assert counts.get("detect") == 1
    for upstream in ("simulate_obs", "reduce", "stack", "background", "significance"):
        assert upstream not in counts, counts


def test_demo_fit_config_edit_reruns_only_the_fits_and_catalog(demo_run, tmp_path):
    counts = _dry_run_with_edit(demo_run, tmp_path, "fit", "ts_threshold", 30.0)
    n_groups = len(list((demo_run / "results/fit/pass1").glob("group_*.fits")))
    assert n_groups > 0 and counts.get("fit_group", 0) >= n_groups, counts
    assert counts.get("catalog") == 1 and counts.get("aperture") == 1, counts
    for upstream in ("simulate_obs", "reduce", "stack", "significance", "detect", "classify_train", "classify", "group"):
        assert upstream not in counts, counts


def test_demo_release_target_builds_a_verifiable_archive(demo_run):
    res = snakemake(demo_run, "--cores", "2", "release")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (archive,) = (demo_run / "release").glob("*.tar.gz")
    assert verify_release(archive) == []
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith("/report/report.zip") for n in names)
    assert any(n.endswith("/observations.ecsv") for n in names)
