"""Interpolation on regular IRF grids and exact integration of log-log interpolants.

IRF tables give values at bin centres ("nodes").  Between nodes we interpolate
multilinearly in scaled coordinates (``log`` for energies, ``lin`` for angles and
migration), optionally on the logarithm of the values (background rates, which span
decades).  Beyond the outermost nodes the interpolant is extrapolated linearly up to
the table's outer bin edges, and is zero outside them.  This is the convention of
gammapy's IRF classes, so that our maps agree with gammapy's to interpolation noise.

All functions broadcast their coordinate arguments against each other and never loop
over points: the corner indices and weights are computed per axis on that axis' own
(broadcastable) shape and combined with numpy fancy indexing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["grid_interp", "integrate_loglog", "loglog_segment_integral"]

_SCALES = ("lin", "log")


def _scale(x, scale: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if scale == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x)
    return x


def _axis_weights(coord, nodes: np.ndarray, scale: str, bounds):
    """Lower corner index, weight of the upper corner and out-of-bounds mask along one axis."""
    c = np.asarray(coord, dtype=float)
    xp = _scale(nodes, scale)
    if xp.size == 1:
        idx = np.zeros(c.shape, dtype=np.intp)
        w = np.zeros(c.shape)
    else:
        x = _scale(c, scale)
        idx = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, xp.size - 2)
        w = (x - xp[idx]) / (xp[idx + 1] - xp[idx])
    if bounds is None:
        outside = ~np.isfinite(c)
    else:
        lo, hi = bounds
        outside = ~((c >= lo) & (c <= hi))
    return idx, w, outside


def grid_interp(
    values: np.ndarray,
    nodes: Sequence[np.ndarray],
    coords: Sequence,
    *,
    scales: Sequence[str],
    values_scale: str = "lin",
    bounds: Sequence[tuple[float, float] | None] | None = None,
) -> np.ndarray:
    """Multilinear interpolation of ``values`` on the grid ``nodes`` at ``coords``.

    Parameters
    ----------
    values : ndarray, shape (n_1, ..., n_k, *tail)
        Values at the grid nodes; trailing ``tail`` axes (if any) are carried along.
    nodes : sequence of k 1D arrays
        Increasing node positions per axis.  An axis with one node is constant.
    coords : sequence of k arrays
        Query coordinates, broadcastable against each other.
    scales : sequence of k of {"lin", "log"}
        Coordinate scale per axis (interpolation is linear in the scaled coordinate).
    values_scale : {"lin", "log"}
        ``log`` interpolates ``log(values)``; a zero node makes the result zero wherever
        it contributes.
    bounds : sequence of k (lo, hi) or None, optional
        Outside ``[lo, hi]`` (the table's outer bin edges) the result is 0; inside but
        beyond the outer nodes it is extrapolated linearly.

    Returns
    -------
    ndarray
        Interpolated values, shape of the broadcast coordinates + ``tail``; negative results
        (possible by extrapolation) are clipped to 0.
    """
    values = np.asarray(values, dtype=float)
    k = len(nodes)
    if not (len(coords) == len(scales) == k <= values.ndim):
        raise ValueError(f"need one node array, coordinate and scale per axis ({k}), got {len(coords)}, {len(scales)}")
    for axis, n in enumerate(nodes):
        if np.size(n) != values.shape[axis]:
            raise ValueError(f"axis {axis}: {np.size(n)} nodes but values have {values.shape[axis]} entries")
    tail = (1,) * (values.ndim - k)
    for s in (*scales, values_scale):
        if s not in _SCALES:
            raise ValueError(f"scale must be one of {_SCALES}, got {s!r}")
    bounds = [None] * k if bounds is None else list(bounds)
    per_axis = [_axis_weights(c, np.asarray(n, float), s, b) for c, n, s, b in zip(coords, nodes, scales, bounds, strict=True)]

    if values_scale == "log":
        zero = ~(values > 0)
        with np.errstate(divide="ignore"):
            table = np.where(zero, 0.0, np.log(np.where(zero, 1.0, values)))
    else:
        zero = None
        table = values

    result = 0.0
    touches_zero = False
    for corner in range(2**k):
        index = []
        weight = 1.0
        for axis, (idx, w, _) in enumerate(per_axis):
            upper = (corner >> axis) & 1
            index.append(idx + upper if values.shape[axis] > 1 else idx)
            weight = weight * (w if upper else 1.0 - w)
        index = tuple(index)
        weight = np.reshape(weight, np.shape(weight) + tail)
        result = result + weight * table[index]
        if zero is not None:
            touches_zero = touches_zero | (zero[index] & (weight != 0))
    if values_scale == "log":
        with np.errstate(over="ignore"):
            result = np.exp(result)
        result = np.where(touches_zero, 0.0, result)
    result = np.asarray(result, dtype=float)
    outside = np.zeros(result.shape, dtype=bool)
    for _, _, out in per_axis:
        outside = outside | np.reshape(out, out.shape + tail)
    result = np.where(outside | ~np.isfinite(result), 0.0, result)
    return np.clip(result, 0.0, None)


def loglog_segment_integral(x1, x2, y1, y2) -> np.ndarray:
    """Integral over [x1, x2] of the power law through (x1, y1) and (x2, y2).

    Zero where either end value is not positive (the log-log interpolant vanishes there).
    """
    x1, x2, y1, y2 = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (x1, x2, y1, y2)))
    good = (y1 > 0) & (y2 > 0) & (x1 > 0) & (x2 > x1)
    out = np.zeros(x1.shape)
    if not np.any(good):
        return out
    a1, a2, b1, b2 = x1[good], x2[good], y1[good], y2[good]
    lx = np.log(a2 / a1)
    g1 = np.log(b2 / b1) / lx + 1.0  # power-law index + 1
    small = np.abs(g1 * lx) < 1e-8
    with np.errstate(over="ignore", invalid="ignore"):
        val = np.where(small, b1 * a1 * lx * (1 + 0.5 * g1 * lx), b1 * a1 * np.expm1(g1 * lx) / np.where(small, 1.0, g1))
    out[good] = val
    return out


def integrate_loglog(
    values: np.ndarray,
    nodes: np.ndarray,
    edges: np.ndarray,
    *,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """Exact integrals over bins of the log-log interpolant of ``values`` along axis 0.

    The interpolant is the power law between consecutive nodes (log value linear in log
    coordinate), extrapolated beyond the outer nodes up to ``bounds`` and zero outside.
    Being piecewise a power law, it is integrated exactly: every bin is split at the nodes
    and bounds it contains.

    Parameters
    ----------
    values : ndarray, shape (n_nodes, ...)
        Positive (or zero) values at ``nodes``; trailing axes are carried along.
    nodes : 1D array of n_nodes increasing positive coordinates (e.g. energy bin centres).
    edges : 1D array of increasing bin edges to integrate over.
    bounds : (lo, hi), optional
        Support of the interpolant (the table's outer bin edges); default the outer nodes.

    Returns
    -------
    ndarray, shape (len(edges) - 1, ...)
    """
    values = np.asarray(values, dtype=float)
    nodes = np.asarray(nodes, dtype=float)
    edges = np.asarray(edges, dtype=float)
    if values.shape[0] != nodes.size:
        raise ValueError(f"values has {values.shape[0]} rows along axis 0 but there are {nodes.size} nodes")
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] <= 0:
        raise ValueError(f"edges must be increasing positive values, got {edges}")
    lo, hi = (nodes[0], nodes[-1]) if bounds is None else bounds
    inner = nodes[(nodes > edges[0]) & (nodes < edges[-1])]
    extra = [b for b in (lo, hi) if edges[0] < b < edges[-1]]
    grid = np.unique(np.concatenate([edges, inner, extra]))
    y = grid_interp(values, [nodes], [grid], scales=["log"], values_scale="log", bounds=[(lo, hi)])
    g = grid.reshape((-1,) + (1,) * (values.ndim - 1))
    seg = loglog_segment_integral(g[:-1], g[1:], y[:-1], y[1:])
    mid = np.sqrt(grid[:-1] * grid[1:])
    seg[(mid < lo) | (mid > hi)] = 0.0
    starts = np.searchsorted(grid, edges[:-1])
    return np.add.reduceat(seg, starts, axis=0)
