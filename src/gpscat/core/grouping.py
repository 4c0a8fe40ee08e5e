"""Seeds whose extents overlap → groups fitted together: pure numerics.

Every seed is a circle on the sky of radius ``link radius = sqrt(extent² + psf68²) +
margin`` (the seed's 68 % / outer radius broadened by the PSF, as the association does,
plus a margin).  Two seeds are *linked* when their circles intersect; the groups are the
connected components of the link graph (:func:`link_groups`: KD-tree pairs from
:func:`gpscat.core.association.candidate_pairs`, then
:func:`scipy.sparse.csgraph.connected_components`).

A component larger than ``max_members`` is split along its weakest links: the minimum
spanning tree of the component with edge weights ``separation / (r_i + r_j)`` (1 = barely
touching) loses its heaviest edges until every part is small enough
(:func:`split_large_groups`).  The members of the parts still see each other in their fits
(as frozen neighbours), so a split costs accuracy only where sources really overlap.

Group ids are assigned deterministically: groups sorted by their brightest member (highest
``Sqrt_TS``), 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from gpscat.core.association import candidate_pairs
from gpscat.core.geom import angular_separation

__all__ = ["GroupGeometry", "group_geometry", "link_groups", "link_radius", "neighbour_groups", "split_large_groups"]


def link_radius(extent, psf_r68, *, margin: float) -> np.ndarray:
    """Link radius (deg) of seeds: ``sqrt(extent² + psf_r68²) + margin``."""
    extent = np.asarray(extent, dtype=float)
    psf = np.broadcast_to(np.asarray(psf_r68, dtype=float), extent.shape)
    if np.any(~np.isfinite(extent)) or np.any(extent < 0):
        raise ValueError(f"extent must be finite and >= 0, got {extent[~(np.isfinite(extent) & (extent >= 0))][:3]}")
    if np.any(~np.isfinite(psf)) or np.any(psf < 0):
        raise ValueError("psf_r68 must be finite and >= 0")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return np.hypot(extent, psf) + margin


def _links(lon, lat, radius):
    i, j, sep = candidate_pairs(lon, lat, radius, lon, lat, radius)
    keep = i < j
    return i[keep], j[keep], sep[keep]


def link_groups(lon, lat, radius, *, brightness=None) -> np.ndarray:
    """Group id (1-based) of each circle: connected components of intersecting circles.

    Parameters
    ----------
    lon, lat, radius : array-like
        Centres (deg) and link radii (deg), one frame.
    brightness : array-like, optional
        Orders the groups: the group of the brightest member gets id 1 (default: input order).
    """
    lon, lat, radius = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (lon, lat, radius))
    n = lon.size
    if n == 0:
        return np.zeros(0, dtype=int)
    i, j, _ = _links(lon, lat, radius)
    graph = coo_matrix((np.ones(i.size), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return _renumber(labels, brightness)


def _renumber(labels: np.ndarray, brightness) -> np.ndarray:
    """Labels → 1-based ids ordered by each group's brightest member (ties: first index)."""
    n = labels.size
    b = np.zeros(n) if brightness is None else -np.nan_to_num(np.asarray(brightness, dtype=float), nan=-np.inf)
    order = np.lexsort((np.arange(n), b))  # brightest first
    first_seen: dict[int, int] = {}
    for k in order:
        first_seen.setdefault(int(labels[k]), len(first_seen) + 1)
    return np.array([first_seen[int(lab)] for lab in labels], dtype=int)


def split_large_groups(lon, lat, radius, groups, *, max_members: int, brightness=None) -> np.ndarray:
    """Split groups of more than ``max_members`` along the weakest links (see module doc).

    Returns new 1-based group ids (renumbered by brightness).
    """
    if max_members < 1:
        raise ValueError(f"max_members must be >= 1, got {max_members}")
    lon, lat, radius = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (lon, lat, radius))
    groups = np.asarray(groups, dtype=int)
    n = groups.size
    if n == 0:
        return groups.copy()
    i, j, sep = _links(lon, lat, radius)
    weight = sep / np.maximum(radius[i] + radius[j], 1e-12) + 1e-9  # > 0: zero weights vanish from sparse graphs
    same = groups[i] == groups[j]
    i, j, weight = i[same], j[same], weight[same]
    counts = np.bincount(groups)
    big = np.flatnonzero(counts > max_members)
    # keep every edge of small groups; in big groups only the minimum spanning tree
    keep = ~np.isin(groups[i], big)
    ei, ej, ew = [i[keep]], [j[keep]], [weight[keep]]
    for g in big:
        sel = groups[i] == g
        mst = minimum_spanning_tree(coo_matrix((weight[sel], (i[sel], j[sel])), shape=(n, n))).tocoo()
        ti, tj, tw = mst.row, mst.col, mst.data
        order = np.argsort(-tw, kind="stable")  # heaviest (weakest) links first
        ti, tj, tw = ti[order], tj[order], tw[order]
        members = np.flatnonzero(groups == g)
        cut = 0
        while True:
            part = coo_matrix((np.ones(ti.size - cut), (ti[cut:], tj[cut:])), shape=(n, n))
            _, lab = connected_components(part, directed=False)
            if np.bincount(lab[members]).max() <= max_members or cut >= ti.size:
                break
            cut += 1
        ei.append(ti[cut:])
        ej.append(tj[cut:])
        ew.append(tw[cut:])
    ei, ej = np.concatenate(ei), np.concatenate(ej)
    graph = coo_matrix((np.ones(ei.size), (ei, ej)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return _renumber(labels, brightness)


@dataclass(frozen=True)
class GroupGeometry:
    """Centre (deg) and radius (deg, enclosing every member's link circle) of each group."""

    group_id: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    radius: np.ndarray
    n_members: np.ndarray


def group_geometry(lon, lat, radius, groups) -> GroupGeometry:
    """Centre of each group (mean unit vector of its members' centres) and the radius of
    the circle around it that encloses every member's link circle."""
    lon, lat, radius = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (lon, lat, radius))
    groups = np.asarray(groups, dtype=int)
    ids = np.unique(groups)
    lo, la = np.radians(lon), np.radians(lat)
    v = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)
    idx = np.searchsorted(ids, groups)
    c = np.zeros((ids.size, 3))
    np.add.at(c, idx, v)
    clon = np.degrees(np.arctan2(c[:, 1], c[:, 0])) % 360.0
    clat = np.degrees(np.arctan2(c[:, 2], np.hypot(c[:, 0], c[:, 1])))
    reach = angular_separation(lon, lat, clon[idx], clat[idx]) + radius
    r = np.zeros(ids.size)
    np.maximum.at(r, idx, reach)
    return GroupGeometry(ids, clon, clat, r, np.bincount(idx, minlength=ids.size))


def neighbour_groups(geometry: GroupGeometry, *, margin: float) -> list[np.ndarray]:
    """For each group, the ids of the other groups whose circles come within ``margin``
    of its circle (their sources can reach its region of interest)."""
    g = geometry
    i, j, _ = candidate_pairs(g.lon, g.lat, g.radius + margin, g.lon, g.lat, g.radius)
    out = []
    for k in range(g.group_id.size):
        others = j[(i == k) & (j != k)]
        out.append(np.sort(g.group_id[others]))
    return out
