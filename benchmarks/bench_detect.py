"""Benchmark: seed detection on a 10°×4° survey mosaic at 0.02° (500 × 200 pixels).

A simulated Poisson sky (2 background counts per pixel, Gaussian PSF of 0.05°) with 24
sources — point-like, Gaussian (0.1–0.3°) and two shells (0.3° and 0.5°) — correlated at
0.1°, 0.2° and 0.4° (Cash significance, :mod:`gpscat.core.significance`), plus three
energy bands for the index.  Timed:

* ``gpscat``: :func:`gpscat.core.seeds.detect_seeds` — peaks in the three maps, merging,
  Hough shells with their profile fits, the shell residual search (shell fits to the
  uncorrelated counts, maps recomputed), moments, likelihood positions of compact seeds,
  nesting, per-seed index fits;
* ``index map``: :func:`gpscat.core.index_map.fit_power_law` over all 100 000 pixels;
* ``gammapy 2.1 find_peaks`` (if installed) on the same three significance maps — peak
  lists only, no merging, shells or seed properties: a floor for what any detection costs.

Usage::

    python benchmarks/bench_detect.py [--repeat 5]

Prints median times; results go to ``docs/benchmarks.md`` (section "Detection").
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from scipy import ndimage

from gpscat.core.convolve import disk_kernel
from gpscat.core.geom import WcsGeom
from gpscat.core.index_map import BandMaps, band_integrals, fit_power_law
from gpscat.core.seeds import DetectParams, SignificanceMaps, detect_seeds
from gpscat.core.shells import _sphere_profiles
from gpscat.core.significance import cash_maps

WIDTH, BINSZ, PSF, BKG = (10.0, 4.0), 0.02, 0.05, 2.0
RADII = (0.1, 0.2, 0.4)
BANDS = (np.array([0.1, 1.0, 10.0]), np.array([1.0, 10.0, 100.0]))


def simulate(rng: np.random.Generator):
    geom = WcsGeom.create((0.0, 0.0), WIDTH, BINSZ)
    lon, lat = geom.get_coord()
    lon = np.where(lon > 180, lon - 360, lon)
    npred = np.zeros((3, *geom.shape))
    for k in range(24):
        l0, b0 = -4.6 + 0.4 * k, rng.uniform(-1.2, 1.2)
        r = np.hypot(lon - l0, lat - b0)
        if k in (6, 17):
            radius = 0.3 if k == 6 else 0.5
            img = np.sqrt(np.clip((1.1 * radius) ** 2 - r**2, 0, None)) - np.sqrt(np.clip(radius**2 - r**2, 0, None))
            img = ndimage.gaussian_filter(img, PSF / BINSZ)
            counts = 5000.0
        else:
            sigma = np.hypot(PSF, (0.0, 0.1, 0.2, 0.3)[k % 4])
            img = np.exp(-0.5 * (r / sigma) ** 2)
            counts = rng.uniform(100, 2000) * (1 + 2 * (k % 4))
        share = band_integrals(np.array(rng.uniform(2.0, 3.0)), *BANDS)[0]
        npred += counts * (share / share.sum())[:, None, None] * (img / img.sum())[None]
    bkg = BKG * np.array([0.8, 0.18, 0.02])[:, None, None] * np.ones(geom.shape)
    counts = rng.poisson(bkg + npred).astype(float)
    exposure = np.full((3, *geom.shape), 1e9)
    maps, bands = [], []
    for rc in RADII:
        k = disk_kernel(rc / BINSZ)
        m = cash_maps(counts.sum(0), bkg.sum(0), kernel=k)
        maps.append(SignificanceMaps("all", rc, geom, m["sqrt_ts"], m["excess"], m["background"], m["counts"],
                                     counts_image=counts.sum(0), background_image=bkg.sum(0)))
        per = [cash_maps(counts[i], bkg[i], kernel=k) for i in range(3)]
        bands.append(BandMaps("all", rc, geom, np.stack([p["counts"] for p in per]), np.stack([p["background"] for p in per]),
                              exposure, *BANDS))
    return maps, bands


def median_time(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    maps, bands = simulate(np.random.default_rng(1))
    ny, nx = maps[0].geom.shape
    print(f"mosaic {nx} x {ny} pixels, radii {RADII} deg, {len(BANDS[0])} energy bands")

    def detect():
        _sphere_profiles.cache_clear()  # a fresh process per run in the workflow
        return detect_seeds(maps, DetectParams(), bands=bands)

    t_det, table = median_time(detect, args.repeat)
    print(f"gpscat detect_seeds: {t_det:.2f} s -> {len(table)} seeds ({int(np.sum(table['Type'] == 'shell'))} shells)")
    b = bands[1]
    t_idx, fit = median_time(lambda: fit_power_law(b.counts, b.background, b.exposure, b.e_lo, b.e_hi), args.repeat)
    print(f"gpscat index map ({nx * ny} pixels): {t_idx:.2f} s, {int(np.isfinite(fit.index).sum())} pixels fitted")
    try:
        from astropy.wcs import WCS
        from gammapy.estimators.utils import find_peaks
        from gammapy.maps import Map as GpMap
    except ImportError:
        print("gammapy not installed: no comparison")
        return
    gp_maps = [GpMap.from_geom(_gp_geom(m.geom, WCS), data=m.sqrt_ts) for m in maps]

    def gp_run():
        return [find_peaks(g, threshold=5.0, min_distance=f"{max(0.1, r)} deg") for g, r in zip(gp_maps, RADII, strict=True)]

    t_gp, peaks = median_time(gp_run, args.repeat)
    print(f"gammapy 2.1 find_peaks (3 maps): {t_gp:.2f} s -> {sum(len(p) for p in peaks)} peaks before merging")


def _gp_geom(geom, wcs_cls):
    from gammapy.maps import WcsGeom as GpWcsGeom

    return GpWcsGeom(wcs=wcs_cls(geom.to_header()), npix=geom.npix)


if __name__ == "__main__":
    main()
