import numpy as np
import pytest

from gpscat.core.dataset import MapDataset
from gpscat.core.geom import Map, MapAxis, WcsGeom
from gpscat.io.dataset import read_dataset, write_dataset
from gpscat.io.maps import read_map, write_maps


def _dataset(rng):
    geom = WcsGeom.create((10.0, -1.0), (1.0, 0.6), 0.1)
    e = MapAxis.from_energy_bounds(0.1, 10, nbin=3)
    et = MapAxis.from_energy_bounds(0.05, 20, nbin=5, name="energy_true")
    rad = MapAxis.from_edges(np.linspace(0, 0.5, 11), name="rad")
    coarse = WcsGeom.create((10.0, -1.0), (1.0, 0.6), 0.5)
    counts = Map(geom, rng.poisson(3.0, Map.expected_shape(geom, [e])).astype(float), (e,))
    exposure = Map(geom, rng.uniform(1e9, 2e9, Map.expected_shape(geom, [et])), (et,), "m2 s")
    bkg = Map(geom, rng.uniform(1, 2, counts.data.shape), (e,))
    mask = Map(geom, rng.uniform(size=counts.data.shape) > 0.3, (e,))
    psf = Map(coarse, rng.uniform(size=Map.expected_shape(coarse, [rad, et])), (rad, et), "sr-1")
    edisp = Map(coarse, rng.uniform(size=Map.expected_shape(coarse, [e, et])), (e, et))
    return MapDataset(
        "obs-1",
        counts=counts,
        exposure=exposure,
        background=bkg,
        psf=psf,
        edisp=edisp,
        mask_safe=mask,
        gti=np.array([[0.0, 1800.0]]),
        meta={"obs_ids": [1], "livetime": 1700.0},
    )


def test_dataset_roundtrip(tmp_path):
    ds = _dataset(np.random.default_rng(1))
    write_dataset(tmp_path / "d.fits", ds)
    back = read_dataset(tmp_path / "d.fits")
    assert back.name == "obs-1"
    assert back.meta == {"obs_ids": [1], "livetime": 1700.0}
    for name, m in ds.maps().items():
        b = getattr(back, name)
        assert b.geom == m.geom
        assert b.axes == m.axes
        assert b.unit == m.unit
        np.testing.assert_allclose(b.data, m.data, rtol=1e-6)
    assert back.mask_safe.data.dtype == bool
    np.testing.assert_array_equal(back.gti, ds.gti)
    assert back.mask().sum() == ds.mask_safe.data.sum()


def test_cached_bands_tables_write_the_same_bytes_and_keep_axes_apart(tmp_path):
    """BANDS tables are cached both ways (io.maps): files are byte-identical to a fresh
    write, and maps whose axes differ only in their edges or units read back their own."""
    ds = _dataset(np.random.default_rng(2))
    write_dataset(tmp_path / "a.fits", ds)
    write_dataset(tmp_path / "b.fits", ds)
    assert (tmp_path / "a.fits").read_bytes() == (tmp_path / "b.fits").read_bytes()
    geom = WcsGeom.create((0, 0), 1.0, 0.1)
    axes = [MapAxis.from_energy_bounds(0.1, 10, nbin=3), MapAxis.from_energy_bounds(0.1, 10.5, nbin=3),
            MapAxis("energy", np.geomspace(0.1, 10, 4), "GeV", "log"), MapAxis("energy", np.geomspace(0.1, 10, 4), "TeV", "lin")]
    for i, ax in enumerate(axes):
        write_maps(tmp_path / f"m{i}.fits", {"img": Map(geom, np.full(Map.expected_shape(geom, [ax]), float(i)), (ax,))})
    for _ in range(2):  # the second round reads every table from the cache
        for i, ax in enumerate(axes):
            m = read_map(tmp_path / f"m{i}.fits", "img")
            assert m.axes == (ax,)
            assert (m.axes[0].unit, m.axes[0].interp) == (ax.unit, ax.interp)
            np.testing.assert_array_equal(m.axes[0].edges, ax.edges)
            assert np.all(m.data == i)


def test_to_frame_matches_astropy():
    """The cached-rotation frame conversion (core.geom.to_frame) against SkyCoord, both ways."""
    from astropy.coordinates import SkyCoord

    from gpscat.core.geom import angular_separation, to_frame

    rng = np.random.default_rng(3)
    lon = rng.uniform(0, 360, 2000)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 2000)))
    lat[:2] = (90.0, -90.0)
    for a, b in (("galactic", "icrs"), ("icrs", "galactic")):
        lon2, lat2 = to_frame(lon, lat, a, b)
        ref = SkyCoord(lon, lat, unit="deg", frame=a).transform_to(b).spherical
        assert np.all((lon2 >= 0) & (lon2 < 360))
        assert angular_separation(lon2, lat2, ref.lon.deg, ref.lat.deg).max() < 1e-9
    ra, dec = to_frame(359.94415, -0.04616, "galactic", "icrs")  # Sgr A*: (266.41684, -29.00781)
    assert abs(ra - 266.41684) < 1e-4 and abs(dec + 29.00781) < 1e-4


def test_map_errors_name_file_and_hdu(tmp_path):
    geom = WcsGeom.create((0, 0), 1.0, 0.1)
    write_maps(tmp_path / "m.fits", {"img": Map.from_geom(geom)})
    with pytest.raises(KeyError, match=r"m\.fits.*nope.*IMG"):
        read_map(tmp_path / "m.fits", "nope")
    (tmp_path / "bad.fits").write_bytes(b"not a fits file")
    with pytest.raises(OSError, match=r"bad\.fits"):
        read_map(tmp_path / "bad.fits")


@pytest.mark.crosscheck
def test_gammapy_reads_our_dataset(tmp_path):
    gp = pytest.importorskip("gammapy.datasets")
    ds = _dataset(np.random.default_rng(2))
    write_dataset(tmp_path / "d.fits", ds)
    g = gp.MapDataset.read(tmp_path / "d.fits")
    np.testing.assert_allclose(g.counts.data, ds.counts.data)
    np.testing.assert_allclose(g.exposure.data, ds.exposure.data, rtol=1e-6)
    assert g.exposure.unit == "m2 s"
    np.testing.assert_allclose(g.background.data, ds.background.data, rtol=1e-6)
    np.testing.assert_array_equal(g.mask_safe.data, ds.mask_safe.data)
    np.testing.assert_allclose(g.psf.psf_map.data, ds.psf.data, rtol=1e-6)
    # and back: gammapy's file opens with ours
    g.write(tmp_path / "g.fits")
    back = read_dataset(tmp_path / "g.fits")
    np.testing.assert_allclose(back.exposure.data, ds.exposure.data, rtol=1e-6)
    assert back.psf.axes[0].name == "rad"
