"""Seed detection end to end: synthetic skies with known truth, the stage's files, real data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from detect_sky import expected_significance, make_dataset, make_sky, significance_maps
from regions import Regions

from gpscat.config import load_config
from gpscat.core.convolve import disk_kernel
from gpscat.core.dataset import MapDataset
from gpscat.core.geom import Map, MapAxis, WcsGeom, angular_separation
from gpscat.core.index_map import band_integrals
from gpscat.core.seeds import DetectParams, SignificanceMaps, detect_seeds
from gpscat.core.significance import cash_maps, flux_maps, reco_exposure
from gpscat.io.dataset import write_dataset
from gpscat.io.maps import read_map
from gpscat.io.seeds import SEED_COLUMNS, read_seeds
from gpscat.stages import background as background_stage
from gpscat.stages import detect as detect_stage
from gpscat.stages import exclusion as exclusion_stage
from gpscat.stages import reduce as reduce_stage
from gpscat.stages import significance as significance_stage
from gpscat.stages import stack as stack_stage

RADII = (0.1, 0.2, 0.4)
REPO = Path(__file__).resolve().parents[1]

STRIP = [
    dict(type="point", lon=-2.2, lat=0.3, counts=120),
    dict(type="point", lon=-1.5, lat=-0.4, counts=200),
    dict(type="gauss", lon=-0.6, lat=0.2, sigma=0.15, counts=900),
    dict(type="gauss", lon=0.4, lat=-0.3, sigma=0.3, counts=2500),
    dict(type="shell", lon=1.6, lat=0.0, radius=0.5, width=0.05, counts=5000),
    dict(type="point", lon=2.6, lat=0.5, counts=60),  # ~4 sigma: not required
]


def _size(src: dict) -> float:
    return src.get("sigma", src.get("radius", 0.0))


def _lon(t) -> np.ndarray:
    return (np.asarray(t["GLON"]) + 180.0) % 360.0 - 180.0


def _match(t, src) -> tuple[int, float]:
    d = angular_separation(_lon(t), np.asarray(t["GLAT"]), src["lon"], src["lat"])
    j = int(np.argmin(d))
    return j, float(d[j])


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_strip_finds_every_bright_source(seed):
    rng = np.random.default_rng(seed)
    sky = make_sky(rng, width=(6.0, 2.0), sources=STRIP)
    t = detect_seeds(significance_maps(sky, RADII), DetectParams())
    matched = np.zeros(len(t), bool)
    for src in STRIP:
        j, d = _match(t, src)
        if expected_significance(sky, src, RADII) > 7:
            assert d < max(0.05, 0.3 * _size(src)), f"{src} missed: nearest seed at {d:.3f} deg"
        if d < max(0.1, 2 * _size(src)):
            matched[j] = True
    # no spurious seeds: every seed belongs to an injected source
    assert matched.all(), f"unmatched seeds: {t[~matched]['GLON', 'GLAT', 'Sqrt_TS', 'Type']}"
    # the shell is one Hough seed with the right radius, nothing else inside it
    shells = t[t["Type"] == "shell"]
    assert len(shells) == 1
    shell = STRIP[4]
    assert shells["Shell_Radius"][0] == pytest.approx(shell["radius"], rel=0.15)
    assert shells["N_Absorbed"][0] >= 1
    d = angular_separation(_lon(t), np.asarray(t["GLAT"]), shell["lon"], shell["lat"])
    assert np.sum(d < shell["radius"] + 0.15) == 1
    # sizes: point-like vs extended, nesting empty
    j, _ = _match(t, STRIP[3])
    assert t["Size"][j] == pytest.approx(0.3, rel=0.3)
    j, _ = _match(t, STRIP[1])
    assert t["Size"][j] < 0.06
    assert np.all(t["Parent_ID"] == 0)
    assert list(t["ID"]) == list(range(1, len(t) + 1))
    assert np.all(np.diff(t["Sqrt_TS"]) <= 0)


def test_background_only_false_positive_rate():
    """A seed above 5 sigma appears in at most 5 % of source-free realisations."""
    rng = np.random.default_rng(2024)
    n_real, with_seed = 40, 0
    for _ in range(n_real):
        sky = make_sky(rng, width=(3.0, 3.0), sources=[])
        t = detect_seeds(significance_maps(sky, (0.1, 0.2)), DetectParams())
        with_seed += len(t) > 0
    assert with_seed <= 0.05 * n_real


def test_two_datasets_on_different_grids_merge():
    """Sub-TeV (0.04 deg pixels, wide PSF) and post-TeV (0.02 deg) maps: one seed per source."""
    srcs = [dict(type="point", lon=-0.7, lat=0.2, counts=4000, index=2.0), dict(type="gauss", lon=0.6, lat=-0.3, sigma=0.15, counts=8000, index=2.6)]
    maps = []
    ranges = {"sub": (0.1, 1.0), "post": (1.0, 100.0)}
    for name, binsz, psf, bkg, seed in (("sub", 0.04, 0.09, 8.0, 7), ("post", 0.02, 0.05, 0.5, 8)):
        edges = np.geomspace(*ranges[name], 3)
        ds = make_dataset(np.random.default_rng(seed), name=name, width=(3.0, 2.0), binsz=binsz, psf_sigma=psf, energy_edges=edges,
                          bkg_rate=bkg, sources=[dict(s, counts=s["counts"] * _share(s["index"], edges)) for s in srcs])
        maps += [_cash_maps(ds, name, r) for r in (0.1, 0.2)]
    t = detect_seeds(maps, DetectParams(), psf_sigma={"sub": 0.09, "post": 0.05}, energy_ranges=ranges)
    assert len(t) == 2
    assert t.meta["DATASETS"] == "sub,post"
    assert np.all(np.isfinite(t["Sqrt_TS_Grid"])) and np.all(t["Sqrt_TS_Grid"] > 5)
    for src in srcs:
        j, d = _match(t, src)
        assert d < max(0.05, 0.3 * _size(src))
        # the index across the two datasets
        assert t["Index_Datasets"][j] == pytest.approx(src["index"], abs=3 * t["Index_Datasets_Err"][j] + 0.05)
    j_hard, _ = _match(t, srcs[0])
    j_soft, _ = _match(t, srcs[1])
    assert t["Hardness"][j_hard] > t["Hardness"][j_soft]


def _share(index, edges):
    """Fraction of a power law's counts (flat exposure) between edges[0] and edges[-1] over 0.1–100 TeV."""
    part = band_integrals(np.array(index), [edges[0]], [edges[-1]])[0].sum()
    return part / band_integrals(np.array(index), [0.1], [100.0])[0].sum()


