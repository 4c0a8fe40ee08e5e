"""The one dataset container: binned maps of one observation or of a stacked survey.

Same content and meaning as gammapy's ``MapDataset`` (so files interoperate):

* ``counts`` — observed counts, axis ``energy`` (reco);
* ``exposure`` — effective area × livetime, axis ``energy_true``, m² s;
* ``background`` — predicted background counts, axis ``energy``;
* ``mask_safe`` — boolean, axis ``energy``; ``mask_fit`` — optional, same shape;
* ``psf`` — PSF profile dP/dΩ (sr⁻¹) on a coarse grid, axes (``rad``, ``energy_true``),
  with ``psf_exposure`` (axis ``energy_true``, a 1-bin ``rad``-less map) as stacking weight;
* ``edisp`` — energy-dispersion kernel: probability that an event of true-energy bin *j*
  is reconstructed in reco bin *i*, axes (``energy``, ``energy_true``), on a coarse grid,
  with ``edisp_exposure`` as stacking weight;
* ``meta`` — plain dict: ``obs_ids``, ``livetime`` (s), ``pointing`` (lon, lat, frame), ...
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from gpscat.core.geom import Map, MapAxis, WcsGeom

__all__ = ["MAP_NAMES", "MapDataset"]

#: HDU names of the maps of a dataset, in file order (gammapy's names).
MAP_NAMES = (
    "counts",
    "exposure",
    "background",
    "psf",
    "psf_exposure",
    "edisp",
    "edisp_exposure",
    "mask_safe",
    "mask_fit",
)


@dataclass(eq=False)
class MapDataset:
    """Counts, exposure, background, IRF kernels and masks on one sky geometry."""

    name: str
    counts: Map | None = None
    exposure: Map | None = None
    background: Map | None = None
    psf: Map | None = None
    psf_exposure: Map | None = None
    edisp: Map | None = None
    edisp_exposure: Map | None = None
    mask_safe: Map | None = None
    mask_fit: Map | None = None
    gti: np.ndarray | None = None  # (n, 2) START/STOP, s (MET of the observation)
    meta: dict = field(default_factory=dict)
    #: per-observation footprints for the exact prediction at safe-mask boundaries
    #: (:mod:`gpscat.core.footprints`); in memory only, not written
    footprints: tuple = ()

    def __post_init__(self):
        ref = self.counts or self.background or self.exposure
        if ref is None:
            return
        for name in ("counts", "exposure", "background", "mask_safe", "mask_fit"):
            m = getattr(self, name)
            if m is not None and not m.geom == ref.geom:
                raise ValueError(f"dataset {self.name!r}: {name} geometry differs from the others")
        for a, b in (("counts", "background"), ("counts", "mask_safe"), ("counts", "mask_fit")):
            ma, mb = getattr(self, a), getattr(self, b)
            if ma is not None and mb is not None and ma.data.shape != mb.data.shape:
                raise ValueError(f"dataset {self.name!r}: {a} and {b} shapes differ")

    # -- accessors
    @property
    def geom(self) -> WcsGeom:
        for m in (self.counts, self.background, self.exposure):
            if m is not None:
                return m.geom
        raise ValueError(f"dataset {self.name!r} has no maps")

    @property
    def energy_axis(self) -> MapAxis:
        m = self.counts or self.background or self.mask_safe
        if m is None:
            raise ValueError(f"dataset {self.name!r} has no reco-energy map")
        return m.axis("energy")

    @property
    def energy_axis_true(self) -> MapAxis:
        if self.exposure is None:
            raise ValueError(f"dataset {self.name!r} has no exposure")
        return self.exposure.axis("energy_true")

    @property
    def livetime(self) -> float:
        return float(self.meta.get("livetime", 0.0))

    def mask(self) -> np.ndarray:
        """Boolean mask of bins used in likelihoods: mask_safe ∧ mask_fit (all True if none)."""
        shape = Map.expected_shape(self.geom, (self.energy_axis,))
        mask = np.ones(shape, dtype=bool)
        if self.mask_safe is not None:
            mask &= self.mask_safe.data.astype(bool)
        if self.mask_fit is not None:
            mask &= self.mask_fit.data.astype(bool)
        return mask

    def maps(self) -> dict[str, Map]:
        """The maps that are set, keyed by lower-case name in file order."""
        return {n: getattr(self, n) for n in MAP_NAMES if getattr(self, n) is not None}

    def cutout(self, iy: slice, ix: slice, *, name: str | None = None) -> MapDataset:
        """Spatial cutout (numpy slices on the dataset grid); IRF maps are kept whole.

        The PSF and energy-dispersion maps live on their own coarse grids and are looked up
        by sky position, so they are shared, not cut.
        """
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("counts", "exposure", "background", "mask_safe", "mask_fit") and v is not None:
                v = v.cutout(iy, ix)
            kw[f.name] = v
        kw["meta"] = dict(self.meta)
        if name is not None:
            kw["name"] = name
        return MapDataset(**kw)
