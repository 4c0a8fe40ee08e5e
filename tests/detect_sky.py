"""Synthetic Poisson skies with injected sources for the detection tests (known truth).

Pixel-space sources on a background of constant rate, folded with a Gaussian PSF, Poisson
counts, and correlated significance maps through the maps helpers (``gpscat.core.convolve``
and ``gpscat.core.stats``), as the significance stage makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from gpscat.core.convolve import correlate, disk_kernel
from gpscat.core.dataset import MapDataset
from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.core.index_map import band_integrals
from gpscat.core.seeds import SignificanceMaps
from gpscat.core.stats import cash_significance

__all__ = [
    "Sky",
    "expected_significance",
    "make_dataset",
    "make_sky",
    "shell_profile",
    "significance_maps",
    "source_image",
    "source_norm",
]


def shell_profile(r: np.ndarray, radius: float, width: float) -> np.ndarray:
    """Projected surface brightness of a uniform spherical shell (inner radius, width), unnormalised."""
    r_out = radius + width
    outer = np.sqrt(np.clip(r_out**2 - r**2, 0, None))
    inner = np.sqrt(np.clip(radius**2 - r**2, 0, None))
    return outer - inner


@dataclass
class Sky:
    geom: WcsGeom
    counts: np.ndarray
    background: np.ndarray
    npred: np.ndarray  # expected source counts per pixel
    sources: list[dict] = field(default_factory=list)

    def correlated(self, radius_deg: float, *, expected: bool = False):
        """(significance, excess, counts, background) correlated in a disk of ``radius_deg``."""
        k = disk_kernel(radius_deg / self.geom.binsz)
        n = self.background + self.npred if expected else self.counts
        n_r = correlate(n, k)
        b_r = correlate(self.background, k)
        return cash_significance(n_r, b_r), n_r - b_r, n_r, b_r


def source_image(geom: WcsGeom, source: dict, psf_sigma: float) -> np.ndarray:
    """Spatial template of a source on ``geom`` folded with a Gaussian PSF, sum 1.

    ``source``: ``lon``, ``lat`` (deg) and ``type``: ``point``; ``gauss`` with ``sigma``
    (deg); ``shell`` with ``radius`` and ``width`` (deg; a projected uniform shell).
    """
    lon, lat = geom.get_coord()
    lon = np.where(lon > 180, lon - 360, lon)
    r = np.hypot(lon - source["lon"], lat - source["lat"])
    if source["type"] in ("point", "gauss"):
        sig = np.hypot(psf_sigma, source.get("sigma", 0.0))
        img = np.exp(-0.5 * (r / sig) ** 2)
    elif source["type"] == "shell":
        img = ndimage.gaussian_filter(shell_profile(r, source["radius"], source["width"]), psf_sigma / geom.binsz)
    else:
        raise ValueError(f"unknown source type {source['type']!r}")
    return img / img.sum()


def make_sky(
    rng: np.random.Generator,
    *,
    width=(4.0, 4.0),
    binsz: float = 0.02,
    bkg_rate: float = 2.0,
    psf_sigma: float = 0.05,
    sources: list[dict] = (),
) -> Sky:
    """Poisson sky on a galactic CAR grid centred on (0, 0); ``counts`` (expected total)
    per source, templates from :func:`source_image`."""
    geom = WcsGeom.create((0.0, 0.0), width, binsz)
    npred = np.zeros(geom.shape)
    for s in sources:
        npred += s["counts"] * source_image(geom, s, psf_sigma)
    background = np.full(geom.shape, float(bkg_rate))
    counts = rng.poisson(background + npred).astype(float)
    return Sky(geom, counts, background, npred, list(sources))


def make_dataset(
    rng: np.random.Generator,
    *,
    name: str = "all",
    width=(3.0, 3.0),
    binsz: float = 0.02,
    energy_edges=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
    bkg_rate: float = 2.0,
    bkg_index: float = 2.7,
    exposure: float = 1e9,
    psf_sigma: float = 0.05,
    sources: list[dict] = (),
) -> MapDataset:
    """A stacked MapDataset (counts, background, exposure, safe mask) with power-law sources.

    Each source has ``counts`` (expected total over the energy range) and ``index``;
    the background (``bkg_rate`` counts per pixel in total) has a power-law spectrum of
    ``bkg_index``; the exposure is flat (m² s), reco = true energy, no PSF map.
    """
    geom = WcsGeom.create((0.0, 0.0), width, binsz)
    edges = np.asarray(energy_edges, dtype=float)
    axis = MapAxis("energy", edges, "TeV", "log")
    axis_true = MapAxis("energy_true", edges, "TeV", "log")
    lo, hi = edges[:-1], edges[1:]
    share_b = band_integrals(np.array(bkg_index), lo, hi)[0]
    background = bkg_rate * (share_b / share_b.sum())[:, None, None] * np.ones(geom.shape)
    npred = np.zeros((lo.size, *geom.shape))
    for s in sources:
        share = band_integrals(np.array(s.get("index", 2.5)), lo, hi)[0]
        npred += s["counts"] * (share / share.sum())[:, None, None] * source_image(geom, s, psf_sigma)[None]
    counts = rng.poisson(background + npred).astype(float)
    return MapDataset(
        name,
        counts=Map(geom, counts, (axis,)),
        exposure=Map(geom, np.full((lo.size, *geom.shape), float(exposure)), (axis_true,), "m2 s"),
        background=Map(geom, background, (axis,)),
        mask_safe=Map(geom, np.ones(counts.shape, bool), (axis,)),
        meta={"obs_ids": [], "livetime": 3600.0},
    )


def source_norm(source: dict, dataset: MapDataset) -> float:
    """Differential flux at 1 TeV (cm-2 s-1 TeV-1) that gives the source its ``counts``."""
    edges = dataset.counts.axis("energy").edges
    total = band_integrals(np.array(source.get("index", 2.5)), edges[:-1], edges[1:])[0].sum()
    return source["counts"] / (1e4 * float(dataset.exposure.data.flat[0]) * total)


def expected_significance(sky: Sky, source: dict, radii) -> float:
    """Highest noise-free significance at the source position over the correlation radii."""
    ix, iy, _ = sky.geom.coord_to_idx(source["lon"] % 360.0, source["lat"])
    best = -np.inf
    for r in radii:
        sig, *_ = sky.correlated(r, expected=True)
        best = max(best, float(sig[iy, ix]))
    return best


def significance_maps(sky: Sky, radii, *, dataset: str = "all"):
    """:class:`gpscat.core.seeds.SignificanceMaps` of a sky at several radii (counts realisation),
    with the uncorrelated counts and background images as the significance stage writes them."""
    out = []
    for r in radii:
        sig, exc, n, b = sky.correlated(r)
        out.append(SignificanceMaps(dataset, r, sky.geom, sig, exc, b, n, counts_image=sky.counts, background_image=sky.background))
    return out
