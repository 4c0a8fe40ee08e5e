"""Stage ``significance``: correlated significance, excess and flux maps of one dataset.

Input: ``results/maps/<dataset>/dataset.fits`` (a MapDataset with a normalised background:
Cash statistic) or ``results/maps/<dataset>/onoff.fits`` (ring ON/OFF maps: WStat, Li & Ma
eq. 17).  The kind is read from the file (an HDU ``COUNTS_OFF`` means ON/OFF).

Outputs in ``output_dir``, for every correlation radius ``r`` (deg) of
``significance.correlation_radii`` (see :func:`output_paths`):

* ``significance_r{r:.2f}.fits`` — 2D maps over the dataset's whole energy range (the
  reco bins summed inside the safe mask): ``SQRT_TS`` (signed significance), ``EXCESS``,
  ``EXCESS_ERR`` (symmetric), ``BACKGROUND`` and ``COUNTS`` (correlated: within ``r`` of each
  pixel), ``FLUX`` and ``FLUX_ERR`` (cm⁻² s⁻¹, integral over the energy range, from the
  excess and the mean exposure within ``r`` weighted for a power law of index
  ``significance.spectral_index``, default 2, treating reco as true energy) and
  ``EXPOSURE`` (that mean weighted exposure, m² s); and, not correlated, ``COUNTS_IMAGE``
  and ``BACKGROUND_IMAGE`` (the same in every radius file: the detect stage fits compact
  seeds' positions to them).  NaN outside the safe mask.
* ``bands_r{r:.2f}.fits`` — the same HDUs with an energy axis of the
  ``significance.energy_bands`` (when set; the bands are snapped to the dataset's reco bin
  edges and must be contiguous).
* ``significance_r{r:.2f}.png`` / ``bands_r{r:.2f}.png`` — quick-looks (``significance.quicklook``).

The top-hat kernel samples the disk exactly at the pixel edges (fractional pixels, counts
then treated as effective Poisson counts, see :mod:`gpscat.core.significance`);
``significance.kernel_sampling: center`` gives gammapy's 0/1 kernel.  With ON/OFF input
the OFF counts are used as the ring gave them, not correlated again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from gpscat.config import Config, ConfigError, quantity
from gpscat.core.convolve import disk_kernel
from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.core.ring import OnOffStack, alpha_map
from gpscat.core.significance import cash_maps, flux_maps, reco_exposure, wstat_maps
from gpscat.io.atomic import atomic_path
from gpscat.io.maps import map_from_hdulist, write_maps
from gpscat.products import correlation_radii, output_paths

__all__ = ["band_slices", "output_paths", "run", "significance_images"]

log = logging.getLogger(__name__)

#: HDU name → (key in the computed maps, unit)
HDUS = {
    "sqrt_ts": ("sqrt_ts", ""),
    "excess": ("excess", ""),
    "excess_err": ("excess_error", ""),
    "background": ("background", ""),
    "counts": ("counts", ""),
    "flux": ("flux", "cm-2 s-1"),
    "flux_err": ("flux_error", "cm-2 s-1"),
    "exposure": ("exposure", "m2 s"),
}


def band_slices(energy_edges: np.ndarray, bands) -> list[slice]:
    """Reco-bin slices of each ``(emin, emax)`` band: the bins whose log-centre is inside.

    Bands outside the dataset's reco-energy range are skipped (one list of bands serves
    several datasets, e.g. sub-TeV and post-TeV); at least one must fall inside.  The bands
    kept must be increasing, non-overlapping and contiguous after snapping, so that their
    edges form one energy axis.
    """
    e = np.asarray(energy_edges, dtype=float)
    centers = np.sqrt(e[:-1] * e[1:])
    out = []
    for i, (lo, hi) in enumerate(bands):
        idx = np.nonzero((centers >= lo) & (centers < hi))[0]
        if idx.size == 0:
            log.info("energy band %d [%g, %g] TeV: no reco bin of this dataset, skipped", i, lo, hi)
            continue
        sl = slice(int(idx[0]), int(idx[-1]) + 1)
        if not (np.isclose(e[sl.start], lo, rtol=0.01) and np.isclose(e[sl.stop], hi, rtol=0.01)):
            log.info("energy band %d [%g, %g] TeV snapped to [%g, %g] TeV", i, lo, hi, e[sl.start], e[sl.stop])
        if out and sl.start != out[-1].stop:
            raise ConfigError(
                f"config key significance.energy_bands: bands must be contiguous and increasing; band {i} starts at "
                f"{e[sl.start]:g} TeV, the previous one ends at {e[out[-1].stop]:g} TeV"
            )
        out.append(sl)
    if not out:
        raise ConfigError(
            f"config key significance.energy_bands: no band overlaps the reco-energy bins {e.round(4).tolist()} TeV"
        )
    return out


def _read_input(path: Path) -> dict:
    """Arrays of a dataset or ON/OFF file: counts, mask, exposure, edges and the background.

    Only the HDUs needed are read (not the PSF / energy-dispersion kernels).
    """
    try:
        with fits.open(path, memmap=False) as hl:
            names = {h.name for h in hl}
            onoff = "COUNTS_OFF" in names
            needed = ("COUNTS", "COUNTS_OFF", "ACCEPTANCE", "ACCEPTANCE_OFF") if onoff else ("COUNTS", "BACKGROUND")
            missing = [n for n in needed if n not in names]
            if missing:
                kind = "ON/OFF file" if onoff else "dataset"
                raise ValueError(f"{path}: {kind} lacks HDU(s) {missing} needed for significance maps")
            maps = {n.lower(): map_from_hdulist(hl, n) for n in (*needed, "MASK_SAFE", "EXPOSURE") if n in names}
    except OSError as exc:
        raise OSError(f"{path}: cannot read the significance input: {exc}") from exc
    counts = maps["counts"]
    data = {n.lower(): maps[n.lower()].data.astype(float) for n in needed}
    mask = maps["mask_safe"].data.astype(bool) if "mask_safe" in maps else np.ones(counts.data.shape, bool)
    return {
        "kind": "wstat" if onoff else "cash",
        "geom": counts.geom,
        "energy_axis": counts.axis("energy"),
        "data": data,
        "mask": mask,
        "exposure": maps.get("exposure"),
    }


def _sum_bins(inp: dict, sl: slice) -> tuple[dict, np.ndarray]:
    """Energy-summed images of the bins ``sl`` (inside the safe mask) and the image mask."""
    d, m = inp["data"], inp["mask"][sl]
    if inp["kind"] == "cash":
        images = {k: np.where(m, d[k][sl], 0.0).sum(axis=0) for k in ("counts", "background")}
    else:  # alpha of the sum: Σ alpha_e n_off_e / Σ n_off_e, as gammapy resamples ON/OFF datasets
        stack = OnOffStack((1, *m.shape[1:]))
        for i in range(m.shape[0]):
            planes = [d[k][sl][i][None] for k in ("counts", "counts_off", "acceptance", "acceptance_off")]
            stack.add(*planes, m[i][None])
        images = {k: v[0] for k, v in stack.result().items() if k != "mask"}
    return images, m.any(axis=0)


def significance_images(inp: dict, sl: slice, *, kernel: np.ndarray, index: float) -> dict[str, np.ndarray]:
    """All 2D maps (see :data:`HDUS`) for the reco bins ``sl`` of an input read by :func:`_read_input`."""
    images, mask = _sum_bins(inp, sl)
    if inp["kind"] == "cash":
        out = cash_maps(images["counts"], images["background"], kernel=kernel, mask=mask)
    else:
        out = wstat_maps(
            images["counts"], images["counts_off"], images["acceptance"], images["acceptance_off"], kernel=kernel, mask=mask
        )
    edges = inp["energy_axis"].edges
    exposure = inp["exposure"]
    if exposure is not None:
        exp_reco = reco_exposure(exposure.data, edges, exposure.axis("energy_true").edges, index=index, mask=inp["mask"])
        out.update(flux_maps(out["excess"], out["excess_error"], exp_reco[sl], edges[sl.start : sl.stop + 1], kernel=kernel, index=index, mask=mask))
    else:
        nan = np.full(mask.shape, np.nan)
        out.update(flux=nan, flux_error=nan, exposure=nan)
    return out


def _to_maps(per_band: list[dict], geom: WcsGeom, axis: MapAxis | None) -> dict[str, Map]:
    maps = {}
    for hdu, (key, unit) in HDUS.items():
        data = np.stack([b[key] for b in per_band]) if axis is not None else per_band[0][key]
        maps[hdu] = Map(geom, data.astype(np.float32), (axis,) if axis is not None else (), unit)
    return maps


def run(cfg: Config, *, dataset: str, input: str | os.PathLike, output_dir: str | os.PathLike) -> list[Path]:
    """Compute and write the significance maps of ``dataset`` for every correlation radius.

    Parameters
    ----------
    cfg : Config
        Reads the ``significance`` section.
    dataset : str
        Dataset name (headers, logs).
    input : path
        ``results/maps/<dataset>/dataset.fits`` (Cash) or ``onoff.fits`` (WStat).
    output_dir : path
        ``results/maps/<dataset>``; file names as in :func:`output_paths`.

    Returns
    -------
    list of Path
        The files written.
    """
    path = Path(input)
    inp = _read_input(path)
    geom, axis = inp["geom"], inp["energy_axis"]
    sig_cfg = cfg["significance"]
    index = float(sig_cfg["spectral_index"])
    bands = [
        (quantity(lo, "TeV", key=f"significance.energy_bands[{i}][0]"), quantity(hi, "TeV", key=f"significance.energy_bands[{i}][1]"))
        for i, (lo, hi) in enumerate(sig_cfg["energy_bands"])
    ]
    if bands and inp["kind"] == "wstat" and axis.nbin == 1:
        raise ConfigError(
            "config key significance.energy_bands: the ring ON/OFF file has one energy bin; set "
            "background.ring.per_energy_bin: true for band maps with the ring method"
        )
    band_sl = band_slices(axis.edges, bands) if bands else []
    full = slice(0, axis.nbin)
    images, image_mask = _sum_bins(inp, full)
    background = images["background"] if inp["kind"] == "cash" else alpha_map(images["acceptance"], images["acceptance_off"]) * images["counts_off"]
    log.info("%s (%s): %.0f counts, background %.1f, excess %.1f in the safe mask", dataset, inp["kind"],
             images["counts"][image_mask].sum(), background[image_mask].sum(), (images["counts"] - background)[image_mask].sum())
    plain = {
        "counts_image": Map(geom, np.where(image_mask, images["counts"], np.nan).astype(np.float32), (), ""),
        "background_image": Map(geom, np.where(image_mask, background, np.nan).astype(np.float32), (), ""),
    }
    written: list[Path] = []
    folder = Path(output_dir)
    for r in correlation_radii(cfg):
        kernel = disk_kernel(r / geom.binsz, sampling=sig_cfg["kernel_sampling"])
        header = {"DATASET": dataset, "STAT": inp["kind"], "R_CORR": (r, "correlation radius, deg"),
                  "EMIN": axis.edges[0], "EMAX": axis.edges[-1], "PL_INDEX": index,
                  "KSAMPL": sig_cfg["kernel_sampling"]}
        maps = _to_maps([significance_images(inp, full, kernel=kernel, index=index)], geom, None)
        target = folder / f"significance_r{r:.2f}.fits"
        write_maps(target, maps | plain, header=header)
        written.append(target)
        peak = np.nanmax(maps["sqrt_ts"].data) if np.isfinite(maps["sqrt_ts"].data).any() else np.nan
        log.info("%s r=%.2f deg (%s): max significance %.2f", dataset, r, inp["kind"], peak)
        if sig_cfg["quicklook"]:
            written.append(_quicklook(target.with_suffix(".png"), maps, title=f"{dataset}: r = {r:.2f} deg ({inp['kind']})"))
        if band_sl:
            edges = np.array([axis.edges[s.start] for s in band_sl] + [axis.edges[band_sl[-1].stop]])
            band_axis = MapAxis("energy", edges, axis.unit or "TeV", "log")
            per_band = [significance_images(inp, s, kernel=kernel, index=index) for s in band_sl]
            bmaps = _to_maps(per_band, geom, band_axis)
            btarget = folder / f"bands_r{r:.2f}.fits"
            write_maps(btarget, bmaps, header=header)
            written.append(btarget)
            if sig_cfg["quicklook"]:
                written.append(_quicklook_bands(btarget.with_suffix(".png"), bmaps, band_axis, title=f"{dataset}: r = {r:.2f} deg"))
    return written


# ----------------------------------------------------------------------- quick-looks


def _panel(fig: Figure, pos: tuple[int, int, int], m: Map, data: np.ndarray, label: str, *, significance: bool):
    ax = fig.add_subplot(*pos, projection=m.geom.wcs)
    finite = data[np.isfinite(data)]
    if significance:  # diverging scale: noise within ±5, sources saturate above 15 sigma
        top = float(np.clip(finite.max(), 8.0, 15.0)) if finite.size else 8.0
        norm = TwoSlopeNorm(vmin=-5.0, vcenter=0.0, vmax=top)
        im = ax.imshow(data, origin="lower", cmap="RdBu_r", norm=norm, interpolation="nearest")
    else:
        lo, hi = np.nanpercentile(finite, [0.5, 99.9]) if finite.size else (0.0, 1.0)
        im = ax.imshow(data, origin="lower", cmap="viridis", vmin=lo, vmax=max(hi, lo + 1e-30), interpolation="nearest")
    ax.coords[0].set_axislabel("GLON" if m.geom.frame == "galactic" else "RA")
    ax.coords[1].set_axislabel("GLAT" if m.geom.frame == "galactic" else "Dec")
    fig.colorbar(im, ax=ax, label=label, shrink=0.8, pad=0.02)
    return ax


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _quicklook(path: Path, maps: dict[str, Map], *, title: str) -> Path:
    ny, nx = maps["sqrt_ts"].geom.shape
    fig = Figure(figsize=(min(16, 3 + 9 * nx / max(nx, ny)), 4.5), layout="constrained")
    ax = _panel(fig, (1, 2, 1), maps["sqrt_ts"], maps["sqrt_ts"].data, "significance (σ)", significance=True)
    sig = np.nan_to_num(maps["sqrt_ts"].data, nan=0.0)
    if (sig >= 5).any():
        ax.contour(sig, levels=[5.0], colors="k", linewidths=0.6)
    use_flux = np.isfinite(maps["flux"].data).any()
    key, label = ("flux", "flux (cm⁻² s⁻¹)") if use_flux else ("excess", "excess counts")
    _panel(fig, (1, 2, 2), maps[key], maps[key].data, label, significance=False)
    fig.suptitle(title)
    return _save(fig, path)


def _quicklook_bands(path: Path, maps: dict[str, Map], axis: MapAxis, *, title: str) -> Path:
    n = axis.nbin
    fig = Figure(figsize=(4.5 * n, 4.5), layout="constrained")
    for i in range(n):
        _panel(fig, (1, n, i + 1), maps["sqrt_ts"], maps["sqrt_ts"].data[i],
               f"significance {axis.lo[i]:.3g}–{axis.hi[i]:.3g} TeV", significance=True)
    fig.suptitle(title)
    return _save(fig, path)
