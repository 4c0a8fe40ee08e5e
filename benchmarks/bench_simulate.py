"""Benchmark: event simulation of one 0.5 h CTA pointing, gpscat vs gammapy 2.1.

One pointing at (l, b) = (0°, 0°) of the demo survey: the shipped demo sky (11 sources of
every morphology, :mod:`gpscat.data` ``demo_models.yaml``) and the built-in CTA-South-like
IRFs, 0.5 h livetime, reco energies 0.05–200 TeV, field of view 5° — about 1.4 × 10⁵ events.

gpscat, timed separately:

* ``setup`` — :func:`gpscat.core.simulation.make_setup` (source grids, exposure and
  background tables; once per survey/process);
* ``sample`` — :func:`gpscat.core.simulation.simulate_observation` (all events of the
  pointing: sources through PSF and energy dispersion, background), the number reported as
  events per second;
* ``write`` — :func:`gpscat.io.simulation.write_events` (EVENTS + GTI FITS file).

gammapy 2.1 (if installed): ``MapDatasetEventSampler.run`` on a MapDataset of the same
observation (made beforehand, untimed, by ``MapDatasetMaker`` on an 8°×8° grid at 0.02°,
0.05–200 TeV in 36 reco / 36 true bins, 140 migration bins) with the same models: gammapy samples the binned
predicted-counts cube, gpscat samples the models and IRFs directly.

Usage::

    python benchmarks/bench_simulate.py [--repeat 5]

Results go to ``docs/benchmarks.md`` (section "Simulation").
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
from bench_detect import median_time  # sibling script: the same timing helper

from gpscat.config import load_config
from gpscat.core.geom import to_frame
from gpscat.core.simulation import make_setup, observation_seed, simulate_observation
from gpscat.io.simulation import write_events
from gpscat.stages.simulate import load_models, read_irf_file, run_irf, simulate_survey

PNT_GAL = (0.0, 0.0)
CONFIG = {
    "simulation": {
        "enabled": True,
        "models": "demo",
        "pointings": {"list": [["0 deg", "0 deg"]]},
        "energy": ["0.05 TeV", "200 TeV"],
        "livetime": "0.5 h",
    }
}


def bench_gpscat(folder: Path, repeat: int) -> dict:
    cfg = load_config(overrides={**CONFIG, "data": {"store": str(folder / "store")}})
    irf_path = folder / "irf.fits"
    run_irf(cfg, output=irf_path)
    irfs, models = read_irf_file(irf_path), load_models(cfg)
    ra, dec = (float(v) for v in to_frame(*PNT_GAL, "galactic", "icrs"))
    t_setup, setup = median_time(
        lambda: make_setup(models, irfs, livetime=1800.0, deadc=0.98, energy_range=(0.05, 200.0), energy_true_range=(0.02, 200.0), offset_max=5.0),
        repeat,
    )
    seeds = iter(range(10_000))
    t_sample, cols = median_time(lambda: simulate_observation(setup, pointing=(ra, dec), tstart=0.0, rng=observation_seed(1, next(seeds))), repeat)
    t_write, _ = median_time(lambda: write_events(folder / "events.fits", cols, header={"OBS_ID": 1}, gti=(0.0, setup.ontime)), repeat)
    return {"setup": t_setup, "sample": t_sample, "write": t_write, "n": cols["MC_ID"].size, "n_src": int((cols["MC_ID"] > 0).sum())}


def bench_gammapy(folder: Path, repeat: int) -> dict | None:
    try:
        from astropy.coordinates import SkyCoord
        from gammapy.data import DataStore
        from gammapy.datasets import MapDataset, MapDatasetEventSampler
        from gammapy.makers import MapDatasetMaker
        from gammapy.maps import MapAxis, WcsGeom
        from gammapy.modeling.models import FoVBackgroundModel, Models
    except ImportError:
        return None
    survey = simulate_survey(CONFIG, folder / "gp_store", truth=True)
    obs = DataStore.from_dir(survey.store).obs(survey.obs_ids[0])
    energy = MapAxis.from_energy_bounds(0.05, 200, 36, "TeV")
    geom = WcsGeom.create(skydir=SkyCoord(*PNT_GAL, unit="deg", frame="galactic"), width=8.0, binsz=0.02, frame="galactic", axes=[energy])
    migra = MapAxis.from_edges(np.linspace(0.2, 3.0, 141), name="migra")
    empty = MapDataset.create(geom, energy_axis_true=MapAxis.from_energy_bounds(0.05, 200, 36, "TeV", name="energy_true"), migra_axis=migra, binsz_irf=0.5, name="sim")
    dataset = MapDatasetMaker(selection=["exposure", "background", "psf", "edisp"]).run(empty, obs)
    models = Models.read(survey.store / "truth" / "models.yaml")
    models.append(FoVBackgroundModel(dataset_name="sim"))
    dataset.models = models
    sampler = MapDatasetEventSampler(random_state=0)
    t, events = median_time(lambda: sampler.run(dataset, obs), repeat)
    return {"sample": t, "n": len(events.table)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-gammapy", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        ours = bench_gpscat(Path(tmp), args.repeat)
        print(f"gpscat: {ours['n']} events ({ours['n_src']} from sources) per 0.5 h pointing")
        print(f"  setup  {ours['setup']:.3f} s (once per survey)")
        print(f"  sample {ours['sample']:.3f} s  -> {ours['n'] / ours['sample']:.3g} events/s")
        print(f"  write  {ours['write']:.3f} s")
        gp = None if args.no_gammapy else bench_gammapy(Path(tmp), max(1, args.repeat // 2))
        if gp is not None:
            print(f"gammapy 2.1 MapDatasetEventSampler: {gp['n']} events, sample {gp['sample']:.3f} s -> {gp['n'] / gp['sample']:.3g} events/s")
            print(f"  speed-up (sampling): {gp['sample'] / ours['sample']:.1f}x")


if __name__ == "__main__":
    main()
