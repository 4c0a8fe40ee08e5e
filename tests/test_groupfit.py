"""The group fit core: ROI cutouts, residual search, model selection, TS, flux points."""

from __future__ import annotations

import numpy as np
import pytest
from fit_sky import make_dataset, simulate

from gpscat.core.fit import Fit
from gpscat.core.flux_points import flux_points
from gpscat.core.group_fitter import GroupFitOptions, GroupFitter, all_ids
from gpscat.core.groupfit import conditional_covariance
from gpscat.core.npred import DatasetEvaluator
from gpscat.core.residuals import residual_maps, residual_peak
from gpscat.core.source_models import (
    ShapeLimits,
    circle_fraction,
    convert_spatial,
    convert_spectral,
    make_spatial,
    make_spectral,
    model_r68,
    wrap_lon,
)
from gpscat.models import spatial as sm
from gpscat.models import spectral as sp
from gpscat.models.sky import FoVBackgroundModel, Models, SkyModel


def test_clipped_cutout_is_not_rebuilt_every_evaluation():
    """A source whose cutout the map edge clips keeps its cutout while it moves a little."""
    ds = make_dataset(npix=30, nreco=2, name="sim")
    src = SkyModel(sp.PowerLawSpectralModel(), sm.GaussianSpatialModel(lon_0=0.25, lat_0=0.0, sigma=0.2, frame="galactic"), name="edge")
    ev = DatasetEvaluator(ds, [src])
    ev.npred()
    inner = ev._evaluators[id(src)]
    geom = inner._geom
    for k in range(5):
        src.spatial_model.sigma.value = 0.2 + 0.001 * k
        src.spatial_model.lon_0.value = 0.25 + 0.002 * k
        ev.npred()
        assert inner._geom is geom


def _point(name="p", lon=0.0, lat=0.0, amplitude=2e-12, index=2.2):
    return SkyModel(sp.PowerLawSpectralModel(index=index, amplitude=amplitude),
                    sm.PointSpatialModel(lon_0=lon, lat_0=lat, frame="galactic"), name=name)


@pytest.mark.parametrize("kind", ["gauss", "disk", "gauss-general", "shell"])
def test_shape_conversions_keep_position_and_r68(kind):
    limits = ShapeLimits()
    g = make_spatial("gauss", 0.3, -0.2, 0.2, limits=limits)
    new = convert_spatial(g, kind, limits=limits)
    assert new.tag[1] == kind and new.lon_0.value == 0.3 and new.lat_0.value == -0.2
    assert model_r68(new) == pytest.approx(0.2, rel=1e-6)
    assert (new.lon_0.min, new.lon_0.max) == (g.lon_0.min, g.lon_0.max)  # bounds stay those of the seed
    point = convert_spatial(new, "point", limits=limits)
    assert model_r68(point) == 0 and model_r68(convert_spatial(point, "gauss", limits=limits)) > 0
    with pytest.raises(ValueError, match="spatial kind"):
        make_spatial("ring", 0, 0, 0.1, limits=limits)


@pytest.mark.parametrize("kind", ["pl", "lp", "ecpl"])
def test_spectral_conversions_keep_the_flux_at_1_tev(kind):
    pl = make_spectral("pl", amplitude=3e-12, index=2.4)
    new = convert_spectral(pl, kind)
    assert float(new(1.0)) == pytest.approx(3e-12, rel=1e-6)
    e = np.array([0.95, 1.05])
    slope = -np.log(new(e[1]) / new(e[0])) / np.log(e[1] / e[0])
    assert slope == pytest.approx(2.4, abs=0.1)
    assert new.amplitude.min == 0.0
    assert list(wrap_lon([359.9, 0.1, 180.0], 0.0)) == pytest.approx([-0.1, 0.1, 180.0])


