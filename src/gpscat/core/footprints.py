"""Observation footprints: the exact prediction of a stacked dataset near per-observation
safe-mask boundaries.

A stacked dataset keeps observation *i*'s counts only inside its safe mask ``C_i`` (reco
position) and its exposure ``E_i`` only where ``C_i`` is set (true position), as gammapy's
stacking does.  The prediction ``PSF ⊛ (Σ_i C_i E_i · f)`` is then exact only where every
observation's mask is constant over the PSF: near the edge of an observation's mask, photons
from true positions outside it that are reconstructed inside it are counted but not
predicted, and photons from inside that land outside are predicted but not counted.  A
source within a PSF radius of such an edge gets a one-sided excess or deficit — a position
bias towards the observation (measured: +0.006° in longitude, 1.5σ, for a 0.5 h point source
0.01° outside the 2.5° offset cut of a fourth pointing; docs/fitting.md).

The exact prediction is ``Σ_i C_i(r) · [PSF ⊛ (E_i f)](r)``; it equals the stacked one plus,
for each observation whose mask boundary crosses the source's cutout,

    D_i = C_i · PSF ⊛ (E_i f) − PSF ⊛ (C_i E_i f)

which needs the observation's exposure *beyond* its mask (the reduction computes it on the
whole cutout) and its mask image.  :func:`attach_footprints` crops those from the
per-observation datasets to a stacked dataset's grid; :class:`~gpscat.core.npred.SourceEvaluator`
adds the ``D_i`` of the footprints whose boundary crosses its cutout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from gpscat.core.dataset import MapDataset
from gpscat.core.geom import WcsGeom

__all__ = ["ObservationFootprint", "attach_footprints", "footprint_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ObservationFootprint:
    """One observation's safe-mask image and unmasked exposure on a sub-grid of a dataset's grid."""

    obs_id: int
    geom: WcsGeom  # pixel-aligned with the dataset grid
    mask: np.ndarray  # (ny, nx) bool: the safe mask in any reco-energy bin (as the stacking uses it)
    exposure: np.ndarray  # (n_etrue, ny, nx) m² s, not masked


def footprint_of(observation: MapDataset, dataset: MapDataset) -> ObservationFootprint | None:
    """The footprint of a per-observation dataset on ``dataset``'s grid, cropped to it;
    None when its mask is constant there (all set or all unset: no boundary to correct)."""
    obs_id = int(observation.meta.get("obs_id", -1))
    where = f"observation {obs_id} ({observation.name})"
    if observation.exposure is None or observation.mask_safe is None:
        raise ValueError(f"{where}: a footprint needs the exposure and the safe mask")
    if not observation.geom.is_aligned(dataset.geom):
        raise ValueError(f"{where}: its grid is not pixel-aligned with dataset {dataset.name!r}")
    mine, theirs = observation.energy_axis_true, dataset.energy_axis_true
    if mine.nbin != theirs.nbin or not np.allclose(mine.edges, theirs.edges, rtol=1e-6):
        raise ValueError(f"{where}: true-energy axis differs from dataset {dataset.name!r}'s")
    (dy, dx), (oy, ox) = observation.geom.slices_in(dataset.geom)
    if dy.stop <= dy.start or dx.stop <= dx.start:
        return None
    mask = np.asarray(observation.mask_safe.data, bool).any(axis=0)[oy, ox]
    if not mask.any() or (mask.all() and mask.shape == dataset.geom.shape):
        return None
    exposure = np.asarray(observation.exposure.data, float)[:, oy, ox]
    return ObservationFootprint(obs_id, dataset.geom.slice(dy, dx), mask.copy(), exposure.copy())


def attach_footprints(dataset: MapDataset, observations: Iterable[MapDataset]) -> MapDataset:
    """``dataset`` with the footprints of the ``observations`` whose mask boundary lies on its grid.

    Observations skipped by the reduction (``meta["skipped"]``) are ignored; others must be
    pixel-aligned with the dataset and share its true-energy axis.
    """
    fps = []
    for obs in observations:
        if obs.meta.get("skipped"):
            continue
        fp = footprint_of(obs, dataset)
        if fp is not None:
            fps.append(fp)
    log.info("dataset %s: %d observation footprint(s) with a mask boundary on the map", dataset.name, len(fps))
    return replace(dataset, footprints=tuple(fps))
