"""Stage ``detect``: seeds from the significance maps of every dataset and correlation radius.

Inputs (written by the significance stage, for dataset ``D`` and radius ``r``):

* ``results/maps/D/significance_r{r:.2f}.fits`` — 2D HDUs ``SQRT_TS``, ``EXCESS``,
  ``BACKGROUND``, ``COUNTS``, ``FLUX``, ``EXPOSURE``; the primary header gives ``DATASET``,
  ``R_CORR`` (deg), ``EMIN``/``EMAX`` (TeV).  Without those keywords the dataset is the
  parent folder name and the radius is parsed from the file name.
* optionally ``results/maps/D/bands_r{r:.2f}.fits`` — the same HDUs with an ``energy``
  axis of energy bands (for the index map and the seeds' ``Index``);
* optionally the stacked datasets ``results/maps/D/dataset.fits`` — only their PSF is read,
  to deconvolve the sizes (``detect.size.psf_sigma`` otherwise).

Outputs: the seed table (``docs/seeds.md``), its DS9 regions, the spectral index map,
the detection exclusion masks (one HDU per dataset, named after it, 1 = usable for the
background as in gammapy) and a PNG of the significance map with the seeds.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from gpscat.config import Config, quantity
from gpscat.core.dataset import MapDataset
from gpscat.core.geom import Map
from gpscat.core.index_map import BandMaps, index_maps
from gpscat.core.seeds import DetectParams, SignificanceMaps, detect_seeds, detection_exclusion
from gpscat.io.atomic import atomic_path
from gpscat.io.dataset import read_dataset
from gpscat.io.maps import map_from_hdulist, write_maps
from gpscat.io.seeds import seed_regions, write_seed_regions, write_seeds

__all__ = ["params_from_config", "psf_sigma", "read_band_maps", "read_significance_maps", "run"]

log = logging.getLogger(__name__)

_RADIUS_RE = re.compile(r"_r(\d+(?:\.\d+)?)\.fits(?:\.gz)?$")
#: a 2D Gaussian holds 68 % of its flux within 1.5096 sigma
_R68_PER_SIGMA = 1.5096


def params_from_config(cfg: Config) -> DetectParams:
    """The ``detect`` config section as :class:`DetectParams` (deg, TeV, sigma)."""
    d = cfg["detect"]
    s, h, i, e = d["size"], d["hough"], d["index_map"], d["exclusion"]

    def deg(value, key):
        return quantity(value, "deg", key=f"detect.{key}")

    return DetectParams(
        threshold=float(d["threshold"]),
        min_separation=deg(d["min_separation"], "min_separation"),
        min_prominence=float(d["min_prominence"]),
        merge_distance=deg(d["merge_distance"], "merge_distance"),
        localise=bool(d["localise"]),
        size_level=float(s["level"]),
        size_max_radius=deg(s["max_radius"], "size.max_radius"),
        psf_sigma=deg(s["psf_sigma"], "size.psf_sigma"),
        extent_factor=float(s["extent_factor"]),
        hough=bool(h["enabled"]),
        hough_radius=deg(h["correlation_radius"], "hough.correlation_radius"),
        shell_r_min=deg(h["radius_min"], "hough.radius_min"),
        shell_r_max=deg(h["radius_max"], "hough.radius_max"),
        edge_level=float(h["edge_level"]),
        canny_sigma=deg(h["canny_sigma"], "hough.canny_sigma"),
        min_score=float(h["min_score"]),
        min_rim_significance=float(h["min_rim_significance"]),
        min_contrast=float(h["min_contrast"]),
        max_interior=float(h["max_interior"]),
        min_coverage=float(h["min_coverage"]),
        faint_shells=bool(h["faint_shells"]),
        shell_residuals=bool(d["shell_residuals"]),
        residual_threshold=float(d["residual_threshold"]),
        min_rim_sqrt_ts=float(h["min_rim_sqrt_ts"]),
        sector_level=float(h["sector_level"]),
        min_sector_coverage=float(h["min_sector_coverage"]),
        max_sector_gap=float(h["max_sector_gap"]),
        max_rim_gap=float(h["max_rim_gap"]),
        min_interior_ratio=float(h["min_interior_ratio"]),
        max_candidates=int(h["max_candidates"]),
        absorb_tolerance=float(h["absorb_tolerance"]),
        index_radius=deg(i["correlation_radius"], "index_map.correlation_radius"),
        e_ref=quantity(i["reference_energy"], "TeV", key="detect.index_map.reference_energy"),
        index_min_ts=float(i["min_ts"]),
        index_init=float(i["index_init"]),
        excl_high=float(e["high"]),
        excl_low=float(e["low"]),
        excl_radius=deg(e["correlation_radius"], "exclusion.correlation_radius"),
        excl_dilate=deg(e["dilate"], "exclusion.dilate"),
        excl_size_factor=float(e["size_factor"]),
    )


def _identify(path: Path, header: fits.Header) -> tuple[str, float]:
    dataset = header.get("DATASET") or path.parent.name
    radius = header.get("R_CORR")
    if radius is None:
        match = _RADIUS_RE.search(path.name)
        if match is None:
            raise ValueError(f"{path}: no R_CORR keyword and no '_r<radius>.fits' in the file name")
        radius = float(match.group(1))
    return str(dataset), float(radius)


def read_significance_maps(path: str | os.PathLike) -> tuple[SignificanceMaps, tuple[float, float] | None]:
    """One significance file → (:class:`SignificanceMaps`, (EMIN, EMAX) TeV or ``None``)."""
    path = Path(path)
    with fits.open(path, memmap=False) as hl:
        dataset, radius = _identify(path, hl[0].header)
        names = {h.name for h in hl}
        if "SQRT_TS" not in names:
            raise ValueError(f"{path}: no SQRT_TS HDU (have {sorted(names)})")
        get = {k: (map_from_hdulist(hl, k) if k in names else None) for k in ("SQRT_TS", "EXCESS", "BACKGROUND", "COUNTS", "FLUX", "EXPOSURE", "COUNTS_IMAGE", "BACKGROUND_IMAGE")}
        h0 = hl[0].header
        erange = (float(h0["EMIN"]), float(h0["EMAX"])) if "EMIN" in h0 and "EMAX" in h0 else None
        sampling = str(h0.get("KSAMPL", "fraction"))
    sig = get["SQRT_TS"]
    if sig.data.ndim != 2:
        raise ValueError(f"{path}: SQRT_TS must be a 2D image, got shape {sig.data.shape}")

    def arr(k):
        return None if get[k] is None else np.asarray(get[k].data, dtype=float)

    maps = SignificanceMaps(dataset, radius, sig.geom, np.asarray(sig.data, dtype=float), arr("EXCESS"), arr("BACKGROUND"),
                            arr("COUNTS"), arr("FLUX"), arr("EXPOSURE"), arr("COUNTS_IMAGE"), arr("BACKGROUND_IMAGE"), sampling)
    return maps, erange


def read_band_maps(path: str | os.PathLike) -> BandMaps:
    """One band file → :class:`BandMaps` (COUNTS, BACKGROUND, EXPOSURE with an energy axis)."""
    path = Path(path)
    with fits.open(path, memmap=False) as hl:
        dataset, radius = _identify(path, hl[0].header)
        m = {k: map_from_hdulist(hl, k) for k in ("COUNTS", "BACKGROUND", "EXPOSURE")}
    axis = m["COUNTS"].axis("energy")
    return BandMaps(dataset, radius, m["COUNTS"].geom, *(np.asarray(m[k].data, dtype=float) for k in ("COUNTS", "BACKGROUND", "EXPOSURE")),
                    e_lo=np.asarray(axis.lo), e_hi=np.asarray(axis.hi))


def psf_sigma(dataset: MapDataset, *, index: float = 2.5) -> float | None:
    """Gaussian-equivalent PSF sigma (deg) of a dataset: its 68 % containment / 1.51.

    The PSF profiles are averaged over the coarse pixels with PSF exposure and over true
    energy weighted by the exposure times a power law of ``index``.
    """
    if dataset.psf is None:
        return None
    rad = dataset.psf.axis("rad")
    etrue = dataset.psf.axis("energy_true")
    psf = np.nan_to_num(np.asarray(dataset.psf.data, dtype=float))  # (ne, nrad, ny, nx)
    if dataset.psf_exposure is not None:
        w_pix = np.nan_to_num(np.asarray(dataset.psf_exposure.data, dtype=float)).reshape(etrue.nbin, -1)
    else:
        w_pix = np.ones((etrue.nbin, psf.shape[-1] * psf.shape[-2]))
    w = w_pix * (etrue.center ** -index * etrue.width)[:, None]
    if not w.sum() > 0:
        return None
    prof = np.einsum("erp,ep->r", psf.reshape(etrue.nbin, rad.nbin, -1), w) / w.sum()
    theta = np.radians(rad.center)
    cum = np.cumsum(prof * 2 * np.pi * theta * np.radians(rad.width))
    if not cum[-1] > 0:
        return None
    r68 = float(np.interp(0.68 * cum[-1], cum, rad.hi))
    return r68 / _R68_PER_SIGMA


def run(
    cfg: Config,
    *,
    significance_files: Sequence[str | os.PathLike],
    band_files: Sequence[str | os.PathLike] = (),
    datasets: Sequence[str | os.PathLike] = (),
    seeds: str | os.PathLike,
    regions: str | os.PathLike,
    index_map: str | os.PathLike,
    exclusion: str | os.PathLike,
    plot: str | os.PathLike | None = None,
) -> Table:
    """Detect seeds and write the stage's products.

    Parameters
    ----------
    cfg : Config
        Reads ``detect`` (and the datasets' energy ranges as a fallback).
    significance_files : sequence of paths
        ``significance_r*.fits`` of every dataset and radius to search.
    band_files : sequence of paths
        ``bands_r*.fits`` (may be empty: then ``Index`` is NaN and the index map is empty).
    datasets : sequence of paths
        Stacked ``dataset.fits`` files (PSF for the size deconvolution; may be empty).
    seeds, regions, index_map, exclusion, plot : paths
        ``seeds_detected.fits``, ``seeds_detected.reg``, ``index_map.fits``,
        ``detection_exclusion.fits``, ``seeds_detected.png`` (``None``: no plot).

    Returns
    -------
    astropy.table.Table
        The seeds written.
    """
    params = params_from_config(cfg)
    d = cfg["detect"]
    wanted_r = [quantity(r, "deg", key=f"detect.correlation_radii[{i}]") for i, r in enumerate(d["correlation_radii"])]
    wanted_d = set(d["datasets"])
    maps, ranges = [], {}
    for path in significance_files:
        m, erange = read_significance_maps(path)
        if (wanted_d and m.dataset not in wanted_d) or (wanted_r and not np.any(np.isclose(wanted_r, m.radius, atol=1e-4))):
            continue
        maps.append(m)
        if erange is not None:
            ranges[m.dataset] = erange
    if not maps:
        raise ValueError(f"no significance map left to search among {list(map(str, significance_files))}")
    for name in {m.dataset for m in maps} - set(ranges):
        try:
            e = cfg.dataset(name).energy
            ranges[name] = (e.min, e.max)
        except ValueError:
            pass
    bands = [read_band_maps(p) for p in band_files]
    bands = [b for b in bands if not wanted_d or b.dataset in wanted_d]
    psf = {}
    for path in datasets:
        ds = read_dataset(path)
        sigma = psf_sigma(ds)
        name = ds.name or Path(path).parent.name
        if sigma is not None:
            psf[name] = sigma
            log.info("dataset %s: PSF sigma %.3f deg", name, sigma)

    table = detect_seeds(maps, params, psf_sigma=psf, bands=bands, energy_ranges=ranges)
    header = {"THRESH": params.threshold, "GPSCAT": "detect"}
    write_seeds(seeds, table, header=header)
    write_seed_regions(regions, table)
    log.info("wrote %d seeds to %s and %s", len(table), seeds, regions)

    idx = None
    if d["index_map"]["enabled"]:
        idx = index_maps(bands, radius=params.index_radius, e_ref=params.e_ref, index_init=params.index_init, min_ts=params.index_min_ts)
    if idx is None:
        log.warning("no index map: no band maps (set significance.energy_bands) or index_map disabled; writing NaN")
        ref = min(maps, key=lambda m: (m.geom.binsz, abs(m.radius - params.index_radius)))
        idx = {"INDEX": Map(ref.geom, np.full(ref.geom.shape, np.nan)), "INDEX_ERR": Map(ref.geom, np.full(ref.geom.shape, np.nan))}
    write_maps(index_map, idx, header={"E_REF": params.e_ref})

    masks = detection_exclusion(maps, table, params)
    write_maps(exclusion, {name.upper(): m for name, m in masks.items()}, header={"EXCLCONV": "1 = usable (not excluded)"})
    if plot is not None:
        plot_seeds(plot, maps, table)
    return table


def plot_seeds(path: str | os.PathLike, maps: Sequence[SignificanceMaps], table: Table) -> None:
    """PNG of the finest significance map (smallest pixels, then radius) with the seeds."""
    m = min(maps, key=lambda x: (x.geom.binsz, x.radius))
    ny, nx = m.geom.shape
    fig = Figure(figsize=(10, max(3.0, 8.5 * ny / nx + 1.0)))
    ax = fig.add_subplot(projection=m.geom.wcs)
    top = max(5.0, float(np.nanmax(m.sqrt_ts, initial=5.0)))
    im = ax.imshow(m.sqrt_ts, origin="lower", cmap="RdBu_r", norm=TwoSlopeNorm(vmin=-5.0, vcenter=0.0, vmax=top), interpolation="nearest")
    fig.colorbar(im, ax=ax, label="significance", shrink=0.8, pad=0.02)
    ax.coords[0].set_axislabel("GLON" if m.geom.frame == "galactic" else "RA")
    ax.coords[1].set_axislabel("GLAT" if m.geom.frame == "galactic" else "Dec")
    for reg in seed_regions(table, frame=m.geom.frame):
        pix = reg.to_pixel(m.geom.wcs)
        pix.plot(ax=ax, edgecolor=reg.visual.get("color", "green"), facecolor="none", lw=1)
        ax.text(pix.center.x, pix.center.y, reg.meta.get("text", ""), color="k", fontsize=7, ha="center", va="center")
    ax.set_title(f"{m.dataset}, r = {m.radius:.2f} deg: {len(table)} seeds")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
