"""Independent evaluation of ctools XML source spectra, for checking the converter.

Written from the GammaLib model definitions, deliberately without the package's models
or readers: intensities in ph cm⁻² s⁻¹ MeV⁻¹ at energies in MeV, integrated on a dense
logarithmic grid (trapezoid in ln E).  Phase curves are averaged by dense sampling of
the periodic linear interpolation; map-cube spectra are summed with pixel solid angles
from the Jacobian of astropy's WCS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def _par(elem, *names) -> float:
    for n in names:
        p = elem.find(f"parameter[@name='{n}']")
        if p is not None:
            return float(p.get("value")) * float(p.get("scale", "1"))
    raise KeyError(f"none of {names} in {elem.get('type')}")


def _loglog(e_nodes, v_nodes, energy):
    """Log-log interpolation, extrapolated with the outer segments' power laws."""
    x, y = np.log(e_nodes), np.log(np.maximum(v_nodes, 1e-300))
    t = np.log(energy)
    i = np.clip(np.searchsorted(x, t) - 1, 0, len(x) - 2)
    slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
    return np.exp(y[i] + slope * (t - x[i]))


def intensity(spec, energy, base: Path):
    """dN/dE (ph cm-2 s-1 MeV-1) of a <spectrum> element at ``energy`` (MeV)."""
    kind = spec.get("type")
    if kind == "PowerLaw2" or (kind == "PowerLaw" and spec.find("parameter[@name='PhotonFlux']") is not None):
        flux, g = _par(spec, "PhotonFlux", "Integral"), _par(spec, "Index")
        lo, hi = _par(spec, "LowerLimit"), _par(spec, "UpperLimit")
        return flux * (g + 1) * energy**g / (hi ** (g + 1) - lo ** (g + 1))
    if kind == "PowerLaw":
        return _par(spec, "Prefactor") * (energy / _par(spec, "PivotEnergy", "Scale")) ** _par(spec, "Index")
    if kind in ("ExponentialCutoffPowerLaw", "ExpCutoff"):
        k, g = _par(spec, "Prefactor"), _par(spec, "Index")
        ec, e0 = _par(spec, "CutoffEnergy", "Cutoff"), _par(spec, "PivotEnergy", "Scale")
        return k * (energy / e0) ** g * np.exp(-energy / ec)
    if kind == "SuperExponentialCutoffPowerLaw":
        k, g1, g2 = _par(spec, "Prefactor"), _par(spec, "Index1"), _par(spec, "Index2")
        ec, e0 = _par(spec, "CutoffEnergy"), _par(spec, "PivotEnergy")
        return k * (energy / e0) ** g1 * np.exp(-((energy / ec) ** g2))
    if kind == "LogParabola":
        k, g, eta, e0 = (_par(spec, n) for n in ("Prefactor", "Index", "Curvature", "PivotEnergy"))
        x = energy / e0
        return k * x ** (g + eta * np.log(x))
    if kind == "BrokenPowerLaw":
        k, g1, g2, eb = (_par(spec, n) for n in ("Prefactor", "Index1", "Index2", "BreakEnergy"))
        return k * np.where(energy < eb, (energy / eb) ** g1, (energy / eb) ** g2)
    if kind == "SmoothBrokenPowerLaw":
        k, g1, g2 = _par(spec, "Prefactor"), _par(spec, "Index1"), _par(spec, "Index2")
        e0, eb, beta = _par(spec, "PivotEnergy"), _par(spec, "BreakEnergy"), _par(spec, "BreakSmoothness")
        return k * (energy / e0) ** g1 * (1 + (energy / eb) ** ((g1 - g2) / beta)) ** (-beta)
    if kind in ("Constant", "ConstantValue"):
        return np.full_like(energy, _par(spec, "Normalization", "Value"))
    if kind == "NodeFunction":
        e = np.array([_par(n, "Energy") for n in spec.findall("node")])
        v = np.array([_par(n, "Intensity") for n in spec.findall("node")])
        return _loglog(e, v, energy)
    if kind == "FileFunction":
        data = np.loadtxt(base / spec.get("file"))
        return _par(spec, "Normalization") * _loglog(data[:, 0], data[:, 1], energy)
    if kind == "Composite":
        return sum(intensity(s, energy, base) for s in spec.findall("spectrum"))
    raise NotImplementedError(kind)