def _cash_maps(ds, name, r) -> SignificanceMaps:
    geom = ds.geom
    k = disk_kernel(r / geom.binsz)
    n, b = ds.counts.data.sum(0), ds.background.data.sum(0)
    out = cash_maps(n, b, kernel=k)
    edges = ds.counts.axis("energy").edges
    exp_reco = reco_exposure(ds.exposure.data, edges, ds.exposure.axis("energy_true").edges)
    out.update(flux_maps(out["excess"], out["excess_error"], exp_reco, edges, kernel=k))
    return SignificanceMaps(name, r, geom, out["sqrt_ts"], out["excess"], out["background"], out["counts"], out["flux"], out["exposure"])


# ------------------------------------------------------------------ the stage's files


def _config(tmp_path, **detect):
    overrides = {
        "datasets": [{"name": "all", "binsz": "0.02 deg", "energy": {"min": "0.1 TeV", "max": "100 TeV", "nbins": 6}}],
        "significance": {"correlation_radii": ["0.1 deg", "0.2 deg"], "energy_bands": [["0.1 TeV", "1 TeV"], ["1 TeV", "10 TeV"], ["10 TeV", "100 TeV"]], "quicklook": False},
        "detect": detect,
    }
    return load_config(overrides=overrides)


def _outputs(tmp_path):
    return dict(
        seeds=tmp_path / "seeds" / "seeds_detected.fits",
        regions=tmp_path / "seeds" / "seeds_detected.reg",
        index_map=tmp_path / "maps" / "index_map.fits",
        exclusion=tmp_path / "maps" / "detection_exclusion.fits",
        plot=tmp_path / "seeds" / "seeds_detected.png",
    )


def _significance_files(cfg, ds, folder):
    path = folder / "dataset.fits"
    write_dataset(path, ds)
    written = significance_stage.run(cfg, dataset=ds.name, input=path, output_dir=folder)
    sig = [p for p in written if p.name.startswith("significance_") and p.suffix == ".fits"]
    bands = [p for p in written if p.name.startswith("bands_") and p.suffix == ".fits"]
    return sig, bands, path


