"""Catalog acceptance on a longer simulated strip (issue 8): the whole workflow, scored against
the injected truth.

A GPS-like strip of N pointings (1° apart, 0.5 h each, b = 0, the built-in CTA-South-like
instrument, the demo's datasets and settings) with a random sky drawn by the classifier's
sky generator (gpscat.core.training_sky.random_sky: points, Gaussians, disks and shells,
nominal significances 3-40, about 1.25 sources per degree of longitude), run end to end
(``snakemake --cores 2``: simulation, maps, seeds, classifier, grouped fits, catalog), then
every injected source above 7 sigma (expected) is matched to the catalog as in
tests/test_workflow.py::test_demo_catalog_against_the_truth.

    python benchmarks/catalog_strip.py --pointings 24 --seed 7 --workdir /tmp/strip24

Prints the acceptance fractions and the per-source rows; ``--json`` writes them.  The run
takes about 18 minutes on 2 cores for 24 pointings (measured on ee2dd2d with nothing else
running; the classifier training is a fixed cost of a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from catalog_sky import compare_with_truth  # noqa: E402

from gpscat.core.training_sky import SkyParams, random_sky  # noqa: E402
from gpscat.io.models_yaml import write_models  # noqa: E402
from gpscat.io.simulation import read_truth  # noqa: E402
from gpscat.io.source_catalog import read_catalog_fits  # noqa: E402
from gpscat.models.sky import Models  # noqa: E402


def strip_config(n: int, models: Path) -> dict:
    """The demo config on a strip of ``n`` pointings with the sky model ``models``."""
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    half = (n - 1) / 2.0
    cfg["run"]["name"] = f"strip{n}"
    cfg["simulation"]["pointings"].update({"lon_min": f"{-half} deg", "lon_max": f"{half} deg"})
    cfg["simulation"]["models"] = str(models)
    cfg["survey"]["width"] = [f"{n + 2} deg", "3 deg"]
    cfg["associate"] = {"catalogs": [{"path": "data/demo/truth/models.yaml", "tag": "injected", "format": "gammapy-yaml"}]}
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pointings", type=int, default=24)
    p.add_argument("--seed", type=int, default=7, help="seed of the random sky")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    n = args.pointings
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    half = (n - 1) / 2.0
    sky = SkyParams(n_sources=int(round(1.25 * n)), lon_range=(-half - 0.3, half + 0.3), lat_range=(-0.8, 0.8))
    models = random_sky(np.random.default_rng(args.seed), sky, prefix="strip")
    write_models(work / "sky.yaml", Models(models), write_covariance=False)
    (work / "config.yaml").write_text(yaml.safe_dump(strip_config(n, work / "sky.yaml")))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                          "--configfile", str(work / "config.yaml"), "--cores", "2"], env=env, check=False,
                         stdout=open(work / "snakemake.log", "w"), stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"snakemake failed: see {work / 'snakemake.log'}")
    cat = read_catalog_fits(work / "results/catalog/catalog.fits")["CATALOG"]
    r = compare_with_truth(cat, read_truth(work / "data/demo/truth/truth.fits"))
    summary = {k: v for k, v in r.items() if k != "rows"}
    summary.update({"n_pointings": n, "n_injected": len(models), "n_catalog": len(cat), "wall_s": round(wall, 1)})
    print(json.dumps(summary, indent=1))
    for row in r["rows"]:
        print(row)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": r["rows"]}, indent=1, default=str))


if __name__ == "__main__":
    main()
