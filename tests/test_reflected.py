"""Reflected-region OFF circles: geometry that knows the answer."""

import math

import numpy as np
import pytest

from gpscat.core.geom import WcsGeom, angular_separation, to_frame
from gpscat.core.reflected import excluded_points, in_circles, reflected_regions
from gpscat.core.sampling import offset_positions
from gpscat.models.spatial import position_angle

A_IN = math.degrees(0.1)  # gammapy's default min_distance_input


def expected_number(offset: float, radius: float, *, min_distance: float = 0.0, min_distance_input: float = A_IN) -> int:
    """OFF circles of the greedy walk without exclusion: start a_min + a_in, step a_min."""
    a_min = 2 * math.degrees(math.asin(math.sin(math.radians(radius)) / math.sin(math.radians(offset)))) + min_distance
    span = 360.0 - 2 * a_min - 2 * min_distance_input
    return int(math.floor(span / a_min - 1e-12)) + 1 if span > 0 else 0


def check_geometry(reg, on, pointing, radius, *, gap: float = 0.0):
    """Every circle at the ON offset, no two overlapping, none touching the ON circle."""
    off = angular_separation(pointing[0], pointing[1], reg.lon, reg.lat)
    np.testing.assert_allclose(off, reg.offset, atol=1e-9)
    lon = np.append(reg.lon, on[0])
    lat = np.append(reg.lat, on[1])
    sep = angular_separation(lon[:, None], lat[:, None], lon[None, :], lat[None, :])
    np.fill_diagonal(sep, np.inf)
    assert sep.min() >= 2 * radius - 1e-9
    if gap:  # the extra rotation shows up as an extra distance between neighbours
        assert sep[:-1, :-1].min() > 2 * radius + 1e-6


@pytest.mark.parametrize(
    ("on", "pointing"),
    [((83.6, 22.0), (83.6, 22.5)), ((359.9, -0.3), (0.4, 0.2)), ((10.0, 88.7), (190.0, 89.5)), ((250.0, -45.0), (248.0, -45.5))],
)
@pytest.mark.parametrize("radius", [0.1, 0.3])
def test_number_and_no_overlap(on, pointing, radius):
    reg = reflected_regions(on[0], on[1], radius, pointing[0], pointing[1])
    assert reg.n == expected_number(reg.offset, radius)
    assert reg.alpha == pytest.approx(1.0 / reg.n)
    check_geometry(reg, on, pointing, radius)


def test_number_grows_with_offset():
    counts = []
    for offset in (0.2, 0.3, 0.5, 1.0, 1.5, 2.0, 2.5):
        on = offset_positions(30.0, 10.0, offset, 0.7)
        reg = reflected_regions(float(on[0]), float(on[1]), 0.11, 30.0, 10.0)
        assert reg.n == expected_number(offset, 0.11)
        counts.append(reg.n)
    assert counts == sorted(counts) and counts[0] >= 1
    # H.E.S.S. Crab wobble geometry without exclusion: 12 circles at 0.5 deg, 40 at 1.5 deg
    assert counts[2] == 12 and counts[4] == 40


def test_rotation_direction_and_start():
    pointing, on = (120.0, -30.0), offset_positions(120.0, -30.0, 1.0, math.radians(40.0))
    reg = reflected_regions(float(on[0]), float(on[1]), 0.2, *pointing)
    pa = np.degrees(position_angle(pointing[0], pointing[1], reg.lon, reg.lat))
    a_min = 2 * math.degrees(math.asin(math.sin(math.radians(0.2)) / math.sin(math.radians(1.0))))
    np.testing.assert_allclose(reg.angle, a_min + A_IN + a_min * np.arange(reg.n), atol=1e-9)
    np.testing.assert_allclose(np.mod(pa - 40.0, 360.0), reg.angle, atol=1e-6)  # position angle grows


def test_min_distance_and_max_regions():
    on = offset_positions(0.0, 0.0, 1.0, 0.0)
    reg = reflected_regions(float(on[0]), float(on[1]), 0.1, 0.0, 0.0, min_distance=2.0, min_distance_input=10.0)
    assert reg.n == expected_number(1.0, 0.1, min_distance=2.0, min_distance_input=10.0)
    check_geometry(reg, on, (0.0, 0.0), 0.1, gap=2.0)
    assert reflected_regions(float(on[0]), float(on[1]), 0.1, 0.0, 0.0, max_regions=3).n == 3


def test_pointing_inside_or_on_the_circle_gives_none():
    for offset in (0.0, 0.05, 0.1):
        on = offset_positions(10.0, 5.0, offset, 1.0)
        reg = reflected_regions(float(on[0]), float(on[1]), 0.1, 10.0, 5.0)
        assert reg.n == 0 and math.isnan(reg.alpha)
    # a circle so large that nothing fits next to it (2 a_min + 2 a_in > 360 deg)
    on = offset_positions(10.0, 5.0, 0.3, 1.0)
    assert reflected_regions(float(on[0]), float(on[1]), 0.2999, 10.0, 5.0).n == 0
    assert reflected_regions(float(on[0]), float(on[1]), 0.25, 10.0, 5.0).n == 2