def test_run_writes_all_products(tmp_path):
    srcs = [dict(type="point", lon=-0.6, lat=0.3, counts=2000, index=2.0), dict(type="gauss", lon=0.5, lat=-0.4, sigma=0.2, counts=6000, index=3.0)]
    ds = make_dataset(np.random.default_rng(5), width=(3.0, 2.5), sources=srcs)
    cfg = _config(tmp_path)
    folder = tmp_path / "maps" / "all"
    sig, bands, dpath = _significance_files(cfg, ds, folder)
    out = _outputs(tmp_path)
    t = detect_stage.run(cfg, significance_files=sig, band_files=bands, datasets=[dpath], **out)
    assert len(t) == 2
    back = read_seeds(out["seeds"])
    assert back.colnames == list(SEED_COLUMNS)
    assert back["GLON"].unit == "deg" and back["Sqrt_TS_Grid"].shape == (2, 1, 2)
    assert back.meta["DATASETS"] == "all" and back.meta["RADII"] == "0.1000,0.2000"
    for src in srcs:
        j, d = _match(back, src)
        assert d < max(0.05, 0.3 * _size(src))
        assert back["Index"][j] == pytest.approx(src["index"], abs=3 * back["Index_Err"][j] + 0.05)
        assert back["Flux"][j] > 0
    # the index map carries the injected indices at the sources
    index = read_map(out["index_map"], "INDEX")
    for src in srcs:
        val = index.interp_image(src["lon"] % 360, src["lat"], order=0)
        assert val == pytest.approx(src["index"], abs=0.2)
    assert np.isnan(read_map(out["index_map"], "INDEX").data).mean() > 0.5  # background: no index
    # regions: one shape per seed
    regs = Regions.read(out["regions"], format="ds9")
    assert len(regs) == 2 and {str(r.meta["text"]) for r in regs} == {"1", "2"}
    # exclusion: per dataset, True = usable, the sources excluded
    mask = read_map(out["exclusion"], "ALL")
    assert mask.data.dtype.kind in "iub" and 0.5 < mask.data.astype(bool).mean() < 1.0
    for src in srcs:
        assert not mask.data[mask.geom.coord_to_idx(src["lon"] % 360, src["lat"])[1], mask.geom.coord_to_idx(src["lon"] % 360, src["lat"])[0]]
    assert out["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_no_seed_is_an_empty_table(tmp_path, caplog):
    ds = make_dataset(np.random.default_rng(6), width=(2.0, 2.0), sources=[])
    cfg = load_config(overrides={"significance": {"correlation_radii": ["0.1 deg"], "quicklook": False}})
    folder = tmp_path / "maps" / "all"
    sig, bands, dpath = _significance_files(cfg, ds, folder)
    out = _outputs(tmp_path)
    with caplog.at_level(logging.INFO, logger="gpscat"):
        t = detect_stage.run(cfg, significance_files=sig, band_files=bands, datasets=[dpath], **out)
    assert len(t) == 0
    back = read_seeds(out["seeds"])
    assert len(back) == 0 and back.colnames == list(SEED_COLUMNS)
    assert any("no seed" in r.getMessage() for r in caplog.records)
    assert Regions.read(out["regions"], format="ds9") is not None
    assert read_map(out["exclusion"], "ALL").data.all()
    assert out["plot"].exists() and out["index_map"].exists()


def test_psf_sigma_of_a_gaussian_psf_map():
    geom = WcsGeom.create((0.0, 0.0), 2.0, 0.5)
    rad = MapAxis("rad", np.linspace(0, 0.5, 51), "deg", "lin")
    et = MapAxis("energy_true", np.array([0.5, 1.0, 2.0]), "TeV", "log")
    theta = np.radians(rad.center)
    sig = np.radians(0.07)
    prof = np.exp(-0.5 * (theta / sig) ** 2) / (2 * np.pi * sig**2)
    psf = Map(geom, np.broadcast_to(prof[None, :, None, None], (2, 50, *geom.shape)).copy(), (rad, et), "sr-1")
    ds = MapDataset("x", psf=psf)
    assert detect_stage.psf_sigma(ds) == pytest.approx(0.07, rel=0.03)
    assert detect_stage.psf_sigma(MapDataset("y")) is None


def test_params_from_config_units_and_errors():
    p = detect_stage.params_from_config(load_config(overrides={"detect": {"min_separation": "6 arcmin", "hough": {"radius_max": "1 deg"}}}))
    assert p.min_separation == pytest.approx(0.1) and p.shell_r_max == 1.0 and p.threshold == 5.0
    with pytest.raises(ValueError, match="detect.merge_distance"):
        detect_stage.params_from_config(load_config(overrides={"detect": {"merge_distance": "1 TeV"}}))
    with pytest.raises(ValueError, match="detect"):
        load_config(overrides={"detect": {"no_such_key": 1}})


# ------------------------------------------------------------------------ real data


def _maps(cfg, name: str, folder) -> tuple[list, Path]:
    """reduce → stack → exclusion → background → significance of one dataset, as the workflow runs them."""
    folder.mkdir(parents=True, exist_ok=True)
    store = reduce_stage.open_store(cfg)
    paths = []
    for obs_id in reduce_stage.select_observations(cfg, store):
        paths.append(folder / f"obs_{obs_id}.fits")
        reduce_stage.run(cfg, dataset=name, obs_id=obs_id, output=paths[-1], store=store)
    stack_stage.run(cfg, dataset=name, inputs=paths, output=folder / "stacked.fits")
    exclusion_stage.run(cfg, dataset=name, stacked=folder / "stacked.fits", output=folder / "exclusion.fits")
    background_stage.run(cfg, dataset=name, stacked=folder / "stacked.fits", observations=paths, exclusion=folder / "exclusion.fits",
                         output=folder / "dataset.fits", norms=folder / "norms.fits")
    written = significance_stage.run(cfg, dataset=name, input=folder / "dataset.fits", output_dir=folder)
    return [p for p in written if p.name.startswith("significance_") and p.suffix == ".fits"], folder / "dataset.fits"


def _pipeline(cfg, folder):
    """Every dataset of ``cfg`` through the map stages, then detect."""
    sig, datasets = [], []
    for d in cfg.datasets:
        files, dataset = _maps(cfg, d.name, folder / d.name)
        sig += files
        datasets.append(dataset)
    return detect_stage.run(cfg, significance_files=sig, datasets=datasets, **_outputs(folder))


def cta1dc_gc_config(shared_data, **sections):
    """The CTA 1DC Galactic-centre field (runs 110380, 111140, 111159), one dataset ``gc``."""
    return load_config(overrides={
        "data": {"store": str(shared_data / "cta-1dc/index/gps"), "selection": {"obs_ids": [110380, 111140, 111159]}},
        "survey": {"frame": "galactic", "center": ["0 deg", "0 deg"], "width": ["6 deg", "4 deg"]},
        "datasets": [{"name": "gc", "binsz": "0.02 deg", "energy": {"min": "0.1 TeV", "max": "10 TeV", "nbins": 1},
                      "energy_true": {"min": "0.5 TeV", "max": "20 TeV", "nbins": 16}, "offset_max": "2.5 deg"}],
        "significance": {"correlation_radii": ["0.1 deg", "0.2 deg"], "quicklook": False},
        **sections,
    })


@pytest.mark.realdata
def test_cta1dc_galactic_centre_seed(shared_data, tmp_path):
    cfg = cta1dc_gc_config(shared_data)
    t = _pipeline(cfg, tmp_path)
    d = angular_separation(np.asarray(t["GLON"]), np.asarray(t["GLAT"]), 359.944, -0.046)
    assert d.min() < 0.03, f"nearest seed to Sgr A* at {d.min():.3f} deg"
    assert t["Sqrt_TS"][np.argmin(d)] > 20


@pytest.mark.realdata
def test_hess_dr1_msh1552_one_seed(shared_data, tmp_path):
    pos = {"frame": "icrs", "lon": "228.32 deg", "lat": "-59.08 deg"}
    cfg = load_config(overrides={
        "data": {"store": str(shared_data / "hess-dl3-dr1"), "selection": {"cone": {**pos, "radius": "2.5 deg"}}},
        "survey": {"frame": "galactic", "center": ["320.315 deg", "-1.188 deg"], "width": ["3 deg", "3 deg"]},
        "datasets": [{"name": "msh", "binsz": "0.02 deg", "offset_max": "2.5 deg", "cutout_width": "5 deg",
                      "energy": {"min": "0.5 TeV", "max": "10 TeV", "nbins": 10},
                      "energy_true": {"min": "0.5 TeV", "max": "10 TeV", "nbins": 10},
                      "safe_mask": {"methods": ["aeff-default"]}}],
        "significance": {"correlation_radii": ["0.1 deg", "0.2 deg"], "quicklook": False},
    })
    t = _pipeline(cfg, tmp_path)
    d = angular_separation(np.asarray(t["GLON"]), np.asarray(t["GLAT"]), 320.315, -1.188)
    assert np.sum(d < 0.05) == 1, f"seeds: {t['GLON', 'GLAT', 'Sqrt_TS']}"
    # nothing else above threshold in the 3 x 3 deg field
    assert len(t) == 1 and t["Sqrt_TS"][0] > 5


def test_docs_list_every_seed_column():
    text = (REPO / "docs" / "seeds.md").read_text(encoding="utf-8")
    missing = [c for c in SEED_COLUMNS if f"| `{c}` |" not in text]
    assert not missing, f"docs/seeds.md lacks columns {missing}"


def test_elongation_and_angle_convention():
    """An elongated Gaussian along (+l, +b): position angle 45 deg from +b towards +l."""
    geom = WcsGeom.create((0.0, 0.0), (2.0, 2.0), 0.02)
    lon, lat = geom.get_coord()
    lon = np.where(lon > 180, lon - 360, lon)
    u, v = (lon + lat) / np.sqrt(2), (lat - lon) / np.sqrt(2)
    excess = 50.0 * np.exp(-0.5 * ((u / 0.2) ** 2 + (v / 0.08) ** 2))
    sig = excess / 2.0
    maps = [SignificanceMaps("all", 0.1, geom, sig, excess, np.ones(geom.shape), excess + 1), SignificanceMaps("all", 0.2, geom, sig, excess, np.ones(geom.shape), excess + 1)]
    t = detect_seeds(maps, DetectParams(psf_sigma=0.0, min_separation=0.1), psf_sigma={"all": 0.0})
    assert len(t) == 1
    assert t["Angle"][0] == pytest.approx(45.0, abs=2.0)
    # moments of the (here uncorrelated) excess, deconvolved by the r = 0.1 top-hat
    expected = np.sqrt(np.sqrt(0.2**2 - 0.05**2) * np.sqrt(0.08**2 - 0.05**2))
    assert t["Size_Moments"][0] == pytest.approx(expected, rel=0.1)
    assert t["Elongation"][0] > 0.5


#: demo sources that are no local maximum in any map (a shoulder between two bright
#: points): the grouped fit's residual search must add them, see docs/seeds.md
SHOULDERS = {"demo-triplet-2"}


@pytest.mark.slow
def test_demo_survey_against_the_simulated_truth(tmp_path):
    """The simulator's demo survey (8 pointings, sub-TeV + post-TeV, 11 sources)."""
    simulate = pytest.importorskip("gpscat.stages.simulate")
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    raw["significance"] = {"correlation_radii": ["0.1 deg", "0.2 deg", "0.4 deg"], "quicklook": False}
    sim = simulate.simulate_survey(raw, tmp_path / "store")
    t = _pipeline(sim.config, tmp_path)
    truth = sim.truth
    glon, glat = np.asarray(t["GLON"]), np.asarray(t["GLAT"])
    matched = np.zeros(len(t), bool)
    for row in truth:
        d = angular_separation(glon, glat, row["GLON"], row["GLAT"])
        j = int(np.argmin(d))
        if row["Sqrt_TS"] > 7 and row["Name"] not in SHOULDERS:
            assert d[j] < max(0.05, 0.3 * row["Size"]), f"{row['Name']}: nearest seed at {d[j]:.3f} deg"
        matched |= d < max(0.15, 2 * row["Size"] + row["Shell_Width"])
    assert matched.all(), f"seeds matching no injected source: {t[~matched]['ID', 'GLON', 'GLAT', 'Sqrt_TS']}"
    shell = truth[truth["Spatial_Model"] == "ShellSpatialModel"][0]
    shells = t[t["Type"] == "shell"]
    assert len(shells) == 1 and shells["Shell_Radius"][0] == pytest.approx(shell["Size"], rel=0.15)
    d = angular_separation(glon, glat, shell["GLON"], shell["GLAT"])
    assert np.sum(d < shell["Size"] + shell["Shell_Width"]) == 1  # one seed, not fragments
    # the empty region of the demo sky stays empty
    assert np.all(angular_separation(glon, glat, 357.0, -0.6) > 0.4)
