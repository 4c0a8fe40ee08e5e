"""Benchmark: fit time against the number of sources per group and the number of groups.

Part ``stage`` — the work of one ``fit_group`` job (``gpscat.stages.fit.run``, pass 1:
joint fit of the members, model selection, residual search, TS refits, band fluxes, flux
points) on synthetic two-dataset maps with injected sources (``tests/fit_sky.py``: the
datasets "low" 0.1–1 TeV and "high" 1–30 TeV of the fit-stage tests, 0.02° pixels, Poisson
counts of the injected models), groups formed by the real group stage from seeds near the
injected positions (``tests/catalog_sky.py``):

* sources per group: one group of k = 1, 2, 4, 8 sources (points and Gaussians of 0.1°,
  0.2° apart on a 4 × 2 grid), on a 2.5° × 2.5° map;
* groups: n = 1, 2, 4, 8 independent groups of ``--group-members`` sources (default 1), 1° apart on a 4 × 2 grid of a
  4.5° × 4.5° map (the same map for every n; amplitudes scaled so that every group has the
  same counts), each fitted by its own stage call, as the workflow runs one job per group.

Part ``engine`` — the likelihood fit alone (``gpscat.core.fit.Fit``, Migrad + Hesse, morphology
fixed) against gammapy 2.1's ``Fit`` on the same file: k = 1, 2, 4, 8 sources (points, Gaussians,
a disk; within 0.4° of each other) simulated on the CTA 1DC Galactic-centre maps of
``bench_fit.py`` (needs ``../shared/data``), fitted from offset start values with the
catalog's bounds; gammapy only for ``--gammapy-k`` (default 1 and 4: its 8-source fit takes
minutes).

    python benchmarks/bench_fit_scaling.py [--part stage engine] [--repeat 1] [--json out.json]

Times are process CPU times (medians of ``--repeat`` runs in one process; BLAS on one thread
for both tools), which other jobs on shared cores disturb much less than wall-clock times;
still, compare ratios measured in the same run (docs/benchmarks.md, "Scaling").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_fit import gpscat_models, reduce_gc, run_gammapy, run_gpscat  # noqa: E402
from catalog_sky import fit_pass, seed_table, small_models  # noqa: E402
from fit_sky import make_dataset, simulate  # noqa: E402

from gpscat.config import load_config  # noqa: E402
from gpscat.io.dataset import read_dataset, write_dataset  # noqa: E402
from gpscat.io.groups import group_neighbours  # noqa: E402
from gpscat.io.models_yaml import read_models  # noqa: E402
from gpscat.io.seeds import write_seeds  # noqa: E402
from gpscat.stages import group as group_stage  # noqa: E402

DATASETS = [
    {"name": "low", "energy": {"min": "0.1 TeV", "max": "1 TeV", "nbins": 2}},
    {"name": "high", "energy": {"min": "1 TeV", "max": "30 TeV", "nbins": 2}},
]
SIZES = (1, 2, 4, 8)
#: engine case: (kind, dlon, dlat, size deg, integral flux 0.1-10 TeV cm-2 s-1) around (0.7°, 0°)
ENGINE = (
    ("point", -0.10, 0.10, 0.0, 1.5e-11),
    ("gauss", 0.15, -0.10, 0.08, 3.0e-11),
    ("point", 0.20, 0.15, 0.0, 1.0e-11),
    ("disk", -0.20, -0.15, 0.12, 2.5e-11),
    ("gauss", 0.35, 0.05, 0.15, 4.0e-11),
    ("point", -0.35, 0.00, 0.0, 1.2e-11),
    ("gauss", 0.00, 0.30, 0.10, 2.0e-11),
    ("point", 0.05, -0.30, 0.0, 1.0e-11),
)


def _grid(k: int, lon0: float, lat0: float, step: float = 0.2):
    """k sources on a 4 × 2 grid (step apart): points and Gaussians of 0.1° alternating.

    Amplitudes are divided by the synthetic exposure's acceptance (2° Gaussian around the map
    centre, tests/fit_sky.py) at the group centre, so every group has the same counts.
    """
    boost = np.exp(0.5 * (lon0**2 + lat0**2) / 2.0**2)
    out = []
    for i in range(k):
        lon, lat = lon0 + step * (i % 4 - 1.5 * (k > 1)), lat0 + step * (i // 4 - 0.5) * (k > 4)
        if k <= 4:
            lon = lon0 + step * (i - (k - 1) / 2)
        point = ("point", lon, lat, 0.0, 6e-13 * boost, 2.3, True)
        out.append(point if i % 2 == 0 else ("gauss", lon, lat, 0.1, 1.5e-12 * boost, 2.4, True))
    return tuple(out)


def _survey(folder: Path, sky, *, npix: int, rng) -> dict:
    """Two datasets of ``npix`` × ``npix`` pixels at 0.02° with Poisson counts of ``sky``; seeds."""
    folder.mkdir(parents=True, exist_ok=True)
    models = small_models(sky)
    paths = []
    for name, ereco in (("low", (0.1, 1.0)), ("high", (1.0, 30.0))):
        ds = make_dataset(npix=npix, ereco=ereco, nreco=2, name=name, background=1.0, pointing_offset=(0.0, 0.0))
        paths.append(folder / f"{name}.fits")
        write_dataset(paths[-1], simulate(ds, models, rng))
    rows = [
        {"GLON": lon % 360 + 0.01, "GLAT": lat - 0.01, "Size": max(s, 0.02), "Sqrt_TS": 30.0 - 0.1 * k, "Flux": 1e-12, "Dataset_Best": "high"}
        for k, (_, lon, lat, s, _, _, _) in enumerate(sky)
    ]
    seeds = seed_table(rows, dataset="high")
    seeds["Start_Class"] = [{"point": "point", "gauss": "extended"}[s[0]] for s in sky]
    write_seeds(folder / "seeds.fits", seeds)
    return {"datasets": paths, "seeds": folder / "seeds.fits"}


def _fit_groups(cfg, folder: Path, survey: dict) -> tuple[list[float], list[int]]:
    """Group stage, then one pass-1 stage call per group: (CPU time per call, members per group)."""
    group_stage.run(cfg, seeds=survey["seeds"], output_dir=folder / "groups", datasets=survey["datasets"])
    nb = group_neighbours(folder / "groups" / "groups.fits")
    times, members = [], []
    for gid in sorted(nb):
        t0 = time.process_time()
        fit_pass(cfg, folder, gid, 1, nb[gid], survey["datasets"])
        times.append(time.process_time() - t0)
        members.append(len(read_models(folder / "groups" / f"group_{gid}.yaml").sky_models))
    return times, members


def part_stage(folder: Path, repeat: int, members: int) -> dict:
    cfg = load_config(overrides={"datasets": DATASETS, "fit": {"passes": 1}, "catalog": {"name_prefix": "BENCH"}})
    rng = np.random.default_rng(5)
    out = {"sources_per_group": [], "groups": []}
    for k in SIZES:
        survey = _survey(folder / f"k{k}", _grid(k, 0.0, 0.0), npix=125, rng=rng)
        runs = [_fit_groups(cfg, folder / f"k{k}" / f"run{r}", survey) for r in range(repeat)]
        t = float(np.median([sum(ts) for ts, _ in runs]))
        out["sources_per_group"].append({"k": k, "time_s": t, "groups_formed": runs[0][1]})
        print(f"stage: {k} source(s) per group: {t:6.1f} s  (groups formed, members: {runs[0][1]})", flush=True)
    layout = tuple(s for g in range(8) for s in _grid(members, -1.5 + g % 4, -0.5 + g // 4))
    for n in SIZES:
        survey = _survey(folder / f"n{n}", layout[: members * n], npix=225, rng=rng)
        runs = [_fit_groups(cfg, folder / f"n{n}" / f"run{r}", survey) for r in range(repeat)]
        t = float(np.median([sum(ts) for ts, _ in runs]))
        per = runs[0][0]
        out["groups"].append({"n": n, "time_s": t, "per_group_s": per, "groups_formed": runs[0][1]})
        print(f"stage: {n} group(s) of {members}: {t:6.1f} s total, {t / n:5.1f} s per group (per call: {', '.join(f'{x:.1f}' for x in per)})", flush=True)
    return out


def part_engine(folder: Path, data: Path, repeat: int, gammapy_k: list[int]) -> list[dict]:
    gc_file = reduce_gc(data, folder)
    base = read_dataset(gc_file)
    out = []
    for k in SIZES:
        truth = [(kind, 0.7 + dl, db, s, f) for kind, dl, db, s, f in ENGINE[:k]]
        start = [(kind, lon + 0.02, lat - 0.015, s * 1.3, f * 0.6) for kind, lon, lat, s, f in truth]
        path = folder / f"engine_{k}.fits"
        write_dataset(path, simulate(base, list(gpscat_models(truth, base.name)), np.random.default_rng(k)))
        tools = (("gammapy", run_gammapy), ("gpscat", run_gpscat)) if k in gammapy_k else (("gpscat", run_gpscat),)
        times = {name: [] for name, _ in tools}
        stats = {}
        for _ in range(repeat):  # alternate, so that load changes hit both alike
            for name, fn in tools:
                t0 = time.process_time()
                _, _, stat = fn(path, start)
                times[name].append(time.process_time() - t0)  # includes reading the file (both)
                stats[name] = stat
        row = {"k": k, "n_free": 3 * k + sum(s[0] != "point" for s in truth) + 1}
        row.update({f"{name}_s": float(np.median(t)) for name, t in times.items()})
        row.update({f"{name}_stat": float(s) for name, s in stats.items()})
        if "gammapy_s" in row:
            row["speed_up"] = row["gammapy_s"] / row["gpscat_s"]
        out.append(row)
        extra = f", gammapy {row['gammapy_s']:.2f} s (×{row['speed_up']:.1f})" if "gammapy_s" in row else ""
        print(f"engine: {k} source(s), {row['n_free']} free parameters: gpscat {row['gpscat_s']:.2f} s{extra}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", nargs="+", default=["stage", "engine"], choices=["stage", "engine"])
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--gammapy-k", nargs="*", type=int, default=[1, 4], help="sources per group also fitted with gammapy")
    ap.add_argument("--group-members", type=int, default=1, choices=SIZES, help="sources per group in the groups case")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpscat-fitscaling-") as tmp:
        if "stage" in args.part:
            results["stage"] = part_stage(Path(tmp) / "stage", args.repeat, args.group_members)
        if "engine" in args.part:
            results["engine"] = part_engine(Path(tmp), args.data, args.repeat, args.gammapy_k)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
