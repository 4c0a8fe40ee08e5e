"""Survey tiles: geometry, config checks, the DAG fan-out, per-tile memory, and a seam.

The end-to-end test simulates a 4° × 2° strip of three pointings with three point sources,
one exactly on the seam between two 2° tiles, and runs detection untiled and with two
tiles on the same data store.
"""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.table import Table
from test_workflow import snakemake

from gpscat.config import ConfigError, load_config
from gpscat.core.geom import WcsGeom, angular_separation
from gpscat.core.tiles import TileGrid
from gpscat.io.maps import read_map
from gpscat.stages.fit import _check_tile
from gpscat.stages.simulate import simulate_survey
from gpscat.workflow import resources_for, tile_names, tile_observations

pytestmark = pytest.mark.workflow

SEAM_SOURCE = (0.0, 0.15)  # (l, b) deg: on the seam of the two tiles at l = 0
OTHER_SOURCES = ((1.1, -0.1), (-1.2, 0.05))


# ------------------------------------------------------------------------- geometry


def test_every_pixel_is_in_exactly_one_core_for_every_pixel_size():
    grid = TileGrid((10.0, 3.0), (4.0, 2.0), 1.0)
    assert grid.shape == (3, 2) and len(grid) == 6
    for binsz in (0.05, 0.03, 0.5):
        geom = WcsGeom.create((0.0, 0.0), (10.0, 3.0), binsz)
        count = np.zeros(geom.shape, int)
        for t in grid.tiles:
            cy, cx = grid.core_slices(geom, t)
            count[cy, cx] += 1
            fy, fx = grid.full_slices(geom, t)
            # the full region is the core grown by the margin, clipped at the survey edge
            for core, full, n in ((cx, fx, geom.npix[0]), (cy, fy, geom.npix[1])):
                assert full.start == 0 or abs((core.start - full.start) * binsz - 1.0) <= binsz
                assert full.stop == n or abs((full.stop - core.stop) * binsz - 1.0) <= binsz
        assert (count == 1).all()
        # the core of a position is the same tile on every dataset's grid (x grows towards lower l;
        # core edges at l = 5, 1, -3, -5 and b = -1.5, 0.5, 1.5; the outer cores are unbounded)
        lon = np.array([4.9, 1.0001, 0.9999, -1.0001, -4.9, 0.0, 7.0])
        lat = np.array([0.0, 0.2, -0.2, 1.4, -1.4, 0.5001, -3.0])
        assert list(grid.tile_of(geom, lon, lat)) == ["x0y0", "x0y0", "x1y0", "x1y1", "x2y0", "x1y1", "x0y0"]


def test_paste_core_rebuilds_the_survey_and_roi_check():
    geom = WcsGeom.create((0.0, 0.0), (4.0, 2.0), 0.05)
    grid = TileGrid((4.0, 2.0), (2.0, 2.0), 0.5)
    truth = np.arange(geom.shape[0] * geom.shape[1], dtype=float).reshape(geom.shape)
    out = np.full(geom.shape, np.nan)
    for t in grid.tiles:
        sl = grid.full_slices(geom, t)
        grid.paste_core(truth[sl], geom.slice(*sl), out, geom, t)
    np.testing.assert_array_equal(out, truth)
    # x0y0 is the high-longitude half (pixel x grows towards lower l); its full region ends at l = -0.5
    assert grid.roi_inside(geom, "x0y0", 0.3, 0.0, 0.75)
    assert not grid.roi_inside(geom, "x0y0", 0.3, 0.0, 0.85)
    assert grid.roi_inside(geom, "x0y0", 1.9, 0.0, 1.5)  # the survey edge is open


def test_margin_too_small_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"tiles\.margin.*0\.9 deg.*detect\.size\.max_radius"):
        load_config(overrides={"tiles": {"size": ["2 deg", "4 deg"], "margin": "0.5 deg"}, "detect": {"size": {"max_radius": "0.9 deg"}}})
    with pytest.raises(ConfigError, match=r"tiles\.size"):
        load_config(overrides={"tiles": {"size": ["2 deg", "0 deg"]}})
    with pytest.raises(ConfigError, match=r"tiles\.margin"):
        load_config(overrides={"tiles": {"size": ["2 deg", "4 deg"], "margin": "1"}})
    # a size covering the survey is one tile: the untiled workflow
    assert load_config(overrides={"tiles": {"size": ["6 deg", "4 deg"], "margin": "0 deg"}}).tiles is None


