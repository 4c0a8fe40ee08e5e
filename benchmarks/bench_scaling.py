"""Scaling of the workflow with the survey size: CPU time and per-job peak memory.

Runs the real workflow (``snakemake --cores 2``) on simulated GPS-like strips of N pointings
(1° apart, 0.5 h each, the built-in CTA-South-like instrument and a source every ~1.5° of
longitude), up to the stage given by ``--until`` (default: detection), and reads every job's
benchmark file.  Reports, per N: total CPU time, CPU time per observation, per-rule CPU time
and the largest peak memory (max RSS) of any job of each rule.

    python benchmarks/bench_scaling.py --sizes 1 4 16 64

The figures go into docs/benchmarks.md ("Scaling").  Expect per-observation rules
(simulate_obs, reduce) to cost the same per observation and the same memory whatever N;
survey-wide rules (stack, background, significance, detect) scale with the survey area.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def strip_config(n: int) -> dict:
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    half = (n - 1) / 2.0
    cfg["simulation"]["pointings"] = {"frame": "galactic", "lon_min": f"{-half} deg", "lon_max": f"{half} deg", "lon_step": "1 deg", "lat_rows": ["0 deg"]}
    cfg["survey"]["width"] = [f"{n + 4} deg", "3 deg"]
    cfg["simulation"]["models"] = ""  # background only: the cost of a survey, not of a sky model
    cfg["associate"] = {"catalogs": []}
    return cfg


def run_size(n: int, until: str, workdir: Path) -> dict:
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(strip_config(n)))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(cfg_path), "--cores", "2", "--until", until],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"N={n}: snakemake failed\n{res.stderr[-3000:]}")
    cpu, rss, jobs = defaultdict(float), defaultdict(float), defaultdict(int)
    for tsv in (workdir / "benchmarks").rglob("*.tsv"):
        rule = tsv.relative_to(workdir / "benchmarks").parts[0]
        with open(tsv) as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        cpu[rule] += float(row["cpu_time"])
        rss[rule] = max(rss[rule], float(row["max_rss"]))
        jobs[rule] += 1
    return {"n_obs": n, "wall_s": wall, "cpu_s": sum(cpu.values()), "cpu": dict(cpu), "max_rss_mb": dict(rss), "jobs": dict(jobs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[1, 4, 16, 64])
    p.add_argument("--until", default="detect", help="last rule to run (default: detect)")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    args = p.parse_args()
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"gpscat-scaling-{n}-") as tmp:
            r = run_size(n, args.until, Path(tmp))
        results.append(r)
        print(f"N={n:3d}: wall {r['wall_s']:7.1f} s, CPU {r['cpu_s']:7.1f} s ({r['cpu_s'] / n:5.2f} s/obs)", flush=True)
    rules = sorted({k for r in results for k in r["cpu"]})
    print("\nCPU time per rule (s) / largest per-job peak memory (MB)")
    print("rule".ljust(16) + "".join(f"N={r['n_obs']}".rjust(18) for r in results))
    for rule in rules:
        cells = "".join(f"{r['cpu'].get(rule, 0):8.1f} / {r['max_rss_mb'].get(rule, 0):6.0f}".rjust(18) for r in results)
        print(rule.ljust(16) + cells)
    for a, b in zip(results, results[1:], strict=False):
        ratio_cpu = b["cpu_s"] / a["cpu_s"]
        print(f"N {a['n_obs']} → {b['n_obs']} (×{b['n_obs'] / a['n_obs']:.0f}): total CPU ×{ratio_cpu:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