def test_exclusion_skips_circles_and_keeps_them_clean():
    pointing = (266.4, -29.0)
    on = offset_positions(*pointing, 0.7, 0.3)
    free = reflected_regions(float(on[0]), float(on[1]), 0.15, *pointing)
    geom = WcsGeom.create(to_frame(*pointing, "icrs", "galactic"), 4.0, 0.02, frame="galactic")
    glon, glat = geom.get_coord()
    # exclude a disk on top of the third and of the seventh free circle
    excluded = np.zeros(geom.shape, dtype=bool)
    for k in (2, 6):
        c = to_frame(free.lon[k], free.lat[k], "icrs", "galactic")
        excluded |= angular_separation(glon, glat, *c) < 0.08
    pts = excluded_points(geom, excluded, center=pointing, rmin=0.4, rmax=1.0, frame="icrs")
    reg = reflected_regions(float(on[0]), float(on[1]), 0.15, *pointing, excluded=pts)
    assert 0 < reg.n < free.n
    check_geometry(reg, on, pointing, 0.15)
    sep = angular_separation(reg.lon[:, None], reg.lat[:, None], pts[0][None, :], pts[1][None, :])
    assert sep.min() >= 0.15
    # brute force on the excluded pixel centres: no centre inside an accepted circle
    elon, elat = to_frame(glon[excluded], glat[excluded], "galactic", "icrs")
    assert angular_separation(reg.lon[:, None], reg.lat[:, None], elon[None, :], elat[None, :]).min() >= 0.15
    # the skipped stretch is walked in steps of angle_increment
    steps = np.diff(reg.angle)
    a_min = free.angle[1] - free.angle[0]
    assert np.all((np.abs(steps - a_min) < 1e-6) | (steps > a_min + A_IN - 1e-6))


def test_everything_excluded():
    pointing = (0.0, 0.0)
    geom = WcsGeom.create((0.0, 0.0), 3.0, 0.05, frame="icrs")
    pts = excluded_points(geom, np.ones(geom.shape, bool), frame="icrs")
    on = offset_positions(0.0, 0.0, 0.5, 0.0)
    assert reflected_regions(float(on[0]), float(on[1]), 0.1, *pointing, excluded=pts).n == 0
    # an exclusion far away changes nothing
    far = np.zeros(geom.shape, bool)
    far[:3, :3] = True
    pts = excluded_points(geom, far, frame="icrs")
    assert reflected_regions(float(on[0]), float(on[1]), 0.1, *pointing, excluded=pts).n == expected_number(0.5, 0.1)


def test_excluded_points_sampling():
    geom = WcsGeom.create((10.0, 0.0), 1.0, 0.05, frame="galactic")
    ex = np.zeros(geom.shape, bool)
    ex[4, 7] = ex[10, 12] = True
    lon, lat = excluded_points(geom, ex, sampling=0.01)
    assert lon.size == 2 * 5 * 5
    ix, iy, inside = geom.coord_to_idx(lon, lat)
    assert inside.all() and set(zip(iy.tolist(), ix.tolist(), strict=True)) == {(4, 7), (10, 12)}
    # coarse sampling: the pixel centres themselves; frame conversion
    lon, lat = excluded_points(geom, ex, sampling=0.1, frame="icrs")
    c = to_frame(*geom.pix_to_coord(np.array([7.0, 12.0]), np.array([4.0, 10.0])), "galactic", "icrs")
    np.testing.assert_allclose(np.sort(lon), np.sort(c[0]), atol=1e-9)
    # the annulus selection keeps only pixels near the ring
    lon, lat = excluded_points(geom, np.ones(geom.shape, bool), center=(10.0, 0.0), rmin=0.2, rmax=0.3, sampling=0.05)
    r = angular_separation(lon, lat, 10.0, 0.0)
    assert r.min() > 0.2 - 0.05 and r.max() < 0.3 + 0.05
    assert excluded_points(geom, np.zeros(geom.shape, bool))[0].size == 0
    with pytest.raises(ValueError, match="shape"):
        excluded_points(geom, np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="sampling"):
        excluded_points(geom, ex, sampling=0.0)


def test_in_circles_matches_brute_force():
    rng = np.random.default_rng(3)
    lon = rng.uniform(9.0, 11.0, 5000)
    lat = rng.uniform(-1.0, 1.0, 5000)
    c_lon, c_lat = np.array([9.5, 10.0, 10.5]), np.array([0.0, 0.3, -0.4])
    idx = in_circles(lon, lat, c_lon, c_lat, 0.2)
    sep = angular_separation(lon[:, None], lat[:, None], c_lon[None, :], c_lat[None, :])
    inside = sep < 0.2
    expected = np.where(inside.any(axis=1), inside.argmax(axis=1), -1)
    np.testing.assert_array_equal(idx, expected)
    assert in_circles([], [], c_lon, c_lat, 0.2).size == 0
    assert np.all(in_circles(lon, lat, [], [], 0.2) == -1)
    # a point on the boundary is outside; overlapping circles: the first one wins
    assert in_circles([0.0], [0.2], [0.0], [0.0], 0.2)[0] == -1
    assert in_circles([0.0], [0.0], [0.05, 0.0], [0.0, 0.0], 0.2)[0] == 0


def test_errors():
    with pytest.raises(ValueError, match="radius"):
        reflected_regions(0.0, 1.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="angle_increment"):
        reflected_regions(0.0, 1.0, 0.1, 0.0, 0.0, angle_increment=0.0)
    with pytest.raises(ValueError, match="min_distance"):
        reflected_regions(0.0, 1.0, 0.1, 0.0, 0.0, min_distance=-1.0)
    with pytest.raises(ValueError, match="max_regions"):
        reflected_regions(0.0, 1.0, 0.1, 0.0, 0.0, max_regions=0)
