"""Seed table I/O: FITS round trip and DS9 regions, also for tables with masked entries."""

from __future__ import annotations

import numpy as np
from astropy.table import MaskedColumn

from gpscat.io.seeds import empty_seed_table, read_seeds, seed_regions, write_seeds


def _seeds():
    t = empty_seed_table(["subTeV"], [0.1], nrows=3)
    t["ID"] = [1, 2, 3]
    t["GLON"] = [0.5, 1.0, 359.5]
    t["GLAT"] = [0.0, 0.2, -0.1]
    t["Type"] = ["peak", "shell", "peak"]
    t["Extent"] = [0.12, np.nan, np.nan]
    t["Shell_Radius"] = [np.nan, 0.4, np.nan]
    t["Shell_Width"] = [np.nan, 0.05, np.nan]
    t["Nest_Flag"] = [0, 0, 1]
    return t


def test_regions_of_a_round_tripped_table(tmp_path):
    path = tmp_path / "seeds.fits"
    write_seeds(path, _seeds())
    back = read_seeds(path)
    regions = seed_regions(back)
    assert len(regions) == 3
    assert np.isclose(regions[0].radius.to_value("deg"), 0.12)
    assert np.isclose(regions[1].inner_radius.to_value("deg"), 0.4) and np.isclose(regions[1].outer_radius.to_value("deg"), 0.45)
    assert np.isclose(regions[2].radius.to_value("deg"), 0.05)  # no extent: the default circle
    assert regions[2].visual["color"] == "yellow" and regions[0].visual["color"] == "green"
    assert [r.meta["text"] for r in regions] == ["1", "2", "3"]


def test_regions_of_a_masked_table():
    t = _seeds()
    t["Extent"] = MaskedColumn([0.12, 0.3, 0.2], mask=[False, True, True])
    t["Nest_Flag"] = MaskedColumn([0, 0, 1], mask=[False, False, True])
    regions = seed_regions(t)
    assert np.isclose(regions[0].radius.to_value("deg"), 0.12)
    assert np.isclose(regions[2].radius.to_value("deg"), 0.05)  # masked extent → default
    assert regions[2].visual["color"] == "green"  # masked nesting flag → not nested
