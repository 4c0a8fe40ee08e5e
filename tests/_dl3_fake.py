"""A small synthetic GADF DL3 data store for tests (known IRFs, seeded events).

``make_irfs()`` builds analytic, CTA-like IRFs; ``write_store(folder, observations)``
writes events, GTI, an IRF file shared by all observations (in a separate ``caldb``
folder, reached through ``FILE_DIR = ../caldb`` as in CTA 1DC) and the two index tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from gpscat.core.fov import fov_to_sky
from gpscat.core.geom import MapAxis
from gpscat.core.irf import Background3D, EffectiveArea2D, EnergyDispersion2D, PSF3Gauss
from gpscat.io.irf import write_irfs

MJDREF = 51544.5


def make_irfs(*, bkg_norm: float = 1e-4) -> dict:
    """Analytic IRFs: aeff turn-on × Gaussian in offset, 3-Gauss PSF, Gaussian edisp, power-law bkg."""
    e_true = MapAxis.from_energy_bounds(0.02, 200, nbin=40, name="energy_true")
    offset = MapAxis("offset", np.linspace(0, 6, 13), "deg", "lin")
    e, o = e_true.center[:, None], offset.center[None, :]
    aeff = 3e5 * (1 - np.exp(-((e / 0.08) ** 1.5))) * np.exp(-0.5 * (o / 3.0) ** 2)
    sig = 0.08 * (e / 1.0) ** -0.25 * (1 + 0.05 * o) * np.ones_like(o)
    psf = PSF3Gauss(e_true, offset, sigma_1=sig, sigma_2=2 * sig, sigma_3=4 * sig, ampl_2=0.1 * np.ones_like(sig), ampl_3=0.01 * np.ones_like(sig))
    migra = MapAxis("migra", np.linspace(0.2, 5, 97), "", "lin")
    res = 0.1 + 0.1 * (e / 1.0) ** -0.5
    mu = migra.center[None, :, None]
    pdf = np.exp(-0.5 * ((mu - 1.0) / res[:, None, :]) ** 2) * np.ones((1, 1, offset.nbin))
    edisp = EnergyDispersion2D(e_true, migra, offset, pdf)
    e_reco = MapAxis.from_energy_bounds(0.02, 200, nbin=24, name="energy")
    lon = MapAxis("fov_lon", np.linspace(-6, 6, 25), "deg", "lin")
    lat = MapAxis("fov_lat", np.linspace(-6, 6, 25), "deg", "lin")
    r2 = lon.center[:, None] ** 2 + lat.center[None, :] ** 2
    ec = e_reco.center[:, None, None]
    rate = bkg_norm * 1e6 * ec**-2.7 * (1 - np.exp(-((ec / 0.05) ** 2))) * np.exp(-0.5 * r2 / 2.5**2)[None]
    bkg = Background3D(e_reco, lon, lat, rate, "RADEC")
    return {"aeff": EffectiveArea2D(e_true, offset, aeff, {"LO_THRES": 0.1, "HI_THRES": 100.0}), "psf": psf, "edisp": edisp, "bkg": bkg}


def fake_events(ra_pnt: float, dec_pnt: float, n: int, *, rng: np.random.Generator, tstart: float, duration: float) -> dict:
    """Events spread over the FoV (uniform in a 3 deg disc) with a power-law energy spectrum."""
    r = 3.0 * np.sqrt(rng.uniform(size=n))
    phi = rng.uniform(0, 2 * np.pi, size=n)
    ra, dec = fov_to_sky(r * np.cos(phi), r * np.sin(phi), ra_pnt, dec_pnt)
    energy = 0.05 * (1 - rng.uniform(size=n)) ** (-1 / 1.7)
    return {
        "EVENT_ID": np.arange(1, n + 1),
        "TIME": np.sort(tstart + duration * rng.uniform(size=n)),
        "RA": ra.astype(np.float32),
        "DEC": dec.astype(np.float32),
        "ENERGY": energy.astype(np.float32),
        "MC_ID": rng.integers(0, 3, size=n).astype(np.int32),
    }


def write_store(folder: Path, observations: list[tuple[int, float, float]], *, n_events: int = 2000, seed: int = 0, gzip: bool = True) -> Path:
    """Write a data store; ``observations`` are (obs_id, RA, Dec).  Returns the index folder."""
    folder = Path(folder)
    data_dir, caldb, index = folder / "data", folder / "caldb", folder / "index"
    for d in (data_dir, caldb, index):
        d.mkdir(parents=True, exist_ok=True)
    irfs = make_irfs()
    write_irfs(caldb / "irf.fits", {"EFFECTIVE AREA": irfs["aeff"], "POINT SPREAD FUNCTION": irfs["psf"], "ENERGY DISPERSION": irfs["edisp"], "BACKGROUND": irfs["bkg"]})
    rng = np.random.default_rng(seed)
    obs_rows, hdu_rows = [], []
    ext = ".fits.gz" if gzip else ".fits"
    for k, (obs_id, ra, dec) in enumerate(observations):
        tstart, duration = 1e8 + k * 3600.0, 1800.0
        ev = fake_events(ra, dec, n_events, rng=rng, tstart=tstart, duration=duration)
        cols = [fits.Column(name, fmt, unit=unit, array=ev[name]) for name, fmt, unit in (("EVENT_ID", "K", None), ("TIME", "D", "s"), ("RA", "E", "deg"), ("DEC", "E", "deg"), ("ENERGY", "E", "TeV"), ("MC_ID", "J", None))]
        events = fits.BinTableHDU.from_columns(cols, name="EVENTS")
        head = {"OBS_ID": obs_id, "RA_PNT": ra, "DEC_PNT": dec, "DEADC": 0.95, "ONTIME": duration, "LIVETIME": 0.95 * duration, "MJDREFI": int(MJDREF), "MJDREFF": MJDREF % 1, "TSTART": tstart, "TSTOP": tstart + duration}
        events.header.update(head)
        gti = fits.BinTableHDU.from_columns([fits.Column("START", "D", unit="s", array=[tstart]), fits.Column("STOP", "D", unit="s", array=[tstart + duration])], name="GTI")
        gti.header.update({"MJDREFI": int(MJDREF), "MJDREFF": MJDREF % 1})
        name = f"events_{obs_id:06d}{ext}"
        fits.HDUList([fits.PrimaryHDU(), events, gti]).writeto(data_dir / name, overwrite=True)
        obs_rows.append((obs_id, ra, dec, tstart, tstart + duration, duration, 0.95 * duration, 0.95, 0.1))
        for t, c, d, f, h in (("events", "events", "../data", name, "EVENTS"), ("gti", "gti", "../data", name, "GTI"), ("aeff", "aeff_2d", "../caldb", "irf.fits", "EFFECTIVE AREA"), ("psf", "psf_3gauss", "../caldb", "irf.fits", "POINT SPREAD FUNCTION"), ("edisp", "edisp_2d", "../caldb", "irf.fits", "ENERGY DISPERSION"), ("bkg", "bkg_3d", "../caldb", "irf.fits", "BACKGROUND")):
            hdu_rows.append((obs_id, t, c, d, f, h))
    obs = Table(rows=obs_rows, names=("OBS_ID", "RA_PNT", "DEC_PNT", "TSTART", "TSTOP", "ONTIME", "LIVETIME", "DEADC", "SAFE_ENERGY_LO"))
    obs.meta.update({"EXTNAME": "OBS_INDEX", "MJDREFI": int(MJDREF), "MJDREFF": MJDREF % 1})
    hdu = Table(rows=hdu_rows, names=("OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR", "FILE_NAME", "HDU_NAME"))
    hdu.meta["EXTNAME"] = "HDU_INDEX"
    obs.write(index / "obs-index.fits.gz", overwrite=True)
    hdu.write(index / "hdu-index.fits.gz", overwrite=True)
    return index
