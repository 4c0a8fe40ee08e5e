"""A small synthetic survey for the map-stage tests: per-observation datasets with known truth.

Three pointings along a strip; each observation has counts, an IRF background (a radial
acceptance × a spectrum) whose true normalisation differs from the template by a known
factor, a flat-in-energy exposure, and a safe mask (offset max).  A Gaussian source of a
known number of counts sits in the middle.  The stacked survey dataset is the sum of the
observations inside their safe masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpscat.core.dataset import MapDataset
from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.io.dataset import write_dataset

__all__ = ["Survey", "make_survey"]

EXPOSURE = 2.0e9  # m² s, flat in true energy inside the field of view


@dataclass
class Survey:
    geom: WcsGeom
    stacked: Path
    observations: list[Path]
    norms: dict[int, float]
    source: tuple[float, float]  # (lon, lat) deg
    source_counts: float
    source_sigma: float  # deg


def make_survey(
    folder: Path,
    rng: np.random.Generator,
    *,
    binsz: float = 0.04,
    source_counts: float = 1500.0,
    bkg_rate: float = 1.5,
) -> Survey:
    """Write per-observation datasets and the stacked dataset into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    survey = WcsGeom.create((0.0, 0.0), (6.0, 3.0), binsz)
    energy = MapAxis.from_energy_bounds(1.0, 10.0, nbin=3)
    energy_true = MapAxis.from_energy_bounds(0.5, 20.0, nbin=4, name="energy_true")
    spectrum = np.array([0.6, 0.3, 0.1])
    source = (0.2, -0.1)
    sigma = 0.1
    norms = {101: 1.15, 102: 0.9, 103: 1.0}
    pointings = {101: (-1.0, 0.3), 102: (0.3, -0.3), 103: (1.2, 0.2)}
    offset_max = 1.6
    obs_paths = []
    stacked = {k: np.zeros((3, *survey.shape)) for k in ("counts", "background")}
    stacked_exposure = np.zeros((4, *survey.shape))
    stacked_mask = np.zeros((3, *survey.shape), bool)
    for obs_id, (lon, lat) in pointings.items():
        iy, ix = survey.cutout_slices(lon, lat, 2 * offset_max + 0.2)
        geom = survey.slice(iy, ix)
        offset = geom.separation(lon, lat)
        radial = np.exp(-0.5 * (offset / 1.0) ** 2)
        template = bkg_rate * spectrum[:, None, None] * radial[None] * (binsz / 0.04) ** 2
        sep = geom.separation(*source)
        src = np.exp(-0.5 * (sep / sigma) ** 2)
        src *= source_counts / len(pointings) / (2 * np.pi * (sigma / binsz) ** 2)
        npred = norms[obs_id] * template + spectrum[:, None, None] * src[None]
        safe = np.broadcast_to(offset < offset_max, npred.shape).copy()
        counts = np.where(safe, rng.poisson(npred), 0).astype(float)
        exposure = np.where(offset < offset_max + 0.1, EXPOSURE / len(pointings), 0.0)
        exposure = np.broadcast_to(exposure, (4, *geom.shape)).copy()
        ds = MapDataset(
            name=f"obs{obs_id}",
            counts=Map(geom, counts, (energy,)),
            background=Map(geom, template, (energy,)),
            exposure=Map(geom, exposure, (energy_true,), unit="m2 s"),
            mask_safe=Map(geom, safe, (energy,)),
            meta={"obs_id": obs_id, "livetime": 1800.0},
        )
        path = folder / f"{obs_id}.fits"
        write_dataset(path, ds)
        obs_paths.append(path)
        stacked["counts"][:, iy, ix] += counts
        stacked["background"][:, iy, ix] += template * safe
        stacked_exposure[:, iy, ix] += exposure
        stacked_mask[:, iy, ix] |= safe
    ds = MapDataset(
        name="stacked",
        counts=Map(survey, stacked["counts"], (energy,)),
        background=Map(survey, stacked["background"], (energy,)),
        exposure=Map(survey, stacked_exposure, (energy_true,), unit="m2 s"),
        mask_safe=Map(survey, stacked_mask, (energy,)),
        meta={"obs_ids": list(pointings)},
    )
    path = folder / "stacked.fits"
    write_dataset(path, ds)
    return Survey(survey, path, obs_paths, norms, source, source_counts, sigma)
