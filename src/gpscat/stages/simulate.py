"""Stage ``simulate``: a DL3 data store of a simulated survey, plus its truth.

Steps (one CLI command and Snakemake rule each; all paths under ``data.store``):

* ``irf`` — the IRF file ``irf.fits`` (the built-in CTA-South-like instrument of
  :mod:`gpscat.core.instrument`, or the GADF file ``simulation.irf`` rewritten through
  :mod:`gpscat.io.irf`), shared by all observations;
* ``obs`` — one event file ``events/events_<obs_id>.fits`` per pointing of
  ``simulation.pointings`` (seeded by ``SeedSequence([simulation.seed, obs_id])``: the same
  seed gives byte-identical files, independently of which other observations run);
* ``index`` — ``obs-index.fits.gz`` and ``hdu-index.fits.gz`` (gammapy's ``DataStore``
  opens the folder);
* ``truth`` — ``truth/models.yaml`` (the injected sources, gammapy format) and
  ``truth/truth.fits`` (:data:`gpscat.io.simulation.TRUTH_COLUMNS`).

:func:`simulate_survey` runs all of them in-process: the few-line way for tests to make a
small survey with a known answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from astropy.io import fits
from astropy.table import Table

from gpscat.config import Config, ConfigError, load_config, quantity
from gpscat.core.geom import to_frame
from gpscat.core.instrument import builtin_irfs
from gpscat.core.pointings import Pointing
from gpscat.core.simulation import (
    SimulationSetup,
    make_setup,
    observation_seed,
    simulate_observation,
)
from gpscat.core.truth import source_truth
from gpscat.io.irf import IRFError, irf_from_hdu, write_irfs
from gpscat.io.models_yaml import read_models, write_models
from gpscat.io.simulation import (
    MJDREF,
    read_event_header,
    read_truth,
    write_events,
    write_index_tables,
    write_truth,
)
from gpscat.models.sky import Models, SkyModel

__all__ = [
    "IRF_HDUS",
    "SimulatedSurvey",
    "SimulationConfig",
    "events_path",
    "load_models",
    "read_irf_file",
    "run_index",
    "run_irf",
    "run_obs",
    "run_truth",
    "simulate_survey",
    "simulation_config",
    "store_paths",
]

log = logging.getLogger(__name__)

#: hdu-index HDU_TYPE → (HDU_CLASS, HDU name in irf.fits); the HDU_CLASS of psf/bkg follows the IRF
IRF_HDUS = {
    "aeff": ("aeff_2d", "EFFECTIVE AREA"),
    "edisp": ("edisp_2d", "ENERGY DISPERSION"),
    "psf": ("psf_3gauss", "POINT SPREAD FUNCTION"),
    "bkg": ("bkg_3d", "BACKGROUND"),
}
_TYPE_OF_TAG = {"aeff_2d": "aeff", "edisp_2d": "edisp", "psf_3gauss": "psf", "psf_table": "psf", "bkg_3d": "bkg", "bkg_2d": "bkg"}
_GAP = 300.0  # s between consecutive observations
_SITE = {"GEOLON": -70.3167, "GEOLAT": -24.6833, "ALTITUDE": 2147.0}  # CTA South (Paranal), deg, deg, m


@dataclass(frozen=True)
class SimulationConfig:
    """Typed view of the ``simulation`` section (energies TeV, angles deg, times s)."""

    irf: str
    models: str
    pointings: tuple[Pointing, ...]
    livetime: float
    deadc: float
    tstart_mjd: float
    energy: tuple[float, float]
    energy_true: tuple[float, float]
    offset_max: float
    background: bool
    seed: int
    truth_bands: tuple[tuple[float, float], ...]
    truth_n_mc: int


def _pair(value, key: str) -> tuple[float, float]:
    lo, hi = (quantity(v, "TeV", key=f"{key}[{i}]") for i, v in enumerate(value))
    if not 0 < lo < hi:
        raise ConfigError(f"config key {key}: need 0 < min < max, got {list(value)}")
    return lo, hi


def simulation_config(cfg: Config) -> SimulationConfig:
    """Parse ``cfg["simulation"]`` (raises ConfigError naming the key)."""
    s = cfg["simulation"]
    deadc = float(s.get("deadc", 0.98))
    if not 0 < deadc <= 1:
        raise ConfigError(f"config key simulation.deadc: must be in (0, 1], got {deadc}")
    truth = s.get("truth", {})
    return SimulationConfig(
        irf=str(s.get("irf", "builtin")),
        models=str(s.get("models", "")),
        pointings=tuple(cfg.pointings()),
        livetime=quantity(s.get("livetime", "0.5 h"), "s", key="simulation.livetime"),
        deadc=deadc,
        tstart_mjd=float(s.get("tstart_mjd", 61000.0)),
        energy=_pair(s.get("energy", ["0.05 TeV", "200 TeV"]), "simulation.energy"),
        energy_true=_pair(s.get("energy_true", ["0.02 TeV", "200 TeV"]), "simulation.energy_true"),
        offset_max=quantity(s.get("offset_max", "5 deg"), "deg", key="simulation.offset_max"),
        background=bool(s.get("background", True)),
        seed=int(s.get("seed", 1)),
        truth_bands=tuple(_pair(b, f"simulation.truth.bands[{i}]") for i, b in enumerate(truth.get("bands", [["0.1 TeV", "1 TeV"], ["1 TeV", "100 TeV"]]))),
        truth_n_mc=int(truth.get("n_mc", 2000)),
    )


def store_paths(cfg: Config) -> dict[str, Path]:
    """Files of the simulated store: ``irf``, ``obs_index``, ``hdu_index``, ``truth``, ``models``."""
    store = cfg.path(cfg["data"]["store"])
    return {
        "store": store,
        "irf": store / "irf.fits",
        "obs_index": store / "obs-index.fits.gz",
        "hdu_index": store / "hdu-index.fits.gz",
        "truth": store / "truth" / "truth.fits",
        "models": store / "truth" / "models.yaml",
    }


def events_path(store: str | os.PathLike, obs_id: int) -> Path:
    """Event file of one observation in a simulated store."""
    return Path(store) / "events" / f"events_{int(obs_id)}.fits"


def load_models(cfg: Config) -> list[SkyModel]:
    """Injected sky models: ``simulation.models`` = ``demo`` (shipped), a YAML path, or empty (none)."""
    spec = simulation_config(cfg).models.strip()
    if not spec:
        return []
    path = Path(str(files("gpscat") / "data" / "demo_models.yaml")) if spec == "demo" else cfg.path(spec)
    if not path.is_file():
        raise ConfigError(f"config key simulation.models: model file {path} not found")
    models = read_models(path)
    skipped = [m.name for m in models if not isinstance(m, SkyModel) or m.spatial_model is None]
    if skipped:
        log.warning("%s: models without a spatial part are not simulated: %s", path, skipped)
    return [m for m in models if isinstance(m, SkyModel) and m.spatial_model is not None]


def read_irf_file(path: str | os.PathLike) -> dict[str, object]:
    """All IRF HDUs of a GADF file, by type (``aeff``, ``psf``, ``edisp``, ``bkg``)."""
    out: dict[str, object] = {}
    with fits.open(path, memmap=False) as hl:
        for hdu in hl[1:]:
            if not isinstance(hdu, fits.BinTableHDU):
                continue
            try:
                irf = irf_from_hdu(hdu, source=str(path))
            except IRFError as exc:
                log.debug("%s: HDU %s is not an IRF (%s)", path, hdu.name, exc)
                continue
            out.setdefault(_TYPE_OF_TAG[irf.tag], irf)
    missing = [t for t in IRF_HDUS if t not in out]
    if missing:
        raise IRFError(f"{path}: no {missing} IRF HDU found")
    return out


def _load_irfs(sim: SimulationConfig, cfg: Config) -> dict[str, object]:
    if sim.irf == "builtin":
        return builtin_irfs()
    return read_irf_file(cfg.path(sim.irf))


def run_irf(cfg: Config, *, output: str | os.PathLike) -> None:
    """Write the simulation's IRF file (built-in instrument or ``simulation.irf`` rewritten)."""
    sim = simulation_config(cfg)
    irfs = _load_irfs(sim, cfg)
    write_irfs(output, {IRF_HDUS[t][1]: irfs[t] for t in IRF_HDUS}, header={"ORIGIN": "gpscat", "SIM_IRF": sim.irf[-60:]})
    log.info("IRF file %s written (%s)", output, sim.irf)


