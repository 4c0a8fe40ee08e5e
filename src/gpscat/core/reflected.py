"""Reflected-region background: OFF circles around the pointing of one observation.

The ON region is a circle of radius ``R`` at offset ``d`` from the pointing.  OFF circles
of the same radius are placed at the same offset, rotated about the pointing, so that
they see the same acceptance as the ON circle.  The placement follows gammapy's
``ReflectedRegionsFinder`` (a greedy walk in rotation angle):

* the angular size of a circle seen from the pointing is ``2 β`` with
  ``sin β = sin R / sin d`` (exact on the sphere; gammapy measures it on a 0.01° pixel
  grid); neighbours are rotated by at least ``a_min = 2 β + min_distance``;
* the walk starts at ``a_min + min_distance_input`` and stops before
  ``2π − a_min − min_distance_input`` (so the last circle keeps the same gap to the ON
  circle); a candidate that overlaps the exclusion mask is skipped by
  ``angle_increment``, an accepted one moves the walk on by ``a_min``;
* no OFF circle when the pointing lies inside the ON circle (``d ≤ R``).

``alpha = 1 / n_off`` (acceptance 1 for the ON circle, ``n_off`` for the OFF circles).
Rotation angles grow with the position angle (north through east), which is gammapy's
counter-clockwise pixel rotation on a standard sky map.

Overlap with the exclusion mask is tested on points sampling each excluded pixel at
``sampling`` (default 0.01°, gammapy's reference-map resolution): a candidate is rejected
when one of them lies inside the circle.  Each point blocks an interval of rotation angles
(closed form), so testing a candidate is one vectorised comparison.

Positions are (lon, lat) in deg in one frame; :func:`excluded_points` converts the mask's
pixels to the frame asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpscat.core.geom import WcsGeom, angular_separation, to_frame
from gpscat.core.sampling import offset_positions
from gpscat.models.spatial import position_angle

__all__ = ["ReflectedRegions", "excluded_points", "in_circles", "reflected_regions"]

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class ReflectedRegions:
    """OFF circles of one observation.

    Attributes
    ----------
    lon, lat : ndarray
        Centres (deg), in the frame of the ON circle.
    radius : float
        Radius (deg), the ON circle's.
    angle : ndarray
        Rotation from the ON circle about the pointing (deg, position angle increasing).
    offset : float
        Distance of the ON (and every OFF) centre from the pointing (deg).
    """

    lon: np.ndarray
    lat: np.ndarray
    radius: float
    angle: np.ndarray
    offset: float

    @property
    def n(self) -> int:
        """Number of OFF circles."""
        return int(self.lon.size)

    @property
    def alpha(self) -> float:
        """ON / OFF acceptance ratio ``1 / n`` (NaN without OFF circle)."""
        return 1.0 / self.n if self.n else math.nan


def _blocked_intervals(offset: float, radius: float, pa0: float, points_offset, points_pa):
    """Centre and half-width (rad) of the rotation angles at which each point is inside a circle.

    A circle centred at offset ``d`` and rotation ``φ`` contains a point at offset ``r`` and
    rotation ``θ`` when ``cos d cos r + sin d sin r cos(φ − θ) > cos R``.
    """
    d, big_r = math.radians(offset), math.radians(radius)
    r = np.radians(points_offset)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (math.cos(big_r) - math.cos(d) * np.cos(r)) / (math.sin(d) * np.sin(r))
    half = np.arccos(np.clip(np.nan_to_num(c, nan=2.0), -1.0, 1.0))
    keep = c < 1.0  # c >= 1: the point never enters the circle
    centre = np.mod(np.asarray(points_pa)[keep] - pa0, _TWO_PI)
    return centre, np.where(c[keep] <= -1.0, math.pi, half[keep])


def reflected_regions(
    lon: float,
    lat: float,
    radius: float,
    pointing_lon: float,
    pointing_lat: float,
    *,
    excluded: tuple[np.ndarray, np.ndarray] | None = None,
    angle_increment: float = math.degrees(0.1),
    min_distance: float = 0.0,
    min_distance_input: float = math.degrees(0.1),
    max_regions: int | None = None,
) -> ReflectedRegions:
    """OFF circles for the ON circle (``lon``, ``lat``, ``radius``) and a pointing.

    Parameters
    ----------
    lon, lat, radius : float
        ON circle (deg).
    pointing_lon, pointing_lat : float
        Rotation centre (deg), same frame.
    excluded : (lon, lat) arrays, optional
        Points sampling the excluded sky (:func:`excluded_points`), same frame; a candidate
        containing one of them is skipped.
    angle_increment : float
        Rotation step (deg) after a rejected candidate (gammapy: 0.1 rad).
    min_distance : float
        Extra rotation (deg) between neighbouring OFF circles (gammapy: 0).
    min_distance_input : float
        Extra rotation (deg) between the ON circle and the first/last OFF circle
        (gammapy: 0.1 rad).
    max_regions : int, optional
        Stop after this many circles.

    Returns
    -------
    ReflectedRegions
        Possibly with no circle (the pointing inside the ON circle, or all excluded).
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0 deg, got {radius}")
    if not angle_increment > 0:
        raise ValueError(f"angle_increment must be > 0 deg, got {angle_increment}")
    if min_distance < 0 or min_distance_input < 0:
        raise ValueError(f"min_distance and min_distance_input must be >= 0 deg, got {min_distance}, {min_distance_input}")
    if max_regions is not None and max_regions < 1:
        raise ValueError(f"max_regions must be >= 1, got {max_regions}")
    offset = float(angular_separation(pointing_lon, pointing_lat, lon, lat))
    empty = ReflectedRegions(np.zeros(0), np.zeros(0), float(radius), np.zeros(0), offset)
    if offset <= radius or offset + radius >= 180.0:
        return empty
    pa0 = float(position_angle(pointing_lon, pointing_lat, lon, lat))
    size = 2.0 * math.asin(min(math.sin(math.radians(radius)) / math.sin(math.radians(offset)), 1.0))
    a_min = size + math.radians(min_distance)
    a_input = math.radians(min_distance_input)
    if excluded is not None and np.size(excluded[0]):
        ex_lon, ex_lat = (np.asarray(a, float).ravel() for a in excluded)
        r_ex = angular_separation(pointing_lon, pointing_lat, ex_lon, ex_lat)
        near = np.abs(r_ex - offset) < radius  # others can never fall inside an OFF circle
        pa_ex = position_angle(pointing_lon, pointing_lat, ex_lon[near], ex_lat[near])
        centre, half = _blocked_intervals(offset, radius, pa0, r_ex[near], pa_ex)
    else:
        centre = half = np.zeros(0)

    def blocked(phi: float) -> bool:
        dist = np.abs(np.mod(phi - centre + math.pi, _TWO_PI) - math.pi)
        return bool(np.any(dist < half))

    angles = []
    phi, stop = a_min + a_input, _TWO_PI - a_min - a_input
    step = math.radians(angle_increment)
    while phi < stop:
        if blocked(phi):
            phi += step
            continue
        angles.append(phi)
        if max_regions is not None and len(angles) >= max_regions:
            break
        phi += a_min
    if not angles:
        return empty
    rot = np.array(angles)
    off_lon, off_lat = offset_positions(pointing_lon, pointing_lat, offset, pa0 + rot)
    return ReflectedRegions(np.atleast_1d(off_lon), np.atleast_1d(off_lat), float(radius), np.degrees(rot), offset)


