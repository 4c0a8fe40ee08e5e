"""Observation footprints: the stacked prediction made exact at per-observation mask boundaries."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from fit_sky import make_dataset

from gpscat.core.footprints import attach_footprints, footprint_of
from gpscat.core.geom import Map, MapAxis
from gpscat.core.npred import DatasetEvaluator
from gpscat.models.sky import SkyModel
from gpscat.models.spatial import GaussianSpatialModel, PointSpatialModel
from gpscat.models.spectral import PowerLawSpectralModel

#: (pointing lon, lat, mask radius) deg: three masks whose edges cross the middle of the map
OBS = ((-0.45, 0.0, 0.5), (0.5, 0.1, 0.52), (0.0, 0.85, 0.8))


@pytest.fixture(scope="module")
def survey():
    """Per-observation datasets (unmasked exposure, circular safe masks) on one grid, and their
    stack as the stack stage makes it (exposure summed inside each safe-mask image)."""
    base = make_dataset(npix=70, binsz=0.02, nreco=2)
    lon, lat = base.geom.get_coord()
    lon = (lon + 180.0) % 360.0 - 180.0
    observations = []
    for k, (l0, b0, radius) in enumerate(OBS):
        off = np.hypot(lon - l0, lat - b0)
        expo = base.exposure.data * np.exp(-0.5 * off**2)[None] * (1.0 + 0.3 * k)
        mask = np.broadcast_to(off < radius, base.mask_safe.data.shape).copy()
        observations.append(replace(base, name=f"obs{k}", exposure=base.exposure.copy(data=expo),
                                    mask_safe=Map(base.geom, mask, (base.energy_axis,)), meta={"obs_id": k + 1}))
    stacked_expo = sum(o.exposure.data * o.mask_safe.data.any(axis=0)[None] for o in observations)
    union = np.logical_or.reduce([o.mask_safe.data for o in observations])
    stacked = replace(base, name="stacked", exposure=base.exposure.copy(data=stacked_expo),
                      mask_safe=Map(base.geom, union, (base.energy_axis,)))
    return observations, stacked


def _exact(observations, model):
    """Σ_i C_i(r) · npred of observation i with its unmasked exposure: what the counts hold."""
    return sum(DatasetEvaluator(o, [model]).npred_source(model) * o.mask_safe.data for o in observations)


MODELS = {
    "point": lambda: PointSpatialModel(lon_0=0.03, lat_0=0.04, frame="galactic"),
    "gauss": lambda: GaussianSpatialModel(lon_0=-0.04, lat_0=0.02, sigma=0.1, frame="galactic"),
}


@pytest.mark.parametrize("kind", ["point", "gauss", "point-cic"])
def test_footprints_make_the_stacked_prediction_exact(survey, kind):
    observations, stacked = survey
    model = SkyModel(PowerLawSpectralModel(amplitude=1e-11), MODELS[kind.split("-")[0]](), name="src")
    method = "cic" if kind.endswith("cic") else "exact"
    exact = _exact(observations, model) if method == "exact" else sum(
        DatasetEvaluator(o, [model], point_method="cic").npred_source(model) * o.mask_safe.data for o in observations)
    plain = DatasetEvaluator(stacked, [model], point_method=method).npred_source(model) * stacked.mask_safe.data
    with_fp = attach_footprints(stacked, observations)
    assert [fp.obs_id for fp in with_fp.footprints] == [1, 2, 3]
    corrected = DatasetEvaluator(with_fp, [model], point_method=method).npred_source(model) * stacked.mask_safe.data
    scale = exact.max()
    # the plain stack is wrong near the mask edges by a good fraction of the peak ...
    assert np.abs(plain - exact).max() > 0.05 * scale
    # ... the footprints make it exact, pixel by pixel
    np.testing.assert_allclose(corrected, exact, rtol=0, atol=1e-9 * scale)
    assert corrected.sum() == pytest.approx(exact.sum(), rel=1e-9)


def test_point_source_centroid_bias_removed(survey):
    """The plain stack's point-source image is lopsided towards the observation whose mask edge
    it straddles; with footprints the predicted image is the counts' (exact) one."""
    observations, stacked = survey
    # 0.01° outside the first observation's mask (edge at l = 0.05°), as in the simulated strip
    model = SkyModel(PowerLawSpectralModel(amplitude=1e-11), PointSpatialModel(lon_0=0.06, lat_0=0.0, frame="galactic"), name="src")
    lon, _ = stacked.geom.get_coord()
    lon = (lon + 180.0) % 360.0 - 180.0

    def centroid(npred):
        img = npred.sum(axis=0)
        return float((img * lon).sum() / img.sum())

    exact = centroid(_exact(observations, model))
    plain = centroid(DatasetEvaluator(stacked, [model]).npred_source(model) * stacked.mask_safe.data)
    fixed = centroid(DatasetEvaluator(attach_footprints(stacked, observations), [model]).npred_source(model) * stacked.mask_safe.data)
    assert abs(plain - exact) > 1e-3  # deg: the bias that made fitted positions move
    assert fixed == pytest.approx(exact, abs=1e-9)


def test_footprint_selection_and_errors(survey):
    observations, stacked = survey
    everywhere = replace(observations[0], mask_safe=observations[0].mask_safe.copy(data=np.ones_like(observations[0].mask_safe.data)))
    nowhere = replace(observations[0], mask_safe=observations[0].mask_safe.copy(data=np.zeros_like(observations[0].mask_safe.data)))
    assert footprint_of(everywhere, stacked) is None  # no boundary on the map: nothing to correct
    assert footprint_of(nowhere, stacked) is None
    skipped = replace(observations[1], meta={"obs_id": 9, "skipped": True})
    assert [fp.obs_id for fp in attach_footprints(stacked, [everywhere, skipped, observations[2]]).footprints] == [3]
    # a cutout (pixel-aligned, smaller) is cropped onto the dataset grid
    cut = observations[1].cutout(slice(10, 60), slice(30, 70))
    fp = footprint_of(cut, stacked)
    assert fp.geom.npix == (40, 50) and fp.exposure.shape == (stacked.energy_axis_true.nbin, 50, 40)
    shifted = make_dataset(npix=70, binsz=0.02, nreco=2, center=(0.013, 0.0))
    with pytest.raises(ValueError, match="observation 1 .*not pixel-aligned"):
        footprint_of(replace(observations[0], exposure=shifted.exposure, counts=shifted.counts, background=shifted.background,
                             mask_safe=shifted.mask_safe), stacked)
    other = MapAxis.from_energy_bounds(0.1, 30.0, nbin=5, name="energy_true")
    bad = replace(observations[0], exposure=Map(stacked.geom, np.ones((5, *stacked.geom.shape)), (other,), "m2 s"))
    with pytest.raises(ValueError, match="true-energy axis"):
        footprint_of(bad, stacked)
