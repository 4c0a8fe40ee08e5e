"""Training data of the seed classifier: simulated skies through the real chain of stages.

Each training sky is a small survey — a strip of ``classify.training.n_pointings`` pointings
along b = 0 with the survey's own IRFs (``simulation.irf`` when the run simulates its data,
else the IRFs of the first selected observation of the data store) — with sources drawn by
:func:`gpscat.core.training_sky.random_sky`.  It goes through exactly the stages of the real
run, in-process and with the run's own ``datasets``, ``background``, ``significance`` and
``detect`` settings: simulate → reduce → stack → exclusion → background → significance →
detect.  Its seeds are then matched to the injected sources
(:func:`gpscat.core.classify.match_seeds`).  Only the sky (survey region, pointings, data
selection, known-source exclusions) differs from the run's config.

Sky ``k`` uses ``SeedSequence([classify.training.seed, k])`` for its sources and its events,
so a sky depends only on the seed, its number and the config.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack
from threadpoolctl import threadpool_limits

from gpscat.config import Config, ConfigError, quantity
from gpscat.core.classify import match_seeds
from gpscat.core.training_sky import SkyParams, random_sky, sky_truth
from gpscat.io.irf import write_irfs
from gpscat.io.models_yaml import write_models
from gpscat.io.seeds import empty_seed_table
from gpscat.models.sky import Models
from gpscat.stages import background as background_stage
from gpscat.stages import detect as detect_stage
from gpscat.stages import exclusion as exclusion_stage
from gpscat.stages import reduce as reduce_stage
from gpscat.stages import significance as significance_stage
from gpscat.stages import stack as stack_stage
from gpscat.stages.simulate import IRF_HDUS, simulate_survey

__all__ = ["TrainingParams", "detect_chain", "simulate_sky", "training_irf", "training_params", "training_seeds", "with_seed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingParams:
    """``classify.training`` parsed (angles deg, times s)."""

    seed: int
    n_skies: int
    n_jobs: int
    irf: str
    livetime: float | None
    n_pointings: int
    pointing_step: float
    survey_width: tuple[float, float]
    min_tolerance: float
    sky: SkyParams


def _deg_pair(value, key: str) -> tuple[float, float]:
    return tuple(quantity(v, "deg", key=f"{key}[{i}]") for i, v in enumerate(value))  # type: ignore[return-value]


def training_params(cfg: Config) -> TrainingParams:
    """Parse ``classify.training`` and ``classify.match`` (ConfigError naming the key)."""
    c = cfg["classify"]
    t = c["training"]
    s = t["sources"]
    key = "classify.training"
    sim_on = bool(cfg["simulation"].get("enabled"))
    if t["livetime"] == "auto":
        livetime = quantity(cfg["simulation"].get("livetime", "0.5 h"), "s", key="simulation.livetime") if sim_on else None
    else:
        livetime = quantity(t["livetime"], "s", key=f"{key}.livetime")
    if t["pointing_step"] == "auto":
        step = quantity(cfg["simulation"]["pointings"].get("lon_step", "1 deg"), "deg", key="simulation.pointings.lon_step") if sim_on else 1.0
    else:
        step = quantity(t["pointing_step"], "deg", key=f"{key}.pointing_step")
    width = _deg_pair(t["survey_width"], f"{key}.survey_width")
    margin = _deg_pair(t["source_margin"], f"{key}.source_margin")
    half = (width[0] / 2 - margin[0], width[1] / 2 - margin[1])
    if min(half) <= 0:
        raise ConfigError(f"config key {key}.source_margin: {list(t['source_margin'])} leaves no room in survey_width {list(t['survey_width'])}")
    sky = SkyParams(
        n_sources=int(s["per_sky"]),
        lon_range=(-half[0], half[0]),
        lat_range=(-half[1], half[1]),
        fractions=dict(s["fractions"]),
        gauss_sigma=_deg_pair(s["gauss_sigma"], f"{key}.sources.gauss_sigma"),
        disk_radius=_deg_pair(s["disk_radius"], f"{key}.sources.disk_radius"),
        shell_radius=_deg_pair(s["shell_radius"], f"{key}.sources.shell_radius"),
        shell_width=tuple(float(v) for v in s["shell_width_fraction"]),
        max_elongation=float(s["max_elongation"]),
        index=tuple(float(v) for v in s["index"]),
        significance=tuple(float(v) for v in s["significance"]),
        amplitude_ref=quantity(s["amplitude_ref"], "cm-2 s-1 TeV-1", key=f"{key}.sources.amplitude_ref"),
        psf_radius=quantity(s["psf_radius"], "deg", key=f"{key}.sources.psf_radius"),
        min_separation=quantity(s["min_separation"], "deg", key=f"{key}.sources.min_separation"),
    )
    return TrainingParams(
        seed=int(t["seed"]), n_skies=int(t["n_skies"]), n_jobs=int(t["n_jobs"]), irf=str(t["irf"]), livetime=livetime,
        n_pointings=int(t["n_pointings"]), pointing_step=step, survey_width=width,
        min_tolerance=quantity(c["match"]["min_tolerance"], "deg", key="classify.match.min_tolerance"), sky=sky,
    )


def training_irf(cfg: Config, params: TrainingParams, folder: str | os.PathLike) -> tuple[str, float]:
    """The IRF of the training skies and their livetime per pointing (s).

    ``classify.training.irf``: ``auto`` = ``simulation.irf`` when the run simulates its data,
    else the IRFs (aeff, psf, edisp, bkg) of the first selected observation of the data
    store, written to ``<folder>/training_irf.fits``; ``builtin`` or a GADF IRF file path are
    used as they are.  ``livetime: auto`` on real data is the median livetime of the
    selected observations.
    """
    livetime = params.livetime
    spec = params.irf
    if spec == "auto" and cfg["simulation"].get("enabled"):
        spec = str(cfg["simulation"].get("irf", "builtin"))
    if spec != "auto" and livetime is not None:
        return (spec if spec == "builtin" else str(cfg.path(spec))), livetime
    store = reduce_stage.open_store(cfg)
    ids = reduce_stage.select_observations(cfg, store)
    if not ids:
        raise ValueError("classify.training: no observation selected to take the IRFs and livetime from")
    if livetime is None:
        livetime = float(np.median([store.obs_info(i).get("LIVETIME", np.nan) for i in ids]))
        if not livetime > 0:
            raise ValueError(f"classify.training.livetime: the obs-index gives no usable LIVETIME ({livetime}); set it")
    if spec == "auto":
        path = Path(folder) / "training_irf.fits"
        irfs = {IRF_HDUS[t][1]: store.load_irf(ids[0], t) for t in IRF_HDUS}
        write_irfs(path, irfs, header={"ORIGIN": "gpscat", "OBS_ID": int(ids[0])})
        log.info("training IRFs: those of observation %d (%s)", ids[0], path)
        spec = str(path)
    return (spec if spec == "builtin" else str(cfg.path(spec))), float(livetime)


def _sky_overrides(cfg: Config, params: TrainingParams, *, models: Path, irf: str, livetime: float, seed: int) -> dict:
    raw = cfg.to_dict()
    e_lo = min(d.energy.min for d in cfg.datasets)
    e_hi = max(d.energy.max for d in cfg.datasets)
    et = [min(d.energy_true.min for d in cfg.datasets), max(d.energy_true.max for d in cfg.datasets)]
    offset = max(d.offset_max for d in cfg.datasets) + 0.5
    half = 0.5 * (params.n_pointings - 1) * params.pointing_step
    raw["simulation"] = {
        "enabled": True, "irf": irf, "models": str(models), "livetime": f"{livetime} s", "seed": int(seed),
        "pointings": {"frame": "galactic", "lon_min": f"{-half} deg", "lon_max": f"{half + 1e-6} deg",
                      "lon_step": f"{params.pointing_step} deg", "lat_rows": ["0 deg"]},
        "energy": [f"{e_lo} TeV", f"{e_hi} TeV"], "energy_true": [f"{et[0]} TeV", f"{et[1]} TeV"], "offset_max": f"{offset} deg",
    }
    raw["data"] = {"store": "", "selection": {}}
    raw["survey"] = {"frame": "galactic", "center": ["0 deg", "0 deg"], "width": [f"{w} deg" for w in params.survey_width],
                     "projection": cfg.survey.projection}
    excl = raw.setdefault("background", {}).setdefault("exclusion", {})
    excl.update({"regions": [], "circles": [], "catalogs": []})
    raw.setdefault("significance", {})["quicklook"] = False
    return raw


def detect_chain(cfg: Config, folder: str | os.PathLike) -> Table:
    """reduce → stack → exclusion → background → significance of every dataset, then detect.

    The stages' own ``run`` functions, in-process, on the data store of ``cfg``; files go
    to ``folder`` in the workflow's layout (``<dataset>/...``, ``seeds/...``).
    """
    folder = Path(folder)
    store = reduce_stage.open_store(cfg)
    ids = reduce_stage.select_observations(cfg, store)
    sig, bands, datasets = [], [], []
    for d in cfg.datasets:
        sub = folder / d.name
        obs = [sub / f"obs_{i}.fits" for i in ids]
        for i, path in zip(ids, obs, strict=True):
            reduce_stage.run(cfg, dataset=d.name, obs_id=i, output=path, store=store)
        stack_stage.run(cfg, dataset=d.name, inputs=obs, output=sub / "stacked.fits")
        exclusion_stage.run(cfg, dataset=d.name, stacked=sub / "stacked.fits", output=sub / "exclusion.fits")
        bkg_out = sub / ("onoff.fits" if cfg["background"]["method"] == "ring" else "dataset.fits")
        background_stage.run(cfg, dataset=d.name, stacked=sub / "stacked.fits", observations=obs, exclusion=sub / "exclusion.fits",
                             output=bkg_out, norms=sub / "background_norms.fits")
        written = significance_stage.run(cfg, dataset=d.name, input=bkg_out, output_dir=sub)
        sig += [p for p in written if p.name.startswith("significance_") and p.suffix == ".fits"]
        bands += [p for p in written if p.name.startswith("bands_") and p.suffix == ".fits"]
        if bkg_out.name == "dataset.fits":
            datasets.append(bkg_out)
    return detect_stage.run(
        cfg, significance_files=sig, band_files=bands, datasets=datasets, seeds=folder / "seeds" / "seeds_detected.fits",
        regions=folder / "seeds" / "seeds_detected.reg", index_map=folder / "index_map.fits",
        exclusion=folder / "detection_exclusion.fits", plot=None,
    )


def _sky_seeds(seed: int, k: int) -> tuple[np.random.Generator, int]:
    ss = np.random.SeedSequence([int(seed), int(k)])
    sources, events = ss.spawn(2)
    return np.random.default_rng(sources), int(events.generate_state(1)[0] % (2**31 - 1))


def simulate_sky(cfg: Config, params: TrainingParams, k: int, *, irf: str, livetime: float, folder: str | os.PathLike, keep: bool = False) -> tuple[Table, Table]:
    """Training sky ``k``: its detected seeds with truth labels, and its truth table.

    The seed table gets the columns of :func:`gpscat.core.classify.match_seeds` and ``Sky``
    (= ``k``).  The sky's files live in ``<folder>/sky_<k>`` and are removed unless ``keep``.
    """
    rng, event_seed = _sky_seeds(params.seed, k)
    models = random_sky(rng, params.sky, prefix=f"sky{k}")
    work = Path(folder) / f"sky_{k:04d}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        sky_yaml = work / "sky.yaml"
        write_models(sky_yaml, Models(models), write_covariance=False)
        raw = _sky_overrides(cfg, params, models=sky_yaml, irf=irf, livetime=livetime, seed=event_seed)
        sim = simulate_survey(raw, work / "store", truth=False)
        seeds = detect_chain(sim.config, work)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    truth = sky_truth(models)
    truth["Sky"] = np.full(len(truth), k, dtype=int)
    labels = match_seeds(seeds, truth, min_tolerance=params.min_tolerance)
    for name in labels.colnames:
        seeds[name] = labels[name]
    seeds["Sky"] = np.full(len(seeds), k, dtype=int)
    counts = {c: int(np.sum(labels["Label"] == c)) for c in np.unique(labels["Label"])} if len(seeds) else {}
    log.info("training sky %d: %d sources injected, %d seeds %s", k, len(truth), len(seeds), counts)
    return seeds, truth


def _one(args) -> tuple[Table, Table]:
    cfg_dict, base_dir, params, k, irf, livetime, folder = args
    cfg = Config(cfg_dict, source="classify training", base_dir=base_dir)
    with threadpool_limits(1):  # one core per sky: parallelism comes from the processes
        return simulate_sky(cfg, params, k, irf=irf, livetime=livetime, folder=folder)


def training_seeds(
    cfg: Config,
    *,
    skies: Sequence[int] | None = None,
    params: TrainingParams | None = None,
    folder: str | os.PathLike | None = None,
    n_jobs: int | None = None,
) -> tuple[Table, Table]:
    """Seeds (with labels and ``Sky``) and truth of the training skies, in sky order.

    Parameters
    ----------
    cfg : Config
        The run's config (``classify.training`` and the sections of the map and detect stages).
    skies : sequence of int, optional
        Sky numbers (default ``range(classify.training.n_skies)``); held-out skies for a test
        are other numbers (or another ``seed`` in ``params``).
    params : TrainingParams, optional
        Overrides :func:`training_params` of ``cfg``.
    folder : path, optional
        Work folder (default: a temporary folder, removed afterwards).
    n_jobs : int, optional
        Skies simulated in parallel processes (default ``classify.training.n_jobs``); the
        result does not depend on it.
    """
    params = params or training_params(cfg)
    skies = list(range(params.n_skies)) if skies is None else [int(k) for k in skies]
    n_jobs = params.n_jobs if n_jobs is None else int(n_jobs)
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpscat-train-", dir=folder) as tmp:
        irf, livetime = training_irf(cfg, params, tmp)
        jobs = [(cfg.to_dict(), cfg.base_dir, params, k, irf, livetime, tmp) for k in skies]
        if n_jobs > 1 and len(jobs) > 1:
            # fork: works from any script (spawn needs a __main__ guard); the parent has not
            # started OpenMP threads yet (the classifier is fitted after the skies)
            with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=get_context("fork")) as pool:
                results = list(pool.map(_one, jobs))
        else:
            results = [_one(j) for j in jobs]
    seeds = [s for s, _ in results if len(s)]
    truths = [t for _, t in results if len(t)]
    if seeds:
        table = vstack(seeds, metadata_conflicts="silent")
    else:
        names = [d.name for d in cfg.datasets]
        radii = [quantity(r, "deg", key="significance.correlation_radii") for r in cfg["significance"]["correlation_radii"]]
        table = empty_seed_table(names, radii)
        for name, dtype in (("Label", "U10"), ("Truth_Name", "U64"), ("Truth_Sep", "f8"), ("Duplicate", "?"), ("Sky", "i8")):
            table[name] = np.zeros(0, dtype=dtype)
    truth = vstack(truths, metadata_conflicts="silent") if truths else sky_truth([])
    table.meta.update({"TRAINIRF": irf[-60:], "LIVETIME": livetime, "TRSEED": params.seed, "NSKIES": len(skies)})
    return table, truth


def with_seed(params: TrainingParams, seed: int) -> TrainingParams:
    """The same training settings with another master seed (e.g. for held-out skies)."""
    return replace(params, seed=int(seed))