def test_flux_points_of_a_known_point_source():
    rng = np.random.default_rng(11)
    ds = make_dataset(npix=40, ereco=(0.3, 30.0), nreco=6, name="sim", edisp=False)
    truth = Models([_point(amplitude=3e-12), FoVBackgroundModel("sim")])
    ds = simulate(ds, truth, rng)
    models = Models([_point(amplitude=3e-12), FoVBackgroundModel("sim")])
    Fit(ds, models).run()
    fp = flux_points([ds], models, "p", [0.3, 1.0, 3.0, 10.0, 30.0])
    det = ~fp["is_ul"]
    assert det.sum() >= 3
    assert np.all(np.abs(fp["norm"][det] - 1) < 4 * fp["norm_err"][det])
    assert np.all(fp["norm_ul"] > fp["norm"])
    # the curvature error equals Hesse's for a fit of the amplitude alone in one bin
    one = Models([_point(amplitude=models["p"].spectral_model.amplitude.value), FoVBackgroundModel("sim")])
    for p in one.parameters:
        p.frozen = p.name != "amplitude" or p is one["sim-bkg"].spectral_model.norm
    one["sim-bkg"].spectral_model.norm.value = models["sim-bkg"].spectral_model.norm.value
    one["p"].spatial_model.lon_0.value = models["p"].spatial_model.lon_0.value
    one["p"].spatial_model.lat_0.value = models["p"].spatial_model.lat_0.value
    one["p"].spectral_model.index.value = models["p"].spectral_model.index.value
    whole = flux_points([ds], one, "p", [0.3, 30.0])
    Fit(ds, one).run()
    amp = one["p"].spectral_model.amplitude
    assert whole["norm_err"][0] == pytest.approx(amp.error / models["p"].spectral_model.amplitude.value, rel=0.02)


def test_residual_peak_finds_an_unmodelled_source():
    rng = np.random.default_rng(5)
    ds = make_dataset(npix=50, nreco=2, name="sim")
    modelled, missing = _point("a", -0.2, 0.0), _point("b", 0.25, 0.1, amplitude=1.5e-12)
    ds = simulate(ds, [modelled, missing, FoVBackgroundModel("sim")], rng)
    peak = residual_peak([ds], [modelled, FoVBackgroundModel("sim")], radius=0.1, center=(0.0, 0.0), search_radius=0.45,
                         avoid=[(-0.2, 0.0)], min_separation=0.1)
    assert peak is not None and peak.sqrt_ts > 5
    assert np.hypot(((peak.lon + 180) % 360 - 180) - 0.25, peak.lat - 0.1) < 0.05
    maps = residual_maps(ds, [modelled, missing, FoVBackgroundModel("sim")], radius=0.1)
    sig = maps["sqrt_ts"][np.isfinite(maps["sqrt_ts"])]
    assert sig.max() < 5 and abs(sig.mean()) < 0.3


def test_residual_search_leaves_a_neighbours_emission_to_its_group():
    """A neighbour frozen at a third of its flux leaves the strongest residual; with the
    territories the search finds the group's own unmodelled source instead."""
    rng = np.random.default_rng(6)
    ds = make_dataset(npix=50, nreco=2, name="sim")
    member, neighbour, missing = _point("a", -0.3, 0.0), _point("n", 0.25, 0.0, amplitude=4e-12), _point("c", -0.25, 0.25, amplitude=4e-13)
    ds = simulate(ds, [member, neighbour, missing, FoVBackgroundModel("sim")], rng)
    rough = _point("n", 0.25, 0.0, amplitude=1e-12)
    kw = dict(radius=0.1, center=(-0.1, 0.0), search_radius=0.5, avoid=[(-0.3, 0.0)], min_separation=0.1)
    models = [member, rough, FoVBackgroundModel("sim")]
    anywhere = residual_peak([ds], models, **kw)
    assert np.hypot(((anywhere.lon + 180) % 360 - 180) - 0.25, anywhere.lat) < 0.05
    own = residual_peak([ds], models, territory=([(-0.3, 0.0, 0.0)], [(0.25, 0.0, 0.0)]), **kw)
    assert own is not None and own.sqrt_ts > 5
    assert np.hypot(((own.lon + 180) % 360 - 180) + 0.25, own.lat - 0.25) < 0.05
    # an extended neighbour's territory starts at its 68 % radius
    none = residual_peak([ds], models, territory=([(-0.3, 0.0, 0.0)], [(0.25, 0.0, 0.6)]), **kw)
    assert none is None


