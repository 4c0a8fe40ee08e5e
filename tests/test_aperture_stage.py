"""Stage ``aperture``: R_spec rule, the Crab from the H.E.S.S. DR1 runs, empty input, CLI."""

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from gpscat.cli import main
from gpscat.config import load_config
from gpscat.core.association import R68_PER_SIGMA
from gpscat.core.geom import to_frame
from gpscat.io.maps import read_map, write_maps
from gpscat.stages import aperture

K70 = math.sqrt(-2 * math.log(0.3))
CRAB_GAL = tuple(float(v) for v in to_frame(83.633, 22.014, "icrs", "galactic"))
# the HLI tutorial settings of tests/test_aperture_crosscheck.py
TUTORIAL = {
    "energy": {"min": "0.5 TeV", "max": "30 TeV", "nbins": 20},
    "energy_true": {"min": "0.1 TeV", "max": "50 TeV", "nbins": 40},
    "fit_range": ["1 TeV", "20 TeV"],
    "flux_points": {"energy": {"min": "1 TeV", "max": "20 TeV", "nbins": 8}},
    "offset_max": "2.5 deg",
}
HDUS = {"SPECTRA": aperture.SPECTRA_COLUMNS, "OBSERVATIONS": aperture.OBSERVATION_COLUMNS, "SPECTRUM_BINS": aperture.BIN_COLUMNS}


def test_spectral_radius_rule():
    t = Table({
        "R_Spec": [0.3, np.nan, np.nan, np.nan, np.nan],
        "R68": [np.nan, 0.2, np.nan, np.nan, 2.0],
        "Size": [np.nan, np.nan, 0.2, np.nan, np.nan],
    })
    r = aperture.spectral_radius(t, containment=0.7, rmin=0.15, rmax=0.5, psf_r68=0.1)
    psf_sigma = 0.1 / R68_PER_SIGMA
    np.testing.assert_allclose(r, [0.3, 0.2 * K70 / R68_PER_SIGMA, K70 * math.hypot(0.2, psf_sigma), 0.15, 0.5])
    assert aperture.spectral_radius(Table({"GLON": [1.0]}), rmin=0.01)[0] == pytest.approx(K70 * psf_sigma)
    assert aperture.spectral_radius(Table({"GLON": np.zeros(0)})).size == 0
    with pytest.raises(ValueError, match="containment"):
        aperture.spectral_radius(t, containment=1.0)
    with pytest.raises(ValueError, match="rmin"):
        aperture.spectral_radius(t, rmin=0.6, rmax=0.5)


def exclusion_file(shared_data, tmp_path):
    m = read_map(shared_data / "joint-crab/exclusion/exclusion_mask_crab.fits.gz")
    path = tmp_path / "exclusion.fits"
    write_maps(path, {"EXCLUSION_MASK": m.copy(data=np.asarray(m.data, dtype=np.int16))})
    return path


def crab_config(shared_data, **aperture_overrides):
    data = {"store": str(shared_data / "hess-dl3-dr1"), "selection": {"obs_ids": [23523, 23526, 23559, 23592], "survey_overlap": False}}
    return {"data": data, "aperture": {**TUTORIAL, **aperture_overrides}}


