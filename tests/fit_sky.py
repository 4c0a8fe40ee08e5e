"""Synthetic datasets with known IRFs for the model, prediction and fit tests.

A small galactic field with a realistic shape of the response: exposure falling off with
offset from the pointing (Gaussian acceptance, 2° sigma), a PSF that is a core Gaussian
plus a 20% wider tail whose width shrinks with energy (like an IACT PSF), an optional
log-normal energy dispersion (10% resolution), and a flat background rate.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.special import ndtr

from gpscat.core.dataset import MapDataset
from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.core.npred import DatasetEvaluator

__all__ = ["make_dataset", "psf_sigma", "simulate"]


def psf_sigma(energy):
    """Core Gaussian sigma (deg) of the synthetic PSF: 0.08° at 0.1 TeV down to ~0.035°."""
    return 0.035 + 0.045 * (np.asarray(energy) / 0.1) ** -0.5


def _psf_map(geom: WcsGeom, etrue: MapAxis) -> Map:
    coarse = WcsGeom.create(geom.center_coord, geom.width, max(geom.width) / 4, frame=geom.frame)
    rad = MapAxis.from_edges(np.arange(0, 0.81, 0.01), name="rad", unit="deg")
    r = np.radians(rad.center)[None, :]
    s1 = np.radians(psf_sigma(etrue.center))[:, None]
    s2 = 2.0 * s1
    prof = 0.8 * np.exp(-0.5 * (r / s1) ** 2) / (2 * np.pi * s1**2) + 0.2 * np.exp(-0.5 * (r / s2) ** 2) / (2 * np.pi * s2**2)
    data = np.broadcast_to(prof[:, :, None, None], (etrue.nbin, rad.nbin) + coarse.shape).copy()
    return Map(coarse, data, (rad, etrue), "sr-1")


def _edisp_map(geom: WcsGeom, ereco: MapAxis, etrue: MapAxis, resolution: float) -> Map:
    coarse = WcsGeom.create(geom.center_coord, geom.width, max(geom.width) / 2, frame=geom.frame)
    mu = np.log(etrue.center)[:, None]
    z = (np.log(ereco.edges)[None, :] - mu) / resolution
    prob = np.diff(ndtr(z), axis=1)  # (n_true, n_reco)
    data = np.broadcast_to(prob[:, :, None, None], prob.shape + coarse.shape).copy()
    return Map(coarse, data, (ereco, etrue), "")


def make_dataset(
    *,
    npix: int = 40,
    binsz: float = 0.02,
    center: tuple[float, float] = (0.0, 0.0),
    ereco=(0.3, 10.0),
    nreco: int = 1,
    etrue=None,
    ntrue: int | None = None,
    exposure: float = 3e10,
    background: float = 2.0,
    edisp: bool = True,
    pointing_offset: tuple[float, float] = (0.7, 0.3),
    name: str = "sim",
) -> MapDataset:
    """A dataset with zero counts (see :func:`simulate`).

    ``exposure`` (m² s) is the value at the pointing, ``background`` the counts per pixel
    and reco bin (flat).  Without ``edisp`` the true and reco axes are the same.
    """
    geom = WcsGeom.create(center, npix * binsz, binsz, frame="galactic")
    ax_reco = MapAxis.from_energy_bounds(*ereco, nbin=nreco)
    if edisp:
        lo, hi = etrue if etrue is not None else (ereco[0] / 2, ereco[1] * 2)
        ax_true = MapAxis.from_energy_bounds(lo, hi, nbin=ntrue or max(4 * nreco, 8), name="energy_true")
    else:
        ax_true = replace(ax_reco, name="energy_true")
    lon, lat = geom.get_coord()
    lon = (lon + 180.0) % 360.0 - 180.0
    off2 = (lon - center[0] - pointing_offset[0]) ** 2 + (lat - center[1] - pointing_offset[1]) ** 2
    acc = np.exp(-0.5 * off2 / 2.0**2)
    spectrum_shape = (ax_true.center / 1.0) ** 0.3 / (1 + (0.2 / ax_true.center) ** 2)
    expo = Map(geom, exposure * spectrum_shape[:, None, None] * acc, (ax_true,), "m2 s")
    bkg = Map(geom, np.full((ax_reco.nbin,) + geom.shape, background) * acc, (ax_reco,), "")
    counts = Map(geom, np.zeros((ax_reco.nbin,) + geom.shape), (ax_reco,), "")
    mask = Map(geom, np.ones((ax_reco.nbin,) + geom.shape, dtype=bool), (ax_reco,), "")
    return MapDataset(
        name=name,
        counts=counts,
        exposure=expo,
        background=bkg,
        mask_safe=mask,
        psf=_psf_map(geom, ax_true),
        edisp=_edisp_map(geom, ax_reco, ax_true, 0.1) if edisp else None,
    )


def simulate(dataset: MapDataset, models, rng: np.random.Generator) -> MapDataset:
    """Copy of ``dataset`` with Poisson counts drawn from the prediction of ``models``."""
    npred = DatasetEvaluator(dataset, list(models)).npred()
    counts = dataset.counts.copy(data=rng.poisson(npred).astype(float))
    return replace(dataset, counts=counts)
