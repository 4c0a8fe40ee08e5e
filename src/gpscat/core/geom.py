"""Sky geometry and maps: the one map type of gpscat.

A :class:`WcsGeom` is a 2D WCS pixel grid on the sky (frame, projection, reference
point, pixel size, shape).  A :class:`MapAxis` is a binned non-spatial axis (reco or
true energy, PSF offset, migration).  A :class:`Map` is a numpy array on a geometry
and zero or more axes, with a unit string.

Conventions (same as gammapy, so that files interoperate):

* data shape is ``(n_axis_k, ..., n_axis_1, ny, nx)``: the first axis in ``axes`` is
  the one next to the spatial axes (for one energy axis simply ``(ne, ny, nx)``);
* angles are degrees, energies TeV, pixel indices 0-based with pixel ``(0, 0)``
  centred on FITS pixel ``(1, 1)``;
* a cutout is a pixel-aligned sub-grid of its parent (same CRVAL, shifted CRPIX),
  so that stacking is array slicing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from scipy.ndimage import map_coordinates

__all__ = [
    "FRAMES",
    "Map",
    "MapAxis",
    "WcsGeom",
    "angular_separation",
    "to_frame",
]

FRAMES = {"galactic": ("GLON", "GLAT"), "icrs": ("RA--", "DEC-")}
_AXIS_UNITS = {"energy": "TeV", "energy_true": "TeV", "rad": "deg", "migra": ""}


def angular_separation(lon1, lat1, lon2, lat2):
    """Great-circle distance in degrees between (lon1, lat1) and (lon2, lat2), in degrees.

    Vincenty formula: accurate at all separations, vectorised, broadcasting.
    """
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=float)) for a in (lon1, lat1, lon2, lat2))
    dlon = lon2 - lon1
    s1, c1 = np.sin(lat1), np.cos(lat1)
    s2, c2 = np.sin(lat2), np.cos(lat2)
    num1 = c2 * np.sin(dlon)
    num2 = c1 * s2 - s1 * c2 * np.cos(dlon)
    den = s1 * s2 + c1 * c2 * np.cos(dlon)
    return np.degrees(np.arctan2(np.hypot(num1, num2), den))


def to_frame(lon, lat, frame_in: str, frame_out: str):
    """Convert coordinates (deg) between the ``galactic`` and ``icrs`` frames.

    Both frames are fixed (no epoch, no observer), so astropy's transformation between them
    is one constant rotation: it is taken from astropy once (:func:`_rotation`) and applied
    to the unit vectors with numpy, which agrees with ``SkyCoord.transform_to`` to ~1e-12
    deg at a small fraction of its cost per call.
    """
    _check_frame(frame_in)
    _check_frame(frame_out)
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    if frame_in == frame_out:
        return lon, lat
    lo, la = np.radians(lon), np.radians(lat)
    cos_la = np.cos(la)
    x, y, z = np.einsum("ij,j...->i...", _rotation(frame_in, frame_out), np.stack([cos_la * np.cos(lo), cos_la * np.sin(lo), np.sin(la)]))
    lon_out = np.degrees(np.arctan2(y, x)) % 360.0
    lat_out = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return lon_out, lat_out


@cache
def _rotation(frame_in: str, frame_out: str) -> np.ndarray:
    """The rotation matrix from ``frame_in`` to ``frame_out`` unit vectors (astropy's)."""
    basis = SkyCoord([0.0, 90.0, 0.0], [0.0, 0.0, 90.0], unit="deg", frame=frame_in)  # the x, y, z unit vectors
    out = basis.transform_to(frame_out).cartesian
    matrix = np.array([out.x.value, out.y.value, out.z.value])  # column j = image of basis vector j
    matrix.setflags(write=False)
    return matrix


def _check_frame(frame: str) -> None:
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {sorted(FRAMES)}, got {frame!r}")


# --------------------------------------------------------------------------- axes


@dataclass(frozen=True, eq=False)
class MapAxis:
    """A binned axis: ``edges`` (n+1 increasing values) in ``unit``.

    ``interp`` is ``"log"`` (energies; bin centres are geometric means) or ``"lin"``.
    """

    name: str
    edges: np.ndarray
    unit: str = ""
    interp: str = "log"

    def __post_init__(self):
        edges = np.asarray(self.edges, dtype=float)
        if edges.ndim != 1 or edges.size < 2:
            raise ValueError(f"axis {self.name!r}: edges must be 1D with at least 2 values")
        if not np.all(np.diff(edges) > 0):
            raise ValueError(f"axis {self.name!r}: edges must be strictly increasing, got {edges}")
        if self.interp not in ("log", "lin"):
            raise ValueError(f"axis {self.name!r}: interp must be 'log' or 'lin', got {self.interp!r}")
        if self.interp == "log" and edges[0] <= 0:
            raise ValueError(f"axis {self.name!r}: log axis needs positive edges, got {edges[0]}")
        edges.setflags(write=False)
        object.__setattr__(self, "edges", edges)

    @classmethod
    def from_energy_bounds(
        cls,
        emin: float,
        emax: float,
        *,
        nbin: int | None = None,
        per_decade: float | None = None,
        name: str = "energy",
        unit: str = "TeV",
    ) -> MapAxis:
        """Log-spaced energy axis, either ``nbin`` bins or ``per_decade`` bins per decade.

        With ``per_decade`` the number of bins is ``ceil(log10(emax/emin) * per_decade)``
        (rounded to the nearest integer first to avoid float noise), as in gammapy.
        """
        if not (0 < emin < emax):
            raise ValueError(f"energy bounds must satisfy 0 < emin < emax, got {emin}, {emax}")
        if (nbin is None) == (per_decade is None):
            raise ValueError("give exactly one of nbin and per_decade")
        if per_decade is not None:
            ndec = np.log10(emax / emin) * per_decade
            nbin = int(np.ceil(np.round(ndec, 6)))
        if nbin < 1:
            raise ValueError(f"nbin must be >= 1, got {nbin}")
        return cls(name, np.geomspace(emin, emax, nbin + 1), unit, "log")

    @classmethod
    def from_edges(cls, edges, *, name: str, unit: str | None = None, interp: str = "lin") -> MapAxis:
        return cls(name, np.asarray(edges, dtype=float), _AXIS_UNITS.get(name, "") if unit is None else unit, interp)

    @property
    def nbin(self) -> int:
        return self.edges.size - 1

    @property
    def center(self) -> np.ndarray:
        lo, hi = self.edges[:-1], self.edges[1:]
        return np.sqrt(lo * hi) if self.interp == "log" else 0.5 * (lo + hi)

    @property
    def width(self) -> np.ndarray:
        return np.diff(self.edges)

    @property
    def lo(self) -> np.ndarray:
        return self.edges[:-1]

    @property
    def hi(self) -> np.ndarray:
        return self.edges[1:]

    def squash(self) -> MapAxis:
        """One bin spanning the whole axis."""
        return replace(self, edges=self.edges[[0, -1]])

    def coord_to_idx(self, values) -> np.ndarray:
        """Bin index of each value; -1 outside the axis (upper edge excluded)."""
        v = np.asarray(values, dtype=float)
        idx = np.searchsorted(self.edges, v, side="right") - 1
        idx[(v < self.edges[0]) | (v >= self.edges[-1]) | ~np.isfinite(v)] = -1
        return idx

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, MapAxis)
            and self.name == other.name
            and self.unit == other.unit
            and self.interp == other.interp
            and self.edges.shape == other.edges.shape
            and np.allclose(self.edges, other.edges, rtol=1e-6, atol=0)
        )

    def __hash__(self):
        return hash((self.name, self.unit, self.nbin))


