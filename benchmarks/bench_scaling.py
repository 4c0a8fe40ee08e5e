"""Scaling of the workflow with the survey size: CPU time and per-job peak memory.

Runs the real workflow (``snakemake --cores 2``) on simulated GPS-like strips of N pointings
(1° apart along b = 0, 0.5 h each, the built-in CTA-South-like instrument) and reads every
job's Snakemake benchmark file.  By default the run goes end to end (the ``all`` target:
simulation, reduction, maps, detection, association, classification, grouped fits, catalog,
aperture spectra) on a sky of the demo's source density — the demo sky
(``src/gpscat/data/demo_models.yaml``, 11 sources in 8° of longitude) repeated every 8° along
the strip, keeping the copies within the pointings — with the survey cut into tiles
(``--tiles``, default 8° × 3°) so that no job holds the whole strip.

Fixed costs: the seed classifier is trained on simulated skies whose number
(``--n-skies``) does not depend on the survey; its ``classify_train`` job (and the
one-off ``simulate_irf``) are reported apart and left out of the doubling ratios.  The
classifier's working point is fixed at P_Real ≥ 0 (every seed is fitted), so that the number of
fits depends on the sky, not on how well a small training set worked.

Reports, per N: total CPU time (all jobs, and without the fixed costs), CPU time per
observation, per-rule CPU time and job count, the largest peak memory (max RSS) of any job of
each rule, and the doubling ratios (N → 2N) of the CPU time without fixed costs and of the
largest per-job peak memory.

    python benchmarks/bench_scaling.py --sizes 1 4 16 32 64 --json scaling.json
    python benchmarks/bench_scaling.py --until detect_merge --no-models   # reduction + maps only

The figures go into docs/benchmarks.md ("Scaling").
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
DEMO_MODELS = REPO / "src/gpscat/data/demo_models.yaml"
DEMO_SPAN = 8.0  # deg of longitude covered by one copy of the demo sky
FIXED_RULES = ("classify_train", "simulate_irf")  # independent of the survey size
#: Snakemake samples a job's CPU time and RSS every 0.5 s for 1 s, then every 30 s
#: (snakemake.benchmark.BENCHMARK_INTERVAL): a 50 s job's CPU time would be read at 30 s and
#: a memory peak between samples missed.  Run it with a 1 s interval throughout.
SNAKEMAKE_1S = (
    "import snakemake.benchmark as b; "
    "b.benchmarked.__wrapped__.__defaults__ = (None, None, 1); "
    "b.BenchmarkTimer.__init__.__defaults__ = (1,); "
    "from snakemake.cli import main; main()"
)


def strip_models(n: int, period: float = DEMO_SPAN) -> dict:
    """The demo sky repeated every ``period`` deg of longitude (8: the demo's density), copies
    kept within the strip's pointings."""
    if period < DEMO_SPAN:
        raise ValueError(f"period {period} deg: copies of the demo sky ({DEMO_SPAN} deg) would overlap")
    demo = yaml.safe_load(DEMO_MODELS.read_text())
    half = (n - 1) / 2.0 + 0.5
    kmax = int(half // period) + 1
    out = []
    for k in range(-kmax, kmax + 1):
        for comp in demo["components"]:
            lon = next(p["value"] for p in comp["spatial"]["parameters"] if p["name"] == "lon_0")
            shifted = lon + k * period
            if abs(shifted) > half:
                continue
            new = json.loads(json.dumps(comp))  # deep copy of plain YAML data
            new["name"] = f"{comp['name']}-{k:+d}"
            for p in new["spatial"]["parameters"]:
                if p["name"] == "lon_0":
                    p["value"] = float(shifted)
            out.append(new)
    return {"components": out}


def strip_config(n: int, workdir: Path, *, models: bool, tiles: list[str] | None, n_skies: int, passes: int | None, period: float, seed: int | None = None) -> dict:
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    if seed is not None:  # another Poisson realisation of the same sky
        cfg["simulation"]["seed"] = seed
    half = (n - 1) / 2.0
    cfg["simulation"]["pointings"] = {"frame": "galactic", "lon_min": f"{-half} deg", "lon_max": f"{half} deg", "lon_step": "1 deg", "lat_rows": ["0 deg"]}
    cfg["survey"]["width"] = [f"{n + 4} deg", "3 deg"]
    if models:
        sky = strip_models(n, period)
        path = workdir / "strip_models.yaml"
        path.write_text(yaml.safe_dump(sky, sort_keys=False))
        cfg["simulation"]["models"] = str(path)
    else:
        cfg["simulation"]["models"] = ""  # background only: the cost of a survey, not of a sky model
        cfg["associate"] = {"catalogs": []}
    if tiles:
        cfg["tiles"] = {"size": list(tiles)}
    if passes:
        cfg["fit"] = {"passes": passes}
    cfg["classify"] = {"training": {"n_skies": n_skies}, "working_point": {"threshold": 0.0}}
    return cfg


def rule_of(rel: Path) -> str:
    """Rule name of a benchmark file (path relative to benchmarks/, see workflow/rules)."""
    top, stem = rel.parts[0], rel.stem
    named = {
        ("simulate", "irf"): "simulate_irf",
        ("simulate", "index"): "simulate_index",
        ("simulate", "truth"): "simulate_truth",
        ("classify", "train"): "classify_train",
        ("catalog", "aperture"): "aperture",
        ("detect", "merge"): "detect_merge",
    }
    if (top, stem) in named:
        return named[(top, stem)]
    if top == "simulate":
        return "simulate_obs"
    if top == "fit":
        return "fit_group"
    if top == "exclusion" and stem.endswith("_merge"):
        return "exclusion_merge"
    if top == "stack" and stem.endswith("_psf"):
        return "psf_merge"
    return top


def read_benchmarks(folder: Path) -> tuple[dict, dict, dict, dict]:
    """Per rule: summed CPU time (s), largest max RSS (MB) and its job, job count."""
    cpu, rss, where, jobs = defaultdict(float), defaultdict(float), {}, defaultdict(int)
    for tsv in sorted(folder.rglob("*.tsv")):
        rel = tsv.relative_to(folder)
        rule = rule_of(rel)
        with open(tsv) as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        cpu[rule] += float(row["cpu_time"])
        if float(row["max_rss"]) >= rss[rule]:
            rss[rule], where[rule] = float(row["max_rss"]), str(rel)
        jobs[rule] += 1
    return dict(cpu), dict(rss), where, dict(jobs)


def run_size(n: int, workdir: Path, *, until: str | None, models: bool, tiles, n_skies: int, passes: int | None, period: float, cores: int, seed: int | None = None) -> dict:
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(strip_config(n, workdir, models=models, tiles=tiles, n_skies=n_skies, passes=passes, period=period, seed=seed)))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, "-c", SNAKEMAKE_1S, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(cfg_path), "--cores", str(cores)]
    if until:
        cmd += ["--until", until]
    t0 = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        res = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    wall = time.perf_counter() - t0
    failed = None
    if res.returncode != 0:  # keep what the finished jobs measured, and say which job failed
        failed = [ln for ln in (workdir / "snakemake.log").read_text().splitlines() if ln.startswith("Error in rule")]
        print(f"N={n}: snakemake failed (workdir {workdir}): {failed}", file=sys.stderr, flush=True)
    cpu, rss, where, jobs = read_benchmarks(workdir / "benchmarks")
    total = sum(cpu.values())
    fixed = sum(cpu.get(r, 0.0) for r in FIXED_RULES)
    n_src = len(strip_models(n, period)["components"]) if models else 0
    return {
        "n_obs": n,
        "n_sources": n_src,
        "failed": failed,
        "wall_s": wall,
        "cpu_s": total,
        "cpu_fixed_s": fixed,
        "cpu_scaling_s": total - fixed,
        "cpu": cpu,
        "max_rss_mb": rss,
        "max_rss_job": where,
        "jobs": jobs,
        "max_rss_mb_all": max(rss.values()),
        "max_rss_mb_scaling": max((v for k, v in rss.items() if k not in FIXED_RULES), default=0.0),
    }


