"""Catalog-level quantities of the fitted sources: names, nesting, confusion (pure numerics).

* :func:`iau_names` — ``<prefix> JHHMM±DDd``: right ascension (J2000) in hours and whole
  minutes, declination in degrees and tenths, both truncated (not rounded) as the IAU
  recommends and as HESS/HGPS names are formed (``HESS J1745-290``); names that collide
  get a suffix ``A``, ``B``, … in order of Galactic longitude;
* :func:`nesting` — source *j* lies in source *i* when their separation is below
  ``R68_i`` (the PSF-convolved 68 % radius) and ``R68_i > R68_j``; ``Nest_Flag`` bit 1:
  inside another source, bit 2: contains another; the parent is the smallest source
  containing it (the convention of the seed table and of the GPS prototype's catalogue);
* :func:`confused` — a source is *confused* when another source's PSF-convolved 68 % circle
  covers at least ``min_overlap`` of the smaller of the two circles
  (:func:`gpscat.core.association.overlap_fraction`).
"""

from __future__ import annotations

import numpy as np

from gpscat.core.association import candidate_pairs, overlap_fraction

__all__ = ["confused", "iau_names", "nesting"]


def iau_names(ra, dec, *, prefix: str, glon=None) -> np.ndarray:
    """IAU-style names from ICRS positions (deg); see the module docstring."""
    ra = np.atleast_1d(np.asarray(ra, dtype=float)) % 360.0
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    if np.any(~np.isfinite(ra)) or np.any(~np.isfinite(dec)) or np.any(np.abs(dec) > 90):
        raise ValueError("iau_names: positions must be finite with |dec| <= 90 deg")
    minutes = np.floor(ra / 15.0 * 60.0 + 1e-9).astype(int)
    hh, mm = minutes // 60, minutes % 60
    tenths = np.floor(np.abs(dec) * 10.0 + 1e-9).astype(int)
    sign = np.where(dec < 0, "-", "+")
    head = f"{prefix} " if prefix else ""
    names = np.array([f"{head}J{h:02d}{m:02d}{s}{t // 10:02d}{t % 10:d}" for h, m, s, t in zip(hh, mm, sign, tenths, strict=True)],
                     dtype=object)
    order = np.argsort(np.asarray(glon if glon is not None else ra, dtype=float), kind="stable")
    seen: dict[str, list[int]] = {}
    for k in order:
        seen.setdefault(names[k], []).append(int(k))
    out = names.copy()
    for name, idx in seen.items():
        if len(idx) > 1:
            for n, k in enumerate(idx):
                out[k] = f"{name}{chr(ord('A') + n % 26)}{'' if n < 26 else n // 26}"
    return out.astype(str)


def nesting(lon, lat, r68) -> tuple[np.ndarray, np.ndarray]:
    """(``Nest_Flag``, index of the parent or −1) of each source; see the module docstring."""
    lon, lat, r68 = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (lon, lat, r68))
    n = lon.size
    flag = np.zeros(n, dtype=np.int16)
    parent = np.full(n, -1, dtype=int)
    if n == 0:
        return flag, parent
    r = np.nan_to_num(r68, nan=0.0)
    i, j, sep = candidate_pairs(lon, lat, r, lon, lat, np.zeros(n))
    inside = (i != j) & (sep < r[i]) & (r[i] > r[j])  # j lies in i
    i, j = i[inside], j[inside]
    flag[j] |= 1
    flag[i] |= 2
    order = np.lexsort((r[i], j))  # per child, the smallest container first
    first = np.unique(j[order], return_index=True)[1]
    parent[j[order][first]] = i[order][first]
    return flag, parent


def confused(lon, lat, r68, *, min_overlap: float) -> np.ndarray:
    """Whether another source's 68 % circle covers ≥ ``min_overlap`` of the smaller circle."""
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}")
    lon, lat, r68 = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (lon, lat, r68))
    out = np.zeros(lon.size, dtype=bool)
    if lon.size < 2:
        return out
    r = np.nan_to_num(r68, nan=0.0)
    i, j, sep = candidate_pairs(lon, lat, r, lon, lat, r)
    keep = i != j
    frac = overlap_fraction(sep[keep], r[i[keep]], r[j[keep]])
    out[i[keep][frac >= min_overlap]] = True
    return out
