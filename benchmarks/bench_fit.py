"""Benchmark: likelihood fits, gpscat vs gammapy 2.1 ``Fit``, on the same data in one run.

Case ``gc`` — the CTA 1DC Galactic-centre case of gammapy's "2D map fitting" tutorial:
runs 110380, 111140, 111159 reduced by gpscat (8°×6°, 0.02°, reco 0.1–10 TeV in one bin,
true 0.5–20 TeV in 16 bins, offset-max 2.5°, PSF/EDISP on a 0.2° grid) and written to a
file that both tools read; PointSpatialModel + PowerLaw2 (index frozen at 2), FoV
background norm free, from the tutorial's start (lon 0.02°, lat 0.01°).

Case ``group`` — a 5-source overlapping group on the same maps: Poisson counts of the
background plus two point sources, two Gaussians (0.08°, 0.15°) and a disk (0.12°) within
0.4° of each other, fitted jointly (positions, sizes, amplitudes, background norm: 19 free
parameters) from start values offset from the truth, with the bounds a catalog fit sets
(position within 0.3° of the start, size 0.01–0.5°, amplitude ≥ 0), the same for both.

Both tools: Migrad (strategy 1, tolerance 0.1) + Hesse, BLAS limited to one thread (gpscat's
fit does that itself; multithreaded BLAS on small arrays only adds latency on shared cores).  gammapy's point sources share
their flux among the 4 nearest pixels (bilinear weights) before the PSF convolution, gpscat
integrates the PSF over each pixel at the exact offset; the best fits differ accordingly
(see docs/benchmarks.md).

Usage::

    python benchmarks/bench_fit.py [--data ../shared/data] [--repeat 3] [--case gc group]

Prints per case the median wall time of each tool, the ratio, the best-fit values and the
fit statistic.  Compare ratios, not absolute times (shared machines vary by 10–30 %).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from gpscat.config import Config, validate_config
from gpscat.core.fit import Fit
from gpscat.core.npred import DatasetEvaluator
from gpscat.io.dataset import read_dataset, write_dataset
from gpscat.models import spatial as sm
from gpscat.models import spectral as sp
from gpscat.models.sky import FoVBackgroundModel, Models, SkyModel
from gpscat.stages import reduce as SR
from gpscat.stages import stack as SS

OBS_IDS = [110380, 111140, 111159]
GROUP = [  # kind, lon, lat, size (deg), integral flux 0.1–10 TeV (cm-2 s-1)
    ("point", 0.60, 0.10, 0.0, 1.5e-11),
    ("point", 0.85, -0.05, 0.0, 1.0e-11),
    ("gauss", 0.70, -0.15, 0.08, 3.0e-11),
    ("gauss", 0.95, 0.15, 0.15, 4.0e-11),
    ("disk", 0.50, -0.20, 0.12, 2.5e-11),
]


def reduce_gc(data: Path, folder: Path) -> Path:
    """gpscat reduction of the tutorial's three runs into one stacked dataset file."""
    raw = {
        "data": {"store": str(data / "cta-1dc/index/gps"), "selection": {"obs_ids": OBS_IDS}},
        "survey": {"center": ["0 deg", "0 deg"], "width": ["8 deg", "6 deg"]},
        "datasets": [
            {
                "name": "stacked",
                "binsz": "0.02 deg",
                "energy": {"min": "0.1 TeV", "max": "10 TeV", "nbins": 1},
                "energy_true": {"min": "0.5 TeV", "max": "20 TeV", "nbins": 16},
                "offset_max": "2.5 deg",
                "psf": {"binsz": "0.2 deg"},
            }
        ],
    }
    cfg = Config(validate_config(raw))
    paths = [folder / f"{obs_id}.fits" for obs_id in OBS_IDS]
    for obs_id, path in zip(OBS_IDS, paths, strict=True):
        SR.run(cfg, dataset="stacked", obs_id=obs_id, output=path)
    out = folder / "gc_stacked.fits"
    SS.run(cfg, dataset="stacked", inputs=paths, output=out)  # the background norm is fitted
    return out


def _spatial(kind, lon, lat, size, *, gammapy=False):
    if gammapy:
        import gammapy.modeling.models as gm

        cls = {"point": gm.PointSpatialModel, "gauss": gm.GaussianSpatialModel, "disk": gm.DiskSpatialModel}[kind]
        kw = {"sigma": f"{size} deg"} if kind == "gauss" else {"r_0": f"{size} deg"} if kind == "disk" else {}
        return cls(lon_0=f"{lon} deg", lat_0=f"{lat} deg", frame="galactic", **kw)
    cls = {"point": sm.PointSpatialModel, "gauss": sm.GaussianSpatialModel, "disk": sm.DiskSpatialModel}[kind]
    kw = {"sigma": size} if kind == "gauss" else {"r_0": size} if kind == "disk" else {}
    return cls(lon_0=lon, lat_0=lat, frame="galactic", **kw)