def _setup(cfg: Config, irfs: Mapping[str, object], models: Sequence[SkyModel]) -> SimulationSetup:
    sim = simulation_config(cfg)
    return make_setup(
        list(models), dict(irfs), livetime=sim.livetime, deadc=sim.deadc, energy_range=sim.energy,
        energy_true_range=sim.energy_true, offset_max=sim.offset_max, background=sim.background,
    )


def _plan(sim: SimulationConfig) -> list[dict[str, Any]]:
    """Per observation: id, pointing (RA/Dec and Galactic) and times."""
    ontime = sim.livetime / sim.deadc
    t0 = (sim.tstart_mjd - (MJDREF[0] + MJDREF[1])) * 86400.0
    out = []
    for k, p in enumerate(sim.pointings):
        ra, dec = (float(v) for v in to_frame(p.lon, p.lat, p.frame, "icrs"))
        glon, glat = (float(v) for v in to_frame(p.lon, p.lat, p.frame, "galactic"))
        tstart = t0 + k * (ontime + _GAP)
        out.append({"obs_id": p.obs_id, "ra": ra, "dec": dec, "glon": glon, "glat": glat, "tstart": tstart, "tstop": tstart + ontime})
    return out


def _obs_entry(sim: SimulationConfig, obs_id: int) -> dict[str, Any]:
    for entry in _plan(sim):
        if entry["obs_id"] == int(obs_id):
            return entry
    raise ValueError(f"obs_id {obs_id} is not one of the simulated pointings {[p.obs_id for p in sim.pointings]}")


