"""Exclusion masks: circles, DS9 regions, catalogs, hysteresis on synthetic blobs, convention."""

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table
from regions import Regions

from gpscat.core.exclusion import (
    catalog_circles,
    circles_excluded,
    exclusion_mask,
    hysteresis_excluded,
    regions_excluded,
)
from gpscat.core.geom import WcsGeom, to_frame


@pytest.fixture
def geom():
    return WcsGeom.create((320.0, -1.0), (4.0, 3.0), 0.02)


def test_circle_area_and_distance(geom):
    ex = circles_excluded(geom, 320.3, -1.2, 0.4)
    assert ex.dtype == bool and ex.shape == geom.shape
    assert ex.sum() * 0.02**2 == pytest.approx(np.pi * 0.4**2, rel=0.02)
    sep = geom.separation(320.3, -1.2)
    assert np.all(sep[ex] <= 0.4) and np.all(sep[~ex] > 0.4)


def test_circle_in_other_frame(geom):
    ra, dec = to_frame(320.3, -1.2, "galactic", "icrs")
    ex_icrs = circles_excluded(geom, ra, dec, 0.4, frame="icrs")
    assert np.sum(ex_icrs != circles_excluded(geom, 320.3, -1.2, 0.4)) <= 2  # boundary round-off


def test_many_circles_and_outside(geom):
    ex = circles_excluded(geom, [319.0, 321.0, 100.0], [-1.0, -1.0, 0.0], [0.2, 0.3, 1.0])
    expected = circles_excluded(geom, 319.0, -1.0, 0.2) | circles_excluded(geom, 321.0, -1.0, 0.3)
    np.testing.assert_array_equal(ex, expected)
    with pytest.raises(ValueError, match="radii"):
        circles_excluded(geom, 320.0, -1.0, -0.1)


def test_ds9_regions(geom, tmp_path):
    reg = tmp_path / "ex.reg"
    reg.write_text(
        "# Region file format: DS9\n"
        "galactic\n"
        "circle(320.3,-1.2,0.4)\n"
        "-circle(320.3,-1.2,0.1)\n"
        "box(319.2,-0.5,0.4,0.2,0)\n"
        "point(321,-1) # point=x\n"
    )
    shapes = Regions.read(str(reg), format="ds9")
    ex = regions_excluded(geom, shapes)
    ring = circles_excluded(geom, 320.3, -1.2, 0.4) & ~circles_excluded(geom, 320.3, -1.2, 0.1)
    box_area = 0.4 * 0.2 / 0.02**2
    assert (ex & ring).sum() == ring.sum()
    assert (ex & ~ring).sum() == pytest.approx(box_area, rel=0.15)
    assert not ex[geom.coord_to_idx(320.3, -1.2)[1], geom.coord_to_idx(320.3, -1.2)[0]]


def test_catalog_circles():
    size = MaskedColumn([0.2, 0.0, np.nan], mask=[False, True, False])
    table = Table({"GLON": [320.3, 319.0, 321.0], "GLAT": [-1.2, -1.0, -0.5], "Size": size})
    lon, lat, radius, frame = catalog_circles(table, margin=0.3, size_factor=2.0)
    assert frame == "galactic"
    np.testing.assert_allclose(radius, [0.7, 0.3, 0.3])
    table2 = Table({"RAJ2000": [228.5], "DEJ2000": [-59.2]})
    assert catalog_circles(table2, margin=0.1)[3] == "icrs"
    with pytest.raises(ValueError, match="position"):
        catalog_circles(Table({"X": [1.0]}), margin=0.1)


@pytest.mark.realdata
def test_hgps_catalog(shared_data, geom):
    table = Table.read(shared_data / "catalogs" / "hgps_catalog_v1.fits.gz", hdu=1)
    lon, lat, radius, frame = catalog_circles(table, margin=0.1)
    assert len(lon) == 78 and frame == "galactic"
    ex = circles_excluded(geom, lon, lat, radius, frame=frame)
    # MSH 15-52 (HESS J1514-591) lies in this field
    ix, iy, _ = geom.coord_to_idx(320.315, -1.188)
    assert ex[iy, ix]


def _blob(shape, x0, y0, amp, sigma):
    y, x = np.indices(shape)
    return amp * np.exp(-0.5 * ((x - x0) ** 2 + (y - y0) ** 2) / sigma**2)


def test_hysteresis_on_synthetic_blobs():
    shape = (80, 120)
    rng = np.random.default_rng(3)
    sig = rng.normal(0, 0.3, shape)
    sig += _blob(shape, 30, 40, 8.0, 4.0)  # seed above high, wings above low
    sig += _blob(shape, 90, 40, 4.0, 4.0)  # never above high: not excluded
    ex = hysteresis_excluded(sig, high=5.0, low=3.0)
    assert ex[40, 30] and not ex[40, 90]
    # the excluded blob extends to where the smooth profile drops below 3 (r = 4 sqrt(2 ln(8/3)) = 5.6)
    r = np.hypot(*(np.indices(shape) - np.array([40, 30])[:, None, None]))
    assert np.all(ex[r < 4.5]) and not np.any(ex[r > 7.5])
    grown = hysteresis_excluded(sig, high=5.0, low=3.0, dilate=5.0)
    assert np.all(grown[r < 9.5]) and not np.any(grown[r > 13.0])
    assert not grown[40, 90]


def test_hysteresis_nan_and_mask():
    sig = np.zeros((20, 20))
    sig[5, 5] = 10.0
    sig[15, 15] = np.nan
    mask = np.ones((20, 20), bool)
    assert hysteresis_excluded(sig, high=5, low=3).sum() == 1
    mask[5, 5] = False
    assert hysteresis_excluded(sig, high=5, low=3, mask=mask).sum() == 0
    with pytest.raises(ValueError, match="low <= high"):
        hysteresis_excluded(sig, high=3, low=5)


def test_exclusion_mask_convention():
    a = np.zeros((4, 5), bool)
    a[0, 0] = True
    b = np.zeros((4, 5), bool)
    b[3, 4] = True
    usable = exclusion_mask((4, 5), a, b)
    assert usable.dtype == bool
    assert not usable[0, 0] and not usable[3, 4] and usable.sum() == 18  # True = usable
    assert exclusion_mask((4, 5)).all()
