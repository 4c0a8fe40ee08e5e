"""Stage ``reduce``: one observation of one dataset → a per-observation dataset file.

Reads one observation from the DL3 data store, cuts the survey grid around its pointing
(pixel-aligned with the survey, width ``cutout_width`` ≥ 2 × ``offset_max``), computes
counts, exposure, IRF background, PSF and energy-dispersion kernels (on the coarse IRF
grid of the survey) and the safe mask, and writes them atomically with
:func:`gpscat.io.dataset.write_dataset` — a file that gammapy's ``MapDataset.read``
opens (HDUs COUNTS, EXPOSURE, BACKGROUND, PSF, PSF_EXPOSURE, EDISP, EDISP_EXPOSURE,
MASK_SAFE, GTI; meta JSON in the primary header: ``obs_id``, ``livetime``, ``ontime``,
``pointing``, ``safe_energy``, ...).

An unusable observation (missing file or HDU, corrupt FITS, no event in the safe range)
raises :class:`~gpscat.io.dl3.DL3Error`; with ``data.skip_bad_observations`` (default)
the stage instead writes a *skipped* dataset — one pixel, zero maps, an all-False safe
mask and ``meta = {"skipped": True, "reason": ...}`` — that every later stage can read
and that the stacking stage records in its provenance file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from gpscat.config import Config, quantity
from gpscat.core import reduce as R
from gpscat.core.dataset import MapDataset
from gpscat.core.fov import altaz_rotations
from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.io.dataset import write_dataset
from gpscat.io.dl3 import DataStore, DL3Error, Observation, parse_time

__all__ = ["open_store", "reduce_observation", "run", "select_observations", "skipped_dataset"]

log = logging.getLogger(__name__)


def open_store(cfg: Config) -> DataStore:
    """The data store of ``cfg["data"]`` (paths relative to the config's base folder)."""
    data = cfg["data"]
    return DataStore.from_dir(
        cfg.path(data["store"]),
        obs_index=cfg.path(data["obs_index"]) if data.get("obs_index") else None,
        hdu_index=cfg.path(data["hdu_index"]) if data.get("hdu_index") else None,
    )


def select_observations(cfg: Config, store: DataStore | None = None) -> list[int]:
    """Observation ids of ``data.selection`` (ids, exclusions, cone, time, survey overlap)."""
    store = store or open_store(cfg)
    sel = cfg["data"]["selection"]
    cone = None
    if sel.get("cone"):
        c = sel["cone"]
        cone = (
            quantity(c["lon"], "deg", key="data.selection.cone.lon"),
            quantity(c["lat"], "deg", key="data.selection.cone.lat"),
            quantity(c["radius"], "deg", key="data.selection.cone.radius"),
            c.get("frame", "galactic"),
        )
    time_range = None
    if sel.get("time"):
        time_range = (parse_time(sel["time"]["start"]), parse_time(sel["time"]["stop"]))
    geom = offset_max = None
    if sel.get("survey_overlap", True):
        datasets = cfg.datasets
        offset_max = max(d.offset_max for d in datasets)
        geom = cfg.survey.geom(min(d.binsz for d in datasets))
    return store.select(
        obs_ids=list(sel["obs_ids"]) or None,
        exclude_ids=list(sel.get("exclude_ids", [])),
        cone=cone,
        time_range=time_range,
        geom=geom,
        offset_max=offset_max,
    )


def _energy_thresholds(obs: Observation, background: np.ndarray, energy_axis: MapAxis, methods, *, aeff_percent, bias_percent, safe_offset):
    emin, emax = None, None

    def raise_min(v):
        nonlocal emin
        emin = v if emin is None else max(emin, v)

    if "aeff-default" in methods:
        lo, hi = obs.safe_energy_range
        if lo is None and hi is None:
            log.warning("obs %d: no default safe energy range (AEFF LO_THRES/HI_THRES or obs-index SAFE_ENERGY_LO)", obs.obs_id)
        if lo is not None:
            raise_min(lo)
        if hi is not None:
            emax = hi
    if "aeff-max" in methods:
        raise_min(R.aeff_max_threshold(obs.aeff, percent=aeff_percent, offset=safe_offset))
    if "edisp-bias" in methods:
        raise_min(R.edisp_bias_threshold(obs.edisp, percent=bias_percent, offset=safe_offset))
    if "bkg-peak" in methods:
        raise_min(R.bkg_peak_threshold(background, energy_axis))
    return emin, emax


def reduce_observation(
    obs: Observation,
    *,
    geom: WcsGeom,
    energy_axis: MapAxis,
    energy_true_axis: MapAxis,
    irf_geom: WcsGeom | None = None,
    rad_axis: MapAxis | None = None,
    offset_max: float | None = 2.5,
    safe_mask_methods: Sequence[str] = ("offset-max",),
    aeff_percent: float = 10.0,
    bias_percent: float = 10.0,
    safe_offset: float = 0.0,
    edisp: bool = True,
    name: str | None = None,
    source: str = "",
) -> MapDataset:
    """Bin one observation on ``geom`` (a cutout of the survey grid) into a MapDataset.

    Parameters
    ----------
    obs : Observation
        With events and IRFs loaded.
    geom, energy_axis, energy_true_axis
        Sky cutout and energy axes of counts/background and exposure.
    irf_geom, rad_axis : optional
        Coarse grid and ``rad`` axis of the PSF and energy-dispersion kernels (omitted when
        ``irf_geom`` is None; the PSF also needs ``rad_axis``).
    offset_max : float
        Radius (deg) of the ``offset-max`` safe mask.
    safe_mask_methods : sequence of str
        Any of ``offset-max``, ``aeff-default``, ``aeff-max``, ``edisp-bias``, ``bkg-peak``.
    aeff_percent, bias_percent, safe_offset : float
        Settings of ``aeff-max`` and ``edisp-bias`` (evaluated at ``safe_offset`` deg).
    edisp : bool
        Also compute the energy-dispersion kernel.
    source : str
        Events file, for error messages.

    Raises
    ------
    DL3Error
        When an IRF is missing or no event falls in the safe range.
    """
    methods = R.check_safe_mask_methods(safe_mask_methods)
    where = f"obs {obs.obs_id}" + (f" ({source})" if source else "")
    needed = ["aeff", "bkg"]
    if irf_geom is not None and rad_axis is not None:
        needed.append("psf")
    if (edisp and irf_geom is not None) or "edisp-bias" in methods:
        needed.append("edisp")
    for irf in needed:
        if getattr(obs, irf) is None:
            raise DL3Error(f"{where}: the {irf} IRF is needed but was not loaded")
    if obs.events is None:
        raise DL3Error(f"{where}: events were not loaded")
    pnt = obs.pointing
    offsets = R.pixel_offsets(geom, pnt)
    ev = obs.events
    counts = R.make_counts(ev.ra, ev.dec, ev.energy, geom, energy_axis)
    exposure = R.make_exposure(obs.aeff, geom, energy_true_axis, pointing=pnt, livetime=obs.livetime, offsets=offsets)
    altaz = None
    if getattr(obs.bkg, "fov_alignment", None) == "ALTAZ":
        if obs.location is None:
            raise DL3Error(f"{where}: the background IRF is ALTAZ-aligned but the observatory location (GEOLON, GEOLAT) is unknown")
        altaz = altaz_rotations(pnt, location=obs.location, mjd_start=obs.gti.mjdref + obs.tstart / 86400.0, duration=obs.ontime)
    background = R.make_background(obs.bkg, geom, energy_axis, pointing=pnt, ontime=obs.ontime, offsets=offsets, altaz=altaz)

    spatial = offsets < offset_max if "offset-max" in methods else np.ones(geom.shape, dtype=bool)
    emin, emax = _energy_thresholds(obs, np.where(spatial, background, 0.0), energy_axis, methods, aeff_percent=aeff_percent, bias_percent=bias_percent, safe_offset=safe_offset)
    mask = R.energy_mask(energy_axis, emin, emax)[:, None, None] & spatial[None]
    if not mask.any():
        raise DL3Error(f"{where}: the safe mask is empty (energy {emin}-{emax} TeV, offset < {offset_max} deg)")
    n_safe = float(counts[mask].sum())
    if n_safe == 0:
        raise DL3Error(f"{where}: no events in the safe range (energy {emin}-{emax} TeV, offset < {offset_max} deg) of the map")

    maps = {
        "counts": Map(geom, counts, (energy_axis,)),
        "exposure": Map(geom, exposure, (energy_true_axis,), "m2 s"),
        "background": Map(geom, background, (energy_axis,)),
        "mask_safe": Map(geom, mask, (energy_axis,)),
    }
    if irf_geom is not None:
        irf_expo = R.make_exposure(obs.aeff, irf_geom, energy_true_axis, pointing=pnt, livetime=obs.livetime)[:, None]
        if rad_axis is not None:
            maps["psf"] = Map(irf_geom, R.make_psf(obs.psf, irf_geom, energy_true_axis, rad_axis, pointing=pnt), (rad_axis, energy_true_axis), "sr-1")
            maps["psf_exposure"] = Map(irf_geom, irf_expo, (rad_axis.squash(), energy_true_axis), "m2 s")
        if edisp:
            kernel = R.make_edisp_kernel(obs.edisp, irf_geom, energy_axis, energy_true_axis, pointing=pnt)
            maps["edisp"] = Map(irf_geom, kernel, (energy_axis, energy_true_axis))
            maps["edisp_exposure"] = Map(irf_geom, irf_expo.copy(), (energy_axis.squash(), energy_true_axis), "m2 s")
    meta = {
        "obs_id": obs.obs_id,
        "obs_ids": [obs.obs_id],
        "livetime": obs.livetime,
        "ontime": obs.ontime,
        "pointing": [pnt[0], pnt[1], "icrs"],
        "mjdref": obs.gti.mjdref,
        "safe_energy": [emin, emax],
        "offset_max": offset_max,
        "safe_mask_methods": list(methods),
        "n_counts_safe": n_safe,
        "skipped": False,
    }
    log.info("obs %d: %.0f counts in the safe mask, livetime %.1f s, cutout %s px", obs.obs_id, n_safe, obs.livetime, geom.npix)
    return MapDataset(name=name or f"obs_{obs.obs_id}", gti=obs.gti.as_array(), meta=meta, **maps)


def skipped_dataset(obs_id: int, reason: str, *, geom: WcsGeom, energy_axis: MapAxis, energy_true_axis: MapAxis, pointing=None, name: str | None = None) -> MapDataset:
    """A one-pixel all-zero dataset with an all-False safe mask that marks a skipped observation."""
    sl = None
    if pointing is not None:
        sl = geom.cutout_slices(pointing[0], pointing[1], geom.binsz, frame="icrs")
    cut = geom.slice(*(sl or (slice(0, 1), slice(0, 1))))
    cut = cut.slice(slice(0, 1), slice(0, 1))
    maps = {
        "counts": Map.from_geom(cut, (energy_axis,)),
        "exposure": Map.from_geom(cut, (energy_true_axis,), unit="m2 s"),
        "background": Map.from_geom(cut, (energy_axis,)),
        "mask_safe": Map.from_geom(cut, (energy_axis,), dtype=bool, fill=False),
    }
    meta = {"obs_id": int(obs_id), "obs_ids": [int(obs_id)], "livetime": 0.0, "skipped": True, "reason": reason}
    return MapDataset(name=name or f"obs_{obs_id}", meta=meta, **maps)


def run(cfg: Config, *, dataset: str, obs_id: int, output: str | os.PathLike, store: DataStore | None = None) -> MapDataset:
    """Reduce observation ``obs_id`` for ``dataset`` and write ``output`` atomically.

    Parameters
    ----------
    cfg : Config
        Reads ``data``, ``survey`` and the dataset's entry of ``datasets``.
    dataset : str
        Dataset name.
    obs_id : int
        Observation id.
    output : path
        Per-observation dataset file (``results/reduce/<dataset>/<obs_id>.fits``).
    store : DataStore, optional
        Already opened data store (default: open ``data.store``).
    """
    d = cfg.dataset(dataset)
    survey = cfg.survey.geom(d.binsz)
    irf_survey = cfg.survey.geom(d.irf_binsz)
    rad_axis = MapAxis("rad", np.linspace(0.0, d.psf_max_radius, d.psf_nbins + 1), "deg", "lin")
    store = store or open_store(cfg)
    pointing = None
    try:
        info = store.obs_info(obs_id)
        pointing = (float(info["RA_PNT"]), float(info["DEC_PNT"]))
        sl = survey.cutout_slices(*pointing, d.cutout_width, frame="icrs")
        if sl is None:
            raise DL3Error(f"obs {obs_id}: pointing {pointing} (RA, Dec) is more than {d.cutout_width / 2} deg outside the survey map")
        geom = survey.slice(*sl)
        irf_geom = irf_survey.cutout(*pointing, d.cutout_width + 2 * d.irf_binsz, frame="icrs")
        obs = store.load(obs_id)
        result = reduce_observation(
            obs,
            geom=geom,
            energy_axis=d.energy_axis,
            energy_true_axis=d.energy_axis_true,
            irf_geom=irf_geom,
            rad_axis=rad_axis,
            offset_max=d.offset_max,
            safe_mask_methods=d.safe_mask_methods,
            aeff_percent=d.aeff_percent,
            bias_percent=d.bias_percent,
            edisp=True,
            name=f"{dataset}_{obs_id}",
            source=str(store.location(obs_id, "events").path),
        )
    except DL3Error as exc:
        if not cfg["data"].get("skip_bad_observations", True):
            raise
        log.warning("skipping observation %d of dataset %s: %s", obs_id, dataset, exc)
        result = skipped_dataset(obs_id, str(exc), geom=survey, energy_axis=d.energy_axis, energy_true_axis=d.energy_axis_true, pointing=pointing, name=f"{dataset}_{obs_id}")
    result.meta["dataset"] = dataset
    write_dataset(output, result)
    return result
