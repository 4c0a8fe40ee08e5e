"""Known-source catalogs: every format into one source table, sizes, fluxes, tags."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from astropy.table import Table

from gpscat.core.association import R68_PER_SIGMA
from gpscat.core.geom import Map, WcsGeom, angular_separation
from gpscat.io.catalogs import CATALOG_COLUMNS, empty_catalog_table, read_catalog, read_catalogs
from gpscat.io.models_yaml import write_models
from gpscat.models import spatial as spm
from gpscat.models import spectral as spc
from gpscat.models.extra import ConstantSpatialModel
from gpscat.models.sky import Models, SkyModel


def _row(t: Table, name: str):
    return t[list(t["Name"]).index(name)]


def _pl(amplitude=1e-12, index=2.0):
    return spc.PowerLawSpectralModel(index=index, amplitude=amplitude, reference=1.0)


def test_gammapy_yaml_every_morphology(tmp_path):
    geom = WcsGeom.create((20.0, 0.0), (2.0, 2.0), 0.02, frame="galactic")
    lon, lat = geom.get_coord()
    blob = np.exp(-0.5 * (angular_separation(lon, lat, 20.2, 0.1) / 0.1) ** 2)
    models = Models([
        SkyModel(_pl(), spm.PointSpatialModel(lon_0=10.0, lat_0=0.5, frame="galactic"), name="pt"),
        SkyModel(_pl(), spm.GaussianSpatialModel(lon_0=83.6, lat_0=22.0, sigma=0.2, frame="icrs"), name="g"),
        SkyModel(_pl(), spm.GaussianSpatialModel(lon_0=10.0, lat_0=0.0, sigma=0.4, e=0.8, frame="galactic"), name="ge"),
        SkyModel(_pl(), spm.GeneralizedGaussianSpatialModel(lon_0=11.0, lat_0=0.0, r_0=0.3, eta=0.5, frame="galactic"), name="gg"),
        SkyModel(_pl(), spm.DiskSpatialModel(lon_0=12.0, lat_0=0.0, r_0=0.5, frame="galactic"), name="d"),
        SkyModel(_pl(), spm.ShellSpatialModel(lon_0=13.0, lat_0=0.0, radius=0.4, width=0.1, frame="galactic"), name="s"),
        SkyModel(_pl(), spm.Shell2SpatialModel(lon_0=14.0, lat_0=0.0, r_0=0.6, eta=0.2, frame="galactic"), name="s2"),
        SkyModel(_pl(), spm.TemplateSpatialModel(map=Map(geom, blob), filename="blob.fits"), name="t"),
        SkyModel(_pl(), ConstantSpatialModel(), name="iso"),
    ])
    write_models(tmp_path / "m.yaml", models, write_covariance=False)
    t = read_catalog(tmp_path / "m.yaml", tag="mine")
    assert list(t.colnames) == list(CATALOG_COLUMNS) and len(t) == 8 and set(t["Catalog"]) == {"mine"}
    assert "iso" not in t["Name"]
    assert tuple(_row(t, "pt")[["Morphology", "Size", "Radius"]]) == ("point", 0.0, 0.0)
    g = _row(t, "g")
    assert g["Morphology"] == "gauss" and g["Radius"] == pytest.approx(R68_PER_SIGMA * 0.2)
    assert angular_separation(g["RA"], g["DEC"], 83.6, 22.0) < 1e-9 and 180 < g["GLON"] < 190
    assert _row(t, "ge")["Size"] == pytest.approx(0.4 * 0.6**0.5)  # equal-area circle of the ellipse
    assert _row(t, "gg")["Radius"] == pytest.approx(R68_PER_SIGMA * 0.3 / np.sqrt(2), rel=1e-6)
    assert _row(t, "d")["Radius"] == pytest.approx(np.sqrt(0.68) * 0.5)
    assert (_row(t, "s")["Size"], _row(t, "s")["Radius"]) == pytest.approx((0.5, 0.5))
    assert _row(t, "s2")["Radius"] == pytest.approx(0.6)
    tm = _row(t, "t")
    assert tm["Morphology"] == "template" and tm["Radius"] == pytest.approx(R68_PER_SIGMA * 0.1, abs=0.01)
    assert angular_separation(tm["GLON"], tm["GLAT"], 20.2, 0.1) < 2e-3
    # flux above 1 TeV of a power law of index 2: amplitude · 1 TeV · (1 - 1e-4)
    np.testing.assert_allclose(t["Flux_1TeV"], 1e-12 * (1 - 1e-4), rtol=1e-9)


def test_3hwc_style_yaml(tmp_path):
    data = [
        {"name": "3HWC J0000+000", "RA": 266.4, "Dec": -28.9, "search radius": 0.0,
         "flux measurements": [{"assumed radius": 0.0, "flux": 2e-14, "index": -2.5}]},
        {"name": "3HWC J0001+000", "RA": 270.0, "Dec": -24.0, "search radius": 1.0,
         "flux measurements": [{"assumed radius": 1.0, "flux": 1e-14, "index": -3.0}]},
        {"name": "3HWC J0002+000", "RA": 271.0, "Dec": -23.0, "search radius": 0.0},
    ]
    (tmp_path / "hawc.yaml").write_text(yaml.safe_dump(data))
    t = read_catalog(tmp_path / "hawc.yaml")
    assert list(t["Catalog"]) == ["hawc"] * 3 and list(t["Morphology"]) == ["point", "disk", "point"]
    assert t["Radius"][1] == pytest.approx(np.sqrt(0.68))
    # flux at 7 TeV with index 2.5 integrated from 1 TeV: N 7 / 1.5 (7)^1.5 (1 - 1e4^-1.5)
    assert t["Flux_1TeV"][0] == pytest.approx(2e-14 * 7 / 1.5 * 7**1.5 * (1 - 1e-6), rel=1e-9)
    assert np.isnan(t["Flux_1TeV"][2])


def test_generic_fits_and_errors(tmp_path):
    Table({"NAME": ["a", "b"], "RAJ2000": [83.6, 84.0], "DEJ2000": [22.0, 22.5], "Size": [0.0, 0.1]}).write(tmp_path / "c.fits")
    t = read_catalog(tmp_path / "c.fits", tag="c")
    assert list(t["Morphology"]) == ["point", "gauss"] and t["Radius"][1] == pytest.approx(R68_PER_SIGMA * 0.1)
    with pytest.raises(ValueError, match="unknown catalog format"):
        read_catalog(tmp_path / "c.fits", format="votable")
    with pytest.raises(OSError, match="nope.fits"):
        read_catalog(tmp_path / "nope.fits")
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(ValueError, match="x.yaml"):
        read_catalog(tmp_path / "x.yaml")
    Table({"X": [1.0]}).write(tmp_path / "nopos.fits")
    with pytest.raises(ValueError, match="no position columns"):
        read_catalog(tmp_path / "nopos.fits")
    assert list(read_catalogs([]).colnames) == list(CATALOG_COLUMNS) and len(empty_catalog_table()) == 0


@pytest.mark.realdata
def test_real_catalogs(shared_data):
    cat = shared_data / "catalogs"
    t = read_catalogs([
        {"path": cat / "hgps_catalog_v1.fits.gz", "tag": "HGPS"},
        {"path": cat / "3HWC.yaml", "tag": "3HWC"},
        {"path": cat / "1LHAASO_catalog.fits", "tag": "1LHAASO"},
        {"path": shared_data / "cta-gps-prototype" / "SeedList_fitted_step1.yaml", "tag": "GPSproto"},
    ])
    counts = dict(zip(*np.unique(t["Catalog"], return_counts=True), strict=True))
    assert counts == {"HGPS": 78, "3HWC": 65, "1LHAASO": 90, "GPSproto": 526}
    assert np.all(np.isfinite(t["GLON"]) & np.isfinite(t["Radius"]) & (t["Radius"] >= 0))
    h = t[t["Catalog"] == "HGPS"]
    gc = _row(h, "HESS J1745-290")
    assert gc["Morphology"] == "point" and gc["Flux_1TeV"] == pytest.approx(1.70e-12, rel=0.01)
    assert angular_separation(gc["GLON"], gc["GLAT"], 359.944, -0.044) < 0.01
    rxj = _row(h, "HESS J1713-397")
    assert (rxj["Morphology"], rxj["Size"], rxj["Radius"]) == ("shell", pytest.approx(0.5), pytest.approx(0.5))
    gauss = h[h["Morphology"] == "gauss"]
    np.testing.assert_allclose(gauss["Radius"], R68_PER_SIGMA * gauss["Size"])
    assert np.sum(h["Morphology"] == "point") == 6 + 17  # point-like, and Gaussians with only a size upper limit
    hawc = _row(t[t["Catalog"] == "3HWC"], "3HWC J1757-240")
    assert (hawc["Morphology"], hawc["Size"]) == ("disk", 1.0)
    lh = t[t["Catalog"] == "1LHAASO"]
    assert np.all(np.isfinite(lh["Flux_1TeV"]) & (lh["Flux_1TeV"] > 0))
    assert set(np.unique(lh["Morphology"])) == {"gauss", "point"}
    proto = t[t["Catalog"] == "GPSproto"]  # legacy r_eff / ShellOutSpatialModel
    assert dict(zip(*np.unique(proto["Morphology"], return_counts=True), strict=True)) == {"gauss-general": 404, "point": 105, "shell": 17}
    assert np.all(proto["Flux_1TeV"] > 0)


@pytest.mark.realdata
def test_ctools_xml_catalog(shared_data):
    t = read_catalog(shared_data / "cta-gps-skymodel" / "models_gps.xml", tag="GPSsky")
    assert len(t) == 1636  # the absent template and the IRF background are left out (and logged)
    tm = t[t["Morphology"] == "template"]
    assert len(tm) == 19 and np.all(tm["Radius"] > 0)
    vela_jr = _row(tm, "Vela Junior")  # RX J0852.0-4622, a ~1 deg shell
    assert 0.5 < vela_jr["Radius"] < 1.1 and angular_separation(vela_jr["GLON"], vela_jr["GLAT"], 266.28, -1.24) < 0.2
