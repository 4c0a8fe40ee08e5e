"""One simulated observation: sources and background through the IRFs, as DL3 event columns.

:func:`make_setup` prepares what does not change between observations of a survey (the
exposure and background tables; the source sampling grids, built on first use);
:func:`simulate_observation` draws the events of one pointing from an explicit generator,
sampling only the sources whose grid reaches into its field of view — so one observation
costs the same whatever the number of sources elsewhere in the survey.  Event ``MC_ID`` follows CTA
1DC: 0 for background, *i* for the *i*-th sky model of the list (from 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpscat.core.geom import angular_separation
from gpscat.core.sampling import (
    BackgroundTable,
    EventSample,
    ExposureTable,
    SourceGrid,
    background_table,
    exposure_table,
    grid_reach,
    sample_background_events,
    sample_source_events,
    source_grid,
)
from gpscat.models.sky import SkyModel

__all__ = ["EVENT_DTYPES", "SimulationSetup", "make_setup", "observation_seed", "simulate_observation"]

log = logging.getLogger(__name__)

#: column → numpy dtype of the EVENTS table
EVENT_DTYPES = {"EVENT_ID": ">i8", "TIME": ">f8", "RA": ">f4", "DEC": ">f4", "ENERGY": ">f4", "MC_ID": ">i4"}


@dataclass(frozen=True, eq=False)
class SimulationSetup:
    """Everything an observation's sampling needs that is shared by the survey.

    ``models[i]`` has ``MC_ID = i + 1``; ``grids[i]`` is its sampling grid (built when first
    asked for); :meth:`reaches` tells whether source ``i`` can have photons in a pointing's
    field of view.
    """

    models: tuple[SkyModel, ...]
    grids: Sequence[SourceGrid]
    irfs: dict
    exposure: ExposureTable
    background: BackgroundTable | None
    energy_range: tuple[float, float]
    offset_max: float
    livetime: float
    deadc: float

    @property
    def ontime(self) -> float:
        return self.livetime / self.deadc

    def reaches(self, i: int, pointing: tuple[float, float]) -> bool:
        """Whether any pixel of source ``i``'s grid lies within ``offset_max`` of ``pointing``
        (RA, Dec deg).  False means the source has no photon in that observation: its
        predicted counts are exactly 0 and sampling it draws no random number."""
        spatial = self.models[i].spatial_model
        ra, dec = spatial.position_in("icrs")
        return bool(angular_separation(ra, dec, pointing[0], pointing[1]) < self.offset_max + grid_reach(spatial) + 1e-6)


class LazyGrids(Sequence):
    """The sampling grids of a model list, each built on first access and kept."""

    def __init__(self, models: Sequence[SkyModel]):
        self._models = tuple(models)
        self._grids: dict[int, SourceGrid] = {}

    def __len__(self) -> int:
        return len(self._models)

    def __getitem__(self, i: int) -> SourceGrid:
        i = range(len(self))[i]
        if i not in self._grids:
            self._grids[i] = source_grid(self._models[i].spatial_model)
        return self._grids[i]


def observation_seed(seed: int, obs_id: int) -> np.random.Generator:
    """Generator of one observation: ``SeedSequence([seed, obs_id])`` (independent streams)."""
    if seed < 0 or obs_id < 0:
        raise ValueError(f"seed and obs_id must be >= 0, got {seed}, {obs_id}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(obs_id)]))


def make_setup(
    models: Sequence[SkyModel],
    irfs: dict,
    *,
    livetime: float,
    deadc: float = 1.0,
    energy_range: tuple[float, float] = (0.05, 200.0),
    energy_true_range: tuple[float, float] = (0.02, 300.0),
    offset_max: float = 5.0,
    background: bool = True,
    per_decade: int = 40,
) -> SimulationSetup:
    """Prepare the sampling of a survey.

    Parameters
    ----------
    models : sequence of SkyModel
        Injected sources (models without a spatial part are rejected).
    irfs : dict
        ``aeff``, ``psf``, ``edisp`` and (with ``background``) ``bkg`` IRF objects.
    livetime : float
        Livetime per observation, s (the source exposure); the ontime (background) is
        ``livetime / deadc``.
    deadc : float
        Dead-time correction factor, 0 < deadc ≤ 1.
    energy_range : (float, float)
        Reco-energy range of the events kept (TeV).
    energy_true_range : (float, float)
        True-energy range of the simulated photons (TeV).
    offset_max : float
        FoV radius (deg): true photon directions and all events stay within it.
    per_decade : int
        Fine energy bins per decade of the exposure table (and twice fewer for the background).
    """
    if not 0 < deadc <= 1:
        raise ValueError(f"deadc must be in (0, 1], got {deadc}")
    if not livetime > 0:
        raise ValueError(f"livetime must be > 0 s, got {livetime}")
    for name, (lo, hi) in (("energy_range", energy_range), ("energy_true_range", energy_true_range)):
        if not 0 < lo < hi:
            raise ValueError(f"{name} must satisfy 0 < min < max, got {(lo, hi)}")
    missing = [k for k in ("aeff", "psf", "edisp") + (("bkg",) if background else ()) if irfs.get(k) is None]
    if missing:
        raise ValueError(f"IRFs {missing} are needed for the simulation but missing")
    for m in models:
        if not isinstance(m, SkyModel) or m.spatial_model is None:
            raise ValueError(f"model {getattr(m, 'name', m)!r}: only sky models with a spatial part can be simulated")

    def grid(lo, hi, n_per_decade):
        return np.geomspace(lo, hi, max(2, int(np.ceil(np.log10(hi / lo) * n_per_decade))) + 1)

    expo = exposure_table(irfs["aeff"], livetime=livetime, energy_edges=grid(*energy_true_range, per_decade), offset_max=offset_max)
    bkg = None
    if background:
        bkg = background_table(irfs["bkg"], energy_edges=grid(*energy_range, per_decade // 2), offset_max=offset_max)
    return SimulationSetup(tuple(models), LazyGrids(models), irfs, expo, bkg, tuple(energy_range), float(offset_max), float(livetime), float(deadc))


def simulate_observation(
    setup: SimulationSetup,
    *,
    pointing: tuple[float, float],
    tstart: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Events of one observation, time-ordered, as EVENTS columns (:data:`EVENT_DTYPES`).

    Parameters
    ----------
    setup : SimulationSetup
    pointing : (float, float)
        RA, Dec (deg, ICRS).
    tstart : float
        Start time, s since the reference epoch; the observation lasts ``setup.ontime``.
    rng : numpy.random.Generator
        e.g. :func:`observation_seed` ``(seed, obs_id)``.
    """
    parts: list[tuple[int, EventSample]] = []
    if setup.background is not None:
        parts.append((0, sample_background_events(setup.background, pointing=pointing, ontime=setup.ontime, rng=rng)))
    for i, model in enumerate(setup.models, start=1):
        if not setup.reaches(i - 1, pointing):
            continue
        ev = sample_source_events(
            model, setup.grids[i - 1], setup.exposure, pointing=pointing, psf=setup.irfs["psf"], edisp=setup.irfs["edisp"], rng=rng
        )
        parts.append((i, ev))
    ra = np.concatenate([ev.ra for _, ev in parts]) if parts else np.zeros(0)
    dec = np.concatenate([ev.dec for _, ev in parts]) if parts else np.zeros(0)
    energy = np.concatenate([ev.energy for _, ev in parts]) if parts else np.zeros(0)
    mc_id = np.concatenate([np.full(len(ev), i) for i, ev in parts]) if parts else np.zeros(0, int)
    emin, emax = setup.energy_range
    keep = (energy >= emin) & (energy < emax) & (angular_separation(ra, dec, pointing[0], pointing[1]) < setup.offset_max)
    ra, dec, energy, mc_id = ra[keep], dec[keep], energy[keep], mc_id[keep]
    time = tstart + setup.ontime * rng.uniform(size=energy.size)
    order = np.argsort(time, kind="stable")
    counts = np.bincount(mc_id, minlength=len(setup.models) + 1)
    log.debug("events per MC_ID: %s", counts.tolist())
    cols = {
        "EVENT_ID": np.arange(1, energy.size + 1),
        "TIME": time[order],
        "RA": ra[order],
        "DEC": dec[order],
        "ENERGY": energy[order],
        "MC_ID": mc_id[order],
    }
    return {k: np.asarray(v, dtype=EVENT_DTYPES[k]) for k, v in cols.items()}