def test_fit_roi_leaving_its_tile_is_clipped_with_a_warning_naming_the_margin(caplog):
    cfg = load_config(overrides={"survey": {"width": ["4 deg", "2 deg"]}, "tiles": {"size": ["2 deg", "2 deg"], "margin": "1 deg"}})
    assert _check_tile(cfg, "x0y0", (0.3, 0.0), 1.25, 7)  # reaches l = -0.95: inside the margin
    assert not caplog.records
    # a larger group: the fit runs on the part of the ROI the tile holds (its sources are
    # flagged NEAR_EDGE by the stage), with a warning saying which key to raise
    with caplog.at_level(logging.WARNING, logger="gpscat.stages.fit"):
        assert not _check_tile(cfg, "x0y0", (0.3, 0.0), 1.4, 7)
    assert re.search(r"group 7: its region of interest .* tile x0y0: fitted on the part .* tiles\.margin", caplog.text)
    with pytest.raises(ValueError, match=r"core of tile x1y0, not x0y0"):
        _check_tile(cfg, "x0y0", (-0.3, 0.0), 0.2, 7)


# ----------------------------------------------------------------------- DAG and resources


def _strip_config(n_pointings: int, tile: str | None = "2 deg") -> dict:
    half = 0.5 * (n_pointings - 1)
    return {
        "simulation": {"enabled": True, "pointings": {"lon_min": f"{-half} deg", "lon_max": f"{half} deg", "lon_step": "1 deg"}},
        "survey": {"width": [f"{n_pointings + 1} deg", "2 deg"]},
        "datasets": [
            {"name": "a", "binsz": "0.05 deg", "energy": {"min": "1 TeV", "max": "100 TeV", "nbins": 2}, "offset_max": "1.5 deg"},
            {"name": "b", "binsz": "0.1 deg", "energy": {"min": "0.1 TeV", "max": "1 TeV", "nbins": 2}, "offset_max": "1.5 deg"},
        ],
        "detect": {"size": {"max_radius": "0.5 deg"}, "hough": {"enabled": False}},
        "tiles": {"size": [tile, "2 deg"] if tile else None, "margin": "0.6 deg"},
    }


def test_per_tile_memory_does_not_grow_with_the_survey():
    mem = {}
    for n in (4, 8, 16):
        cfg = _strip_config(n)
        stack = resources_for(cfg, "stack")["mem_mb"]
        tiles = tile_names(cfg)
        assert len(tiles) == (n + 1 + 1) // 2
        mem[n] = max(stack(type("W", (), {"dataset": "a", "tile": t})()) for t in tiles)
        untiled = _strip_config(n, tile=None)
        mem[f"untiled{n}"] = resources_for(untiled, "stack")["mem_mb"](type("W", (), {"dataset": "a"})())
    assert mem[4] == mem[8] == mem[16]
    assert mem["untiled16"] > 2 * mem["untiled4"] - 400  # the untiled job grows with the survey
    assert mem[16] < mem["untiled16"]


def test_dry_run_fans_out_per_dataset_and_tile(tmp_path):
    cfg = _strip_config(6)  # 7° wide: 4 tiles of 2° (the last 1°), 2 datasets
    path = tmp_path / "tiled.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake(tmp_path, "--configfile", str(path), "-n", "-p", "--cores", "1", "results/seeds/seeds_detected.fits")
    assert res.returncode == 0, res.stderr + res.stdout
    table = res.stdout.split("Job stats:")[-1]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    tiles = tile_names(cfg)
    assert tiles == ["x0y0", "x1y0", "x2y0", "x3y0"]
    for rule in ("stack", "exclusion", "background", "significance"):
        assert counts[rule] == 2 * 4, rule
    assert counts["detect"] == 4 and counts["detect_merge"] == 1 and counts["psf_merge"] == 2
    assert counts["reduce"] == 2 * 6
    # a stack job reads only the observations whose cutout overlaps its tile
    stacks = re.findall(r"gpscat stack .*?--dataset (\w+) --tile (x\dy\d) .*?--provenance \S+ (.*?) 2>", res.stdout)
    assert len(stacks) == 8
    n_inputs = {}
    for dataset, tile, files in stacks:
        ids = sorted(int(Path(f).stem) for f in files.split())
        assert ids == sorted(tile_observations(cfg, dataset, tile))
        n_inputs[(dataset, tile)] = len(ids)
    assert (n_inputs[("a", "x0y0")], n_inputs[("a", "x3y0")]) == (4, 3)  # the edge tiles (x3y0: the last 1°)
    assert n_inputs[("a", "x1y0")] == 6
    # x0y0 (l > 1.5°, full region l > 0.9°) does not reach the cutout (4.3°) of obs 1 at l = -2.5°
    assert 1 not in tile_observations(cfg, "a", "x0y0") and 6 not in tile_observations(cfg, "a", "x3y0")


