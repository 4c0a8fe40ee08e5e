"""Stage ``fit``: one group, one pass → ``results/fit/pass<p>/group_<gid>.fits`` and ``.yaml``.

Reads the group's row of ``groups.fits``, its models (pass 1: the start models
``group_<gid>.yaml``; pass p ≥ 2: its own pass p−1 result), the models of the other groups
(pass 1: ``start_models.yaml``; pass p: their pass p−1 results) and the stacked survey
datasets; cuts every dataset to the group's region of interest and runs
:func:`gpscat.core.groupfit.fit_group` (docs/fit.md).  Writes the SOURCES, FLUX_POINTS and
REJECTED tables (:mod:`gpscat.io.fit_results`) and the gammapy model YAML of the kept
sources with their covariance.

Pass p ≥ 2 first compares the neighbours' models with those of the pass before
(``previous_neighbours``): when no parameter moved by more than ``fit.settle_tolerance``
of its error (and no neighbour appeared or vanished), the group's inputs did not change
and its previous result is copied (header ``SETTLED = T``).  At the last pass, sources whose
parameters still changed by more than ``fit.flags.settle_sigma`` get the ``NOT_SETTLED`` flag
(column ``Pass_Shift``: that change, in sigma).

A failed fit never stops the run: the sources are written with ``Fit_Status = failed:
<reason>`` (start values, flag ``FIT_FAILED``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from gpscat.config import Config, quantity
from gpscat.core.dataset import MapDataset
from gpscat.core.flux_points import flux_points
from gpscat.core.footprints import attach_footprints
from gpscat.core.geom import angular_separation, to_frame
from gpscat.core.groupfit import (
    GroupFit,
    GroupFitOptions,
    fit_group,
    merge_into_background,
    roi_dataset,
)
from gpscat.core.source_models import ShapeLimits, model_r68, wrap_lon
from gpscat.core.source_results import FLAGS, source_record
from gpscat.io.atomic import write_text_atomic
from gpscat.io.dataset import read_dataset
from gpscat.io.fit_results import (
    FLUX_POINT_COLUMNS,
    REJECTED_COLUMNS,
    read_group_result,
    source_columns,
    table_from_rows,
    write_group_result,
)
from gpscat.io.groups import read_groups
from gpscat.io.models_yaml import read_models, write_models
from gpscat.models.sky import Models, SkyModel

__all__ = ["flux_bands", "group_options", "model_shift", "run", "write_group_models"]

log = logging.getLogger(__name__)

_PSF_REACH = 0.3  # deg: a neighbour's emission reaches this far beyond its 68% radius (PSF tails)
_CUTOUT_PAD = 0.8  # deg: PSF kernel reach (max_radius 0.66 deg by default) + the predictions' own margin


def group_options(cfg: Config) -> GroupFitOptions:
    """:class:`GroupFitOptions` from the ``fit`` and ``group.start`` config sections."""
    f, start = cfg["fit"], cfg["group"]["start"]
    sel, res, opt = f["selection"], f["residual"], f["optimizer"]
    return GroupFitOptions(
        ts_threshold=float(f["ts_threshold"]),
        ts_refit=f["ts_refit"],
        tol=float(opt["tol"]),
        strategy=int(opt["strategy"]),
        max_nfev=int(opt["max_nfev"]) or None,
        spatial_kinds=tuple(f["spatial_models"]),
        spectral_kinds=tuple(f["spectral_models"]),
        selection=bool(sel["enabled"]),
        ts_extension=float(sel["ts_extension"]),
        delta_aic=float(sel["delta_aic"]),
        ts_curvature=float(sel["ts_curvature"]),
        ts_elongation=float(sel["ts_elongation"]),
        min_ts_complex=float(sel["min_ts_complex"]),
        min_ts_select=float(sel["min_ts"]),
        residual=bool(res["enabled"]),
        residual_threshold=float(res["threshold"]),
        residual_radius=quantity(res["correlation_radius"], "deg", key="fit.residual.correlation_radius"),
        max_new=int(res["max_new_sources"]),
        new_size=quantity(res["start_size"], "deg", key="fit.residual.start_size"),
        min_separation=quantity(res["min_separation"], "deg", key="fit.residual.min_separation"),
        limits=ShapeLimits(quantity(start["min_size"], "deg", key="group.start.min_size"),
                           quantity(start["max_size"], "deg", key="group.start.max_size"),
                           quantity(start["max_shift"], "deg", key="group.start.max_shift")),
    )


def flux_bands(cfg: Config) -> list[tuple[float, float]]:
    """``fit.bands`` in TeV."""
    return [(quantity(lo, "TeV", key="fit.bands"), quantity(hi, "TeV", key="fit.bands")) for lo, hi in cfg["fit"]["bands"]]


def _read_sky_models(paths: Sequence[str | os.PathLike]) -> list[SkyModel]:
    out: list[SkyModel] = []
    for p in paths:
        out.extend(read_models(p).sky_models)
    return out


def _neighbours(paths, exclude: set[str], center: tuple[float, float], roi_radius: float) -> list[SkyModel]:
    """Sky models of ``paths`` (not in ``exclude``) whose emission can reach the region."""
    out = []
    for m in _read_sky_models(paths):
        if m.name in exclude or m.spatial_model is None:
            continue
        lon, lat = m.spatial_model.position_in("galactic")
        if angular_separation(lon, lat, center[0], center[1]) <= roi_radius + model_r68(m.spatial_model) + _PSF_REACH:
            if m.spatial_model.frame == "galactic":  # continuous longitudes around the group
                m.spatial_model.lon_0.value = float(wrap_lon(m.spatial_model.lon_0.value, center[0]))
            out.append(m)
    return out


def model_shift(old: Sequence[SkyModel], new: Sequence[SkyModel]) -> float:
    """Largest change of a parameter between two versions of a model list, in units of its
    error (the larger of the two; inf when a model appears, vanishes or changes type)."""
    old_by = {m.name: m for m in old}
    new_by = {m.name: m for m in new}
    if set(old_by) != set(new_by):
        return np.inf
    shift = 0.0
    for name, m in new_by.items():
        o = old_by[name]
        if type(o.spatial_model) is not type(m.spatial_model) or type(o.spectral_model) is not type(m.spectral_model):
            return np.inf
        for p, q in zip(o.parameters, m.parameters, strict=True):
            delta = abs(q.value - p.value)
            if delta == 0:
                continue
            err = max(p.error, q.error)
            shift = max(shift, delta / err if err > 0 else np.inf)
    return float(shift)


def _copy_previous(previous: str | os.PathLike, previous_models: str | os.PathLike, *, output, output_models, pass_: int,
                   header: dict) -> None:
    tables = read_group_result(previous)
    for t in tables.values():
        if "Pass" in t.colnames:
            t["Pass"][:] = pass_
    write_group_result(output, sources=tables["SOURCES"], flux_points=tables["FLUX_POINTS"], rejected=tables["REJECTED"],
                       header=header)
    write_group_models(output_models, read_models(previous_models))


def write_group_models(path: str | os.PathLike, models: Models) -> None:
    """Model YAML and its ``<stem>_covariance.dat`` (empty when there is no parameter, so
    that the workflow's outputs do not depend on the fit)."""
    path = Path(path)
    write_models(path, models)
    if not models.parameters:
        write_text_atomic(path.parent / f"{path.stem}_covariance.dat", "")


def _seed_id(name: str) -> int:
    return int(name[1:]) if name.startswith("S") and name[1:].isdigit() else 0


def _rejected_rows(fit: GroupFit, group_id: int, pass_: int) -> list[dict]:
    rows = []
    for r in fit.rejected:
        lon, lat = r.model.spatial_model.position_in("galactic")
        rows.append({"Source_ID": r.model.name, "Seed_ID": _seed_id(r.model.name), "Group_ID": group_id, "Pass": pass_,
                     "Spatial_Model": r.model.spatial_model.tag[0], "Spectral_Model": r.model.spectral_model.tag[0],
                     "GLON": lon % 360.0, "GLAT": lat, "TS": r.ts, "Reason": r.reason})
    return rows


def _check_tile(cfg: Config, tile: str, center: tuple[float, float], radius: float, group_id: int) -> bool:
    """Whether the group's region of interest lies in ``tile``'s full region (core + margin).

    A centre outside the tile's core is an error (the workflow sends each group to the tile
    whose core holds its centre).  A region of interest reaching beyond the full region is
    not: the fit runs on the part the tile holds, with a warning naming ``tiles.margin``,
    and returns False (the caller flags the group's sources ``NEAR_EDGE``).
    """
    grid = cfg.tiles
    if grid is None:
        raise ValueError(f"fit-group --tile {tile}: the survey is not tiled (config key tiles.size)")
    inside = True
    for d in cfg.datasets:
        survey = cfg.survey.geom(d.binsz)
        owner = str(grid.tile_of(survey, *center, "galactic"))
        if owner != tile:
            raise ValueError(f"group {group_id}: its centre {center} is in the core of tile {owner}, not {tile}")
        inside &= grid.roi_inside(survey, tile, *center, radius, frame="galactic")
    if not inside:
        log.warning(
            "group %d: its region of interest (radius %.2f deg at GLON %.3f, GLAT %.3f) leaves the full region of tile %s: "
            "fitted on the part the tile holds, sources flagged NEAR_EDGE; raise config key tiles.margin (now %r) or lower "
            "group.max_members / group.roi_margin", group_id, radius, center[0], center[1], tile, cfg["tiles"]["margin"])
    return inside


def with_footprints(datasets: Sequence[MapDataset], observations: Sequence[str | os.PathLike], center: tuple[float, float],
                    radius: float) -> list[MapDataset]:
    """``datasets`` with the footprints of the observations (files named ``<dataset>_<obs_id>``
    by the reduce stage) whose safe-mask edge — a circle of ``offset_max`` around the pointing,
    read from the file header — passes within ``radius`` deg of ``center`` (galactic); the
    others' masks are constant over the region and need no correction."""
    by_name: dict[str, list[MapDataset]] = {d.name: [] for d in datasets}
    for path in observations:
        header = fits.getheader(path)
        meta = json.loads(header.get("GPSMETA", "{}"))
        name, obs_id = str(header.get("NAME", "")), meta.get("obs_id")
        dataset = name[: -len(f"_{obs_id}")] if name.endswith(f"_{obs_id}") else None
        if dataset not in by_name or meta.get("skipped") or meta.get("pointing") is None:
            continue
        lon, lat, frame = meta["pointing"]
        plon, plat = to_frame(float(lon), float(lat), str(frame), "galactic")
        distance = float(angular_separation(plon, plat, center[0], center[1]))
        offset_max = meta.get("offset_max")
        if offset_max is not None and abs(distance - float(offset_max)) > np.sqrt(2.0) * radius:  # the cutout is a square
            continue
        by_name[dataset].append(read_dataset(path))
    return [attach_footprints(d, by_name[d.name]) for d in datasets]


def run(cfg: Config, *, group_id: int, pass_: int, groups: str | os.PathLike, models: str | os.PathLike,
        neighbours: Sequence[str | os.PathLike], datasets: Sequence[str | os.PathLike], output: str | os.PathLike,
        output_models: str | os.PathLike, previous: str | os.PathLike | None = None,
        previous_neighbours: Sequence[str | os.PathLike] = (), tile: str | None = None,
        observations: Sequence[str | os.PathLike] = ()) -> Table:
    """Fit group ``group_id`` in pass ``pass_`` and write ``output`` / ``output_models``.

    ``models`` is the group's start YAML (pass 1) or its pass p−1 YAML; ``previous`` its
    pass p−1 FITS (pass ≥ 2); ``neighbours`` / ``previous_neighbours`` the other groups'
    YAML files of pass p−1 and p−2 (or the start models).  With ``tile`` (survey tiles),
    ``datasets`` are that tile's; a region of interest that leaves the tile's full region
    is fitted on the part the tile holds, with a warning naming ``tiles.margin``, and its
    sources flagged ``NEAR_EDGE`` (header ``ROI_CLIP``).  ``observations`` are the per-observation
    dataset files: with ``fit.footprints`` those whose safe-mask edge crosses the region of
    interest give the ROI datasets their footprints (:mod:`gpscat.core.footprints`).
    Returns the SOURCES table.
    """
    t0 = time.perf_counter()
    f = cfg["fit"]
    n_passes = int(f["passes"])
    seeds, grp, _ = read_groups(groups)
    rows = grp[grp["Group_ID"] == int(group_id)]
    if len(rows) != 1:
        raise ValueError(f"group {group_id} not in {groups} (groups: {list(grp['Group_ID'])})")
    row = rows[0]
    center = (float(wrap_lon(row["GLON"])), float(row["GLAT"]))
    roi_radius = float(row["ROI_Radius"])
    roi_in_tile = _check_tile(cfg, tile, center, roi_radius, group_id) if tile is not None else True
    members = read_models(models).sky_models
    names = {m.name for m in members}
    nb = _neighbours(neighbours, names, center, roi_radius)
    header = {"GROUP_ID": int(group_id), "PASS": int(pass_), "NPASSES": n_passes, "GPSCAT": "fit"}
    shift = np.nan
    if pass_ >= 2:
        old = _neighbours(previous_neighbours, names, center, roi_radius)
        shift = model_shift(old, nb)
        header["NB_SHIFT"] = (float(min(shift, 1e30)), "max neighbour change since last pass, sigma")
        if previous is not None and shift <= float(f["settle_tolerance"]):
            header["SETTLED"] = True
            _copy_previous(previous, models, output=output, output_models=output_models, pass_=pass_, header=header)
            log.info("group %d pass %d: neighbours settled (max shift %.3g sigma): pass %d result kept", group_id, pass_, shift, pass_ - 1)
            return read_group_result(output)["SOURCES"]
    header["SETTLED"] = False
    header["ROI_CLIP"] = (not roi_in_tile, "region of interest clipped at the tile's full region")
    full = [read_dataset(p) for p in datasets]
    rois = [r for r in (roi_dataset(d, center, roi_radius, pad=_CUTOUT_PAD) for d in full) if r is not None]
    final = None
    if f["footprints"] and observations:
        final = with_footprints(rois, observations, center, roi_radius + _CUTOUT_PAD)
    if f["neighbours"] == "background" and nb:
        rois, final, nb = merge_into_background(rois, nb), (None if final is None else merge_into_background(final, nb)), []
    options = group_options(cfg)
    shells = {str(s["Source_ID"]) for s in seeds if s["Group_ID"] == group_id and str(s["Seed_Type"]).strip() == "shell"}
    log.info("group %d pass %d: %d member(s) %s, %d neighbour source(s), ROI %.2f deg at (%.3f, %.3f) in %s",
             group_id, pass_, len(members), sorted(names), len(nb), row["ROI_Radius"], center[0], center[1], [d.name for d in rois])
    start = [m.copy() for m in members]
    before = {m.name: m for m in start}
    try:
        result = fit_group(rois, members, nb, options=options, center=center, search_radius=float(row["Radius"]),
                           name_prefix=f"G{group_id}", first_pass=pass_ == 1, seeded_shells=shells, final_datasets=final)
    except Exception as exc:  # a failed group must not stop the run
        log.exception("group %d: fit failed", group_id)
        result = GroupFit(Models(start), [m.name for m in start], f"failed: {type(exc).__name__}: {exc}")
    status = result.status
    flags = 0
    if not roi_in_tile:
        flags |= FLAGS["NEAR_EDGE"]
    if status.startswith("failed"):
        flags |= FLAGS["FIT_FAILED"]
    elif not result.ok:
        flags |= FLAGS["NOT_CONVERGED"]
    bands = flux_bands(cfg)
    efl = (min(b[0] for b in bands), max(b[1] for b in bands))
    fl = f["flags"]
    edge = quantity(fl["edge_distance"], "deg", key="fit.flags.edge_distance")
    fp_edges = [quantity(e, "TeV", key="fit.flux_points.energy_edges") for e in f["flux_points"]["energy_edges"]]
    all_models = Models([*result.models, *result.neighbours])
    src_rows, fp_rows = [], []
    for name in result.members:
        model = result.models[name]
        base = {"Source_ID": name, "Seed_ID": _seed_id(name), "Group_ID": int(group_id), "Pass": int(pass_),
                "Origin": "residual" if name in result.added or _seed_id(name) == 0 else "seed", "Fit_Status": status,
                "N_Free": sum(not p.frozen for p in model.parameters)}
        sel = result.selection.get(name)
        if sel is not None:
            base.update({"TS_Ext": sel.ts_ext, "TS_Curvature": sel.ts_curv, "TS_Elongation": sel.ts_elong,
                         "Delta_AIC_Spatial": sel.delta_aic_spatial, "Delta_AIC_Spectral": sel.delta_aic_spectral})
        src_flags = flags | (FLAGS["FROM_RESIDUAL"] if base["Origin"] == "residual" else 0)
        src_flags |= FLAGS["COV_CONDITIONAL"] if name in result.conditional else 0
        if pass_ >= 2 and name in before:
            base["Pass_Shift"] = model_shift([before[name]], [model])
            if pass_ == n_passes and base["Pass_Shift"] > float(fl["settle_sigma"]):
                src_flags |= FLAGS["NOT_SETTLED"]
        try:
            rec = source_record(model, result.models, full, ts=result.ts.get(name, np.nan), ts_datasets=result.ts_datasets.get(name, {}),
                                bands=bands, energy_flux_band=efl, edge_distance=edge, low_exposure=float(fl["low_exposure"]),
                                flags=src_flags)
        except Exception as exc:
            log.warning("source %s: derived quantities failed: %s", name, exc)
            lon, lat = model.spatial_model.position_in("galactic")
            rec = {"GLON": lon % 360.0, "GLAT": lat, "Spatial_Model": model.spatial_model.tag[0],
                   "Spectral_Model": model.spectral_model.tag[0], "Flags": src_flags | FLAGS["FIT_FAILED"]}
        src_rows.append({**base, **rec})
        if rois and not status.startswith("failed"):
            try:
                fp = flux_points(final if final is not None else rois, all_models, name, fp_edges, ul_sigma=float(f["flux_points"]["ul_sigma"]),
                                 min_ts=float(f["flux_points"]["min_ts"]))
                fp_rows += [{"Source_ID": name, **{k: v[i] for k, v in fp.items()}} for i in range(len(fp["e_ref"]))]
            except Exception as exc:
                log.warning("source %s: flux points failed: %s", name, exc)
    dataset_names = [d.name for d in full]
    sources = table_from_rows(source_columns(dataset_names, bands), src_rows)
    fps = table_from_rows(FLUX_POINT_COLUMNS, fp_rows)
    rejected = table_from_rows(REJECTED_COLUMNS, _rejected_rows(result, int(group_id), int(pass_)))
    header.update({"STATUS": status[:68], "NFITS": result.n_fits, "DATASETS": ",".join(dataset_names),
                   "BANDS": ",".join(f"{lo:g}:{hi:g}" for lo, hi in bands), "EFLUXBND": f"{efl[0]:g}:{efl[1]:g}",
                   "ULSIGMA": float(f["flux_points"]["ul_sigma"]), "ULMINTS": float(f["flux_points"]["min_ts"])})
    if result.result is not None and np.isfinite(result.result.total_stat):
        header["STAT"] = (float(result.result.total_stat), "-2 ln L of the final fit (region of interest)")
    write_group_result(output, sources=sources, flux_points=fps, rejected=rejected, header=header)
    kept = Models(result.models[n] for n in result.members)
    params = list(kept.parameters)
    kept.set_covariance(params, result.models.covariance_of(params))
    write_group_models(output_models, kept)
    log.info("group %d pass %d: %s; %d source(s) kept %s, %d rejected, %d fits, %.1f s", group_id, pass_, status, len(sources),
             list(sources["Source_ID"]), len(rejected), result.n_fits, time.perf_counter() - t0)
    for s in sources:
        log.info("  %s: %s + %s at (%.3f, %.3f), TS %.1f, flags %d", s["Source_ID"], s["Spatial_Model"], s["Spectral_Model"],
                 s["GLON"], s["GLAT"], s["TS"], s["Flags"])
    return sources
