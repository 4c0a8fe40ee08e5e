"""IRF evaluation (gpscat.core.irf, core.interp) and GADF HDU I/O (gpscat.io.irf)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from _dl3_fake import make_irfs
from astropy.io import fits

from gpscat.core.geom import MapAxis
from gpscat.core.interp import grid_interp, integrate_loglog
from gpscat.core.irf import Background2D, Background3D, EffectiveArea2D, PSFTable
from gpscat.io.irf import IRFError, irf_from_hdu, irf_to_hdu, read_irf

# ------------------------------------------------------------------ interpolation


def test_grid_interp_linear_function_exact_and_bounds():
    x = np.array([0.5, 1.5, 2.5])  # centres of bins [0, 3]
    y = np.array([1.0, 2.0, 4.0, 8.0])
    values = 2 * x[:, None] + 3 * np.log(y)[None, :]
    q = grid_interp(values, [x, y], [np.array([0.1, 1.0, 2.9])[:, None], np.array([1.5, 3.0])], scales=["lin", "log"], bounds=[(0, 3), None])
    expect = 2 * np.array([0.1, 1.0, 2.9])[:, None] + 3 * np.log([1.5, 3.0])
    assert np.allclose(q, expect)
    out = grid_interp(values, [x, y], [np.array([-0.1, 3.1]), 2.0], scales=["lin", "log"], bounds=[(0, 3), None])
    assert np.all(out == 0)


def test_grid_interp_log_values_power_law_and_zero_nodes():
    e = np.geomspace(1, 100, 5)
    q = grid_interp(e**-2.5, [e], [np.array([2.0, 30.0])], scales=["log"], values_scale="log")
    assert np.allclose(q, np.array([2.0, 30.0]) ** -2.5)
    v = e**-2.5
    v[2] = 0.0
    q = grid_interp(v, [e], [np.array([2.0, 8.0, 20.0])], scales=["log"], values_scale="log")
    assert q[0] > 0 and q[1] == 0 and q[2] == 0


def test_integrate_loglog_exact_for_power_laws_and_curved_spectrum():
    nodes = np.geomspace(0.1, 100, 16)
    edges = np.array([0.2, 0.5, 3.0, 40.0])
    got = integrate_loglog(nodes**-2.0, nodes, edges)
    assert np.allclose(got, 1 / edges[:-1] - 1 / edges[1:], rtol=1e-12)
    # curved spectrum: the exact integral of the piecewise power law equals a fine trapezoid
    curved = nodes**-2.5 * np.exp(-0.3 / nodes)
    ref = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        fine = np.geomspace(a, b, 100001)
        ref.append(np.trapezoid(grid_interp(curved, [nodes], [fine], scales=["log"], values_scale="log"), fine))
    assert np.allclose(integrate_loglog(curved, nodes, edges), ref, rtol=1e-6)


# ------------------------------------------------------------------- IRF classes


@pytest.fixture(scope="module")
def irfs():
    return make_irfs()


def test_aeff_evaluates_table_at_nodes(irfs):
    aeff = irfs["aeff"]
    e, o = aeff.energy_true.center, aeff.offset.center
    assert np.allclose(aeff.evaluate(e[:, None], o[None, :]), aeff.data)
    assert aeff.thresholds == (0.1, 100.0)
    assert aeff.evaluate(300.0, 1.0) == 0  # beyond the last energy edge


def test_psf_3gauss_normalised_and_containment_inverse(irfs):
    psf = irfs["psf"]
    r = np.linspace(0, 3, 30001)
    dens = psf.evaluate(r, 1.0, 1.0)
    integral = np.trapezoid(2 * np.pi * np.radians(r) * dens, np.radians(r))
    assert integral == pytest.approx(1.0, rel=1e-4)
    assert psf.containment(0.5, 1.0, 1.0) == pytest.approx(np.interp(0.5, r, np.cumsum(2 * np.pi * np.radians(r) * dens) * np.radians(r[1])), abs=1e-3)
    frac = np.array([0.1, 0.5, 0.68, 0.95])
    rad = psf.containment_radius(frac, np.array([0.3, 1, 3, 30]), 0.5)
    assert np.allclose(psf.containment(rad, np.array([0.3, 1, 3, 30]), 0.5), frac, atol=1e-9)


def test_psf_table_containment_and_sampling():
    e = MapAxis.from_energy_bounds(0.1, 100, nbin=3, name="energy_true")
    off = MapAxis("offset", np.array([0.0, 1.0, 2.0]), "deg", "lin")
    rad = MapAxis("rad", np.linspace(0, 1, 201), "deg", "lin")
    sigma = 0.1
    prof = np.exp(-0.5 * (rad.center / sigma) ** 2) / (2 * np.pi * np.radians(sigma) ** 2)
    psf = PSFTable(e, off, rad, np.broadcast_to(prof, (3, 2, 200)))
    r68 = psf.containment_radius(0.68, 1.0, 0.5)
    assert r68 == pytest.approx(sigma * np.sqrt(-2 * np.log(1 - 0.68)), rel=0.01)
    rng = np.random.default_rng(1)
    samples = psf.containment_radius(rng.uniform(size=20000), 1.0, 0.5)
    assert np.median(samples) == pytest.approx(sigma * np.sqrt(2 * np.log(2)), rel=0.03)


def test_edisp_kernel_rows_sum_to_one_and_sampling(irfs):
    edisp = irfs["edisp"]
    et = MapAxis.from_energy_bounds(0.5, 20, nbin=8, name="energy_true")
    er = MapAxis.from_energy_bounds(0.05, 200, nbin=30, name="energy")
    k = edisp.kernel(et, er, np.array([0.5, 2.0]))
    assert k.shape == (8, 30, 2)
    assert np.allclose(k.sum(axis=1), 1.0, atol=1e-6)
    rng = np.random.default_rng(3)
    mu = edisp.sample_migra(np.full(20000, 2.0), 1.0, rng=rng, chunk=5000)
    res = 0.1 + 0.1 * 2.0**-0.5
    assert np.mean(mu) == pytest.approx(1.0, abs=0.01)
    assert np.std(mu) == pytest.approx(res, rel=0.05)
    assert abs(edisp.bias(2.0, 1.0)) < 0.01


def test_background_integrate_matches_fine_trapezoid_and_fill_missing(irfs):
    bkg = irfs["bkg"]
    fine = np.geomspace(0.1, 10, 100001)
    ref = np.trapezoid(bkg.evaluate(fine, 0.7, -0.4), fine)
    assert bkg.integrate(np.array([0.1, 10.0]), 0.7, -0.4)[0] == pytest.approx(ref, rel=1e-3)
    holed = Background3D(bkg.energy, bkg.fov_lon, bkg.fov_lat, np.where(np.arange(24)[:, None, None] == 10, 0.0, bkg.data))
    filled = holed.fill_missing_energy()
    assert np.allclose(filled.data[10], np.sqrt(bkg.data[9] * bkg.data[11]), rtol=1e-12)
    edge = Background3D(bkg.energy, bkg.fov_lon, bkg.fov_lat, np.where(np.arange(24)[:, None, None] == 0, 0.0, bkg.data))
    assert np.all(edge.fill_missing_energy().data[0] == 0)  # not between valid values


def test_background2d_pad_offset():
    e = MapAxis.from_energy_bounds(0.1, 10, nbin=4, name="energy")
    off = MapAxis("offset", np.linspace(0, 2, 5), "deg", "lin")
    b = Background2D(e, off, np.ones((4, 4)))
    assert b.evaluate(1.0, 2.2) == 0
    assert b.pad_offset().evaluate(1.0, 2.2) == pytest.approx(1.0)


# ---------------------------------------------------------------------- HDU I/O


@pytest.mark.parametrize("name", ["aeff", "psf", "edisp", "bkg"])
def test_hdu_round_trip(irfs, name):
    irf = irfs[name]
    back = irf_from_hdu(irf_to_hdu(irf))
    assert type(back) is type(irf)
    for attr in ("data", "sigma_1", "ampl_3"):
        if hasattr(irf, attr):
            assert np.allclose(getattr(back, attr), getattr(irf, attr), rtol=1e-6)


def test_bkg3d_legacy_layout_read_like_gammapy(irfs):
    """ENERG listed last (H.E.S.S./1DC): the array is (E, lon, lat) as stored in C order."""
    bkg = irfs["bkg"]
    data = bkg.data.copy()
    data[:, 0, :] *= 2  # make lon and lat distinguishable
    cols = [
        fits.Column("DETX_LO", "24E", array=bkg.fov_lon.lo[None]),
        fits.Column("DETX_HI", "24E", array=bkg.fov_lon.hi[None]),
        fits.Column("DETY_LO", "24E", array=bkg.fov_lat.lo[None]),
        fits.Column("DETY_HI", "24E", array=bkg.fov_lat.hi[None]),
        fits.Column("ENERG_LO", "24E", unit="TeV", array=bkg.energy.lo[None]),
        fits.Column("ENERG_HI", "24E", unit="TeV", array=bkg.energy.hi[None]),
        fits.Column("BKG", f"{data.size}E", unit="s-1 TeV-1 sr-1", dim="(24,24,24)", array=data[None]),
    ]
    back = irf_from_hdu(fits.BinTableHDU.from_columns(cols, name="BKG"), kind="bkg_3d")
    assert np.allclose(back.data, data, rtol=1e-6)


def test_unit_quirk_logged_and_hdu_errors(irfs, caplog):
    hdu = irf_to_hdu(irfs["bkg"])
    hdu.columns["BKG"].unit = "1/s/MeV/sr"
    with caplog.at_level(logging.WARNING):
        back = irf_from_hdu(hdu)
    assert "non-standard unit '1/s/MeV/sr'" in caplog.text
    assert np.allclose(back.data, irfs["bkg"].data, rtol=1e-6)
    bad = irf_to_hdu(irfs["aeff"])
    bad.columns.del_col("EFFAREA")
    with pytest.raises(IRFError, match="EFFECTIVE AREA.*EFFAREA missing"):
        irf_from_hdu(bad, source="x.fits")
    with pytest.raises(IRFError, match="THETA"):
        irf_from_hdu(fits.BinTableHDU.from_columns([c for c in irf_to_hdu(irfs["aeff"]).columns if not c.name.startswith("THETA")], name="A"), kind="aeff_2d")


def test_read_irf_missing_hdu(tmp_path, irfs):
    path = tmp_path / "irf.fits"
    fits.HDUList([fits.PrimaryHDU(), irf_to_hdu(irfs["aeff"])]).writeto(path)
    with pytest.raises(IRFError, match=r"irf.fits: HDU 'PSF' not found"):
        read_irf(path, "PSF")
    assert isinstance(read_irf(path, "EFFECTIVE AREA"), EffectiveArea2D)


@pytest.mark.realdata
def test_real_irfs_read(shared_data, caplog):
    cta = shared_data / "cta-1dc/caldb/data/cta/1dc/bcf/South_z20_50h/irf_file.fits"
    with caplog.at_level(logging.WARNING):
        bkg = read_irf(cta, "BACKGROUND")
    assert bkg.data.shape == (21, 36, 36) and bkg.fov_alignment == "RADEC"
    hess = shared_data / "hess-dl3-dr1/data/hess_dl3_dr1_obs_id_020136.fits.gz"
    aeff = read_irf(hess, "AEFF")  # offsets given as nodes (THETA_LO == THETA_HI)
    assert np.allclose(aeff.offset.center, np.arange(0, 3, 0.5))
    assert aeff.thresholds[0] == pytest.approx(0.40738, rel=1e-4)
    assert isinstance(read_irf(hess, "PSF"), PSFTable)
    prod5 = shared_data / "cta-caldb/Prod5-South-20deg-AverageAz-14MSTs37SSTs.180000s-v0.1.fits.gz"
    assert read_irf(prod5, "BACKGROUND").data.shape == (21, 60, 60)


def test_grid_evaluations_equal_direct_ones(irfs):
    """The fast separable map evaluations give the same numbers as the direct ones."""
    e = np.geomspace(0.03, 150, 9)
    off = np.array([[0.0, 0.3, 1.7], [2.9, 5.5, 6.5]])
    aeff = irfs["aeff"]
    assert np.allclose(aeff.evaluate_grid(e, off), aeff.evaluate(e[:, None, None], off[None]), rtol=1e-12)
    rad = np.linspace(0, 0.5, 11)
    psf = irfs["psf"]
    assert np.allclose(psf.evaluate_grid(rad, e, off), psf.evaluate(rad[None, :, None, None], e[:, None, None, None], off[None, None]))
    rad_axis = MapAxis("rad", np.linspace(0, 1, 101), "deg", "lin")
    table = PSFTable(psf.energy_true, psf.offset, rad_axis, psf.evaluate(rad_axis.center[None, None], psf.energy_true.center[:, None, None], psf.offset.center[None, :, None]))
    assert np.allclose(table.evaluate_grid(rad, e, off), table.evaluate(rad[None, :, None, None], e[:, None, None, None], off[None, None]), rtol=1e-10)
    edisp = irfs["edisp"]
    et = MapAxis.from_energy_bounds(0.5, 20, nbin=4, name="energy_true")
    er = MapAxis.from_energy_bounds(0.1, 100, nbin=6, name="energy")
    k = edisp.kernel(et, er, off)
    for i in range(off.shape[0]):
        for j in range(off.shape[1]):
            cdf = edisp.cdf(et.center[:, None], np.full((1, 1), off[i, j]))[:, 0]
            at = np.array([np.interp(er.edges / x, edisp.migra.edges, c) for x, c in zip(et.center, cdf, strict=True)])
            assert np.allclose(k[:, :, i, j], np.diff(at, axis=1), atol=1e-9)
