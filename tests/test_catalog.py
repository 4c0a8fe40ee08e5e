"""Catalog stage: names, nesting, confusion, the products and their formats, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.coordinates import SkyCoord
from catalog_sky import catalog_chain, map_chain, small_survey
from regions import Regions

from gpscat.config import load_config
from gpscat.core.catalog import confused, iau_names, nesting
from gpscat.core.npred import DatasetEvaluator
from gpscat.io.dataset import read_dataset
from gpscat.io.maps import read_map
from gpscat.io.models_yaml import read_models
from gpscat.io.seeds import empty_seed_table, write_seeds
from gpscat.io.source_catalog import catalog_columns, read_catalog_fits
from gpscat.stages import catalog as catalog_stage

REPO = Path(__file__).resolve().parents[1]
DATASETS = [{"name": "low", "energy": {"min": "0.1 TeV", "max": "1 TeV", "nbins": 2}},
            {"name": "high", "energy": {"min": "1 TeV", "max": "30 TeV", "nbins": 2}}]


def _config(**sections):
    return load_config(overrides={"datasets": DATASETS, "fit": {"passes": 1}, "catalog": {"name_prefix": "TEST"}, **sections})


def test_iau_names():
    c = SkyCoord(359.944, -0.046, unit="deg", frame="galactic").icrs  # Sgr A*: HESS J1745-290
    assert iau_names([c.ra.deg], [c.dec.deg], prefix="GPSC")[0] == "GPSC J1745-290"
    # truncation, not rounding; signs; two sources in one name cell get A, B by longitude
    names = iau_names([83.99, 0.01, 10.0, 10.001], [22.0149, -0.099, 5.0, 5.001], prefix="X", glon=[1, 2, 4, 3])
    assert list(names) == ["X J0535+220", "X J0000-000", "X J0040+050B", "X J0040+050A"]
    with pytest.raises(ValueError, match="finite"):
        iau_names([np.nan], [0.0], prefix="X")


def test_nesting_and_confusion():
    lon, lat = np.array([0.0, 0.05, 1.0, 1.06]), np.zeros(4)
    r68 = np.array([0.3, 0.05, 0.1, 0.1])
    flag, parent = nesting(lon, lat, r68)
    assert flag.tolist() == [2, 1, 0, 0] and parent.tolist() == [-1, 0, -1, -1]
    conf = confused(lon, lat, r68, min_overlap=0.5)
    assert conf.tolist() == [True, True, True, True]  # the small one lies inside the large; 3 and 4 overlap by 0.6
    assert confused(lon, lat, r68, min_overlap=0.9).tolist() == [True, True, False, False]


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalog")
    sky = small_survey(folder / "data")
    cfg = _config(associate={"catalogs": [{"path": str(folder / "truth.yaml"), "tag": "truth", "format": "gammapy-yaml"}]})
    from gpscat.io.models_yaml import write_models
    from gpscat.models.sky import Models

    write_models(folder / "truth.yaml", Models(sky["models"]), write_covariance=False)
    paths = catalog_chain(cfg, folder, seeds=sky["seeds"], datasets=sky["datasets"])
    return cfg, sky, paths, read_catalog_fits(paths["catalog"])


def test_catalog_schema_units_and_provenance(products):
    cfg, sky, paths, tables = products
    cat = tables["CATALOG"]
    assert cat.colnames == list(catalog_columns(["low", "high"], [(0.05, 1.0), (1.0, 100.0)]))
    for col in ("Source_Name", "GLON", "GLAT", "GLON_Err", "GLAT_Err", "RAJ2000", "DEJ2000", "Pos_Err_68", "Spatial_Model",
                "Radius", "Radius_Err", "Width", "Spectral_Model", "Index", "Index_Err", "Flux_50GeV_1TeV", "Flux_50GeV_1TeV_Err",
                "Flux_1TeV_100TeV", "Flux_1TeV_100TeV_Err", "Npred", "TS", "Sqrt_TS", "Group_ID", "Seed_Class", "Seed_Rank", "R68",
                "Nest_Flag", "Parent", "Npred_low", "Npred_high", "TS_low", "TS_high", "Association", "Association_Overlap",
                "Association_Separation", "Fit_Status", "Flags"):
        assert col in cat.colnames, col
    assert str(cat["GLON"].unit) == "deg" and str(cat["Flux_1TeV_100TeV"].unit) == "1 / (s cm2)"
    assert str(cat["Energy_Flux"].unit) == "erg / (s cm2)"
    assert all(n.startswith("TEST J") for n in cat["Source_Name"])
    meta = cat.meta
    assert meta["CFGHASH"] == cfg.hash and meta["GPSCAT"] and meta["NUMPY"] and meta["DATASETS"] == "low,high"
    assert meta["NSOURCES"] == len(cat) == 3
    assert set(tables["FLUX_POINTS"]["Source_Name"]) == set(cat["Source_Name"])
    # every source associated with its injected counterpart
    assert set(cat["Association"]) == {"T1", "T2", "T3"} and np.all(cat["Association_Overlap"] > 0.5)


def test_yaml_regions_and_maps(products):
    _, sky, paths, tables = products
    cat = tables["CATALOG"]
    models = read_models(paths["yaml"])
    assert models.names == sorted(cat["Source_Name"])
    cov = models.covariance
    assert cov.shape[0] == len(models.parameters) and np.all(np.diag(cov) >= 0) and cov.any()
    regs = Regions.read(paths["regions"], format="ds9")
    assert {str(r.meta["text"]) for r in regs} == set(cat["Source_Name"])
    for d in ("LOW", "HIGH"):
        res = read_map(paths["residual"], d).data
        finite = res[np.isfinite(res)]
        assert abs(finite.mean()) < 0.3 and 0.7 < finite.std() < 1.3 and finite.max() < 5
    for key in ("overview", "residual_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_catalog_keeps_the_schema(tmp_path):
    sky = small_survey(tmp_path / "data")
    write_seeds(tmp_path / "none.fits", empty_seed_table(["high"], [0.1]))
    paths = catalog_chain(_config(), tmp_path, seeds=tmp_path / "none.fits", datasets=sky["datasets"])
    tables = read_catalog_fits(paths["catalog"])
    assert len(tables["CATALOG"]) == 0
    assert tables["CATALOG"].colnames == list(catalog_columns(["low", "high"], [(0.05, 1.0), (1.0, 100.0)]))
    assert yaml.safe_load(paths["yaml"].read_text())["components"] == []
    assert paths["covariance"].exists() and paths["regions"].exists() and paths["overview"].exists()
    assert catalog_stage.PRODUCTS.keys() == paths.keys()


@pytest.mark.crosscheck
def test_yaml_loads_in_gammapy_and_npred_agrees(products):
    """gammapy's Models.read opens catalog.yaml; its npred of each source on our maps agrees within 1 %."""
    gm = pytest.importorskip("gammapy.modeling.models")
    gd = pytest.importorskip("gammapy.datasets")
    _, sky, paths, tables = products
    gmodels = gm.Models.read(paths["yaml"])
    ours = read_models(paths["yaml"])
    assert sorted(gmodels.names) == sorted(ours.names)
    assert gmodels.covariance.data.shape == ours.covariance.shape
    for path in sky["datasets"]:
        ds = read_dataset(path)
        gds = gd.MapDataset.read(path, name=ds.name)
        gds.models = gmodels
        ev = DatasetEvaluator(ds, list(ours))
        for m in ours:
            theirs = float(gds.npred_signal(model_names=[m.name]).data[gds.mask_safe.data].sum())
            mine = float(ev.npred_source(m)[ds.mask()].sum())
            assert mine == pytest.approx(theirs, rel=0.01), (ds.name, m.name, mine, theirs)