def _pixel_solid_angle(header) -> np.ndarray:
    w = WCS(header).celestial
    ny, nx = header["NAXIS2"], header["NAXIS1"]
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    h = 1e-3

    def world(xx, yy):
        lon, lat = w.wcs_pix2world(xx, yy, 0)
        return np.radians(lon), np.radians(lat)

    lon_x1, lat_x1 = world(x + h, y)
    lon_x0, lat_x0 = world(x - h, y)
    lon_y1, lat_y1 = world(x, y + h)
    lon_y0, lat_y0 = world(x, y - h)
    _, lat = world(x, y)
    dlon_dx = ((lon_x1 - lon_x0 + np.pi) % (2 * np.pi) - np.pi) / (2 * h)
    dlon_dy = ((lon_y1 - lon_y0 + np.pi) % (2 * np.pi) - np.pi) / (2 * h)
    dlat_dx, dlat_dy = (lat_x1 - lat_x0) / (2 * h), (lat_y1 - lat_y0) / (2 * h)
    return np.abs(dlon_dx * dlat_dy - dlon_dy * dlat_dx) * np.cos(lat)


def cube_spectrum(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Energies (MeV) and the spatially integrated cube (ph cm-2 s-1 MeV-1)."""
    with fits.open(path) as hl:
        cube = np.nan_to_num(np.asarray(hl[0].data, float))
        omega = _pixel_solid_angle(hl[0].header)
        energy = np.asarray(hl["ENERGIES"].data.field(0), float)
    return energy, np.sum(np.clip(cube, 0, None) * omega, axis=(1, 2))


def phase_mean(path: Path) -> float:
    with fits.open(path) as hl:
        phase, norm = np.asarray(hl[1].data["PHASE"], float), np.asarray(hl[1].data["NORM"], float)
    grid = np.linspace(0.0, 1.0, 200_001)
    xp = np.concatenate([[phase[-1] - 1], phase, [phase[0] + 1]])
    fp = np.concatenate([[norm[-1]], norm, [norm[0]]])
    return float(np.mean(np.interp(grid, xp, fp)))


def light_mean(path: Path) -> float:
    with fits.open(path) as hl:
        time, norm = np.asarray(hl[1].data["TIME"], float), np.asarray(hl[1].data["NORM"], float)
    grid = np.linspace(time[0], time[-1], 200_001)
    return float(np.mean(np.interp(grid, time, norm)))


def source_flux(src, base: Path, emin: float, emax: float, *, n: int = 20_001) -> float:
    """Integral flux (ph cm-2 s-1) of a <source> between ``emin`` and ``emax`` (MeV)."""
    energy = np.geomspace(emin, emax, n)
    spec, spat = src.find("spectrum"), src.find("spatialModel")
    if spat.get("type") == "DiffuseMapCube":
        e_nodes, f_nodes = cube_spectrum(base / spat.get("file"))
        dnde = _loglog(e_nodes, f_nodes, energy) * _par(spec, "Normalization", "Value")
    else:
        dnde = intensity(spec, energy, base)
    y = dnde * energy
    flux = float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(np.log(energy))))
    if spat.get("type") in ("DiffuseMap", "DiffuseMapCube", "DiffuseIsotropic"):
        for name in ("Normalization", "Value"):
            p = spat.find(f"parameter[@name='{name}']")
            if p is not None:
                flux *= float(p.get("value")) * float(p.get("scale", "1"))
    temp = src.find("temporal")
    if temp is not None:
        flux *= _par(temp, "Normalization")
        if temp.get("type") == "PhaseCurve" and temp.get("normalize", "1") == "0":
            flux *= phase_mean(base / temp.get("file"))
        if temp.get("type") == "LightCurve":
            flux *= light_mean(base / temp.get("file"))
    return flux
