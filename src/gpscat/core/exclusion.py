"""Exclusion masks: where the background may be estimated from the data.

**Convention (gammapy's).**  An *exclusion mask* is a boolean image on a :class:`WcsGeom`
that is ``True`` where a pixel is **usable** for background estimation (not excluded) and
``False`` inside excluded regions.  It is stored in the HDU ``EXCLUSION_MASK`` of
``results/maps/<dataset>/exclusion.fits`` (gammapy's ``Map.read`` opens it; pass it to
``FoVBackgroundMaker(exclusion_mask=...)`` or ``RingBackgroundMaker(exclusion_mask=...)``
as is).

To keep the sense unambiguous, every function that builds a region returns an
**excluded** image (``True`` = inside the region to exclude) and its name ends in
``_excluded``; only :func:`exclusion_mask` turns excluded parts into the usable-pixel
mask.

Sources of exclusion:

* sky circles (:func:`circles_excluded`; exact great-circle distances);
* DS9 region shapes read with ``regions`` (:func:`regions_excluded`; regions marked
  ``-`` in the file, ``include = 0``, are cut out of the excluded area);
* known-source catalogs, HGPS-style tables with a position and a size
  (:func:`catalog_circles` → circles of radius ``size_factor × size + margin``);
* significant emission: hysteresis thresholding of a significance map, dilated by a
  radius (:func:`hysteresis_excluded`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence

import numpy as np
from regions import (
    CircleSkyRegion,
    LinePixelRegion,
    PixCoord,
    PointPixelRegion,
    SkyRegion,
    TextPixelRegion,
)
from skimage.filters import apply_hysteresis_threshold

from gpscat.core.convolve import correlate, disk_kernel
from gpscat.core.geom import WcsGeom, angular_separation, to_frame

__all__ = [
    "catalog_circles",
    "circles_excluded",
    "exclusion_mask",
    "hysteresis_excluded",
    "regions_excluded",
]

log = logging.getLogger(__name__)

#: region shapes without an area: nothing to exclude
_NO_AREA = (PointPixelRegion, LinePixelRegion, TextPixelRegion)

#: Column pairs tried, in order, for catalog positions: (lon, lat, frame).
POSITION_COLUMNS = (
    ("GLON", "GLAT", "galactic"),
    ("RAJ2000", "DEJ2000", "icrs"),
    ("RAJ2000", "DECJ2000", "icrs"),
    ("RA", "DEC", "icrs"),
)
#: Columns tried, in order, for a catalog source size (deg; missing/NaN → point-like, 0).
SIZE_COLUMNS = ("Size", "r39", "R39", "Extension", "extension", "size")


def _box(geom: WcsGeom, lon: float, lat: float, radius: float) -> tuple[slice, slice]:
    """Pixel box of a sky circle (sampled on its boundary; the whole map if that fails)."""
    if radius >= 90.0:
        return slice(None), slice(None)
    phi = np.linspace(0.0, 2.0 * np.pi, 73)
    # boundary points by rotating a small circle about the pole onto (lon, lat)
    theta = np.radians(radius)
    lat0, lon0 = np.radians(lat), np.radians(lon)
    blat = np.arcsin(np.sin(lat0) * np.cos(theta) + np.cos(lat0) * np.sin(theta) * np.cos(phi))
    blon = lon0 + np.arctan2(
        np.sin(phi) * np.sin(theta) * np.cos(lat0), np.cos(theta) - np.sin(lat0) * np.sin(blat)
    )
    x, y = geom.coord_to_pix(np.degrees(blon), np.degrees(blat))
    cx, cy = geom.coord_to_pix(lon, lat)
    xs, ys = np.append(x, cx), np.append(y, cy)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        return slice(None), slice(None)
    span = np.ptp(xs) + np.ptp(ys)
    if span > 4 * (geom.npix[0] + geom.npix[1]):  # wrapped around the projection: be safe
        return slice(None), slice(None)
    x0, x1 = int(np.floor(xs.min())) - 1, int(np.ceil(xs.max())) + 2
    y0, y1 = int(np.floor(ys.min())) - 1, int(np.ceil(ys.max())) + 2
    nx, ny = geom.npix
    return slice(min(max(y0, 0), ny), min(max(y1, 0), ny)), slice(min(max(x0, 0), nx), min(max(x1, 0), nx))


def circles_excluded(
    geom: WcsGeom,
    lon: Sequence[float] | float,
    lat: Sequence[float] | float,
    radius: Sequence[float] | float,
    *,
    frame: str | None = None,
) -> np.ndarray:
    """Pixels whose centre lies within any of the sky circles (``True`` = excluded).

    Parameters
    ----------
    geom : WcsGeom
        Map geometry.
    lon, lat, radius : float or array_like
        Circle centres and radii in degrees (broadcast together).
    frame : {"galactic", "icrs"}, optional
        Frame of ``lon``/``lat``; default the geometry's.

    Returns
    -------
    excluded : numpy.ndarray of bool, shape ``geom.shape``
    """
    lon, lat, radius = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (lon, lat, radius))
    lon, lat, radius = np.broadcast_arrays(lon, lat, radius)
    if np.any(~np.isfinite(radius)) or np.any(radius < 0):
        raise ValueError(f"circle radii must be finite and >= 0 deg, got {radius[~(radius >= 0)][:3]}")
    if np.any(~np.isfinite(lon)) or np.any(~np.isfinite(lat)):
        raise ValueError("circle centres must be finite")
    if frame is not None and frame != geom.frame:
        lon, lat = to_frame(lon, lat, frame, geom.frame)
    glon, glat = geom.get_coord()
    excluded = np.zeros(geom.shape, dtype=bool)
    for lo, la, r in zip(np.ravel(lon), np.ravel(lat), np.ravel(radius), strict=True):
        iy, ix = _box(geom, lo, la, r)
        if iy.start == iy.stop or ix.start == ix.stop:
            continue
        sep = angular_separation(glon[iy, ix], glat[iy, ix], lo, la)
        excluded[iy, ix] |= sep <= r
    return excluded


def regions_excluded(geom: WcsGeom, regions: Iterable) -> np.ndarray:
    """Pixels inside the given ``regions`` shapes (``True`` = excluded).

    Sky circles use exact angular distances; other sky shapes are projected with the map
    WCS (``to_pixel``) and tested at the pixel centres.  Regions whose ``meta["include"]``
    is false (a leading ``-`` in a DS9 file) are removed from the excluded area after all
    included shapes are added.  Shapes without an area (points, text) are skipped with a
    warning.

    Parameters
    ----------
    geom : WcsGeom
        Map geometry.
    regions : iterable of regions shapes
        Sky or pixel regions (e.g. ``regions.Regions.read(path, format="ds9")``).
    """
    y, x = np.indices(geom.shape, dtype=float)
    pix = PixCoord(x=x, y=y)
    include = np.zeros(geom.shape, dtype=bool)
    cut = np.zeros(geom.shape, dtype=bool)
    for region in regions:
        meta = getattr(region, "meta", {}) or {}
        included = bool(int(meta.get("include", 1)))
        if isinstance(region, CircleSkyRegion):
            c = region.center
            frame = "galactic" if c.frame.name == "galactic" else "icrs"
            sph = c.spherical
            inside = circles_excluded(
                geom, sph.lon.deg, sph.lat.deg, region.radius.to_value("deg"), frame=frame
            )
        else:
            shape = copy.deepcopy(region)
            shape.meta["include"] = 1  # test the shape itself; the sense is applied below
            if isinstance(shape, SkyRegion):
                shape = shape.to_pixel(geom.wcs)
            if isinstance(shape, _NO_AREA):
                log.warning("skipping region %s: it has no area to exclude", type(region).__name__)
                continue
            inside = np.asarray(shape.contains(pix), dtype=bool)
        if included:
            include |= inside
        else:
            cut |= inside
    return include & ~cut


def catalog_circles(table, *, margin: float, size_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Exclusion circles of a known-source catalog table.

    The position columns are the first pair of :data:`POSITION_COLUMNS` present, the size
    the first of :data:`SIZE_COLUMNS` present (deg; masked or NaN sizes count as 0, i.e.
    point-like).  The radius is ``size_factor * size + margin``.

    Parameters
    ----------
    table : astropy.table.Table
        One row per source.
    margin : float
        Added to every radius (deg), >= 0.
    size_factor : float
        Multiplies the size column (e.g. a Gaussian sigma), >= 0.

    Returns
    -------
    lon, lat, radius : numpy.ndarray
        Degrees.
    frame : str
        ``"galactic"`` or ``"icrs"``.
    """
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"catalog margin must be >= 0 deg, got {margin}")
    if not (np.isfinite(size_factor) and size_factor >= 0):
        raise ValueError(f"catalog size_factor must be >= 0, got {size_factor}")
    names = set(table.colnames)
    found = next(((lo, la, fr) for lo, la, fr in POSITION_COLUMNS if lo in names and la in names), None)
    if found is None:
        raise ValueError(
            f"catalog has no position columns: expected one of {[p[:2] for p in POSITION_COLUMNS]}, "
            f"got {table.colnames[:20]}"
        )
    clon, clat, frame = found
    lon = _filled(table[clon], np.nan)
    lat = _filled(table[clat], np.nan)
    size = np.zeros(len(table))
    size_col = next((c for c in SIZE_COLUMNS if c in names), None)
    if size_col is not None:
        size = np.nan_to_num(_filled(table[size_col], 0.0), nan=0.0)
    else:
        log.warning("catalog has none of the size columns %s: sources taken as point-like", SIZE_COLUMNS)
    good = np.isfinite(lon) & np.isfinite(lat)
    if not np.all(good):
        log.warning("catalog: %d row(s) without a position skipped", int(np.sum(~good)))
    return lon[good], lat[good], size_factor * np.clip(size[good], 0.0, None) + margin, frame


