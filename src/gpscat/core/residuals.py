"""Residual significance of data against a model prediction, and its highest peak.

The residual significance of a dataset compares the counts with the predicted counts of
all models (background included) summed over the reco-energy bins of the mask, both
correlated with a top-hat of radius ``r``: the Cash significance of
:func:`gpscat.core.significance.cash_maps` with the prediction in place of the
background.  Positive where the data exceed the model (a missing source), negative where
the model over-predicts.

:func:`residual_peak` finds the highest residual over several datasets inside a search
circle, away from given positions: the grouped fit's residual search adds a source there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpscat.core.convolve import disk_kernel
from gpscat.core.dataset import MapDataset
from gpscat.core.geom import angular_separation
from gpscat.core.npred import DatasetEvaluator
from gpscat.core.significance import cash_maps

__all__ = ["ResidualPeak", "residual_maps", "residual_peak"]


def residual_maps(dataset: MapDataset, models, *, radius: float, npred: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Correlated counts, prediction, excess and significance of ``dataset`` against ``models``.

    Parameters
    ----------
    dataset : MapDataset
        Counts, background, exposure and IRFs; bins outside ``mask_safe ∧ mask_fit`` are ignored.
    models : iterable of SkyModel / FoVBackgroundModel
        The prediction (``DatasetEvaluator``); ignored when ``npred`` is given.
    radius : float
        Top-hat radius (deg).
    npred : numpy.ndarray, optional
        Predicted counts (n_reco, ny, nx), if already computed.

    Returns
    -------
    dict
        2D ``counts``, ``npred`` (within the top-hat), ``excess`` and ``sqrt_ts`` (NaN
        where no bin is used).
    """
    if not radius > 0:
        raise ValueError(f"correlation radius must be > 0 deg, got {radius}")
    if dataset.counts is None:
        raise ValueError(f"dataset {dataset.name!r} has no counts")
    mask = dataset.mask()
    if npred is None:
        npred = DatasetEvaluator(dataset, list(models)).npred()
    counts = np.where(mask, np.asarray(dataset.counts.data, float), 0.0).sum(axis=0)
    mu = np.where(mask, np.nan_to_num(npred), 0.0).sum(axis=0)
    used = mask.any(axis=0)
    out = cash_maps(counts, mu, kernel=disk_kernel(radius / dataset.geom.binsz), mask=used)
    return {"counts": out["counts"], "npred": out["background"], "excess": out["excess"], "sqrt_ts": out["sqrt_ts"]}


@dataclass(frozen=True)
class ResidualPeak:
    """Highest residual: position (deg, in ``frame``), significance, excess, dataset name."""

    lon: float
    lat: float
    sqrt_ts: float
    excess: float
    dataset: str


def _reach(lon, lat, sources) -> np.ndarray:
    """Distance (deg) of each pixel to the nearest source's extent; inf without sources."""
    out = np.full(np.shape(lon), np.inf)
    for s_lon, s_lat, extent in sources:  # a handful of sources
        out = np.minimum(out, np.maximum(angular_separation(lon, lat, s_lon, s_lat) - extent, 0.0))
    return out


def _own_territory(lon, lat, own, others) -> np.ndarray:
    """Pixels at least as near to the extent of one of ``own`` as to any of ``others``."""
    if not len(others):
        return np.ones(np.shape(lon), dtype=bool)
    return _reach(lon, lat, own) <= _reach(lon, lat, others)


def residual_peak(datasets, models, *, radius: float, center: tuple[float, float], search_radius: float,
                  avoid=(), min_separation: float = 0.0, territory=None, frame: str = "galactic") -> ResidualPeak | None:
    """The highest residual significance over ``datasets`` within ``search_radius`` of
    ``center`` and at least ``min_separation`` from every position of ``avoid``.

    ``territory`` (optional) is ``(own, others)``, two sequences of ``(lon, lat, extent)``
    (deg): a pixel is searched only when it is at least as near to one of ``own`` as to
    every one of ``others``, distances counted from each source's extent
    (``max(d - extent, 0)``).  A group's residual search uses it to leave the emission of
    the other groups' sources to their own fits: a neighbour frozen at a rough model leaves
    a residual that is not a new source.

    Positions (``center``, ``avoid``, ``territory``, the result) are in ``frame``; ``None``
    when no pixel qualifies.
    """
    best = None
    avoid = np.asarray(list(avoid), dtype=float).reshape(-1, 2)
    for ds in datasets:
        maps = residual_maps(ds, models, radius=radius)
        lon, lat = ds.geom.get_coord(frame=frame)
        ok = np.isfinite(maps["sqrt_ts"]) & (angular_separation(lon, lat, center[0], center[1]) <= search_radius)
        for a_lon, a_lat in avoid:
            ok &= angular_separation(lon, lat, a_lon, a_lat) >= min_separation
        if territory is not None:
            ok &= _own_territory(lon, lat, *territory)
        if not ok.any():
            continue
        sig = np.where(ok, maps["sqrt_ts"], -np.inf)
        k = int(np.argmax(sig))
        if best is None or sig.flat[k] > best.sqrt_ts:
            best = ResidualPeak(float(lon.flat[k]), float(lat.flat[k]), float(sig.flat[k]), float(maps["excess"].flat[k]), ds.name)
    return best
