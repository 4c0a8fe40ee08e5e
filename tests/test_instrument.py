"""The built-in CTA-South-like instrument: GADF round trip and resemblance to CTA prod5 South."""

from __future__ import annotations

import numpy as np
import pytest

from gpscat.core.instrument import (
    CTA_SOUTH_LIKE,
    InstrumentParameters,
    aeff_model,
    background_model,
    builtin_irfs,
    edisp_bias,
    edisp_sigma,
    psf_r68,
)
from gpscat.core.irf import Background3D, EffectiveArea2D, EnergyDispersion2D, PSF3Gauss
from gpscat.io.irf import read_irf, write_irfs

PROD5_SOUTH = "cta-caldb/Prod5-South-20deg-AverageAz-14MSTs37SSTs.180000s-v0.1.fits.gz"
HDUS = {"aeff": "EFFECTIVE AREA", "psf": "POINT SPREAD FUNCTION", "edisp": "ENERGY DISPERSION", "bkg": "BACKGROUND"}


@pytest.fixture(scope="module")
def irfs():
    return builtin_irfs()


@pytest.fixture(scope="module")
def prod5(shared_data):
    path = shared_data / PROD5_SOUTH
    if not path.is_file():
        pytest.skip(f"real-data test: {path} not found")
    return {k: read_irf(path, h) for k, h in HDUS.items()}


def test_types_and_shapes(irfs):
    assert isinstance(irfs["aeff"], EffectiveArea2D)
    assert isinstance(irfs["psf"], PSF3Gauss)
    assert isinstance(irfs["edisp"], EnergyDispersion2D)
    assert isinstance(irfs["bkg"], Background3D)
    assert irfs["bkg"].fov_alignment == "RADEC"
    assert irfs["aeff"].energy_true.edges[0] == pytest.approx(10**-1.9)
    assert irfs["aeff"].offset.edges[-1] == pytest.approx(6.0)


def test_tables_hold_the_analytic_functions(irfs):
    e = np.array([0.1, 1.0, 10.0])
    # at bin centres the tables are the functions themselves
    et = irfs["aeff"].energy_true.center[[15, 29, 39]]
    off = irfs["aeff"].offset.center[[0, 4]]
    assert np.allclose(irfs["aeff"].evaluate(et[:, None], off[None]), aeff_model(et[:, None], off[None]), rtol=1e-10)
    r68 = irfs["psf"].containment_radius(0.68, et, 0.25)
    assert np.allclose(r68, psf_r68(et, 0.25), rtol=1e-6)
    # energy resolution: log-normal with the configured sigma and median bias
    for energy in e:
        mu = irfs["edisp"].migra.edges
        cdf = irfs["edisp"].cdf(energy, 0.25)
        q16, q50, q84 = np.interp([0.16, 0.5, 0.84], cdf, mu)
        assert (np.log(q84) - np.log(q16)) / 2 == pytest.approx(edisp_sigma(energy, 0.25), rel=0.03)
        assert q50 - 1 == pytest.approx(edisp_bias(energy), abs=0.003)
    x = irfs["bkg"].fov_lon.center[[20, 30]]
    y = irfs["bkg"].fov_lat.center[[10, 25]]
    ec = irfs["bkg"].energy.center[[12, 25]]
    got = irfs["bkg"].evaluate(ec[:, None, None], x[None, :, None], y[None, None, :])
    assert np.allclose(got, background_model(ec[:, None, None], x[None, :, None], y[None, None, :]), rtol=1e-6)


def test_shapes_are_physical():
    e = np.geomspace(0.05, 150, 30)
    a = aeff_model(e, 0.0)
    assert np.all(np.diff(a) > 0)  # rising to the plateau
    assert 2e6 < a[-1] < 4e6 and aeff_model(0.03, 0) < 1e4
    assert np.all(aeff_model(1.0, [0, 1, 2, 3, 4]) > aeff_model(1.0, [1, 2, 3, 4, 5]))
    r = psf_r68(e, 0.0)
    assert np.all(np.diff(r) < 0) and r[-1] < 0.03 and 0.04 < psf_r68(1.0, 0) < 0.07
    assert psf_r68(1.0, 4.0) > psf_r68(1.0, 1.0)
    assert 0.06 < edisp_sigma(1.0, 0) < 0.1
    assert edisp_bias(0.03) > 0.3 and abs(edisp_bias(1.0)) < 0.02
    b = background_model(e, 0.0, 0.0)
    assert np.all(np.diff(b[e > 0.2]) < 0)
    # the FoV gradient makes the background a true BKG_3D
    assert background_model(1.0, 0.0, 2.0) > background_model(1.0, 0.0, -2.0)
    with pytest.raises(ValueError, match="energies must be > 0"):
        aeff_model(0.0, 0.0)


def test_parameters_change_the_instrument():
    p = InstrumentParameters(aeff_a2=1.3e6)
    assert aeff_model(100.0, 0.0, p) < 0.6 * aeff_model(100.0, 0.0, CTA_SOUTH_LIKE)


def test_gadf_round_trip(irfs, tmp_path):
    path = tmp_path / "irf.fits"
    write_irfs(path, {HDUS[k]: v for k, v in irfs.items()})
    back = {k: read_irf(path, h) for k, h in HDUS.items()}
    e, off = np.geomspace(0.05, 100, 7), 1.3
    assert np.allclose(back["aeff"].evaluate(e, off), irfs["aeff"].evaluate(e, off), rtol=1e-5)
    assert np.allclose(back["psf"].containment_radius(0.68, e, off), irfs["psf"].containment_radius(0.68, e, off), rtol=1e-5)
    assert np.allclose(back["edisp"].cdf(e, off), irfs["edisp"].cdf(e, off), atol=1e-5)
    assert np.allclose(back["bkg"].evaluate(e, 1.0, -0.5), irfs["bkg"].evaluate(e, 1.0, -0.5), rtol=1e-5)


@pytest.mark.realdata
def test_resembles_prod5_south(irfs, prod5):
    """Aeff within -25%/+30%, PSF R68 and resolution within 20%, background within -30%/+40% of prod5 South."""
    e = np.array([0.05, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0])
    for off in (0.5, 1.5, 2.5):
        ratio = irfs["aeff"].evaluate(e, off) / prod5["aeff"].evaluate(e, off)
        assert np.all((ratio > 0.75) & (ratio < 1.3)), (off, ratio)
        r = irfs["psf"].containment_radius(0.68, e, off) / prod5["psf"].containment_radius(0.68, e, off)
        assert np.all((r > 0.8) & (r < 1.2)), (off, r)
    for energy in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0):
        widths = []
        for irf in (irfs["edisp"], prod5["edisp"]):
            q16, q84 = np.interp([0.16, 0.84], irf.cdf(energy, 0.5), irf.migra.edges)
            widths.append((q84 - q16) / 2)
        assert widths[0] / widths[1] == pytest.approx(1.0, abs=0.2), energy
    edges = np.geomspace(0.05, 200, 9)
    for theta in (0.0, 1.0, 2.0, 3.0):
        ratio = irfs["bkg"].integrate(edges, theta, 0.0) / prod5["bkg"].integrate(edges, theta, 0.0)
        assert np.all((ratio > 0.7) & (ratio < 1.4)), (theta, ratio.ravel())