# ----------------------------------------------------------------------- geometry


@dataclass(frozen=True, eq=False)
class WcsGeom:
    """A 2D sky pixel grid.

    Parameters
    ----------
    frame : {"galactic", "icrs"}
    crval : (lon, lat) of the projection reference point, deg.
    crpix : FITS (1-based) pixel coordinates of the reference point.
    binsz : pixel size, deg (square pixels; CDELT1 = -binsz).
    npix : (nx, ny).
    proj : FITS projection code (``CAR``, ``TAN``, ``AIT``, ...).
    """

    frame: str
    crval: tuple[float, float]
    crpix: tuple[float, float]
    binsz: float
    npix: tuple[int, int]
    proj: str = "CAR"
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_frame(self.frame)
        if not self.binsz > 0:
            raise ValueError(f"binsz must be > 0, got {self.binsz}")
        nx, ny = (int(n) for n in self.npix)
        if nx < 1 or ny < 1:
            raise ValueError(f"npix must be positive, got {self.npix}")
        object.__setattr__(self, "npix", (nx, ny))
        object.__setattr__(self, "crval", (float(self.crval[0]), float(self.crval[1])))
        object.__setattr__(self, "crpix", (float(self.crpix[0]), float(self.crpix[1])))
        object.__setattr__(self, "binsz", float(self.binsz))

    # -- construction
    @classmethod
    def create(
        cls,
        center: tuple[float, float],
        width: float | tuple[float, float],
        binsz: float,
        *,
        frame: str = "galactic",
        proj: str = "CAR",
    ) -> WcsGeom:
        """Grid of ``width`` (deg, scalar or (w_lon, w_lat)) centred on ``center``.

        The number of pixels is ``round(width / binsz)`` per axis, the reference pixel is
        the map centre, as in gammapy's ``WcsGeom.create``.
        """
        w = np.broadcast_to(np.asarray(width, dtype=float), (2,))
        nx, ny = (max(1, int(np.round(x / binsz))) for x in w)
        return cls(frame, tuple(center), ((nx + 1) / 2.0, (ny + 1) / 2.0), binsz, (nx, ny), proj)

    @classmethod
    def from_header(cls, header: fits.Header) -> WcsGeom:
        """Geometry of a FITS image header (celestial axes 1 and 2)."""
        ctype1 = header["CTYPE1"]
        frame = "galactic" if ctype1.startswith("GLON") else "icrs"
        if not (ctype1.startswith("GLON") or ctype1.startswith("RA")):
            raise ValueError(f"unsupported CTYPE1 {ctype1!r}: expected GLON-xxx or RA---xxx")
        proj = ctype1[-3:]
        cd1, cd2 = header.get("CDELT1"), header.get("CDELT2")
        if cd1 is None or not np.isclose(abs(cd1), abs(cd2), rtol=1e-6):
            raise ValueError("only square pixels with CDELT1/CDELT2 keywords are supported")
        npix = (header["NAXIS1"], header["NAXIS2"])
        if "WCSSHAPE" in header:
            shape = [int(s) for s in header["WCSSHAPE"].strip("()").split(",") if s.strip()]
            npix = (shape[0], shape[1])
        return cls(
            frame,
            (header["CRVAL1"], header["CRVAL2"]),
            (header["CRPIX1"], header["CRPIX2"]),
            abs(cd1),
            npix,
            proj,
        )

    # -- basic properties
    @property
    def shape(self) -> tuple[int, int]:
        """Numpy shape (ny, nx)."""
        return (self.npix[1], self.npix[0])

    @property
    def wcs(self) -> WCS:
        if "wcs" not in self._cache:
            w = WCS(naxis=2)
            lon, lat = FRAMES[self.frame]
            w.wcs.ctype = [f"{lon}-{self.proj}", f"{lat}-{self.proj}"]
            w.wcs.crval = list(self.crval)
            w.wcs.crpix = list(self.crpix)
            w.wcs.cdelt = [-self.binsz, self.binsz]
            w.wcs.cunit = ["deg", "deg"]
            if self.frame == "icrs":
                w.wcs.radesys = "ICRS"
            w.wcs.set()
            self._cache["wcs"] = w
        return self._cache["wcs"]

    def to_header(self) -> fits.Header:
        return self.wcs.to_header()

    @property
    def center_pix(self) -> tuple[float, float]:
        return ((self.npix[0] - 1) / 2.0, (self.npix[1] - 1) / 2.0)

    @property
    def center_coord(self) -> tuple[float, float]:
        lon, lat = self.pix_to_coord(*self.center_pix)
        return float(lon), float(lat)

    @property
    def width(self) -> tuple[float, float]:
        return (self.npix[0] * self.binsz, self.npix[1] * self.binsz)

    # -- transforms (0-based pixel coordinates)
    def pix_to_coord(self, x, y):
        """Pixel (0-based) → (lon, lat) deg in the geometry's frame; lon wrapped to [0, 360)."""
        lon, lat = self.wcs.wcs_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        return np.mod(lon, 360.0), lat

    def coord_to_pix(self, lon, lat, frame: str | None = None):
        """(lon, lat) deg (in ``frame``, default the geometry's) → 0-based pixel (x, y)."""
        if frame is not None and frame != self.frame:
            lon, lat = to_frame(lon, lat, frame, self.frame)
        x, y = self.wcs.wcs_world2pix(np.asarray(lon, float), np.asarray(lat, float), 0)
        return x, y

    def coord_to_idx(self, lon, lat, frame: str | None = None):
        """Integer pixel indices (ix, iy) and a boolean "inside the map" mask."""
        x, y = self.coord_to_pix(lon, lat, frame)
        ix = np.floor(np.asarray(x) + 0.5).astype(np.int64)
        iy = np.floor(np.asarray(y) + 0.5).astype(np.int64)
        inside = (ix >= 0) & (ix < self.npix[0]) & (iy >= 0) & (iy < self.npix[1])
        inside &= np.isfinite(x) & np.isfinite(y)
        return ix, iy, inside

    def get_coord(self, frame: str | None = None):
        """(lon, lat) deg of the pixel centres, arrays of shape (ny, nx); cached."""
        key = ("coord", frame or self.frame)
        if key not in self._cache:
            y, x = np.indices(self.shape, dtype=float)
            lon, lat = self.pix_to_coord(x, y)
            if frame is not None and frame != self.frame:
                lon, lat = to_frame(lon, lat, self.frame, frame)
            lon.setflags(write=False)
            lat.setflags(write=False)
            self._cache[key] = (lon, lat)
        return self._cache[key]

    def separation(self, lon, lat, frame: str | None = None) -> np.ndarray:
        """Angular distance (deg) of every pixel centre from (lon, lat)."""
        if frame is not None and frame != self.frame:
            lon, lat = to_frame(lon, lat, frame, self.frame)
        glon, glat = self.get_coord()
        return angular_separation(glon, glat, lon, lat)

    def solid_angle(self) -> np.ndarray:
        """Solid angle (sr) of each pixel, shape (ny, nx); exact for great-circle edges."""
        if "omega" not in self._cache:
            ny, nx = self.shape
            yc, xc = np.mgrid[-0.5 : ny : 1.0, -0.5 : nx : 1.0]
            lon, lat = self.pix_to_coord(xc, yc)
            lon, lat = np.radians(lon), np.radians(lat)
            v = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)
            a, b = v[:-1, :-1], v[:-1, 1:]
            c, d = v[1:, 1:], v[1:, :-1]
            omega = _triangle_area(a, b, c) + _triangle_area(a, c, d)
            omega.setflags(write=False)
            self._cache["omega"] = omega
        return self._cache["omega"]

    # -- sub-grids
    def slice(self, iy: slice, ix: slice) -> WcsGeom:
        """Pixel-aligned sub-grid for numpy slices (step 1) along y and x."""
        x0, x1, _ = ix.indices(self.npix[0])
        y0, y1, _ = iy.indices(self.npix[1])
        if x1 <= x0 or y1 <= y0:
            raise ValueError("empty slice of a geometry")
        return replace(self, crpix=(self.crpix[0] - x0, self.crpix[1] - y0), npix=(x1 - x0, y1 - y0))

    def cutout_slices(self, lon: float, lat: float, width, frame: str | None = None):
        """Numpy (y, x) slices of the pixel-aligned box of ``width`` (deg) around (lon, lat).

        The box is clipped to the map; ``None`` when it does not overlap the map.
        """
        x, y = self.coord_to_pix(lon, lat, frame)
        w = np.broadcast_to(np.asarray(width, dtype=float), (2,))
        hx, hy = 0.5 * w / self.binsz
        x0 = int(np.floor(float(x) - hx + 0.5))
        x1 = int(np.ceil(float(x) + hx + 0.5))
        y0 = int(np.floor(float(y) - hy + 0.5))
        y1 = int(np.ceil(float(y) + hy + 0.5))
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.npix[0]), min(y1, self.npix[1])
        if x1 <= x0 or y1 <= y0:
            return None
        return slice(y0, y1), slice(x0, x1)

    def cutout(self, lon: float, lat: float, width, frame: str | None = None) -> WcsGeom | None:
        sl = self.cutout_slices(lon, lat, width, frame)
        return None if sl is None else self.slice(*sl)

    def offset_in(self, parent: WcsGeom) -> tuple[int, int]:
        """(x0, y0) offset of this grid inside ``parent`` when both are the same pixel grid."""
        if not self.is_aligned(parent):
            raise ValueError("geometries are not on the same pixel grid")
        dx = parent.crpix[0] - self.crpix[0]
        dy = parent.crpix[1] - self.crpix[1]
        return int(round(dx)), int(round(dy))

    def slices_in(self, parent: WcsGeom) -> tuple[slice, slice]:
        """Numpy (y, x) slices of this (aligned) grid inside ``parent``, clipped to it.

        Returns ``(parent_slices, self_slices)``; both empty-able (check ``.stop > .start``).
        """
        x0, y0 = self.offset_in(parent)
        nx, ny = self.npix
        px0, py0 = max(x0, 0), max(y0, 0)
        px1, py1 = min(x0 + nx, parent.npix[0]), min(y0 + ny, parent.npix[1])
        return (
            (slice(py0, max(py1, py0)), slice(px0, max(px1, px0))),
            (slice(py0 - y0, max(py1, py0) - y0), slice(px0 - x0, max(px1, px0) - x0)),
        )

    def is_aligned(self, other: WcsGeom) -> bool:
        """Same frame, projection, CRVAL, pixel size and integer CRPIX shift."""
        if (self.frame, self.proj) != (other.frame, other.proj):
            return False
        if not np.isclose(self.binsz, other.binsz, rtol=1e-9):
            return False
        if not np.allclose(self.crval, other.crval, atol=1e-9):
            return False
        d = np.subtract(self.crpix, other.crpix)
        return bool(np.allclose(d, np.round(d), atol=1e-6))

    def upsample(self, factor: int) -> WcsGeom:
        """Finer grid covering the same area (``factor`` sub-pixels per pixel per axis)."""
        f = int(factor)
        crpix = ((self.crpix[0] - 0.5) * f + 0.5, (self.crpix[1] - 0.5) * f + 0.5)
        return replace(self, crpix=crpix, binsz=self.binsz / f, npix=(self.npix[0] * f, self.npix[1] * f))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, WcsGeom)
            and self.npix == other.npix
            and self.is_aligned(other)
            and np.allclose(self.crpix, other.crpix, atol=1e-6)
        )

    def __hash__(self):
        return hash((self.frame, self.proj, self.npix, round(self.binsz, 9)))

    def contains(self, lon, lat, frame: str | None = None) -> np.ndarray:
        return self.coord_to_idx(lon, lat, frame)[2]