# The demo survey against its injected truth: tests/test_workflow.py::test_demo_catalog_against_the_truth
# (on the README's main job, classifier included).


@pytest.mark.realdata
def test_cta1dc_galactic_centre_in_the_catalog(shared_data, tmp_path):
    """CTA 1DC GC field: the GC source's catalog position agrees with the fitting engine's
    standalone fit (point + power law, test_fit_realdata) within 0.3 sigma."""
    from test_fit_realdata import gc_models

    from gpscat.core.fit import Fit

    cfg = load_config(overrides={
        "data": {"store": str(shared_data / "cta-1dc/index/gps"), "selection": {"obs_ids": [110380, 111140, 111159]}},
        "survey": {"frame": "galactic", "center": ["0 deg", "0 deg"], "width": ["4 deg", "3 deg"]},
        "datasets": [{"name": "gc", "binsz": "0.02 deg", "energy": {"min": "0.1 TeV", "max": "10 TeV", "nbins": 1},
                      "energy_true": {"min": "0.5 TeV", "max": "20 TeV", "nbins": 16}, "offset_max": "2.5 deg",
                      "psf": {"binsz": "0.2 deg"}}],
        "significance": {"correlation_radii": ["0.1 deg", "0.2 deg"], "quicklook": False},
        # the standalone fit's model: a point source with a power law; one reco bin
        "fit": {"passes": 1, "spatial_models": ["point"], "spectral_models": ["pl"], "residual": {"enabled": False}},
        "associate": {"catalogs": [{"path": str(shared_data / "catalogs/hgps_catalog_v1.fits.gz"), "tag": "hgps"}]},
    })
    maps = map_chain(cfg, tmp_path)
    paths = catalog_chain(cfg, tmp_path, seeds=maps["seeds"], datasets=maps["datasets"])
    cat = read_catalog_fits(paths["catalog"])["CATALOG"]
    gc = cat[cat["Association"] == "HESS J1745-290"]
    assert len(gc) == 1, cat["Source_Name", "GLON", "GLAT", "Association"]
    gc = gc[0]
    assert gc["Source_Name"] == "GPSC J1745-290" and gc["Spatial_Model"] == "PointSpatialModel" and gc["TS"] > 300
    ds = read_dataset(maps["datasets"][0])
    ref = gc_models(ds.name)
    assert Fit(ds, ref).run().success
    sp = ref["GC-1"].spatial_model
    lon = (gc["GLON"] + 180.0) % 360.0 - 180.0
    assert abs(lon - sp.lon_0.value) < 0.3 * sp.lon_0.error, (lon, sp.lon_0.value, sp.lon_0.error)
    assert abs(gc["GLAT"] - sp.lat_0.value) < 0.3 * sp.lat_0.error, (gc["GLAT"], sp.lat_0.value, sp.lat_0.error)
    assert gc["GLON_Err"] == pytest.approx(sp.lon_0.error, rel=0.3)
