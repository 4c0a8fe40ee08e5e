"""Field-of-view (FoV) coordinates and FoV background normalisation.

FoV coordinates
---------------
A FoV frame is a spherical rotation that puts the pointing position at
``(fov_lon, fov_lat) = (0, 0)``, with ``fov_lat`` towards the celestial north pole
(RADEC alignment).  As in gammapy 2.x (``FoVICRSFrame``), and as seen by a camera
looking at the sky, longitudes are *reversed*: ``fov_lon`` grows towards the west
(decreasing RA).  The alignment ``REVERSE_LON_RADEC`` flips that sign; gammapy 2.1 (and
:meth:`gpscat.io.dl3.DataStore.load`) applies it to H.E.S.S. DL3 DR1-era files, whose
background tables say ``FOVALIGN = 'RADEC'`` but were made with the opposite sign.

An ALTAZ-aligned frame (gammapy's ``FoVAltAzFrame``: ``fov_lat`` towards the zenith,
longitudes reversed) turns with respect to the sky during an observation.  Both frames
share the pointing as origin, so one maps onto the other by a fixed orthogonal 2×2 matrix
acting on the (y, z) components of the unit vectors: :func:`altaz_rotations` gets these
matrices from astropy at time nodes, :func:`rotate_fov` applies them.

FoV background normalisation
----------------------------
The IRF background template of one observation is scaled (and optionally tilted in
energy) to the counts outside an exclusion mask, by maximising the Poisson likelihood
(Cash statistic).  For a norm alone the maximum is analytic: ``Σ n / Σ b``.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from scipy.optimize import minimize_scalar

from gpscat.core.geom import WcsGeom, angular_separation, to_frame

__all__ = [
    "FOV_ALIGNMENTS",
    "FovFit",
    "altaz_rotations",
    "fov_normalise",
    "fov_overlaps_geom",
    "fov_to_sky",
    "rotate_fov",
    "sky_to_fov",
]

log = logging.getLogger(__name__)

FOV_ALIGNMENTS = ("RADEC", "REVERSE_LON_RADEC", "ALTAZ")


def _unit_vectors(lon, lat):
    lon, lat = np.radians(lon), np.radians(lat)
    cl = np.cos(lat)
    return cl * np.cos(lon), cl * np.sin(lon), np.sin(lat)


def _lon_sign(alignment: str) -> float:
    if alignment == "RADEC":
        return -1.0
    if alignment == "REVERSE_LON_RADEC":
        return 1.0
    if alignment == "ALTAZ":
        raise ValueError("an ALTAZ-aligned FoV frame turns during the observation: use altaz_rotations() and rotate_fov()")
    raise ValueError(f"FoV alignment must be one of {FOV_ALIGNMENTS}, got {alignment!r}")


def sky_to_fov(lon, lat, lon_pnt: float, lat_pnt: float, *, alignment: str = "RADEC"):
    """Sky (RA, Dec) deg → FoV (fov_lon, fov_lat) deg around the pointing (RA, Dec).

    Parameters
    ----------
    lon, lat : array_like
        Positions in the frame of the pointing (ICRS for RADEC alignment), deg.
    lon_pnt, lat_pnt : float
        Pointing position, deg.
    alignment : {"RADEC", "REVERSE_LON_RADEC"}
        FoV frame alignment (the ``FOVALIGN`` header keyword of the background IRF).

    Returns
    -------
    fov_lon, fov_lat : ndarray
        deg, ``fov_lon`` in [-180, 180).
    """
    sign = _lon_sign(alignment)
    x, y, z = _unit_vectors(np.asarray(lon, float) - lon_pnt, lat)
    s, c = np.sin(np.radians(lat_pnt)), np.cos(np.radians(lat_pnt))
    xr = c * x + s * z
    zr = -s * x + c * z
    fov_lon = np.degrees(np.arctan2(sign * y, xr))
    fov_lat = np.degrees(np.arcsin(np.clip(zr, -1.0, 1.0)))
    return fov_lon, fov_lat


def fov_to_sky(fov_lon, fov_lat, lon_pnt: float, lat_pnt: float, *, alignment: str = "RADEC"):
    """Inverse of :func:`sky_to_fov`: FoV coordinates (deg) → sky (lon, lat) deg, lon in [0, 360)."""
    sign = _lon_sign(alignment)
    xr, yr, zr = _unit_vectors(fov_lon, fov_lat)
    y = sign * yr
    s, c = np.sin(np.radians(lat_pnt)), np.cos(np.radians(lat_pnt))
    x = c * xr - s * zr
    z = s * xr + c * zr
    lon = np.mod(np.degrees(np.arctan2(y, x)) + lon_pnt, 360.0)
    lat = np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
    return lon, lat


def rotate_fov(fov_lon, fov_lat, matrix: np.ndarray):
    """Apply a FoV-frame change ``matrix`` (2×2, on the (y, z) unit-vector components), deg."""
    x, y, z = _unit_vectors(fov_lon, fov_lat)
    y2 = matrix[0, 0] * y + matrix[0, 1] * z
    z2 = matrix[1, 0] * y + matrix[1, 1] * z
    return np.degrees(np.arctan2(y2, x)), np.degrees(np.arcsin(np.clip(z2, -1.0, 1.0)))


def _radec_to_altaz_matrices(pointing, location: EarthLocation, mjd: np.ndarray, delta: float = 1.0) -> np.ndarray:
    """FoV-RADEC → FoV-ALTAZ matrices at times ``mjd`` (TT), shape (n, 2, 2)."""
    ra, dec = fov_to_sky(np.array([0.0, 0.0, delta]), np.array([0.0, delta, 0.0]), *pointing)
    frame = AltAz(obstime=Time(np.asarray(mjd)[:, None], format="mjd", scale="tt"), location=location)
    altaz = SkyCoord(ra[None, :], dec[None, :], unit="deg", frame="icrs").transform_to(frame)
    az, alt = altaz.az.deg, altaz.alt.deg
    fl, fb = sky_to_fov(az[:, 1:], alt[:, 1:], az[:, :1], alt[:, :1])  # gammapy's FoVAltAzFrame: lon reversed
    _, y, z = _unit_vectors(fl, fb)  # columns: north (A) and fov_lon (B) test points
    s = np.sin(np.radians(delta))
    # M @ [[0, s], [s, 0]] = [[yA, yB], [zA, zB]]
    return np.stack([np.stack([y[:, 1] / s, y[:, 0] / s], -1), np.stack([z[:, 1] / s, z[:, 0] / s], -1)], 1)


def altaz_rotations(
    pointing: tuple[float, float],
    *,
    location: tuple[float, float, float],
    mjd_start: float,
    duration: float,
    max_rotation: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Time nodes of an observation for an ALTAZ-aligned background, as weights and matrices.

    Parameters
    ----------
    pointing : (RA, Dec) deg
        Fixed (tracked) pointing position.
    location : (lon deg, lat deg, height m)
        Observatory.
    mjd_start : float
        Start of the observation, MJD (TT).
    duration : float
        Duration, s (the ontime, as gammapy).
    max_rotation : float
        Largest rotation of the FoV between time nodes, deg (gammapy's ``fov_rotation_step``).

    Returns
    -------
    weights : ndarray (n,)
        Trapezoid weights of the time nodes, summing to 1.
    matrices : ndarray (n, 2, 2)
        FoV-RADEC → FoV-ALTAZ matrices (see :func:`rotate_fov`).
    """
    if not duration > 0:
        raise ValueError(f"duration must be > 0 s, got {duration}")
    loc = EarthLocation.from_geodetic(location[0] * u.deg, location[1] * u.deg, location[2] * u.m)
    t0 = np.linspace(0.0, duration, max(3, int(duration // 120) + 2))
    m0 = _radec_to_altaz_matrices(pointing, loc, mjd_start + t0 / 86400.0)
    angle = np.degrees(np.unwrap(np.arctan2(m0[:, 1, 0], m0[:, 0, 0])))
    rate = float(np.max(np.abs(np.diff(angle)) / np.diff(t0)))
    n = max(2, int(np.ceil(rate * duration / max_rotation)) + 1)
    t = np.linspace(0.0, duration, n)
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] *= 0.5
    return weights, _radec_to_altaz_matrices(pointing, loc, mjd_start + t / 86400.0)


def fov_overlaps_geom(geom: WcsGeom, ra, dec, offset_max: float) -> np.ndarray:
    """True for pointings (RA, Dec deg) whose FoV disc of radius ``offset_max`` meets the map.

    A pointing inside the map overlaps; otherwise its distance to the map outline
    (sampled finer than a tenth of ``offset_max``) must be below ``offset_max``.
    """
    ra = np.atleast_1d(np.asarray(ra, float))
    dec = np.atleast_1d(np.asarray(dec, float))
    lon, lat = to_frame(ra, dec, "icrs", geom.frame)
    x, y = geom.coord_to_pix(lon, lat)
    nx, ny = geom.npix
    inside = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    step = max(1.0, 0.1 * offset_max / geom.binsz)
    xs = np.append(np.arange(-0.5, nx - 0.5, step), nx - 0.5)
    ys = np.append(np.arange(-0.5, ny - 0.5, step), ny - 0.5)
    bx = np.concatenate([xs, xs, np.full(ys.size, -0.5), np.full(ys.size, nx - 0.5)])
    by = np.concatenate([np.full(xs.size, -0.5), np.full(xs.size, ny - 0.5), ys, ys])
    blon, blat = geom.pix_to_coord(bx, by)
    ok = np.isfinite(blon) & np.isfinite(blat)
    blon, blat = blon[ok], blat[ok]
    out = inside.copy()
    todo = np.flatnonzero(~inside)
    for start in range(0, todo.size, 256):
        i = todo[start : start + 256]
        d = angular_separation(lon[i, None], lat[i, None], blon[None, :], blat[None, :])
        out[i] = d.min(axis=1) < offset_max
    return out


class FovFit(NamedTuple):
    """Result of :func:`fov_normalise`.

    ``norm`` scales the background template; the fitted model is
    ``norm * background * (E / e_ref) ** (-tilt)``.  ``valid`` is False when there were
    fewer than ``min_counts`` counts in the mask (then ``norm = 1``, ``tilt = 0``).
    """

    norm: float
    norm_err: float
    tilt: float
    n_counts: float
    n_background: float
    valid: bool


def fov_normalise(
    counts: np.ndarray,
    background: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    tilt: bool = False,
    energy: np.ndarray | None = None,
    e_ref: float = 1.0,
    tilt_bounds: tuple[float, float] = (-1.0, 1.0),
    min_counts: float = 10.0,
) -> FovFit:
    """Fit the FoV background norm (and tilt) of one observation by Poisson likelihood.

    Parameters
    ----------
    counts, background : ndarray, shape (n_energy, ny, nx) or any shape
        Observed counts and IRF background template (predicted counts per bin).
    mask : ndarray of bool, optional
        Bins to use (safe mask ∧ not excluded); default all.
    tilt : bool
        Also fit a spectral tilt ``(E / e_ref) ** (-tilt)``; needs ``energy``.
    energy : ndarray, shape (n_energy,)
        Reco energy bin centres (TeV), for the tilt.
    e_ref : float
        Reference energy of the tilt, TeV.
    tilt_bounds : (float, float)
        Allowed tilt range.
    min_counts : float
        Below this many counts in the mask the template is kept (norm 1, ``valid`` False).

    Returns
    -------
    FovFit
    """
    counts = np.asarray(counts, dtype=float)
    background = np.asarray(background, dtype=float)
    if counts.shape != background.shape:
        raise ValueError(f"counts shape {counts.shape} differs from background shape {background.shape}")
    mask = np.ones(counts.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), counts.shape)
    if np.any(counts[mask] < 0) or np.any(background[mask] < 0):
        raise ValueError("counts and background must be non-negative")
    n_tot = float(counts[mask].sum())
    b_tot = float(background[mask].sum())
    if n_tot < min_counts or b_tot <= 0:
        log.warning("FoV normalisation: %.0f counts and %.3g background in the mask; keeping the template", n_tot, b_tot)
        return FovFit(1.0, np.nan, 0.0, n_tot, b_tot, False)
    if not tilt:
        return FovFit(n_tot / b_tot, np.sqrt(n_tot) / b_tot, 0.0, n_tot, b_tot, True)

    if energy is None:
        raise ValueError("tilt=True needs the reco energy bin centres (energy=...)")
    energy = np.asarray(energy, dtype=float)
    if counts.ndim < 1 or energy.shape != (counts.shape[0],):
        raise ValueError(f"energy must have one value per bin of axis 0 ({counts.shape[0]}), got shape {energy.shape}")
    # sum spatially first: the likelihood only depends on per-energy totals of b*w and n*log(b*w)
    axes = tuple(range(1, counts.ndim))
    n_e = np.where(mask, counts, 0.0).sum(axis=axes) if axes else np.where(mask, counts, 0.0)
    b_e = np.where(mask, background, 0.0).sum(axis=axes) if axes else np.where(mask, background, 0.0)
    log_e = np.log(energy / e_ref)

    def profile_cash(t: float) -> float:
        w = b_e * np.exp(-t * log_e)
        norm = n_tot / w.sum()
        mu = norm * w
        good = n_e > 0
        return 2.0 * float(mu.sum() - np.sum(n_e[good] * np.log(mu[good])))

    res = minimize_scalar(profile_cash, bounds=tilt_bounds, method="bounded", options={"xatol": 1e-6})
    t = float(res.x)
    wsum = float((b_e * np.exp(-t * log_e)).sum())
    return FovFit(n_tot / wsum, np.sqrt(n_tot) / wsum, t, n_tot, b_tot, bool(res.success))