def test_one_tile_is_the_untiled_workflow(tmp_path):
    """tiles.size covering the survey: the same jobs, shell commands (params) and files as
    without tiles, so the same bytes and no rerun of an existing untiled run."""
    plans = {}
    for name, size in (("none", None), ("one", ["7 deg", "5 deg"])):
        cfg = _strip_config(6, tile=None)
        cfg["tiles"] = {"size": size, "margin": "0 deg"} if size else {}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = snakemake(tmp_path, "--configfile", str(path), "-n", "-p", "--cores", "1", "results/seeds/seeds_detected.fits")
        assert res.returncode == 0, res.stderr + res.stdout
        plans[name] = sorted(line for line in res.stdout.splitlines() if line.startswith("Shell command: gpscat "))
    assert len(plans["none"]) == 8 + 12 + 2 * 4 + 1  # simulate, reduce, 4 map rules per dataset, detect
    assert plans["one"] == plans["none"]
    assert not any("--tile" in line or "/tiles/" in line for line in plans["one"])


def test_bad_tiles_config_stops_the_workflow(tmp_path):
    cfg = _strip_config(4)
    cfg["tiles"]["margin"] = "0.2 deg"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake(tmp_path, "--configfile", str(path), "-n", "--cores", "1")
    assert res.returncode != 0
    assert "tiles.margin" in res.stdout + res.stderr


# ------------------------------------------------------------------- a source on the seam

MODELS = textwrap.dedent(
    """\
    components:
    """
) + "".join(
    textwrap.indent(
        textwrap.dedent(
            f"""\
            - name: src{k}
              type: SkyModel
              spectral:
                type: PowerLawSpectralModel
                parameters:
                - {{name: index, value: 2.2}}
                - {{name: amplitude, value: {amp}, unit: cm-2 s-1 TeV-1}}
                - {{name: reference, value: 1.0, unit: TeV}}
              spatial:
                type: PointSpatialModel
                frame: galactic
                parameters:
                - {{name: lon_0, value: {lon}, unit: deg}}
                - {{name: lat_0, value: {lat}, unit: deg}}
            """
        ),
        "",
    )
    for k, ((lon, lat), amp) in enumerate(zip((SEAM_SOURCE, *OTHER_SOURCES), (3e-12, 3e-12, 2e-12), strict=True))
)


def _seam_config(store: Path, tiles: dict | None) -> dict:
    cfg = {
        "data": {"store": str(store)},
        "survey": {"width": ["4 deg", "2 deg"]},
        "datasets": [
            {"name": "tev", "binsz": "0.05 deg", "energy": {"min": "1 TeV", "max": "100 TeV", "nbins": 2},
             "energy_true": {"min": "0.5 TeV", "max": "200 TeV", "nbins": 4}, "offset_max": "1.5 deg",
             "psf": {"nbins": 20}},
        ],
        "significance": {"correlation_radii": ["0.1 deg", "0.2 deg"], "quicklook": False},
        "detect": {"size": {"max_radius": "0.5 deg"}, "hough": {"enabled": False}, "index_map": {"enabled": False}},
        # a small classifier training set and one fit pass: the catalog in well under a minute
        "classify": {"training": {"n_skies": 4, "sources": {"per_sky": 4}}},
        "fit": {"passes": 1},
    }
    if tiles:
        cfg["tiles"] = tiles
    return cfg


@pytest.fixture(scope="module")
def seam_runs(tmp_path_factory):
    """Detection on one simulated store: untiled, and with two 2° tiles (seam at l = 0)."""
    root = tmp_path_factory.mktemp("tiles")
    (root / "models.yaml").write_text(MODELS)
    sim = {"simulation": {"models": str(root / "models.yaml"), "pointings": {"lon_min": "-1 deg", "lon_max": "1 deg", "lon_step": "1 deg"},
                          "livetime": "1 h", "energy": ["0.5 TeV", "100 TeV"], "offset_max": "2.5 deg", "seed": 3}}
    simulate_survey(sim, root / "store", truth=False)
    out = {}
    for name, tiles in (("untiled", None), ("tiled", {"size": ["2 deg", "2 deg"], "margin": "0.6 deg"})):
        work = root / name
        work.mkdir()
        path = work / "config.yaml"
        path.write_text(yaml.safe_dump(_seam_config(root / "store", tiles)))
        targets = ["results/seeds/seeds_detected.fits", "results/maps/tev/exclusion.fits"]
        if tiles:  # the tiled run goes on to the catalog (fits on the tile of each group's centre)
            targets.append("results/catalog/catalog.fits")
        res = snakemake(work, "--configfile", str(path), "--cores", "2", *targets, timeout=600)
        assert res.returncode == 0, res.stderr[-4000:]
        out[name] = work
    return out


