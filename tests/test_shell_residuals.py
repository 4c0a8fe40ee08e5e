"""Shells modelled and removed: the residual search for sources on their flanks (injected truth)."""

from __future__ import annotations

import numpy as np
import pytest
from detect_sky import make_sky, shell_profile, significance_maps
from scipy import ndimage

from gpscat.core.convolve import disk_kernel
from gpscat.core.geom import angular_separation
from gpscat.core.localise import CountsImage, localise
from gpscat.core.seeds import DetectParams, detect_seeds
from gpscat.core.shell_residuals import fit_shell, shell_image, subtract_shells
from gpscat.core.significance import cash_maps

RADII = (0.1, 0.2)
SHELL = dict(type="shell", lon=0.0, lat=0.0, radius=0.5, width=0.1, counts=8000.0)
# a 0.1° Gaussian 0.05° beyond the shell's outer edge: ~10σ on its own, no local maximum
# of the significance maps beside the ~23σ rim
FLANK = dict(type="gauss", lon=0.65 * np.cos(0.5), lat=0.65 * np.sin(0.5), sigma=0.1, counts=350.0)


def _lon(t) -> np.ndarray:
    return (np.asarray(t["GLON"]) + 180.0) % 360.0 - 180.0


@pytest.mark.parametrize("sigma", [0.0, 1.0, 3.0])
def test_shell_image_is_the_sampled_projected_shell(sigma):
    """Against a 9×9-subsampled projected shell convolved on the fine grid: within 1 % of
    the peak everywhere, and unit sum."""
    shape, x0, y0, r_in, width = (81, 81), 40.3, 39.6, 15.0, 3.0
    ov = 9
    s = (np.arange(ov) + 0.5) / ov - 0.5
    xs = (np.arange(shape[1])[:, None] + s).ravel() - x0
    ys = (np.arange(shape[0])[:, None] + s).ravel() - y0
    fine = shell_profile(np.hypot(xs[None, :], ys[:, None]), r_in, width)
    if sigma > 0:
        fine = ndimage.gaussian_filter(fine, sigma * ov, mode="constant")
    ref = fine.reshape(shape[0], ov, shape[1], ov).mean(axis=(1, 3))
    ref /= ref.sum()
    img = shell_image(shape, x0, y0, r_in, width, sigma)
    assert img.sum() == pytest.approx(1.0, abs=2e-3)
    # the analytic model has no pixel integration beyond a 1/12 px² variance: the sharp
    # unconvolved edges differ most
    tol = 0.01 if sigma > 0 else 0.08
    assert np.max(np.abs(img - ref)) < tol * ref.max()


def test_fit_shell_recovers_an_injected_shell():
    """Poisson shell (R 20 px, w 4 px, 6000 counts) on 2 counts/pixel: geometry and counts
    within their statistical reach, and a flat residual."""
    rng = np.random.default_rng(3)
    shape, psf = (101, 101), 2.5
    truth = dict(x=50.4, y=49.7, r=20.0, w=4.0, n=6000.0)
    mu = 2.0 + truth["n"] * shell_image(shape, truth["x"], truth["y"], truth["r"], truth["w"], psf)
    counts = rng.poisson(mu).astype(float)
    bkg = np.full(shape, 2.0)
    f = fit_shell(counts, bkg, np.ones(shape), np.ones(shape, bool), x0=52.0, y0=48.0, r_in=18.0, width=2.0,
                  psf_sigma=psf)
    assert f.valid
    assert np.hypot(f.x - truth["x"], f.y - truth["y"]) < 0.5
    assert f.r_in + 0.5 * f.width == pytest.approx(truth["r"] + 0.5 * truth["w"], abs=0.7)
    assert f.npred == pytest.approx(truth["n"], rel=0.05)
    model = bkg + f.npred * shell_image(shape, f.x, f.y, f.r_in, f.width, psf)
    sig = cash_maps(counts, model, kernel=disk_kernel(5.0))["sqrt_ts"]
    yy, xx = np.indices(shape)
    rim = np.abs(np.hypot(xx - truth["x"], yy - truth["y"]) - 22.0) < 5.0
    assert abs(np.nanmean(sig[rim])) < 0.5
    assert np.nanmax(np.abs(sig[rim])) < 4.5