def _filled(column, fill: float) -> np.ndarray:
    data = column.filled(fill) if hasattr(column, "filled") and hasattr(column, "mask") else column
    return np.asarray(data, dtype=float)


def hysteresis_excluded(
    significance: np.ndarray,
    *,
    high: float,
    low: float,
    dilate: float = 0.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Connected significant regions, grown by ``dilate`` pixels (``True`` = excluded).

    A pixel is kept when it is above ``low`` and connected (8-neighbourhood) to a pixel
    above ``high`` (``skimage.filters.apply_hysteresis_threshold``); the result is then
    dilated by a disk of ``dilate`` pixels (via FFT, cost independent of the radius).

    Parameters
    ----------
    significance : numpy.ndarray
        2D significance image; NaN counts as not significant.
    high, low : float
        Seed and growth thresholds, ``low <= high``.
    dilate : float
        Dilation radius in pixels (0: none).
    mask : numpy.ndarray of bool, optional
        Only pixels where ``mask`` is True may seed or grow a region (e.g. the safe mask).
    """
    sig = np.asarray(significance, dtype=float)
    if sig.ndim != 2:
        raise ValueError(f"significance must be a 2D image, got shape {sig.shape}")
    if not low <= high:
        raise ValueError(f"hysteresis thresholds need low <= high, got low={low}, high={high}")
    if not (np.isfinite(dilate) and dilate >= 0):
        raise ValueError(f"dilate must be >= 0 pixels, got {dilate}")
    valid = np.isfinite(sig)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    floor = min(low, high) - 1.0
    image = np.where(valid, sig, floor)
    excluded = apply_hysteresis_threshold(image, low, high)
    if dilate > 0 and excluded.any():
        grown = correlate(excluded.astype(float), disk_kernel(dilate, sampling="center"))
        excluded = grown > 0.5
    log.debug("hysteresis (high %.2f, low %.2f): %d pixels excluded", high, low, int(excluded.sum()))
    return excluded


def exclusion_mask(shape: tuple[int, int], *excluded: np.ndarray) -> np.ndarray:
    """Usable-pixel mask (``True`` = not excluded) from any number of excluded images.

    Parameters
    ----------
    shape : (ny, nx)
        Image shape (the result is all True when no excluded image is given).
    *excluded : numpy.ndarray of bool
        Images with ``True`` inside regions to exclude.
    """
    usable = np.ones(shape, dtype=bool)
    for part in excluded:
        part = np.asarray(part, dtype=bool)
        if part.shape != tuple(shape):
            raise ValueError(f"excluded image shape {part.shape} does not match {tuple(shape)}")
        usable &= ~part
    return usable