def case_sources(case: str, *, start: bool, gammapy: bool):
    """(kind, lon, lat, size, flux) per source: the truth, or the fit start values."""
    if case == "gc":
        return [("point", 0.02, 0.01, 0.0, 1e-12)]
    if not start:
        return GROUP
    return [(k, lon + 0.02, lat - 0.015, size * 1.3, flux * 0.6) for k, lon, lat, size, flux in GROUP]


def _bounds(kind, lon, lat):
    """(name, min, max) of the bounded parameters of a group member."""
    out = [("lon_0", lon - 0.3, lon + 0.3), ("lat_0", lat - 0.3, lat + 0.3), ("amplitude", 0.0, np.nan)]
    if kind != "point":
        out.append(("sigma" if kind == "gauss" else "r_0", 0.01, 0.5))
    return out


def gpscat_models(sources, dataset_name: str) -> Models:
    models = Models()
    for i, (kind, lon, lat, size, flux) in enumerate(sources):
        spec = sp.PowerLaw2SpectralModel(amplitude=flux, index=2.0, emin=0.1, emax=10.0)
        spec.index.frozen = True
        m = SkyModel(spec, _spatial(kind, lon, lat, size), name=f"src{i}")
        if len(sources) > 1:
            for name, lo, hi in _bounds(kind, lon, lat):
                p = m.parameters[name]
                p.min, p.max = lo, hi
        models.append(m)
    models.append(FoVBackgroundModel(dataset_name))
    return models


def gammapy_models(sources, dataset_name: str):
    import gammapy.modeling.models as gm

    out = []
    for i, (kind, lon, lat, size, flux) in enumerate(sources):
        spec = gm.PowerLaw2SpectralModel(amplitude=f"{flux} cm-2 s-1", index=2.0, emin="0.1 TeV", emax="10 TeV")
        spec.index.frozen = True
        m = gm.SkyModel(spec, _spatial(kind, lon, lat, size, gammapy=True), name=f"src{i}")
        if len(sources) > 1:
            for name, lo, hi in _bounds(kind, lon, lat):
                m.parameters[name].min, m.parameters[name].max = lo, hi
        out.append(m)
    bkg = gm.FoVBackgroundModel(dataset_name=dataset_name)
    bkg.spectral_model.tilt.frozen = True
    return gm.Models([*out, bkg])


def simulate_group(gc_file: Path, folder: Path, seed: int = 1) -> Path:
    ds = read_dataset(gc_file)
    truth = gpscat_models(GROUP, ds.name)
    npred = DatasetEvaluator(ds, list(truth)).npred()
    counts = np.random.default_rng(seed).poisson(npred).astype(float)
    out = folder / "group.fits"
    write_dataset(out, replace(ds, counts=ds.counts.copy(data=counts)))
    return out


def run_gpscat(path: Path, sources) -> tuple[float, dict, float]:
    ds = read_dataset(path)
    models = gpscat_models(sources, ds.name)
    t0 = time.perf_counter()
    result = Fit(ds, models).run()
    dt = time.perf_counter() - t0
    values = {lab: (p.value, p.error) for p, lab in zip(result.parameters, result.labels, strict=True)}
    return dt, values, result.total_stat


def run_gammapy(path: Path, sources) -> tuple[float, dict, float]:
    from gammapy.datasets import MapDataset
    from gammapy.modeling import Fit as GFit

    ds = MapDataset.read(path, name="stacked")
    ds.models = gammapy_models(sources, ds.name)
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # as gpscat's fit: fair on shared cores
        result = GFit().run([ds])
    dt = time.perf_counter() - t0
    values = {}
    for m in ds.models:
        kind = "spectral" if m.tag[0] == "FoVBackgroundModel" else None
        for p in m.parameters.free_parameters:
            part = kind or ("spectral" if p in m.spectral_model.parameters else "spatial")
            values[f"{m.name}.{part}.{p.name}"] = (p.value, p.error)
    return dt, values, result.total_stat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--case", nargs="+", default=["gc", "group"], choices=["gc", "group"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gc_file = reduce_gc(args.data, folder)
        files = {"gc": gc_file, "group": simulate_group(gc_file, folder) if "group" in args.case else None}
        for case in args.case:
            start = case_sources(case, start=True, gammapy=False)
            times = {"gpscat": [], "gammapy": []}
            out = {}
            for _ in range(args.repeat):  # alternate, so that load changes hit both alike
                for tool, fn in (("gammapy", run_gammapy), ("gpscat", run_gpscat)):
                    dt, values, stat = fn(files[case], start)
                    times[tool].append(dt)
                    out[tool] = (values, stat)
            tg, to = np.median(times["gammapy"]), np.median(times["gpscat"])
            print(f"\n== {case}: gammapy {tg:.2f} s, gpscat {to:.2f} s, speed-up {tg / to:.1f}x ({args.repeat} runs each)")
            for tool in ("gammapy", "gpscat"):
                values, stat = out[tool]
                print(f"  {tool:8s} stat {stat:.2f}")
                for lab, (v, e) in values.items():
                    print(f"    {lab:32s} {v: .6g} ± {e:.3g}")


if __name__ == "__main__":
    main()
