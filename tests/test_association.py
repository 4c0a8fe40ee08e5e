"""Surface-overlap association: analytic circle geometry, ranking, the stage, the CTA 1DC GC field."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from test_detect_stage import _pipeline, cta1dc_gc_config

from gpscat.cli import main
from gpscat.config import load_config
from gpscat.core.association import (
    R68_PER_SIGMA,
    associate,
    candidate_pairs,
    circle_overlap_area,
    extent_radius,
    overlap_fraction,
    weighted_extent,
)
from gpscat.core.geom import WcsGeom, angular_separation
from gpscat.io.seeds import empty_seed_table, read_seeds, write_seeds
from gpscat.stages import associate as associate_stage

# --------------------------------------------------------------------------- geometry


def test_overlap_area_analytic_cases():
    r = 0.3
    # equal circles one radius apart: 2 r² acos(1/2) - (r/2) sqrt(3) r
    expected = r**2 * (2 * np.pi / 3 - np.sqrt(3) / 2)
    np.testing.assert_allclose(circle_overlap_area(r, r, r), expected, rtol=1e-12)
    np.testing.assert_allclose(circle_overlap_area([0.0, 0.05, 0.1], 0.5, 0.2), np.pi * 0.2**2, rtol=1e-12)  # inside
    np.testing.assert_allclose(circle_overlap_area([0.7, 0.71, 5.0], 0.5, 0.2), 0.0, atol=1e-15)  # tangent / apart
    # symmetric in the radii, continuous at the containment and tangency limits
    d = np.linspace(0.0, 1.0, 2001)
    a = circle_overlap_area(d, 0.5, 0.2)
    np.testing.assert_allclose(a, circle_overlap_area(d, 0.2, 0.5), rtol=1e-12)
    assert np.all(np.diff(a) <= 1e-15) and np.max(np.abs(np.diff(a))) < 2e-3
    with pytest.raises(ValueError, match=">= 0"):
        circle_overlap_area(0.1, -1.0, 0.2)


def test_overlap_area_monte_carlo():
    rng = np.random.default_rng(7)
    d, r1, r2 = rng.uniform(0, 1.2, 30), rng.uniform(0.05, 0.6, 30), rng.uniform(0.05, 0.6, 30)
    pts = rng.uniform(-1, 1, (200_000, 2)) * 0.6
    for k in range(d.size):
        inside = (np.hypot(*pts.T) < r1[k]) & (np.hypot(pts[:, 0] - d[k], pts[:, 1]) < r2[k])
        mc = inside.mean() * 1.2**2  # the lens lies inside circle 1, inside the sampled box
        assert circle_overlap_area(d[k], r1[k], r2[k]) == pytest.approx(mc, abs=4e-3), k


def test_overlap_fraction_limits():
    assert overlap_fraction(0.1, 0.0, 0.2) == 1.0 and overlap_fraction(0.3, 0.0, 0.2) == 0.0  # a point in / out
    assert overlap_fraction(0.0, 0.0, 0.0) == 1.0
    assert overlap_fraction(0.05, 0.1, 0.4) == 1.0  # small circle inside the large one
    # equal circles: fraction falls from 1 to 0 as they separate
    f = overlap_fraction(np.linspace(0, 0.6, 61), 0.3, 0.3)
    assert f[0] == 1.0 and f[-1] == 0.0 and np.all(np.diff(f) < 0)


def test_extent_radius_containment():
    sigma = 0.2
    assert extent_radius("gauss", sigma) == pytest.approx(R68_PER_SIGMA * sigma)
    assert 1 - np.exp(-0.5 * R68_PER_SIGMA**2) == pytest.approx(0.68)
    assert extent_radius("disk", 0.5) == pytest.approx(np.sqrt(0.68) * 0.5)
    # a generalised Gaussian of eta = 0.5 is a Gaussian of sigma = r_0 / sqrt(2)
    assert extent_radius("gauss-general", np.sqrt(2) * sigma, eta=0.5) == pytest.approx(R68_PER_SIGMA * sigma)
    # eta = 1 (exponential): numerical containment of exp(-r / r0)
    r = np.linspace(0, 40, 400_001)
    cum = np.cumsum(np.exp(-r) * r)
    r68 = r[np.searchsorted(cum, 0.68 * cum[-1])]
    assert extent_radius("gauss-general", 1.0, eta=1.0) == pytest.approx(r68, rel=1e-3)
    got = extent_radius(["point", "shell", "template", "gauss"], [0.3, 0.4, 0.5, np.nan])
    np.testing.assert_allclose(got, [0.0, 0.4, 0.5, np.nan])


def test_weighted_extent_of_a_gaussian_blob():
    geom = WcsGeom.create((10.3, -0.2), (3.0, 3.0), 0.01, frame="galactic")
    lon, lat = geom.get_coord()
    sigma = 0.15
    w = np.exp(-0.5 * (angular_separation(lon, lat, 10.4, -0.25) / sigma) ** 2) * geom.solid_angle()
    lon_c, lat_c, r68 = weighted_extent(lon, lat, w)
    assert angular_separation(lon_c, lat_c, 10.4, -0.25) < 1e-3
    assert r68 == pytest.approx(R68_PER_SIGMA * sigma, abs=0.01)


def test_candidate_pairs_equal_brute_force():
    rng = np.random.default_rng(3)
    lon1, lat1 = rng.uniform(-3, 3, 200) % 360, rng.uniform(-2, 2, 200)  # across lon = 0 / 360
    lon2, lat2 = rng.uniform(-3, 3, 150) % 360, rng.uniform(-2, 2, 150)
    r1, r2 = rng.uniform(0, 0.3, 200), rng.uniform(0, 0.6, 150)
    r2[0] = 4.0  # one large source
    i, j, sep = candidate_pairs(lon1, lat1, r1, lon2, lat2, r2)
    d = angular_separation(lon1[:, None], lat1[:, None], lon2[None, :], lat2[None, :])
    bi, bj = np.nonzero(d < r1[:, None] + r2[None, :])
    assert list(zip(i, j, strict=True)) == list(zip(bi, bj, strict=True))
    np.testing.assert_allclose(sep, d[bi, bj])
    assert len(candidate_pairs([], [], [], lon2, lat2, r2)[0]) == 0


def test_associate_ranks_and_filters():
    # seed at the origin (extent 0.1); A: same size, 0.05 away; B: large, containing the seed; C: far; D: 0.15 away
    src = {"lon": [0.05, 0.3, 3.0, 359.85], "lat": [0.0, 0.0, 0.0, 0.0], "r": [0.1, 0.6, 0.1, 0.1]}
    res = associate([0.0], [0.0], [0.1], src["lon"], src["lat"], src["r"], min_overlap=0.1)
    assert list(res.source) == [1, 0, 3] and list(res.rank) == [1, 2, 3]
    assert res.overlap[0] == 1.0 and res.overlap[1] == pytest.approx(overlap_fraction(0.05, 0.1, 0.1))
    assert np.all(np.diff(res.overlap) <= 0)
    assert list(associate([0.0], [0.0], [0.1], src["lon"], src["lat"], src["r"], min_overlap=0.5).source) == [1, 0]
    assert list(associate([0.0], [0.0], [0.1], src["lon"], src["lat"], src["r"], min_overlap=0.1, max_candidates=1).source) == [1]
    # equal overlaps (all contain the seed): the closest size first, then the nearer one
    res = associate([0.0], [0.0], [0.05], [0.2, 0.1, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 5.0], min_overlap=0.5)
    assert list(res.source) == [1, 0, 2]
    # two point-like objects 0.08 deg apart associate only through the PSF
    assert len(associate([0.0], [0.0], [0.0], [0.08], [0.0], [0.0], min_overlap=0.1)) == 0
    res = associate([0.0], [0.0], [0.0], [0.08], [0.0], [0.0], psf_r68=0.1, min_overlap=0.1)
    assert len(res) == 1 and res.seed_radius[0] == pytest.approx(0.1) and res.source_radius[0] == pytest.approx(0.1)
    assert res.overlap[0] == pytest.approx(overlap_fraction(0.08, 0.1, 0.1))
    with pytest.raises(ValueError, match="min_overlap"):
        associate([0.0], [0.0], [0.1], [0.0], [0.0], [0.1], min_overlap=1.5)
    with pytest.raises(ValueError, match="source_extent"):
        associate([0.0], [0.0], [0.1], [0.0], [0.0], [np.nan], min_overlap=0.1)


# --------------------------------------------------------------------------- stage


def _seeds(rows) -> Table:
    t = empty_seed_table(["gc"], [0.1], nrows=len(rows))
    for k, (glon, glat, size, kind, shell_r, shell_w) in enumerate(rows):
        t["ID"][k], t["GLON"][k], t["GLAT"][k], t["Size"][k], t["Type"][k] = k + 1, glon, glat, size, kind
        t["Shell_Radius"][k], t["Shell_Width"][k], t["Dataset_Best"][k], t["Sqrt_TS"][k] = shell_r, shell_w, "gc", 10.0 - k
    return t


def _hgps_like(path, rows) -> None:
    cols = list(zip(*rows, strict=True))
    Table({"Source_Name": cols[0], "GLON": np.array(cols[1], float), "GLAT": np.array(cols[2], float),
           "Spatial_Model": cols[3], "Size": np.array(cols[4], float), "Flux_Spec_Int_1TeV": np.array(cols[5], float)}).write(path)


SEEDS = [(0.0, 0.0, 0.02, "peak", np.nan, np.nan), (1.0, 0.5, 0.2, "peak", np.nan, np.nan),
         (3.0, 0.0, np.nan, "shell", 0.4, 0.1), (5.0, 1.0, 0.05, "peak", np.nan, np.nan)]
KNOWN = [("P1", 0.01, -0.01, "Point-Like", np.nan, 1e-12), ("G1", 1.05, 0.45, "Gaussian", 0.15, 2e-12),
         ("G2", 1.36, 0.5, "Gaussian", 0.05, 3e-13), ("S1", 3.02, 0.0, "Shell", 0.5, 5e-12)]


def _config(tmp_path, catalogs, **extra):
    return load_config(overrides={"associate": {"catalogs": catalogs, **extra}})


def test_stage_writes_associations(tmp_path, caplog):
    write_seeds(tmp_path / "seeds.fits", _seeds(SEEDS))
    _hgps_like(tmp_path / "known.fits", KNOWN)
    cfg = _config(tmp_path, [{"path": str(tmp_path / "known.fits"), "tag": "KNOWN", "format": "hgps"}], psf_r68="0.05 deg")
    with caplog.at_level(logging.INFO):
        out = associate_stage.run(cfg, seeds=tmp_path / "seeds.fits", output=tmp_path / "assoc.fits")
    assert list(out["Association"]) == ["P1", "G1", "S1", ""]
    assert list(out["N_Associations"]) == [1, 2, 1, 0]
    assert list(out["Association_Catalog"]) == ["KNOWN", "KNOWN", "KNOWN", ""]
    sep = angular_separation(0, 0, 0.01, -0.01)
    assert out["Association_Separation"][0] == pytest.approx(sep)
    assert out["Association_Overlap"][0] == pytest.approx(overlap_fraction(sep, np.hypot(R68_PER_SIGMA * 0.02, 0.05), 0.05))
    assert out["Association_Overlap"][1] == 1.0 and out["Association_Overlap"][3] == 0.0
    assert np.isnan(out["Association_Separation"][3])
    with fits.open(tmp_path / "assoc.fits") as hl:
        assert [h.name for h in hl] == ["PRIMARY", "SEEDS", "ASSOCIATIONS", "KNOWN_SOURCES"]
    seeds = read_seeds(tmp_path / "assoc.fits")  # downstream stages read it like the detected seeds
    assert "Sqrt_TS_Grid" in seeds.colnames and seeds.meta["DATASETS"] == "gc"
    pairs = Table.read(tmp_path / "assoc.fits", hdu="ASSOCIATIONS")
    assert list(pairs["Seed_ID"]) == [1, 2, 2, 3] and list(pairs["Rank"]) == [1, 1, 2, 1]
    # the shell seed's circle is its outer radius, PSF-broadened
    assert pairs["Seed_Radius"][3] == pytest.approx(np.hypot(0.5, 0.05))
    assert pairs["Seed_Radius"][1] == pytest.approx(np.hypot(R68_PER_SIGMA * 0.2, 0.05))
    assert pairs["Source_Radius"][1] == pytest.approx(np.hypot(R68_PER_SIGMA * 0.15, 0.05))
    assert "3 of 4 seeds associated" in caplog.text


def test_stage_empty_inputs_keep_the_schema(tmp_path, caplog):
    write_seeds(tmp_path / "none.fits", _seeds([]))
    write_seeds(tmp_path / "seeds.fits", _seeds(SEEDS))
    _hgps_like(tmp_path / "known.fits", KNOWN)
    with caplog.at_level(logging.WARNING):
        out = associate_stage.run(_config(tmp_path, [{"path": str(tmp_path / "known.fits")}]), seeds=tmp_path / "none.fits",
                                  output=tmp_path / "a.fits")
        assert len(out) == 0 and set(associate_stage.ASSOCIATION_COLUMNS) <= set(out.colnames)
        out = associate_stage.run(_config(tmp_path, []), seeds=tmp_path / "seeds.fits", output=tmp_path / "b.fits")
    assert list(out["N_Associations"]) == [0, 0, 0, 0] and list(out["Association"]) == [""] * 4
    assert "no seeds to associate" in caplog.text and "no known-source catalog" in caplog.text
    for name in ("a.fits", "b.fits"):
        pairs = Table.read(tmp_path / name, hdu="ASSOCIATIONS")
        assert len(pairs) == 0 and list(pairs.colnames) == list(associate_stage.PAIR_COLUMNS)


def test_cli_associate(tmp_path):
    write_seeds(tmp_path / "seeds.fits", _seeds(SEEDS))
    _hgps_like(tmp_path / "known.fits", KNOWN)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"associate:\n  catalogs:\n    - path: {tmp_path / 'known.fits'}\n  min_overlap: 0.5\n")
    assert main(["associate", "--config", str(cfg), "--seeds", str(tmp_path / "seeds.fits"), "--output", str(tmp_path / "out.fits")]) == 0
    out = read_seeds(tmp_path / "out.fits")
    assert list(out["N_Associations"]) == [1, 1, 1, 0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("associate:\n  psf_r68: '0.1 TeV'\n")
    assert main(["associate", "--config", str(bad), "--seeds", str(tmp_path / "seeds.fits"), "--output", str(tmp_path / "x.fits")]) != 0


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_cta1dc_galactic_centre_seed_is_hess_j1745_290(shared_data, tmp_path):
    """The real chain (reduce → … → detect) on 3 CTA 1DC runs, then association with the HGPS."""
    hgps = {"path": str(shared_data / "catalogs/hgps_catalog_v1.fits.gz"), "tag": "HGPS"}
    cfg = cta1dc_gc_config(shared_data, associate={"catalogs": [hgps]})
    _pipeline(cfg, tmp_path)
    out = associate_stage.run(cfg, seeds=tmp_path / "seeds" / "seeds_detected.fits", output=tmp_path / "seeds_associated.fits",
                              datasets=[tmp_path / "gc" / "dataset.fits"])
    d = angular_separation(np.asarray(out["GLON"]), np.asarray(out["GLAT"]), 359.944, -0.046)
    gc = int(np.argmin(d))
    assert d[gc] < 0.03
    assert out["Association"][gc] == "HESS J1745-290" and out["Association_Catalog"][gc] == "HGPS"
    assert out["Association_Overlap"][gc] > 0.9 and out["Association_Separation"][gc] < 0.03
    pairs = Table.read(tmp_path / "seeds_associated.fits", hdu="ASSOCIATIONS")
    assert len(pairs) >= 1 and np.all(pairs["Overlap"] >= 0.1)
