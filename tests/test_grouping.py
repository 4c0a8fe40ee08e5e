"""Grouping of seeds (core.grouping) and the group stage's files."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from astropy.table import Table
from catalog_sky import seed_table

from gpscat.config import load_config
from gpscat.core.grouping import (
    group_geometry,
    link_groups,
    link_radius,
    neighbour_groups,
    split_large_groups,
)
from gpscat.io.groups import group_neighbours, read_groups
from gpscat.io.models_yaml import read_models
from gpscat.io.seeds import empty_seed_table, write_seeds
from gpscat.stages import group as group_stage


def test_link_radius_broadens_and_checks():
    r = link_radius([0.0, 0.3], 0.1, margin=0.05)
    np.testing.assert_allclose(r, [0.15, np.hypot(0.3, 0.1) + 0.05])
    with pytest.raises(ValueError, match="extent"):
        link_radius([np.nan], 0.1, margin=0.0)
    with pytest.raises(ValueError, match="margin"):
        link_radius([0.1], 0.1, margin=-1.0)


def test_connected_components_and_ids_by_brightness():
    # a chain a-b-c (each touching the next), an isolated d, and e across l = 0 from f
    lon = np.array([10.0, 10.3, 10.6, 12.0, 359.9, 0.15])
    lat = np.zeros(6)
    r = np.full(6, 0.16)
    g = link_groups(lon, lat, r, brightness=[1, 2, 3, 10, 5, 4])
    assert g[0] == g[1] == g[2]
    assert g[4] == g[5]
    assert len(set(g)) == 3
    assert g[3] == 1 and g[4] == 2 and g[0] == 3  # the brightest member decides the id
    assert link_groups([], [], []).size == 0


def test_large_groups_split_at_the_weakest_link():
    # two tight pairs joined by one barely-touching link
    lon = np.array([0.0, 0.1, 0.29, 0.39])
    r = np.full(4, 0.1)
    g = link_groups(lon, np.zeros(4), r)
    assert len(set(g)) == 1
    split = split_large_groups(lon, np.zeros(4), r, g, max_members=2)
    assert split[0] == split[1] and split[2] == split[3] and split[0] != split[2]
    # nothing to split: same partition
    np.testing.assert_array_equal(split_large_groups(lon, np.zeros(4), r, g, max_members=4), g)
    with pytest.raises(ValueError, match="max_members"):
        split_large_groups(lon, np.zeros(4), r, g, max_members=0)


def test_geometry_encloses_members_and_finds_neighbours():
    lon, lat, r = np.array([0.0, 0.2, 1.0]), np.array([0.0, 0.0, 0.0]), np.array([0.12, 0.1, 0.1])
    g = link_groups(lon, lat, r)
    geo = group_geometry(lon, lat, r, g)
    assert geo.n_members.tolist() == [2, 1]
    assert geo.lon[0] == pytest.approx(0.1) and geo.radius[0] == pytest.approx(0.22)
    nb = neighbour_groups(geo, margin=0.7)
    assert nb[0].tolist() == [2] and nb[1].tolist() == [1]
    assert [x.tolist() for x in neighbour_groups(geo, margin=0.1)] == [[], []]


def _config():
    return load_config(overrides={"datasets": [{"name": "a", "energy": {"min": "1 TeV", "max": "10 TeV", "nbins": 2}}]})


def test_stage_files(tmp_path):
    seeds = seed_table([
        {"GLON": 0.0, "GLAT": 0.0, "Size": 0.02, "Sqrt_TS": 20, "Flux": 1e-12},
        {"GLON": 359.8, "GLAT": 0.0, "Size": 0.1, "Sqrt_TS": 10, "Flux": 2e-12},
        {"GLON": 5.0, "GLAT": 0.5, "Type": "shell", "Size": 0.4, "Shell_Radius": 0.35, "Shell_Width": 0.1, "Sqrt_TS": 8,
         "Flux": 3e-12, "Nest_Flag": 2},
        {"GLON": 5.1, "GLAT": 0.6, "Size": 0.05, "Sqrt_TS": 6, "Flux": 1e-13, "Nest_Flag": 1, "Parent_ID": 3},
    ])
    write_seeds(tmp_path / "seeds.fits", seeds)
    grp = group_stage.run(_config(), seeds=tmp_path / "seeds.fits", output_dir=tmp_path / "groups")
    assert len(grp) == 2
    members, groups, not_fitted = read_groups(tmp_path / "groups" / "groups.fits")
    assert members["Seed_ID"].tolist() == [1, 2, 3] and members["Group_ID"].tolist() == [1, 1, 2]
    assert not_fitted["Seed_ID"].tolist() == [4]  # inside the shell seed: left to the residual search
    assert group_neighbours(tmp_path / "groups" / "groups.fits") == {1: [], 2: []}
    g1 = read_models(tmp_path / "groups" / "group_1.yaml")
    assert g1.names == ["S1", "S2"]
    lon = [m.spatial_model.lon_0.value for m in g1]
    assert lon[0] == pytest.approx(0.0) and lon[1] == pytest.approx(-0.2)  # continuous across l = 0
    g2 = read_models(tmp_path / "groups" / "group_2.yaml")
    assert g2["S3"].spatial_model.tag[0] == "GeneralizedGaussianSpatialModel"  # unclassified: generic start
    assert read_models(tmp_path / "groups" / "start_models.yaml").names == ["S1", "S2", "S3"]


def test_stage_uses_the_classes_and_selection(tmp_path):
    seeds = seed_table([
        {"GLON": 0.0, "GLAT": 0.0, "Size": 0.02, "Sqrt_TS": 20, "Flux": 1e-12},
        {"GLON": 1.0, "GLAT": 0.0, "Size": 0.2, "Sqrt_TS": 10, "Flux": 2e-12},
        {"GLON": 2.0, "GLAT": 0.0, "Type": "shell", "Size": 0.4, "Shell_Radius": 0.35, "Shell_Width": 0.1, "Sqrt_TS": 8, "Flux": 3e-12},
        {"GLON": 3.0, "GLAT": 0.0, "Size": 0.05, "Sqrt_TS": 5, "Flux": 1e-13},
    ])
    seeds["Class"] = ["point", "extended", "shell", "spurious"]
    seeds["Start_Class"] = ["point", "extended", "shell", "point"]
    seeds["Selected"] = [True, True, True, True]
    write_seeds(tmp_path / "seeds.fits", seeds)
    group_stage.run(_config(), seeds=tmp_path / "seeds.fits", output_dir=tmp_path / "groups")
    models = read_models(tmp_path / "groups" / "start_models.yaml")
    assert models.names == ["S1", "S2", "S3"]  # the spurious one is not fitted
    kinds = [m.spatial_model.tag[0] for m in models]
    assert kinds == ["PointSpatialModel", "GaussianSpatialModel", "ShellSpatialModel"]
    assert models["S2"].spatial_model.sigma.value == pytest.approx(0.2, rel=1e-4)
    assert models["S3"].spatial_model.radius.value == pytest.approx(0.35)
    assert all(m.spectral_model.tag[0] == "PowerLawSpectralModel" for m in models)


def test_zero_seeds_zero_groups(tmp_path):
    write_seeds(tmp_path / "seeds.fits", empty_seed_table(["a"], [0.1]))
    grp = group_stage.run(_config(), seeds=tmp_path / "seeds.fits", output_dir=tmp_path / "groups")
    assert len(grp) == 0
    assert group_neighbours(tmp_path / "groups" / "groups.fits") == {}
    assert yaml.safe_load((tmp_path / "groups" / "start_models.yaml").read_text())["components"] == []


def test_nested_in_shell_drops_only_fragments_of_fitted_shells():
    t = Table({"ID": [1, 2, 3, 4, 5], "Type": ["shell", "peak", "peak", "shell", "peak"],
               "Sqrt_TS": [10.0, 6.0, 20.0, 5.0, 4.5], "Nest_Flag": [2, 1, 1, 2, 1], "Parent_ID": [0, 1, 1, 0, 4]})
    # 2: a fragment of shell 1; 3: brighter than its shell, a source of its own; 5: inside
    # shell 4, which is not fitted
    kept = np.array([True, True, True, False, True])
    assert list(group_stage.nested_in_shell(t, kept)) == [False, True, False, False, False]
    assert list(group_stage.nested_in_shell(t)) == [False, True, False, False, True]


def test_residual_seed_inside_a_shell_is_not_a_fragment():
    """A seed of the residual search (found with the shell modelled) is kept even inside the
    shell's extent and fainter than it."""
    t = Table({"ID": [1, 2, 3], "Type": ["shell", "peak", "peak"], "Sqrt_TS": [10.0, 6.0, 6.0],
               "Nest_Flag": [2, 1, 1], "Parent_ID": [0, 1, 1], "Search": ["maps", "maps", "residual"]})
    assert list(group_stage.nested_in_shell(t)) == [False, True, False]