def report(results: list[dict]) -> None:
    print("\nN     sources  wall (s)  CPU (s)  fixed (s)  CPU−fixed (s)  per obs (s)  max RSS (MB)")
    for r in results:
        print(
            f"{r['n_obs']:<5d} {r['n_sources']:7d} {r['wall_s']:9.1f} {r['cpu_s']:8.1f} {r['cpu_fixed_s']:10.1f}"
            f" {r['cpu_scaling_s']:14.1f} {r['cpu_scaling_s'] / r['n_obs']:12.2f} {r['max_rss_mb_all']:13.0f}"
        )
    rules = sorted({k for r in results for k in r["cpu"]})
    print("\nper rule: CPU time (s) [jobs] / largest per-job peak memory (MB)")
    print("rule".ljust(17) + "".join(f"N={r['n_obs']}".rjust(24) for r in results))
    for rule in rules:
        cells = "".join(f"{r['cpu'].get(rule, 0):8.1f} [{r['jobs'].get(rule, 0):4d}] / {r['max_rss_mb'].get(rule, 0):6.0f}".rjust(24) for r in results)
        print(rule.ljust(17) + cells)
    for a, b in zip(results, results[1:], strict=False):
        print(
            f"N {a['n_obs']} → {b['n_obs']} (×{b['n_obs'] / a['n_obs']:.0f}): CPU without fixed costs ×{b['cpu_scaling_s'] / a['cpu_scaling_s']:.2f},"
            f" largest per-job peak memory ×{b['max_rss_mb_scaling'] / a['max_rss_mb_scaling']:.2f}"
        )
    last = results[-1]
    print(f"largest job of N={last['n_obs']}: " + ", ".join(f"{k} {v:.0f} MB ({last['max_rss_job'][k]})" for k, v in sorted(last["max_rss_mb"].items(), key=lambda kv: -kv[1])[:3]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[1, 4, 16, 32, 64])
    p.add_argument("--until", default=None, help="last rule to run (default: the whole workflow, target 'all')")
    p.add_argument("--no-models", action="store_true", help="background only (no sources, no fits)")
    p.add_argument("--tiles", nargs=2, default=["8 deg", "3 deg"], metavar=("LON", "LAT"), help="tile core size (default 8 deg 3 deg)")
    p.add_argument("--no-tiles", action="store_true", help="one tile: the whole survey in each map job")
    p.add_argument("--n-skies", type=int, default=8, help="classifier training skies (a fixed cost; default 8)")
    p.add_argument("--period", type=float, default=DEMO_SPAN, help="a copy of the demo sky every PERIOD deg (default 8: the demo's density)")
    p.add_argument("--fit-passes", type=int, default=None, help="fit.passes (default: the config's, 2)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON (after each size)")
    p.add_argument("--seed", type=int, default=None, help="simulation.seed (default: the config's): another Poisson realisation of the sky")
    p.add_argument("--keep", type=Path, default=None, help="keep the work folders under this folder")
    args = p.parse_args()
    tiles = None if args.no_tiles else args.tiles
    results = []
    for n in args.sizes:
        if args.keep:
            work = args.keep / f"strip-{n}"
            work.mkdir(parents=True, exist_ok=True)
            r = run_size(n, work, until=args.until, models=not args.no_models, tiles=tiles, n_skies=args.n_skies, passes=args.fit_passes, period=args.period, cores=args.cores, seed=args.seed)
        else:
            with tempfile.TemporaryDirectory(prefix=f"gpscat-scaling-{n}-") as tmp:
                r = run_size(n, Path(tmp), until=args.until, models=not args.no_models, tiles=tiles, n_skies=args.n_skies, passes=args.fit_passes, period=args.period, cores=args.cores, seed=args.seed)
        r["settings"] = {"until": args.until or "all", "models": not args.no_models, "tiles": tiles, "n_skies": args.n_skies, "fit_passes": args.fit_passes, "period_deg": args.period, "cores": args.cores, "seed": args.seed}
        results.append(r)
        print(f"N={n:3d}: wall {r['wall_s']:7.1f} s, CPU {r['cpu_s']:7.1f} s (fixed {r['cpu_fixed_s']:.1f} s), max RSS {r['max_rss_mb_all']:.0f} MB", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