def _near(table: Table, lon: float, lat: float, radius: float = 0.15) -> Table:
    return table[angular_separation(np.asarray(table["GLON"]), np.asarray(table["GLAT"]), lon, lat) < radius]


def test_seam_source_is_one_seed(seam_runs):
    tiled = Table.read(seam_runs["tiled"] / "results/seeds/seeds_detected.fits")
    untiled = Table.read(seam_runs["untiled"] / "results/seeds/seeds_detected.fits")
    # both tiles see the seam source in their full region: the dedup rule has work to do
    seen = []
    for tile in ("x0y0", "x1y0"):
        per_tile = Table.read(seam_runs["tiled"] / f"results/seeds/tiles/{tile}/seeds_detected.fits")
        seen.append(_near(per_tile, *SEAM_SOURCE))
        assert len(seen[-1]) == 1, tile
    # the same sky and the same background norms: the two tiles measure the same seed
    assert seen[0]["Sqrt_TS"][0] == seen[1]["Sqrt_TS"][0]
    assert angular_separation(seen[0]["GLON"][0], seen[0]["GLAT"][0], seen[1]["GLON"][0], seen[1]["GLAT"][0]) < 1e-9
    seam = _near(tiled, *SEAM_SOURCE)
    assert len(seam) == 1
    ref = _near(untiled, *SEAM_SOURCE)
    assert len(ref) == 1
    assert angular_separation(seam["GLON"][0], seam["GLAT"][0], *SEAM_SOURCE) < 0.05
    # the untiled seed, up to the first-pass exclusion of a tile (its own background norm)
    assert angular_separation(seam["GLON"][0], seam["GLAT"][0], ref["GLON"][0], ref["GLAT"][0]) < 1e-5
    assert seam["Sqrt_TS"][0] == pytest.approx(ref["Sqrt_TS"][0], rel=1e-3)
    assert seam["Sqrt_TS"][0] > 10
    # no seed lost, no duplicate anywhere: one-to-one with the untiled seeds, IDs renumbered
    assert len(tiled) == len(untiled)
    assert list(tiled["ID"]) == list(range(1, len(tiled) + 1))
    for row in untiled:
        match = _near(tiled, row["GLON"], row["GLAT"], 1e-5)
        assert len(match) == 1, (row["GLON"], row["GLAT"])
        assert match["Sqrt_TS"][0] == pytest.approx(row["Sqrt_TS"], rel=1e-3)
        assert match["Size"][0] == pytest.approx(row["Size"], rel=1e-3)
    for lon, lat in OTHER_SOURCES:
        assert len(_near(tiled, lon, lat)) == 1


def test_merged_maps_cover_the_survey(seam_runs):
    a = read_map(seam_runs["tiled"] / "results/maps/tev/exclusion.fits", "EXCLUSION_MASK")
    b = read_map(seam_runs["untiled"] / "results/maps/tev/exclusion.fits", "EXCLUSION_MASK")
    assert a.geom == b.geom
    # the sources are excluded in both; the masks differ only where a tile's first-pass
    # (hysteresis) background norm differs from the survey's (measured: 8 of 3200 pixels)
    assert (a.data != b.data).mean() < 0.01
    for lon, lat in (SEAM_SOURCE, *OTHER_SOURCES):
        assert not a.interp_image(lon, lat, order=0)


def test_seam_source_is_one_catalog_source(seam_runs):
    cat = Table.read(seam_runs["tiled"] / "results/catalog/catalog.fits", hdu="CATALOG")
    assert len(cat) == 3
    lon, lat = np.asarray(cat["GLON"], float), np.asarray(cat["GLAT"], float)
    sep = angular_separation(lon[:, None], lat[:, None], lon[None], lat[None])
    assert np.min(sep[~np.eye(len(cat), dtype=bool)]) > 1.0  # no duplicate anywhere
    for src in (SEAM_SOURCE, *OTHER_SOURCES):
        near = _near(cat, *src, radius=0.1)
        assert len(near) == 1, src
        assert angular_separation(near["GLON"][0], near["GLAT"][0], *src) < 0.02
    # every fit ran on the tile whose core holds its group's centre, inside its full region
    logs = "".join(p.read_text() for p in (seam_runs["tiled"] / "logs/fit/pass1").glob("*.log"))
    assert "leaves the full region" not in logs and logs.count("converged") >= 3