def test_conditional_covariance_of_separated_sources_matches_the_joint_one():
    """Two well-separated point sources: the joint Hesse and the per-source (conditional)
    one agree, the block-diagonal matrix has no cross terms, and the best fit is kept."""
    truth = [_point("a", -0.3, 0.0), _point("b", 0.3, 0.1, amplitude=3e-12)]
    ds = simulate(make_dataset(npix=50, nreco=2, name="sim"), truth, np.random.default_rng(8))
    members = [_point("a", -0.28, 0.01), _point("b", 0.31, 0.09)]
    fitter = GroupFitter([ds], [], GroupFitOptions())
    joint = fitter.run(members, free=all_ids(members), covariance=True, fast=False)
    assert joint.covariance_success
    models = fitter.models(members)
    models.set_covariance(joint.parameters, joint.covariance)
    errors = {(m.name, p.name): p.error for m in members for p in m.parameters if not p.frozen}
    values = [p.value for p in models.parameters]
    assert conditional_covariance(fitter, members, models) == ["a", "b"]
    assert [p.value for p in models.parameters] == values
    for m in members:
        for p in m.parameters:
            if not p.frozen:
                assert p.error == pytest.approx(errors[(m.name, p.name)], rel=0.1), (m.name, p.name)
    pa = [p for p in members[0].parameters if not p.frozen]
    pb = [p for p in members[1].parameters if not p.frozen]
    cov = models.covariance_of(pa + pb)
    assert np.all(cov[: len(pa), len(pa):] == 0) and np.all(np.diag(cov) > 0)


def test_conditional_covariance_holds_a_parameter_at_its_bound():
    """A shell whose width ended at its lower bound: when its own Hesse fails with the
    width free (Minuit's, and the finite differences, which have no room there), the
    errors come from a Hesse with the width held; the width alone gets NaN."""
    truth = SkyModel(sp.PowerLawSpectralModel(index=2.3, amplitude=6e-12),
                     sm.ShellSpatialModel(lon_0=0.0, lat_0=0.0, radius=0.25, width=0.05, frame="galactic"), name="s")
    ds = simulate(make_dataset(npix=60, nreco=2, name="sim"), [truth], np.random.default_rng(3))
    m = SkyModel(sp.PowerLawSpectralModel(index=2.3, amplitude=6e-12),
                 sm.ShellSpatialModel(lon_0=0.0, lat_0=0.0, radius=0.25, width=0.05, frame="galactic"), name="s")
    width = m.spatial_model.width
    width.min, width.max = 0.01, 0.5
    fitter = GroupFitter([ds], [], GroupFitOptions())
    fitter.run([m], free=all_ids([m]), fast=False)
    width.value = width.min  # as if the fit had run there
    run = fitter.run

    def failing_with_the_width_free(members, *, free, **kw):
        res = run(members, free=free, **kw)
        if id(width) in free:
            res.covariance_success = False
        return res

    fitter.run = failing_with_the_width_free
    models = fitter.models([m])
    assert width.at_bound() and conditional_covariance(fitter, [m], models) == ["s"]
    assert width.value == width.min  # the best fit is kept
    errors = {p.name: p.error for p in m.parameters if not p.frozen}
    assert np.isnan(errors.pop("width"))
    assert all(np.isfinite(e) and e > 0 for e in errors.values()), errors
    assert errors["radius"] < 0.05 and errors["lon_0"] < 0.02


def test_circle_fraction_against_closed_forms():
    """The flux share within a circle at the centre: a point and a Gaussian through a
    Gaussian PSF (Rayleigh), a disk and a projected shell without PSF (areas, sphere volumes)."""
    point = sm.PointSpatialModel(lon_0=10.0, lat_0=0.5, frame="galactic")
    assert circle_fraction(point, 0.1, 0.05) == pytest.approx(1 - np.exp(-2.0), rel=1e-9)
    gauss = sm.GaussianSpatialModel(lon_0=10.0, lat_0=0.5, sigma=0.14, frame="galactic")
    assert circle_fraction(gauss, 0.2, 0.05) == pytest.approx(1 - np.exp(-0.5 * 0.2**2 / (0.14**2 + 0.05**2)), rel=0.03)
    disk = sm.DiskSpatialModel(lon_0=10.0, lat_0=60.0, r_0=0.3, frame="galactic")  # flat grid at high latitude
    assert circle_fraction(disk, 0.15, 0.0) == pytest.approx(0.25, rel=0.03)
    shell = sm.ShellSpatialModel(lon_0=-7.35, lat_0=0.4, radius=0.42, width=0.015, frame="galactic")
    ro, ri, r = 0.435, 0.42, 0.2
    inside = 1 - (ro**3 * (1 - (r / ro) ** 2) ** 1.5 - ri**3 * (1 - (r / ri) ** 2) ** 1.5) / (ro**3 - ri**3)
    assert circle_fraction(shell, r, 0.0) == pytest.approx(inside, rel=0.03)
    assert 0.08 < circle_fraction(shell, r, 0.05) < 0.16 and circle_fraction(shell, 0.0, 0.05) == 0.0