def _simulate_one(sim: SimulationConfig, setup: SimulationSetup, entry: dict, output) -> int:
    rng = observation_seed(sim.seed, entry["obs_id"])
    cols = simulate_observation(setup, pointing=(entry["ra"], entry["dec"]), tstart=entry["tstart"], rng=rng)
    header = {
        "OBS_ID": entry["obs_id"], "RA_PNT": entry["ra"], "DEC_PNT": entry["dec"], "GLON_PNT": entry["glon"], "GLAT_PNT": entry["glat"],
        "ONTIME": setup.ontime, "LIVETIME": setup.livetime, "DEADC": setup.deadc, "TELAPSE": setup.ontime,
        "TELESCOP": "CTA", "INSTRUME": "gpscat simulation", "OBJECT": f"GPS l={entry['glon']:.2f} b={entry['glat']:+.2f}",
        "SIM_SEED": sim.seed, "SIM_IRF": sim.irf[-60:], **_SITE, "NMCIDS": len(setup.models) + 1, "MID00000": 0, "MMN00000": "Background",
    }
    for i, m in enumerate(setup.models, start=1):
        header[f"MID{i:05d}"] = i
        header[f"MMN{i:05d}"] = m.name[:60]
    write_events(output, cols, header=header, gti=(entry["tstart"], entry["tstop"]))
    n_src = int((cols["MC_ID"] > 0).sum())
    log.info("obs %d: %d events (%d source, %d background) -> %s", entry["obs_id"], cols["MC_ID"].size, n_src, cols["MC_ID"].size - n_src, output)
    return int(cols["MC_ID"].size)


def run_obs(cfg: Config, *, obs_id: int, irf: str | os.PathLike, output: str | os.PathLike) -> int:
    """Simulate one observation with the IRF file ``irf``; returns the number of events."""
    sim = simulation_config(cfg)
    setup = _setup(cfg, read_irf_file(irf), load_models(cfg))
    return _simulate_one(sim, setup, _obs_entry(sim, obs_id), output)


def run_index(cfg: Config, *, events: Sequence[str | os.PathLike], irf: str | os.PathLike, obs_index: str | os.PathLike, hdu_index: str | os.PathLike) -> None:
    """Write the obs-index and hdu-index of the store from the event files' headers."""
    store = store_paths(cfg)["store"]
    irfs = read_irf_file(irf)
    irf_hdus = {t: (irfs[t].tag, name) for t, (_, name) in IRF_HDUS.items()}
    headers = sorted((read_event_header(p) | {"_path": p} for p in events), key=lambda h: h["OBS_ID"])
    rows = []
    for h in headers:
        rows.append({
            "OBS_ID": int(h["OBS_ID"]), "RA_PNT": h["RA_PNT"], "DEC_PNT": h["DEC_PNT"], "GLON_PNT": h["GLON_PNT"], "GLAT_PNT": h["GLAT_PNT"],
            "ONTIME": h["ONTIME"], "LIVETIME": h["LIVETIME"], "DEADC": h["DEADC"], "TSTART": h["TSTART"], "TSTOP": h["TSTOP"],
            "DATE-OBS": h["DATE-OBS"], "TIME-OBS": h["TIME-OBS"], "DATE-END": h["DATE-END"], "TIME-END": h["TIME-END"],
            "N_TELS": 0, "OBJECT": h["OBJECT"], "EVENT_COUNT": h["EVENT_COUNT"],
            "events_file": os.path.relpath(Path(h["_path"]).resolve(), Path(hdu_index).resolve().parent),
        })
    write_index_tables(store, rows, irf_file=os.path.relpath(Path(irf).resolve(), Path(hdu_index).resolve().parent), irf_hdus=irf_hdus, obs_index=obs_index, hdu_index=hdu_index)
    log.info("index of %d observations written: %s, %s", len(rows), obs_index, hdu_index)


