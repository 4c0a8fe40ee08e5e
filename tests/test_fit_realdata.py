"""Acceptance on real data, on maps reduced by gpscat (issue 3).

* CTA 1DC Galactic centre, the case of gammapy's "2D map fitting" tutorial: point source +
  PowerLaw2 (index 2), background norm free, from the tutorial's start (0.02°, 0.01°).
  Our likelihood is smooth in the position: fits started anywhere near the source end at
  one minimum.  gammapy 2.1 (on its own maps) ends at (−0.0476°, −0.0536°) from that start,
  a local minimum 4.8 above its global one at (−0.0548 ± 0.0020°, −0.0536 ± 0.0020°),
  4.18e-11 cm⁻² s⁻¹.  Our minimum lies ~1.5σ from gammapy's global one: gammapy shares a
  point source's flux among the 4 nearest pixels (bilinear weights) before the PSF, which
  widens its image by 1/6 pixel² in variance, and the 1DC "Galactic Centre" events are
  wider than the IRF PSF (a Gaussian of 0.043° fits their MC-tagged events 515 better than a
  point), so the two point-source models settle differently; with ``point_method="cic"``
  (gammapy's scheme) our engine reproduces gammapy's global minimum (crosscheck test).
* H.E.S.S. DL3 DR1 Crab runs 23523, 23526, 23559, 23592, a 3D fit (point + PowerLaw, FoV
  background norm, 1–20 TeV): index and amplitude within 0.3σ of gammapy 2.1's fit of the
  same maps (reference numbers below, re-measured live by the crosscheck test).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpscat.config import Config, validate_config
from gpscat.core.fit import Fit
from gpscat.io.dataset import read_dataset
from gpscat.models import spatial as sm
from gpscat.models import spectral as sp
from gpscat.models.sky import FoVBackgroundModel, Models, SkyModel
from gpscat.stages import reduce as SR
from gpscat.stages import stack as SS

pytestmark = pytest.mark.realdata

GC_RUNS = [110380, 111140, 111159]
CRAB_RUNS = [23523, 23526, 23559, 23592]
#: gammapy 2.1 Fit of the Crab on these maps (PointSpatialModel + PowerLaw, FoV norm free)
GAMMAPY_CRAB = {"index": (2.6523, 0.0830), "amplitude": (4.779e-11, 0.358e-11)}
GAMMAPY_GC = {"lon_0": (-0.0548, 0.0020), "lat_0": (-0.0536, 0.0020), "amplitude": (4.18e-11, 0.22e-11)}


def _reduce(shared_data, folder, store, runs, dataset) -> object:
    raw = {"data": {"store": str(shared_data / store), "selection": {"obs_ids": runs}}, **dataset}
    cfg = Config(validate_config(raw))
    name = cfg.datasets[0].name
    paths = [folder / f"{r}.fits" for r in runs]
    for r, path in zip(runs, paths, strict=True):
        SR.run(cfg, dataset=name, obs_id=r, output=path)
    SS.run(cfg, dataset=name, inputs=paths, output=folder / "stacked.fits")
    return read_dataset(folder / "stacked.fits")


@pytest.fixture(scope="module")
def gc_dataset(shared_data, tmp_path_factory):
    dataset = {
        "survey": {"center": ["0 deg", "0 deg"], "width": ["8 deg", "6 deg"]},
        "datasets": [
            {
                "name": "gc",
                "binsz": "0.02 deg",
                "energy": {"min": "0.1 TeV", "max": "10 TeV", "nbins": 1},
                "energy_true": {"min": "0.5 TeV", "max": "20 TeV", "nbins": 16},
                "offset_max": "2.5 deg",
                "psf": {"binsz": "0.2 deg"},
            }
        ],
    }
    return _reduce(shared_data, tmp_path_factory.mktemp("gc"), "cta-1dc/index/gps", GC_RUNS, dataset)


@pytest.fixture(scope="module")
def crab_dataset(shared_data, tmp_path_factory):
    dataset = {
        "survey": {"frame": "icrs", "center": ["83.633 deg", "22.014 deg"], "width": ["3 deg", "3 deg"]},
        "datasets": [
            {
                "name": "crab",
                "binsz": "0.02 deg",
                "energy": {"min": "1 TeV", "max": "20 TeV", "nbins": 8},
                "energy_true": {"min": "0.5 TeV", "max": "50 TeV", "nbins": 24},
                "offset_max": "2.5 deg",
                "safe_mask": {"methods": ["offset-max", "aeff-default"]},
                "psf": {"binsz": "0.2 deg"},
                "edisp": True,
            }
        ],
    }
    return _reduce(shared_data, tmp_path_factory.mktemp("crab"), "hess-dl3-dr1", CRAB_RUNS, dataset)


def gc_models(name: str, lon: float = 0.02, lat: float = 0.01) -> Models:
    spec = sp.PowerLaw2SpectralModel(amplitude=1e-12, index=2.0, emin=0.1, emax=10.0)
    spec.index.frozen = True
    src = SkyModel(spec, sm.PointSpatialModel(lon_0=lon, lat_0=lat, frame="galactic"), name="GC-1")
    return Models([src, FoVBackgroundModel(name)])


def crab_models(name: str) -> Models:
    src = SkyModel(
        sp.PowerLawSpectralModel(index=2.5, amplitude=3e-11),
        sm.PointSpatialModel(lon_0=83.63, lat_0=22.01, frame="icrs"),
        name="crab",
    )
    return Models([src, FoVBackgroundModel(name)])


def test_gc_point_source_has_one_minimum(gc_dataset):
    models = gc_models(gc_dataset.name)
    result = Fit(gc_dataset, models).run()
    assert result.success and result.covariance_success
    sp_ = models["GC-1"].spatial_model
    best = (sp_.lon_0.value, sp_.lat_0.value, result.total_stat)
    err = (sp_.lon_0.error, sp_.lat_0.error)
    # other starts — gammapy's global and local minima, and further out — end at the same point
    for lon, lat in [(-0.0548, -0.0536), (-0.0476, -0.0536), (-0.09, -0.02)]:
        other = gc_models(gc_dataset.name, lon, lat)
        r = Fit(gc_dataset, other).run(covariance=False)
        o = other["GC-1"].spatial_model
        assert abs(o.lon_0.value - best[0]) < 0.1 * err[0] and abs(o.lat_0.value - best[1]) < 0.1 * err[1]
        assert r.total_stat == pytest.approx(best[2], abs=0.05)
    # a fine scan through the minimum (1/20 pixel steps): convex, no local minima
    f = Fit(gc_dataset, models)
    prof = f.stat_profile(sp_.lon_0, best[0] + np.linspace(-3, 3, 31) * err[0])["stat"]
    assert np.all(np.diff(prof, 2) > 0)
    # versus gammapy's global minimum: the model difference explained in the module docstring
    amp = models["GC-1"].spectral_model.amplitude
    for name, p in (("lon_0", sp_.lon_0), ("lat_0", sp_.lat_0)):
        ref, ref_err = GAMMAPY_GC[name]
        assert abs(p.value - ref) < 2.5 * ref_err, (name, p.value)
        assert 0.9 < p.error / ref_err < 1.4
    assert amp.value == pytest.approx(GAMMAPY_GC["amplitude"][0], rel=0.05)
    assert amp.error == pytest.approx(GAMMAPY_GC["amplitude"][1], rel=0.1)


def test_hess_crab_3d(crab_dataset):
    models = crab_models(crab_dataset.name)
    result = Fit(crab_dataset, models).run()
    assert result.success and result.covariance_success
    spec = models["crab"].spectral_model
    for name, p in (("index", spec.index), ("amplitude", spec.amplitude)):
        ref, ref_err = GAMMAPY_CRAB[name]
        assert abs(p.value - ref) < 0.3 * ref_err, (name, p.value, ref)
        assert p.error == pytest.approx(ref_err, rel=0.1)
    assert 2.55 < spec.index.value < 2.8  # gammapy's 1D reflected-region fit: 2.68 ± 0.10
    lon, lat = models["crab"].spatial_model.position
    assert abs(lon - 83.6287) < 0.02 and abs(lat - 22.0147) < 0.02  # the Crab pulsar


def _gammapy_fit(dataset, tmp_path, model):
    """gammapy 2.1 reads our dataset file and fits ``model`` + a FoV background norm to it."""
    datasets = pytest.importorskip("gammapy.datasets")
    gm = pytest.importorskip("gammapy.modeling.models")
    from gammapy.modeling import Fit as GFit

    from gpscat.io.dataset import write_dataset

    write_dataset(tmp_path / "ds.fits", dataset)
    gds = datasets.MapDataset.read(tmp_path / "ds.fits", name=dataset.name)
    gds.models = gm.Models([model, gm.FoVBackgroundModel(dataset_name=gds.name)])  # tilt frozen
    assert GFit().run([gds]).success


@pytest.mark.crosscheck
def test_crab_matches_gammapy_on_the_same_maps(crab_dataset, tmp_path):
    gm = pytest.importorskip("gammapy.modeling.models")
    g = gm.SkyModel(
        gm.PowerLawSpectralModel(index=2.5, amplitude="3e-11 cm-2 s-1 TeV-1"),
        gm.PointSpatialModel(lon_0="83.63 deg", lat_0="22.01 deg", frame="icrs"),
        name="crab",
    )
    _gammapy_fit(crab_dataset, tmp_path, g)
    models = crab_models(crab_dataset.name)
    Fit(crab_dataset, models).run()
    for name in ("index", "amplitude"):
        ours, theirs = getattr(models["crab"].spectral_model, name), g.spectral_model.parameters[name]
        assert abs(ours.value - theirs.value) < 0.3 * theirs.error, name
        assert ours.error == pytest.approx(theirs.error, rel=0.1)
        assert theirs.value == pytest.approx(GAMMAPY_CRAB[name][0], rel=0.01)


@pytest.mark.crosscheck
def test_gc_cic_point_response_reproduces_gammapy(gc_dataset, tmp_path):
    """Same maps, gammapy's bilinear point-source scheme: same global minimum as gammapy."""
    gm = pytest.importorskip("gammapy.modeling.models")
    spec = gm.PowerLaw2SpectralModel(amplitude="1e-12 cm-2 s-1", index=2.0, emin="0.1 TeV", emax="10 TeV")
    spec.index.frozen = True
    g = gm.SkyModel(spec, gm.PointSpatialModel(lon_0="-0.0548 deg", lat_0="-0.0536 deg", frame="galactic"), name="GC-1")
    _gammapy_fit(gc_dataset, tmp_path, g)
    models = gc_models(gc_dataset.name, -0.0548, -0.0536)
    Fit(gc_dataset, models, point_method="cic").run()
    ours = models["GC-1"]
    for name in ("lon_0", "lat_0"):
        theirs = g.spatial_model.parameters[name]
        assert abs(getattr(ours.spatial_model, name).value - theirs.value) < 0.3 * theirs.error, name
    amp = g.spectral_model.amplitude
    assert ours.spectral_model.amplitude.value == pytest.approx(amp.value, rel=0.03)
    assert ours.spectral_model.amplitude.error == pytest.approx(amp.error, rel=0.1)
