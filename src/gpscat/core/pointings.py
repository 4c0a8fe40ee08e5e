"""Survey pointing patterns for simulated surveys.

A GPS-like strip: pointings every ``lon_step`` from ``lon_min`` to ``lon_max`` (inclusive)
along each latitude row, or an explicit list.  Observation ids are consecutive from
``first_obs_id`` in that order, so the workflow knows them before anything is simulated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Pointing", "strip_pointings"]


@dataclass(frozen=True)
class Pointing:
    obs_id: int
    lon: float  # deg, in ``frame``
    lat: float  # deg
    frame: str


def strip_pointings(
    lon_min: float,
    lon_max: float,
    lon_step: float,
    lat_rows: Sequence[float],
    *,
    frame: str = "galactic",
    first_obs_id: int = 1,
) -> list[Pointing]:
    """Pointings on a strip: rows of constant latitude, ``lon_step`` apart (deg)."""
    if lon_step <= 0:
        raise ValueError(f"lon_step must be > 0, got {lon_step}")
    if lon_max < lon_min:
        raise ValueError(f"lon_max ({lon_max}) must be >= lon_min ({lon_min})")
    n = int(np.floor((lon_max - lon_min) / lon_step + 1e-9)) + 1
    lons = lon_min + lon_step * np.arange(n)
    out = []
    for lat in lat_rows:
        for lon in lons:
            out.append(Pointing(first_obs_id + len(out), float(np.mod(lon, 360.0)), float(lat), frame))
    return out
