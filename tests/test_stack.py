"""Stacking per-observation datasets into the survey mosaic (gpscat.stages.stack)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _dl3_fake import write_store

from gpscat.config import Config, validate_config
from gpscat.core.geom import Map, WcsGeom
from gpscat.io.dataset import read_dataset, write_dataset
from gpscat.io.dl3 import DataStore
from gpscat.stages import reduce as SR
from gpscat.stages import stack as SS


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    index = write_store(tmp / "store", [(1, 266.4, -28.9), (2, 267.4, -29.4), (3, 266.0, -28.0)], n_events=3000, seed=5)
    raw = {
        "data": {"store": str(index)},
        "survey": {"center": ["0 deg", "0 deg"], "width": ["6 deg", "4 deg"]},
        "datasets": [{"name": "all", "binsz": "0.05 deg", "energy": {"min": "0.1 TeV", "max": "10 TeV", "nbins": 3},
                      "energy_true": {"min": "0.05 TeV", "max": "20 TeV", "nbins": 6}, "offset_max": "2 deg",
                      "psf": {"binsz": "0.5 deg", "nbins": 20, "max_radius": "0.5 deg"}}],
    }
    cfg = Config(validate_config(raw))
    DataStore.from_dir(index).location(3, "events").path.unlink()  # obs 3 is skipped
    paths = []
    for i in (1, 2, 3):
        paths.append(tmp / f"{i}.fits")
        SR.run(cfg, dataset="all", obs_id=i, output=paths[-1])
    return cfg, paths, tmp


def test_stack_sums_inside_safe_masks(reduced):
    cfg, paths, tmp = reduced
    out, prov = tmp / "stacked.fits", tmp / "provenance.json"
    stacked = SS.run(cfg, dataset="all", inputs=paths, output=out, provenance=prov)
    obs = [read_dataset(p) for p in paths[:2]]
    survey = cfg.survey.geom(0.05)
    counts = np.zeros((3, *survey.shape))
    exposure = np.zeros((6, *survey.shape))
    for ds in obs:
        m = ds.mask_safe.data
        Map(ds.geom, np.where(m, ds.counts.data, 0), ds.counts.axes).paste_into(Map(survey, counts, ds.counts.axes))
        Map(ds.geom, np.where(m.any(0), ds.exposure.data, 0), ds.exposure.axes).paste_into(Map(survey, exposure, ds.exposure.axes))
    assert np.array_equal(stacked.counts.data, counts)
    assert np.allclose(stacked.exposure.data, exposure)
    assert stacked.counts.data.sum() == sum(ds.counts.data[ds.mask_safe.data].sum() for ds in obs)
    assert stacked.meta["obs_ids"] == [1, 2] and stacked.meta["livetime"] == pytest.approx(2 * 0.95 * 1800)
    p = json.loads(prov.read_text())
    assert [u["obs_id"] for u in p["used"]] == [1, 2]
    assert p["skipped"][0]["obs_id"] == 3 and "not found" in p["skipped"][0]["reason"]
    back = read_dataset(out)
    assert back.mask_safe.data.sum() == stacked.mask_safe.data.sum() and back.gti.shape == (2, 2)


def test_psf_is_exposure_weighted_mean(reduced):
    cfg, paths, _ = reduced
    survey, coarse = cfg.survey.geom(0.05), cfg.survey.geom(0.5)
    stacked, _ = SS.stack_datasets(paths[:2], geom=survey, energy_axis=cfg.datasets[0].energy_axis, energy_true_axis=cfg.datasets[0].energy_axis_true, irf_geom=coarse)
    num = np.zeros(stacked.psf.data.shape)
    den = np.zeros(stacked.psf_exposure.data.shape)
    for p in paths[:2]:
        ds = read_dataset(p)
        w = ds.psf_exposure.data * SS.coverage_fraction(ds.mask_safe.data.any(0), ds.geom, ds.psf.geom)
        Map(ds.psf.geom, ds.psf.data * w, ds.psf.axes).paste_into(Map(coarse, num, ds.psf.axes))
        Map(ds.psf.geom, w, ds.psf_exposure.axes).paste_into(Map(coarse, den, ds.psf_exposure.axes))
    good = np.broadcast_to(den > 0, num.shape)
    assert np.allclose(stacked.psf.data[good], (num / np.where(den > 0, den, 1))[good])
    rad = stacked.psf.axis("rad")
    jac = 2 * np.pi * np.radians(rad.center) * np.radians(rad.width)
    norm = (stacked.psf.data * jac[None, :, None, None]).sum(axis=1)
    assert np.allclose(norm[den[:, 0] > 0], 1.0)
    covered = den[2:4, 0] > 0  # true bins 0.37-2.7 TeV lie well inside the reco range
    assert covered.any() and np.allclose(stacked.edisp.data[2:4].sum(axis=1)[covered], 1.0, atol=1e-3)


def test_norms_and_coverage_fraction(reduced):
    cfg, paths, _ = reduced
    d = cfg.datasets[0]
    kw = dict(geom=cfg.survey.geom(0.05), energy_axis=d.energy_axis, energy_true_axis=d.energy_axis_true)
    one, _ = SS.stack_datasets(paths[:2], **kw)
    scaled, _ = SS.stack_datasets(iter(paths[:2]), norms={1: 2.0, 2: 2.0}, **kw)
    assert np.allclose(scaled.background.data, 2 * one.background.data)
    fine = WcsGeom.create((0, 0), 2.0, 0.1)
    coarse = WcsGeom.create((0, 0), 2.0, 0.5)
    mask = np.zeros(fine.shape, bool)
    mask[:, :12] = True  # coarse columns 0, 1 and 2 of 5 fine columns of column 2
    f = SS.coverage_fraction(mask, fine, coarse)
    assert np.allclose(f[:, :2], 1) and np.allclose(f[:, 2], 0.4, rtol=1e-3) and np.allclose(f[:, 3:], 0)


def test_misaligned_input_is_rejected(reduced, tmp_path):
    cfg, paths, _ = reduced
    ds = read_dataset(paths[0])
    shifted = WcsGeom(ds.geom.frame, ds.geom.crval, (ds.geom.crpix[0] + 0.5, ds.geom.crpix[1]), ds.geom.binsz, ds.geom.npix)
    moved = ds.cutout(slice(None), slice(None))
    for name in ("counts", "exposure", "background", "mask_safe"):
        m = getattr(moved, name)
        setattr(moved, name, Map(shifted, m.data, m.axes, m.unit))
    write_dataset(tmp_path / "bad.fits", moved)
    d = cfg.datasets[0]
    with pytest.raises(ValueError, match="bad.fits: dataset grid is not pixel-aligned"):
        SS.stack_datasets([tmp_path / "bad.fits"], geom=cfg.survey.geom(0.05), energy_axis=d.energy_axis, energy_true_axis=d.energy_axis_true)