def _triangle_area(a, b, c):
    """Solid angle of spherical triangles with unit-vector corners (Van Oosterom–Strackee)."""
    num = np.abs(np.einsum("...i,...i", a, np.cross(b, c)))
    den = 1.0 + np.einsum("...i,...i", a, b) + np.einsum("...i,...i", b, c) + np.einsum("...i,...i", c, a)
    return 2.0 * np.arctan2(num, den)


# --------------------------------------------------------------------------- maps


@dataclass(eq=False)
class Map:
    """Data on a :class:`WcsGeom` and non-spatial ``axes``.

    ``data.shape == (*reversed(axis sizes), ny, nx)``.  ``unit`` is an astropy-parsable
    string (``""`` for dimensionless or boolean masks).
    """

    geom: WcsGeom
    data: np.ndarray
    axes: tuple[MapAxis, ...] = ()
    unit: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.axes = tuple(self.axes)
        expected = self.expected_shape(self.geom, self.axes)
        self.data = np.asarray(self.data)
        if self.data.shape != expected:
            raise ValueError(f"map data shape {self.data.shape} does not match geometry/axes {expected}")

    @staticmethod
    def expected_shape(geom: WcsGeom, axes) -> tuple[int, ...]:
        return tuple(ax.nbin for ax in reversed(tuple(axes))) + geom.shape

    @classmethod
    def from_geom(cls, geom: WcsGeom, axes=(), *, unit: str = "", dtype=float, fill=0.0) -> Map:
        data = np.full(cls.expected_shape(geom, axes), fill, dtype=dtype)
        return cls(geom, data, tuple(axes), unit)

    def axis(self, name: str) -> MapAxis:
        for ax in self.axes:
            if ax.name == name:
                return ax
        raise KeyError(f"map has no axis {name!r}; axes are {[a.name for a in self.axes]}")

    def copy(self, **changes) -> Map:
        kw = dict(geom=self.geom, data=self.data.copy(), axes=self.axes, unit=self.unit, meta=dict(self.meta))
        kw.update(changes)
        return Map(**kw)

    def sum_over_axes(self) -> Map:
        """Image: sum over all non-spatial axes."""
        return Map(self.geom, self.data.reshape((-1,) + self.geom.shape).sum(axis=0), (), self.unit, dict(self.meta))

    def cutout(self, iy: slice, ix: slice) -> Map:
        """Sub-map for numpy slices along the spatial axes (a copy)."""
        return Map(self.geom.slice(iy, ix), self.data[..., iy, ix].copy(), self.axes, self.unit, dict(self.meta))

    def paste_into(self, parent: Map, *, weights: np.ndarray | None = None) -> None:
        """Add this (aligned) map into ``parent`` in place, optionally times ``weights``."""
        psl, ssl = self.geom.slices_in(parent.geom)
        block = self.data[(..., *ssl)]
        if weights is not None:
            block = block * weights[(..., *ssl)]
        parent.data[(..., *psl)] += block

    def interp_image(self, lon, lat, frame: str | None = None, *, order: int = 1) -> np.ndarray:
        """Values of a 2D map at sky positions (bilinear by default; NaN outside)."""
        if self.data.ndim != 2:
            raise ValueError("interp_image needs a 2D map")
        x, y = self.geom.coord_to_pix(lon, lat, frame)
        out = map_coordinates(self.data.astype(float), [np.ravel(y), np.ravel(x)], order=order, mode="constant", cval=np.nan)
        return out.reshape(np.shape(x))