def excluded_points(
    geom: WcsGeom,
    excluded: np.ndarray,
    *,
    center: tuple[float, float] | None = None,
    rmin: float = 0.0,
    rmax: float = 180.0,
    frame: str | None = None,
    sampling: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Points sampling the excluded pixels of a mask, at most ``sampling`` deg apart.

    Parameters
    ----------
    geom : WcsGeom
        Geometry of the mask.
    excluded : ndarray of bool, shape (ny, nx)
        True where excluded (the inverse of a usable-pixel ``EXCLUSION_MASK``).
    center, rmin, rmax : optional
        Keep only pixels whose centre lies between ``rmin − d`` and ``rmax + d`` (deg) of
        ``center`` (lon, lat in ``frame``), with ``d`` the pixel half-diagonal.
    frame : str, optional
        Frame of ``center`` and of the returned points (default: the mask's).
    sampling : float
        Largest spacing (deg) of the points within a pixel: each excluded pixel is split
        into ``k × k`` sub-pixels, ``k = ceil(binsz / sampling)``, sampled at their centres.

    Returns
    -------
    lon, lat : ndarray
        Deg, in ``frame``.
    """
    excluded = np.asarray(excluded, dtype=bool)
    if excluded.shape != geom.shape:
        raise ValueError(f"excluded mask shape {excluded.shape} does not match the geometry {geom.shape}")
    if not sampling > 0:
        raise ValueError(f"sampling must be > 0 deg, got {sampling}")
    frame = frame or geom.frame
    iy, ix = np.nonzero(excluded)
    if center is not None and iy.size:
        glon, glat = geom.get_coord()
        clon, clat = to_frame(center[0], center[1], frame, geom.frame)
        sep = angular_separation(glon[iy, ix], glat[iy, ix], clon, clat)
        pad = geom.binsz * math.sqrt(0.5)
        keep = (sep >= rmin - pad) & (sep <= rmax + pad)
        iy, ix = iy[keep], ix[keep]
    k = max(1, math.ceil(geom.binsz / sampling - 1e-9))
    sub = (np.arange(k) + 0.5) / k - 0.5
    if k > 1:
        x, y = np.broadcast_arrays(ix[:, None, None] + sub[None, None, :], iy[:, None, None] + sub[None, :, None])
        x, y = x.ravel(), y.ravel()
    else:
        x, y = ix.astype(float), iy.astype(float)
    lon, lat = geom.pix_to_coord(x, y)
    return to_frame(lon, lat, geom.frame, frame)


def in_circles(lon, lat, centres_lon, centres_lat, radius: float) -> np.ndarray:
    """Index of the circle containing each point (−1 for none; the first if several).

    Parameters
    ----------
    lon, lat : array_like
        Points (deg), e.g. event directions.
    centres_lon, centres_lat : array_like
        Circle centres (deg), same frame.
    radius : float
        Common radius (deg); a point on the boundary is outside.
    """
    lon, lat = np.asarray(lon, float).ravel(), np.asarray(lat, float).ravel()
    c_lon, c_lat = np.atleast_1d(np.asarray(centres_lon, float)), np.atleast_1d(np.asarray(centres_lat, float))
    out = np.full(lon.size, -1, dtype=np.int64)
    if not lon.size or not c_lon.size:
        return out
    # a cheap box cut first: |Δlat| < R and a lon window (events are many, circles few)
    near = np.abs(lat[:, None] - c_lat[None, :]) < radius
    rows, cols = np.nonzero(near)
    inside = angular_separation(lon[rows], lat[rows], c_lon[cols], c_lat[cols]) < radius
    rows, cols = rows[inside], cols[inside]
    # the first circle per point: assign in reverse so that the smallest index wins
    out[rows[::-1]] = cols[::-1]
    return out
