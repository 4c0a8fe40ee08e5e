"""Stage ``background``: normalise the background of one dataset (FoV, ring or IRF).

Inputs: the stacked survey dataset ``results/maps/<dataset>/stacked.fits``, the
per-observation datasets ``results/reduce/<dataset>/<obs_id>.fits`` (read one at a time, so
memory stays that of one observation plus the mosaic) and the exclusion mask
``results/maps/<dataset>/exclusion.fits`` (HDU ``EXCLUSION_MASK``, 1 = usable).

``background.method``:

* ``fov`` — per observation, fit a norm (and, with ``fov.fit_tilt``, a tilt
  ``(E / 1 TeV)^-tilt``) of the IRF background to the counts in the safe mask outside the
  exclusions (:func:`gpscat.core.fov.fov_normalise`); the normalised backgrounds are stacked
  (inside each safe mask) into the survey dataset, written as ``output``
  (``results/maps/<dataset>/dataset.fits``: the stacked dataset with its BACKGROUND
  replaced), and the fit results into ``norms`` (``background_norms.fits``: one row per
  observation, columns OBS_ID, NORM, NORM_ERR, TILT, N_COUNTS, N_BACKGROUND, VALID).
* ``ring`` — per observation, ring (or adaptive ring) OFF maps from the counts and IRF
  background (the acceptance) outside the exclusions, stacked like gammapy's
  ``MapDatasetOnOff.stack`` and written as ``output`` (``results/maps/<dataset>/onoff.fits``,
  HDUs COUNTS, COUNTS_OFF, ACCEPTANCE, ACCEPTANCE_OFF, EXPOSURE, MASK_SAFE, readable by
  gammapy's ``MapDatasetOnOff.read``).  With ``ring.per_energy_bin: false`` the ring runs on
  each observation's energy-summed image (as gammapy's ring tutorial) and the file has one
  energy bin.
* ``irf`` — the stacked dataset is written unchanged as ``output``.

Pixels of an observation's cutout outside the survey map count as excluded: the
background is only estimated from where the exclusion mask is known.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table

from gpscat.config import Config, quantity
from gpscat.core.dataset import MapDataset
from gpscat.core.fov import fov_normalise
from gpscat.core.geom import Map, WcsGeom
from gpscat.core.ring import OnOffStack, adaptive_ring_background, ring_background
from gpscat.io.atomic import atomic_path
from gpscat.io.dataset import read_dataset, write_dataset
from gpscat.io.maps import read_map, write_maps

__all__ = ["fov_background", "ring_onoff", "run", "usable_in"]

log = logging.getLogger(__name__)

_NORM_COLUMNS = ("OBS_ID", "NORM", "NORM_ERR", "TILT", "N_COUNTS", "N_BACKGROUND", "VALID")
_NORM_DTYPES = (np.int64, float, float, float, float, float, bool)


def usable_in(geom: WcsGeom, survey: WcsGeom, usable: np.ndarray) -> np.ndarray:
    """The survey exclusion mask on an aligned cutout ``geom``; False outside the survey."""
    out = np.zeros(geom.shape, dtype=bool)
    psl, ssl = geom.slices_in(survey)
    out[ssl] = usable[psl]
    return out


def _obs_id(ds: MapDataset, path: Path) -> int:
    meta = ds.meta
    for key in ("obs_id", "OBS_ID"):
        if key in meta:
            return int(meta[key])
    ids = meta.get("obs_ids")
    if ids:
        return int(ids[0])
    try:
        return int(path.stem)
    except ValueError:
        raise ValueError(f"{path}: cannot tell the observation id (no meta obs_id and a non-numeric file name)") from None


def _read_observations(observations: Sequence[str | os.PathLike]):
    """Yield ``(path, dataset)`` one at a time, skipping observations the reduction skipped."""
    for path in map(Path, observations):
        obs = read_dataset(path)
        if obs.meta.get("skipped"):
            log.warning("%s: observation skipped by the reduction (%s)", path, obs.meta.get("reason", ""))
            continue
        _require(obs, path, "counts", "background")
        yield path, obs


def _safe(ds: MapDataset) -> np.ndarray:
    if ds.mask_safe is None:
        return np.ones(ds.counts.data.shape, dtype=bool)
    return ds.mask_safe.data.astype(bool)


def _require(ds: MapDataset, path, *names: str) -> None:
    missing = [n for n in names if getattr(ds, n) is None]
    if missing:
        raise ValueError(f"{path}: dataset has no {', '.join(n.upper() for n in missing)} map")


def fov_background(
    cfg: Config, survey: MapDataset, observations: Sequence[str | os.PathLike], usable: np.ndarray,
    usable_geom: WcsGeom | None = None,
) -> tuple[np.ndarray, Table]:
    """FoV-normalised background mosaic (shape of the survey counts) and the norms table.

    ``usable`` (True = not excluded) lives on ``usable_geom`` (default the mosaic's grid;
    with tiles the whole survey's, so that an observation's norm is fitted on its whole
    cutout, the same in every tile).
    """
    usable_geom = usable_geom or survey.geom
    fov = cfg["background"]["fov"]
    lo, hi = (float(v) for v in fov["norm_bounds"])
    background = np.zeros(survey.counts.data.shape)
    rows = []
    for path, obs in _read_observations(observations):
        obs_id = _obs_id(obs, path)
        safe = _safe(obs)
        mask = safe & usable_in(obs.geom, usable_geom, usable)[None]
        energy = obs.energy_axis.center
        fit = fov_normalise(
            obs.counts.data, obs.background.data, mask,
            tilt=bool(fov["fit_tilt"]), energy=energy, min_counts=float(fov["min_counts"]),
        )
        norm, valid = fit.norm, fit.valid
        if not lo <= norm <= hi:
            log.warning("obs %d: fitted norm %.3f outside %s, clipped", obs_id, norm, [lo, hi])
            norm, valid = float(np.clip(norm, lo, hi)), False
        tilt_factor = (energy / 1.0) ** (-fit.tilt)
        scaled = obs.background.copy(data=norm * obs.background.data * tilt_factor[:, None, None])
        scaled.paste_into(Map(survey.geom, background, survey.counts.axes), weights=safe)
        rows.append((obs_id, norm, fit.norm_err, fit.tilt, fit.n_counts, fit.n_background, valid))
        log.info("obs %d: norm %.4f ± %.4f, tilt %.3f (%.0f counts outside exclusions)", obs_id, norm, fit.norm_err, fit.tilt, fit.n_counts)
    table = Table(rows=rows, names=_NORM_COLUMNS, dtype=_NORM_DTYPES) if rows else _empty_norms()
    return background, table


def _ring_settings(cfg: Config, binsz: float) -> dict:
    ring = cfg["background"]["ring"]
    key = "background.ring"
    px = {k: quantity(ring[k], "deg", key=f"{key}.{k}") / binsz for k in ("r_in", "width", "r_out_max", "theta", "stepsize")}
    return {"adaptive": bool(ring["adaptive"]), "method": ring["adaptive_method"], "alpha_max": float(ring["alpha_max"]),
            "per_energy_bin": bool(ring["per_energy_bin"]), **px}


def ring_onoff(
    cfg: Config, survey: MapDataset, observations: Sequence[str | os.PathLike], usable: np.ndarray,
    usable_geom: WcsGeom | None = None,
) -> tuple[dict[str, np.ndarray], tuple]:
    """Stacked ON/OFF maps of the ring background and their energy axes (``usable`` on
    ``usable_geom``, default the mosaic's grid)."""
    usable_geom = usable_geom or survey.geom
    s = _ring_settings(cfg, survey.geom.binsz)
    axis = survey.energy_axis if s["per_energy_bin"] else survey.energy_axis.squash()
    stack = OnOffStack((axis.nbin, *survey.geom.shape))
    for path, obs in _read_observations(observations):
        safe = _safe(obs)
        counts = np.where(safe, obs.counts.data, 0.0)
        acceptance = np.where(safe, obs.background.data, 0.0)
        if not s["per_energy_bin"]:
            counts, acceptance = counts.sum(axis=0, keepdims=True), acceptance.sum(axis=0, keepdims=True)
            safe = safe.any(axis=0, keepdims=True)
        exclusion = usable_in(obs.geom, usable_geom, usable)
        if s["adaptive"]:
            off = adaptive_ring_background(
                counts, acceptance, exclusion_mask=exclusion, r_in=s["r_in"], width=s["width"],
                r_out_max=s["r_out_max"], stepsize=s["stepsize"], alpha_max=s["alpha_max"],
                theta=s["theta"], method=s["method"],
            )
        else:
            off = ring_background(counts, acceptance, exclusion_mask=exclusion, r_in=s["r_in"], width=s["width"])
        mask = safe & (off.acceptance_off > 0)
        psl, ssl = obs.geom.slices_in(survey.geom)
        cut = (..., *ssl)
        stack.add(counts[cut], off.counts_off[cut], acceptance[cut], off.acceptance_off[cut], mask[cut], psl)
        log.info("obs %s: ring OFF counts %.0f in %d safe pixels", path.stem, float(off.counts_off[mask].sum()), int(mask.sum()))
    return stack.result(), (axis,)


def _covers(parent: WcsGeom, geom: WcsGeom) -> bool:
    """``geom`` is ``parent`` or an aligned sub-grid of it (a tile of the survey)."""
    if parent == geom:
        return True
    if not geom.is_aligned(parent):
        return False
    (py, px), _ = geom.slices_in(parent)
    return (py.stop - py.start, px.stop - px.start) == geom.shape


def _empty_norms() -> Table:
    return Table(names=_NORM_COLUMNS, dtype=_NORM_DTYPES)


def _write_norms(path, table: Table) -> None:
    with atomic_path(path) as tmp:
        table.write(tmp, format="fits")


def run(
    cfg: Config,
    *,
    dataset: str,
    stacked: str | os.PathLike,
    observations: Sequence[str | os.PathLike],
    exclusion: str | os.PathLike,
    output: str | os.PathLike,
    norms: str | os.PathLike | None = None,
) -> None:
    """Estimate the background of ``dataset`` with the configured method and write it.

    Parameters
    ----------
    cfg : Config
        Reads the ``background`` section.
    dataset : str
        Dataset name (logs, headers).
    stacked : path
        ``results/maps/<dataset>/stacked.fits`` (stacked dataset with the IRF background).
    observations : sequence of path
        Per-observation datasets ``results/reduce/<dataset>/<obs_id>.fits`` (fov, ring).
    exclusion : path
        ``results/maps/<dataset>/exclusion.fits`` (on the survey grid; a tile's mosaic takes
        the whole survey's mask, of which it is an aligned sub-grid).
    output : path
        fov/irf: ``results/maps/<dataset>/dataset.fits``; ring: ``results/maps/<dataset>/onoff.fits``.
    norms : path, optional
        ``results/maps/<dataset>/background_norms.fits``: required for fov; ring and irf
        write the table without rows.
    """
    method = cfg["background"]["method"]
    survey = read_dataset(stacked)
    _require(survey, stacked, "counts")
    mask_map = read_map(exclusion, "EXCLUSION_MASK")
    if not _covers(mask_map.geom, survey.geom):
        raise ValueError(f"{exclusion}: exclusion mask geometry differs from (does not cover) the survey map {stacked}")
    usable = mask_map.data.astype(bool)
    if not observations and method != "irf":
        log.warning("%s: no observations; the background is left empty", dataset)
    if method == "irf":
        write_dataset(output, survey)
        if norms is not None:
            _write_norms(norms, _empty_norms())
    elif method == "fov":
        if norms is None:
            raise ValueError("background.method 'fov' needs the norms output path")
        background, table = fov_background(cfg, survey, observations, usable, mask_map.geom)
        survey.background = Map(survey.geom, background, survey.counts.axes, unit="")
        survey.meta = {**survey.meta, "background": "fov"}
        write_dataset(output, survey)
        _write_norms(norms, table)
        log.info("%s: %d observation norms, median %.3f", dataset, len(table), float(np.median(table["NORM"])) if len(table) else np.nan)
    elif method == "ring":
        maps, axes = ring_onoff(cfg, survey, observations, usable, mask_map.geom)
        geom = survey.geom
        out = {name: Map(geom, maps[name], axes) for name in ("counts", "counts_off", "acceptance", "acceptance_off")}
        if survey.exposure is not None:
            out["exposure"] = survey.exposure
        out["mask_safe"] = Map(geom, maps["mask"], axes)
        write_maps(output, out, header={"DATASET": dataset, "BKGMETH": "ring"})
        if norms is not None:
            _write_norms(norms, _empty_norms())
    else:  # the schema forbids it; keep a clear error for direct callers
        raise ValueError(f"background.method must be fov, ring or irf, got {method!r}")