def test_source_on_a_shell_flank_gets_a_seed():
    """The flank source is never a seed of the plain maps; with the shell modelled it is one
    residual seed within max(0.05°, 0.3 × size) of the truth in every realisation, and no
    other seed appears."""
    for seed in range(5):
        sky = make_sky(np.random.default_rng(seed), width=(3.0, 3.0), sources=[SHELL, FLANK])
        maps = significance_maps(sky, RADII)
        plain = detect_seeds(maps, DetectParams(shell_residuals=False))
        assert np.all(angular_separation(_lon(plain), np.asarray(plain["GLAT"]), FLANK["lon"], FLANK["lat"]) > 0.3)
        t = detect_seeds(maps, DetectParams())
        assert sorted(t["Type"]) == ["peak", "shell"], t
        r = t[t["Type"] == "peak"][0]
        assert r["Search"] == "residual" and r["Position"] == "likelihood"
        assert angular_separation(_lon(t[t["Type"] == "peak"])[0], r["GLAT"], FLANK["lon"], FLANK["lat"]) < 0.05
        assert r["Sqrt_TS"] >= 5.0
        assert t.meta["NRESID"] == 1
        shell = t[t["Type"] == "shell"][0]
        assert shell["Search"] == "maps"
        assert angular_separation(_lon(t[t["Type"] == "shell"])[0], shell["GLAT"], 0.0, 0.0) < 0.05


def test_lone_shell_leaves_no_residual_seed():
    """A bright shell alone (~23σ rim at r = 0.1°): modelled, its rim leaves nothing above
    the threshold in 10 realisations."""
    for seed in range(10):
        sky = make_sky(np.random.default_rng(100 + seed), width=(3.0, 3.0), sources=[SHELL])
        t = detect_seeds(significance_maps(sky, RADII), DetectParams())
        assert list(t["Type"]) == ["shell"]
        assert t.meta["NRESID"] == 0


def test_subtract_shells_needs_the_uncorrelated_images():
    sky = make_sky(np.random.default_rng(1), width=(3.0, 3.0), sources=[SHELL])
    maps = [m.__class__(m.dataset, m.radius, m.geom, m.sqrt_ts, m.excess, m.background, m.counts)
            for m in significance_maps(sky, RADII)]
    shells = [dict(lon=0.0, lat=0.0, radius=0.5, width=0.1)]
    assert subtract_shells(maps, shells, {"all": 0.05}, "galactic") is None
    assert subtract_shells(significance_maps(sky, RADII), [], {"all": 0.05}, "galactic") is None
    out = subtract_shells(significance_maps(sky, RADII), shells, {"all": 0.05}, "galactic")
    assert [m.radius for m in out] == list(RADII)
    # the shell's counts are in the model image, the background image is untouched
    assert np.nansum(out[0].model_image) == pytest.approx(SHELL["counts"], rel=0.05)
    assert np.array_equal(out[0].background_image, sky.background)


def test_known_model_is_added_unscaled_in_the_fit():
    """A source given as a known model: the joint fit at its position finds nothing (TS
    ~ 0) instead of the source, and the background norm does not absorb it."""
    src = dict(type="gauss", lon=0.1, lat=0.0, sigma=0.1, counts=600.0)
    sky = make_sky(np.random.default_rng(7), width=(2.0, 2.0), sources=[src])
    plain = CountsImage(sky.geom, sky.counts, sky.background, 0.05)
    known = CountsImage(sky.geom, sky.counts, sky.background, 0.05, model=sky.npred)
    lon, lat = np.array([0.1]), np.array([0.0])
    f = localise([plain], lon, lat, size=np.array([0.1]), max_shift=np.array([0.1]), frame="galactic")
    assert f.done[0] and f.ts[0] > 100
    g = localise([known], lon, lat, size=np.array([0.1]), max_shift=np.array([0.1]), frame="galactic")
    assert not g.done[0] or g.ts[0] < 16