def test_crab_through_the_stage(shared_data, tmp_path):
    cfg = load_config(overrides=crab_config(shared_data))
    sources = Table({"Source_ID": ["Crab", "nowhere"], "GLON": [CRAB_GAL[0], 10.0], "GLAT": [CRAB_GAL[1], 0.0], "R_Spec": [0.11, 0.2]})
    out = tmp_path / "results/catalog/aperture_spectra.fits"
    tables = aperture.run(cfg, sources=sources, output=out, exclusion=exclusion_file(shared_data, tmp_path))
    with fits.open(out) as hdus:
        assert [h.name for h in hdus[1:]] == ["SPECTRA", "FLUX_POINTS", "OBSERVATIONS", "SPECTRUM_BINS"]
        assert hdus[0].header["GPSCAT"] == "aperture" and hdus[0].header["CONTCORR"]
    spectra = Table.read(out, hdu="SPECTRA")
    crab, nowhere = spectra[0], spectra[1]
    assert crab["Fit_Success"] and crab["Fit_Status"] == "ok" and crab["Spectral_Model"] == "PowerLawSpectralModel"
    assert crab["N_Obs"] == 4 and crab["R_Spec"] == pytest.approx(0.11)
    # the acceptance numbers (gammapy 2.1: index 2.68 ± 0.10, amplitude (4.68 ± 0.47)e-11)
    assert abs(crab["Index"] - 2.677) < 0.3 * 0.1035 and crab["Index_Err"] == pytest.approx(0.1035, rel=0.05)
    assert abs(crab["Amplitude"] - 4.679e-11) < 0.3 * 0.468e-11 and crab["Amplitude_Err"] == pytest.approx(0.468e-11, rel=0.05)
    assert crab["Energy_Min"] == pytest.approx(1.134, abs=1e-3) and crab["Energy_Max"] == pytest.approx(19.92, abs=1e-2)
    assert crab["TS"] > 900 and crab["Flux_1TeV_100TeV"] > 5 * crab["Flux_1TeV_100TeV_Err"] > 0
    assert crab["Sqrt_TS"] == pytest.approx(math.sqrt(crab["TS"]), rel=0.1)
    assert crab["Npred"] == pytest.approx(crab["Excess"], rel=0.02)
    # safe-range totals per observation: ON 427 as gammapy; OFF 568 (gammapy 581, overlapping circles)
    obs = Table.read(out, hdu="OBSERVATIONS")
    assert sorted(obs["OBS_ID"]) == [23523, 23526, 23559, 23592]
    assert obs["N_On"].sum() == 427 and obs["N_Off"].sum() == pytest.approx(581, rel=0.03)
    np.testing.assert_allclose(obs["Alpha"], 1.0 / obs["N_Off_Regions"])
    bins = Table.read(out, hdu="SPECTRUM_BINS")
    assert len(bins) == 20 and bins["Mask_Fit"].sum() == 14
    assert bins["Npred"][bins["Mask_Fit"]].sum() == pytest.approx(crab["Npred"])
    fp = Table.read(out, hdu="FLUX_POINTS")
    assert len(fp) == 8 and np.all(fp["Source_ID"] == "Crab") and fp["success"].all()
    assert np.all(np.abs(fp["norm"] - 1) < 3 * fp["norm_err"])
    # a source no observation covers: a row with the reason, nothing fitted
    assert nowhere["N_Obs"] == 0 and nowhere["Fit_Status"] == "no observation" and not nowhere["Fit_Success"]
    assert np.isnan(tables["SPECTRA"]["Index"][1]) and len(tables["FLUX_POINTS"]) == 8


def test_empty_source_table_keeps_the_schema(shared_data, tmp_path):
    cfg = load_config(overrides=crab_config(shared_data))
    empty = Table({"Source_ID": np.zeros(0, "U16"), "GLON": np.zeros(0), "GLAT": np.zeros(0)})
    src = tmp_path / "sources.fits"
    empty.write(src)
    out = tmp_path / "aperture_spectra.fits"
    aperture.run(cfg, sources=src, output=out)
    for hdu, columns in HDUS.items():
        t = Table.read(out, hdu=hdu)
        assert len(t) == 0 and t.colnames == ["Source_ID", *columns]
    assert Table.read(out, hdu="FLUX_POINTS").colnames[1:4] == ["e_ref", "e_min", "e_max"]


def test_bad_input_tables(shared_data, tmp_path):
    cfg = load_config(overrides=crab_config(shared_data))
    with pytest.raises(ValueError, match="Source_ID"):
        aperture.run(cfg, sources=Table({"GLON": [1.0], "GLAT": [0.0]}), output=tmp_path / "a.fits")
    with pytest.raises(ValueError, match="GLON/GLAT"):
        aperture.run(cfg, sources=Table({"Source_ID": ["a"], "X": [0.0]}), output=tmp_path / "a.fits")
    assert not (tmp_path / "a.fits").exists()
    with pytest.raises(ValueError, match="aperture.model"):
        aperture.start_model("bpl")


def test_cli_with_params(shared_data, tmp_path, caplog):
    cfg = crab_config(shared_data, model="ecpl", containment_correction=False, fit_range=["1 TeV", "30 TeV"])
    # two files: HDU SOURCES (after another table) and a plain table; stacked in order
    src, more = tmp_path / "group_1.fits", tmp_path / "group_2.fits"
    sources = fits.table_to_hdu(Table({"Source_Name": ["crab"], "RAJ2000": [83.633], "DEJ2000": [22.014], "R68": [0.1]}))
    sources.name = "SOURCES"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(Table({"X": [1]})), sources]).writeto(src)
    Table({"Source_Name": ["far"], "RAJ2000": [10.0], "DEJ2000": [-5.0]}).write(more)
    out = tmp_path / "out.fits"
    args = ["aperture", "--params", json.dumps(cfg), "--sources", str(src), str(more), "--output", str(out)]
    assert main(args) == 0
    table = Table.read(out, hdu="SPECTRA")
    assert list(table["Source_ID"]) == ["crab", "far"] and table["Fit_Status"][1] == "no observation"
    row = table[0]
    assert row["Source_ID"] == "crab" and row["Spectral_Model"] == "ExpCutoffPowerLawSpectralModel"
    assert row["R_Spec"] == pytest.approx(0.15)  # R68 = 0.1 -> R70 = 0.103, below the 0.15 deg minimum
    assert np.isfinite(row["Lambda"]) and row["Containment_1TeV"] == 1.0
    assert "no exclusion mask" in caplog.text
