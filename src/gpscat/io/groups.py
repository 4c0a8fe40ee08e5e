"""Reading the grouping checkpoint ``results/groups/groups.fits`` (written by the group stage).

Light on imports (astropy only): the workflow reads it to fan out one fit job per group and
to find each group's neighbours.
"""

from __future__ import annotations

import os

import numpy as np
from astropy.io import fits
from astropy.table import Column, Table

__all__ = ["group_neighbours", "read_groups", "unmask_strings"]


def unmask_strings(table: Table) -> Table:
    """String columns as plain ``str`` columns: FITS reads empty strings as masked bytes."""
    for name in table.colnames:
        col = table[name]
        if col.dtype.kind in "SU":
            if hasattr(col, "filled"):
                col = col.filled(b"" if col.dtype.kind == "S" else "")
            data = np.char.decode(np.asarray(col), "utf-8") if col.dtype.kind == "S" else np.asarray(col)
            table[name] = Column(data, name=name, unit=table[name].unit, description=table[name].description)
    return table


def read_groups(path: str | os.PathLike) -> tuple[Table, Table, Table]:
    """(``SEEDS``, ``GROUPS``, ``NOT_FITTED``) tables of a groups file (the last may be empty)."""
    try:
        with fits.open(path, memmap=False) as hl:
            names = {h.name for h in hl}
        out = [unmask_strings(Table.read(path, hdu=n, mask_invalid=False)) if n in names else Table() for n in ("SEEDS", "GROUPS", "NOT_FITTED")]
    except (OSError, KeyError) as exc:
        raise type(exc)(f"{path}: cannot read the groups file: {exc}") from exc
    return out[0], out[1], out[2]


def group_neighbours(path: str | os.PathLike) -> dict[int, list[int]]:
    """Group id → ids of the groups whose sources can reach its region of interest."""
    _, groups, _ = read_groups(path)
    return {int(r["Group_ID"]): [int(x) for x in str(r["Neighbours"]).split(",") if x.strip()] for r in groups}