def run_truth(cfg: Config, *, irf: str | os.PathLike, truth: str | os.PathLike, models_out: str | os.PathLike, setup: SimulationSetup | None = None) -> Table:
    """Write the injected models (gammapy YAML) and the truth table; returns the table."""
    sim = simulation_config(cfg)
    setup = setup or _setup(cfg, read_irf_file(irf), load_models(cfg))
    pointings = [(e["ra"], e["dec"]) for e in _plan(sim)]
    cols = source_truth(setup, pointings, bands=sim.truth_bands, n_mc=sim.truth_n_mc, seed=sim.seed)
    write_models(models_out, Models([m.copy() for m in setup.models]), write_covariance=False)
    table = write_truth(truth, cols, bands=sim.truth_bands, meta={"SIM_SEED": sim.seed, "N_OBS": len(pointings)})
    for row in table:
        log.info("truth %-16s %-26s Npred %8.1f  sqrt(TS) %6.1f", row["Name"], row["Spatial_Model"], row["Npred"], row["Sqrt_TS"])
    return table


@dataclass(frozen=True)
class SimulatedSurvey:
    """Result of :func:`simulate_survey`."""

    store: Path
    config: Config
    obs_ids: list[int]
    truth: Table
    models: list[SkyModel]


def simulate_survey(
    config: Config | Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike = "data/sim",
    *,
    seed: int | None = None,
    truth: bool = True,
) -> SimulatedSurvey:
    """Simulate a whole survey in-process (IRF, events, index, truth) into ``out_dir``.

    Parameters
    ----------
    config : Config, mapping or None
        A config, or overrides of the schema defaults (e.g. ``{"simulation": {"models":
        "demo", "pointings": {"lon_min": "-1 deg", "lon_max": "1 deg"}}}``).
        ``simulation.enabled`` is set and ``data.store`` replaced by ``out_dir``.
    out_dir : path
        Store folder (created).
    seed : int, optional
        Overrides ``simulation.seed``.
    truth : bool
        Also compute and write the truth table and models.

    Returns
    -------
    SimulatedSurvey
        ``store`` (open it with ``DataStore.from_dir``), the config used (``data.store``
        pointing at the store), observation ids, truth table and injected models.
    """
    raw = config.to_dict() if isinstance(config, Config) else dict(config or {})
    raw.setdefault("simulation", {})
    raw["simulation"] = {**raw["simulation"], "enabled": True}
    if seed is not None:
        raw["simulation"]["seed"] = int(seed)
    raw["data"] = {**raw.get("data", {}), "store": str(Path(out_dir).resolve())}
    cfg = load_config(overrides=raw)
    sim = simulation_config(cfg)
    paths = store_paths(cfg)
    run_irf(cfg, output=paths["irf"])
    irfs = read_irf_file(paths["irf"])
    models = load_models(cfg)
    setup = _setup(cfg, irfs, models)
    files_ = []
    for entry in _plan(sim):
        path = events_path(paths["store"], entry["obs_id"])
        _simulate_one(sim, setup, entry, path)
        files_.append(path)
    run_index(cfg, events=files_, irf=paths["irf"], obs_index=paths["obs_index"], hdu_index=paths["hdu_index"])
    table = Table()
    if truth:
        table = run_truth(cfg, irf=paths["irf"], truth=paths["truth"], models_out=paths["models"], setup=setup)
        table = read_truth(paths["truth"])
    return SimulatedSurvey(paths["store"], cfg, [e["obs_id"] for e in _plan(sim)], table, list(models))
