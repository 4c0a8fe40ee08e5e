"""Benchmark: per-observation reduction, gpscat vs gammapy 2.1, in one run.

Same data and geometry for both: H.E.S.S. DL3 DR1 runs, a 5°×5° map with 0.02° pixels
centred on the pointing (Galactic frame), 10 reco-energy bins (0.4–40 TeV), 20
true-energy bins (0.2–100 TeV), PSF (66 rad bins to 0.66°) and energy-dispersion
kernels on a 0.2° grid, safe mask ``offset-max`` 2.5° + ``aeff-default``, FoV background
norm.  Each tool reads the observation (events and IRFs) from disk inside the timed
region; IRF caches are cleared, every run is a different observation.

gammapy: ``MapDatasetMaker`` (counts, exposure, background, psf, edisp) +
``SafeMaskMaker`` + ``FoVBackgroundMaker``.  gpscat: ``DataStore.load`` +
``stages.reduce.reduce_observation`` + ``core.fov.fov_normalise``.

Usage::

    python benchmarks/bench_reduce.py [--data ../shared/data] [--repeat 2]

Prints the median time per run for each tool, their ratio, and the peak traced memory
(tracemalloc, numpy included) of one reduction.  Timings on shared machines vary by
10–30 %: compare the ratio, not absolute times.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

from gpscat.core.fov import fov_normalise
from gpscat.core.geom import MapAxis, WcsGeom, to_frame
from gpscat.io.dl3 import DataStore, clear_irf_cache
from gpscat.stages.reduce import reduce_observation

RUNS = [20136, 20137, 20151, 20282, 20283, 20301]
WIDTH, BINSZ, BINSZ_IRF, OFFSET_MAX = 5.0, 0.02, 0.2, 2.5
E_RECO, E_TRUE = (0.4, 40.0, 10), (0.2, 100.0, 20)


def run_gpscat(store: DataStore, obs_id: int) -> float:
    clear_irf_cache()
    obs = store.load(obs_id)
    lon, lat = to_frame(*obs.pointing, "icrs", "galactic")
    center = (float(lon), float(lat))
    ds = reduce_observation(
        obs,
        geom=WcsGeom.create(center, WIDTH, BINSZ),
        irf_geom=WcsGeom.create(center, WIDTH, BINSZ_IRF),
        energy_axis=MapAxis.from_energy_bounds(E_RECO[0], E_RECO[1], nbin=E_RECO[2]),
        energy_true_axis=MapAxis.from_energy_bounds(E_TRUE[0], E_TRUE[1], nbin=E_TRUE[2], name="energy_true"),
        rad_axis=MapAxis("rad", np.linspace(0, 0.66, 67), "deg", "lin"),
        offset_max=OFFSET_MAX,
        safe_mask_methods=("offset-max", "aeff-default"),
    )
    fov_normalise(ds.counts.data, ds.background.data, ds.mask_safe.data)
    return float(ds.counts.data[ds.mask_safe.data].sum())


def run_gammapy(store_dir: Path, obs_id: int) -> float:
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from gammapy.data import DataStore as GDataStore
    from gammapy.datasets import MapDataset
    from gammapy.makers import FoVBackgroundMaker, MapDatasetMaker, SafeMaskMaker
    from gammapy.maps import MapAxis as GAxis
    from gammapy.maps import WcsGeom as GGeom

    obs = GDataStore.from_dir(store_dir).obs(obs_id)
    pnt = SkyCoord(obs.pointing.fixed_icrs).galactic
    geom = GGeom.create(skydir=pnt, width=WIDTH, binsz=BINSZ, frame="galactic", axes=[GAxis.from_energy_bounds(E_RECO[0], E_RECO[1], E_RECO[2], "TeV")])
    et = GAxis.from_energy_bounds(E_TRUE[0], E_TRUE[1], E_TRUE[2], "TeV", name="energy_true")
    empty = MapDataset.create(geom, energy_axis_true=et, binsz_irf=BINSZ_IRF)
    ds = MapDatasetMaker().run(empty, obs)
    ds = SafeMaskMaker(methods=["offset-max", "aeff-default"], offset_max=OFFSET_MAX * u.deg).run(ds, obs)
    ds = FoVBackgroundMaker(method="scale").run(ds)
    return float(ds.counts.data[ds.mask_safe.data].sum())


def _timed(fn, *args) -> tuple[float, float]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def _peak_memory(fn, *args) -> float:
    gc.collect()
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    store_dir = args.data / "hess-dl3-dr1"
    store = DataStore.from_dir(store_dir)
    # warm-up: imports and first-call overheads of both tools
    run_gpscat(store, RUNS[0])
    run_gammapy(store_dir, RUNS[0])
    t_ours, t_gp = [], []
    for _ in range(args.repeat):
        for obs_id in RUNS[1:]:
            dt_gp, n_gp = _timed(run_gammapy, store_dir, obs_id)
            dt_ours, n_ours = _timed(run_gpscat, store, obs_id)
            t_gp.append(dt_gp)
            t_ours.append(dt_ours)
            if n_gp != n_ours:
                print(f"  note: run {obs_id}: safe-mask counts differ, gammapy {n_gp:.0f}, gpscat {n_ours:.0f}")
    m_ours = _peak_memory(run_gpscat, store, RUNS[-1])
    m_gp = _peak_memory(run_gammapy, store_dir, RUNS[-1])
    med_ours, med_gp = float(np.median(t_ours)), float(np.median(t_gp))
    print(f"per-observation reduction, H.E.S.S. DR1, {len(t_ours)} reductions each, {WIDTH}x{WIDTH} deg at {BINSZ} deg, {E_RECO[2]} reco / {E_TRUE[2]} true bins")
    print(f"  gammapy 2.1 : median {med_gp:.3f} s   peak traced memory {m_gp:.0f} MiB")
    print(f"  gpscat      : median {med_ours:.3f} s   peak traced memory {m_ours:.0f} MiB")
    print(f"  speed-up    : {med_gp / med_ours:.1f}x   memory ratio {m_gp / m_ours:.1f}x")


if __name__ == "__main__":
    main()
