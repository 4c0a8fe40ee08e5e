"""Survey tiles: a regular grid of regions of interest (core + margin) over the survey map.

Tiles are defined in the survey's *plane coordinates*: the offset (deg) of a pixel centre
from the survey map centre along the pixel axes, ``u = (x - (nx - 1) / 2) * binsz`` and
``v = (y - (ny - 1) / 2) * binsz``.  For the survey grids of all datasets (same centre,
projection and width, different pixel sizes) these are the same numbers for the same sky
position, so a tile is one region for every dataset.

* The **core** of tile ``(i, j)`` is the cell ``[-W/2 + i S, -W/2 + (i + 1) S)`` in ``u``
  (and likewise in ``v``) of the grid of cell size ``S`` (``tiles.size``) started at the
  survey's lower-left edge; the last cell of a row is cut at the survey edge, and the
  outer cells extend to infinity, so that every sky position belongs to **exactly one**
  core (:func:`tile_of`).  For a regular grid that is the tile whose core centre is
  nearest (the seam rule of the catalog: a seed or source is kept by that tile only).
* The **full** region is the core grown by ``tiles.margin`` on every side, clipped to the
  survey map.  A tile's map geometry, per dataset, is the pixel-aligned sub-grid of that
  dataset's survey grid whose pixel centres are in the full region
  (:meth:`TileGrid.full_slices`), so per-observation cutouts paste into it exactly as
  into the whole survey.

Everything here is index arithmetic on one row and one column of pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpscat.core.geom import WcsGeom, to_frame

__all__ = ["Tile", "TileGrid", "plane_coords"]


@dataclass(frozen=True)
class Tile:
    """One tile: its name (``x<i>y<j>``), grid indices and core bounds in plane coordinates."""

    name: str
    i: int
    j: int
    u: tuple[float, float]  # core bounds along the x pixel axis, deg from the survey centre
    v: tuple[float, float]  # core bounds along the y pixel axis


@dataclass(frozen=True)
class TileGrid:
    """Regular grid of tiles over a survey of ``width`` (deg) with cells of ``size`` and ``margin``.

    Parameters
    ----------
    width : (w_x, w_y)
        Survey width along the x and y pixel axes, deg.
    size : (s_x, s_y)
        Tile (core) size, deg; a size at least the width gives one tile along that axis.
    margin : float
        Margin added to every side of a core, deg.
    """

    width: tuple[float, float]
    size: tuple[float, float]
    margin: float

    def __post_init__(self):
        for name, pair in (("width", self.width), ("size", self.size)):
            if len(pair) != 2 or not all(np.isfinite(pair)) or min(pair) <= 0:
                raise ValueError(f"tile grid {name} must be two positive numbers, got {pair}")
        if not (np.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"tile margin must be >= 0, got {self.margin}")

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tiles (n_x, n_y)."""
        return tuple(max(1, int(np.ceil(w / s - 1e-6))) for w, s in zip(self.width, self.size, strict=True))

    def __len__(self) -> int:
        nx, ny = self.shape
        return nx * ny

    def _edges(self, axis: int) -> np.ndarray:
        w, s, n = self.width[axis], self.size[axis], self.shape[axis]
        edges = -0.5 * w + s * np.arange(n + 1, dtype=float)
        edges[-1] = 0.5 * w
        return edges

    @property
    def tiles(self) -> list[Tile]:
        """Tiles in row-major order (x fastest)."""
        eu, ev = self._edges(0), self._edges(1)
        nx, ny = self.shape
        return [Tile(f"x{i}y{j}", i, j, (float(eu[i]), float(eu[i + 1])), (float(ev[j]), float(ev[j + 1])))
                for j in range(ny) for i in range(nx)]

    def tile(self, name: str) -> Tile:
        for t in self.tiles:
            if t.name == name:
                return t
        raise ValueError(f"no tile named {name!r}; the grid has {[t.name for t in self.tiles]}")

    # -- positions
    def _index(self, values, axis: int) -> np.ndarray:
        """Cell index along ``axis`` of plane coordinates (outer cells are unbounded)."""
        edges = self._edges(axis)
        idx = np.searchsorted(edges[1:-1], np.asarray(values, dtype=float), side="right")
        return idx.astype(np.int64)

    def tile_of(self, geom: WcsGeom, lon, lat, frame: str | None = None) -> np.ndarray:
        """Name of the tile whose core holds each position (``geom``: a survey grid)."""
        u, v = plane_coords(geom, *geom.coord_to_pix(lon, lat, frame))
        i, j = self._index(u, 0), self._index(v, 1)
        return np.asarray([f"x{a}y{b}" for a, b in zip(np.ravel(i), np.ravel(j), strict=True)]).reshape(np.shape(i))

    # -- pixel slices of a survey grid
    def _axis_slice(self, geom: WcsGeom, axis: int, lo: float, hi: float) -> slice:
        n = geom.npix[axis]
        centres = (np.arange(n) - 0.5 * (n - 1)) * geom.binsz
        inside = np.nonzero((centres >= lo) & (centres < hi))[0]
        if inside.size == 0:
            raise ValueError(f"tile bounds [{lo}, {hi}) deg hold no pixel of the survey grid (binsz {geom.binsz})")
        return slice(int(inside[0]), int(inside[-1]) + 1)

    def _bounds(self, tile: Tile, axis: int, grow: float) -> tuple[float, float]:
        lo, hi = tile.u if axis == 0 else tile.v
        idx = tile.i if axis == 0 else tile.j
        lo = -np.inf if idx == 0 else lo - grow
        hi = np.inf if idx == self.shape[axis] - 1 else hi + grow
        return lo, hi

    def core_slices(self, geom: WcsGeom, tile: Tile | str) -> tuple[slice, slice]:
        """Numpy (y, x) slices of ``geom`` (a survey grid) whose pixel centres are in the core."""
        t = self.tile(tile) if isinstance(tile, str) else tile
        return (self._axis_slice(geom, 1, *self._bounds(t, 1, 0.0)), self._axis_slice(geom, 0, *self._bounds(t, 0, 0.0)))

    def full_slices(self, geom: WcsGeom, tile: Tile | str, *, extra: float = 0.0) -> tuple[slice, slice]:
        """Numpy (y, x) slices of ``geom`` whose pixel centres are in core + margin (+ ``extra``), clipped."""
        t = self.tile(tile) if isinstance(tile, str) else tile
        grow = self.margin + extra
        return (self._axis_slice(geom, 1, *self._bounds(t, 1, grow)), self._axis_slice(geom, 0, *self._bounds(t, 0, grow)))

    def full_geom(self, geom: WcsGeom, tile: Tile | str, *, extra: float = 0.0) -> WcsGeom:
        """The tile's pixel-aligned sub-grid of the survey grid ``geom`` (core + margin + ``extra``)."""
        return geom.slice(*self.full_slices(geom, tile, extra=extra))

    def core_in_full(self, geom: WcsGeom, tile: Tile | str) -> tuple[slice, slice]:
        """Slices of the core inside the tile's full grid (both on survey grid ``geom``)."""
        (cy, cx), (fy, fx) = self.core_slices(geom, tile), self.full_slices(geom, tile)
        return slice(cy.start - fy.start, cy.stop - fy.start), slice(cx.start - fx.start, cx.stop - fx.start)

    def paste_core(self, data: np.ndarray, geom: WcsGeom, survey: np.ndarray, survey_geom: WcsGeom, tile: Tile | str) -> None:
        """Copy the core pixels of a tile's map ``data`` (on ``geom``, aligned with the survey
        grid ``survey_geom``) into the survey array ``survey`` in place (last two axes)."""
        cy, cx = self.core_slices(survey_geom, tile)
        x0, y0 = geom.offset_in(survey_geom)
        ty, tx = slice(cy.start - y0, cy.stop - y0), slice(cx.start - x0, cx.stop - x0)
        if ty.start < 0 or tx.start < 0 or ty.stop > geom.npix[1] or tx.stop > geom.npix[0]:
            raise ValueError(f"tile {tile}: the map {geom.npix} does not cover the tile's core")
        survey[..., cy, cx] = data[..., ty, tx]

    def roi_inside(self, geom: WcsGeom, tile: Tile | str, lon: float, lat: float, radius: float, *,
                   frame: str | None = None) -> bool:
        """Whether the disk (``lon``, ``lat``, ``radius`` deg) lies in the tile's full region of
        the survey grid ``geom``; sides where the full region ends at the survey edge are open
        (the untiled map ends there too).  Tested on 72 points of the circle."""
        phi = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
        lon0, lat0 = (float(lon), float(lat)) if frame in (None, geom.frame) else _to(geom.frame, frame, lon, lat)
        clat = np.clip(np.cos(np.radians(lat0)), 1e-6, None)
        plon = lon0 + radius * np.cos(phi) / clat
        plat = np.clip(lat0 + radius * np.sin(phi), -90, 90)
        x, y = geom.coord_to_pix(plon, plat)
        fy, fx = self.full_slices(geom, tile)
        ok = np.ones(phi.shape, dtype=bool)
        if fx.start > 0:
            ok &= x >= fx.start - 0.5
        if fx.stop < geom.npix[0]:
            ok &= x <= fx.stop - 0.5
        if fy.start > 0:
            ok &= y >= fy.start - 0.5
        if fy.stop < geom.npix[1]:
            ok &= y <= fy.stop - 0.5
        return bool(ok.all())

    def overlaps(self, geom: WcsGeom, tile: Tile | str, box: tuple[slice, slice] | None) -> bool:
        """Whether the (y, x) pixel ``box`` of ``geom`` overlaps the tile's full region."""
        if box is None:
            return False
        fy, fx = self.full_slices(geom, tile)
        by, bx = box
        return bool(by.start < fy.stop and fy.start < by.stop and bx.start < fx.stop and fx.start < bx.stop)


def plane_coords(geom: WcsGeom, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Plane coordinates (deg from the map centre along the pixel axes) of pixel (x, y)."""
    return ((np.asarray(x, float) - 0.5 * (geom.npix[0] - 1)) * geom.binsz,
            (np.asarray(y, float) - 0.5 * (geom.npix[1] - 1)) * geom.binsz)


def _to(frame_out: str, frame_in: str, lon: float, lat: float) -> tuple[float, float]:
    a, b = to_frame(lon, lat, frame_in, frame_out)
    return float(a), float(b)
