"""Per-source results of a group fit: parameters, errors, fluxes, npred, R68, flags.

:func:`source_record` turns one fitted :class:`~gpscat.models.sky.SkyModel` (with the
group's covariance in ``models``) into a flat dict of the values of the SOURCES table
(columns in :mod:`gpscat.io.fit_results`).  Units: deg, TeV, cm⁻² s⁻¹ (TeV⁻¹), erg.

Bit flags (``Flags``, also documented in docs/catalog.md):

====  ==================  ==============================================================
bit   name                meaning
====  ==================  ==============================================================
1     NOT_CONVERGED       the group's final fit did not converge (values are its last)
2     AT_BOUND            a free parameter of the source ended at one of its bounds
4     NEAR_EDGE           within ``edge_distance`` of the edge of a dataset's safe region
8     CONFUSED            another source's PSF-convolved 68 % circle covers most of this
                          one's (set by the catalog stage)
16    LOW_EXPOSURE        exposure below ``low_exposure`` × the dataset's maximum
32    NO_COVARIANCE       Hesse failed, its covariance is not accurate, or it gives an
                          amplitude error below half the Poisson limit amplitude/sqrt(Npred)
                          (a parameter at a bound may have no error without it: AT_BOUND)
64    FROM_RESIDUAL       the source was added by the residual search (no seed)
128   NOT_SETTLED         the source still moved at the last pass (> settle_sigma)
256   FIT_FAILED          the group's fit failed; values are the start model's
512   COV_CONDITIONAL     the group's Hesse was inaccurate: the source's covariance is
                          from a fit of its own parameters with the rest of the group
                          fixed (correlations with the other members ignored)
====  ==================  ==============================================================
"""

from __future__ import annotations

import numpy as np

from gpscat.core.association import R68_PER_SIGMA
from gpscat.core.dataset import MapDataset
from gpscat.core.fluxes import (
    TEV_TO_ERG,
    band_energy_flux,
    band_flux,
    position_error,
    propagate_error,
)
from gpscat.core.geom import angular_separation, to_frame
from gpscat.core.npred import DatasetEvaluator
from gpscat.core.source_models import model_r68, spatial_kind
from gpscat.models.sky import Models, SkyModel

__all__ = [
    "FLAGS",
    "N_COV",
    "band_column",
    "at_bound",
    "below_poisson_limit",
    "containment_radius",
    "edge_and_exposure",
    "source_record",
]

FLAGS = {
    "NOT_CONVERGED": 1,
    "AT_BOUND": 2,
    "NEAR_EDGE": 4,
    "CONFUSED": 8,
    "LOW_EXPOSURE": 16,
    "NO_COVARIANCE": 32,
    "FROM_RESIDUAL": 64,
    "NOT_SETTLED": 128,
    "FIT_FAILED": 256,
    "COV_CONDITIONAL": 512,
}
#: size of the per-source covariance block stored in the table (padded with NaN)
N_COV = 10
_SIZE_PARAMETER = {"gauss": "sigma", "disk": "r_0", "gauss-general": "r_0", "shell": "radius"}
_INDEX_PARAMETER = {"pl": "index", "lp": "alpha", "ecpl": "index"}


def band_column(emin: float, emax: float) -> str:
    """Column name of a band flux: ``Flux_50GeV_1TeV`` for (0.05, 1) TeV."""

    def fmt(e):
        v, unit = (e * 1e3, "GeV") if e < 1 else (e, "TeV")
        return f"{v:.4g}".replace(".", "p") + unit

    return f"Flux_{fmt(emin)}_{fmt(emax)}"


def at_bound(model: SkyModel, *, rtol: float = 1e-3) -> bool:
    """Whether a free parameter of ``model`` sits at one of its bounds."""
    return any(not p.frozen and p.at_bound(rtol) for p in model.parameters)


def containment_radius(image: np.ndarray, sep: np.ndarray, fraction: float = 0.68) -> float:
    """Radius (deg) around the centre holding ``fraction`` of a non-negative image."""
    w = np.clip(np.nan_to_num(np.ravel(image)), 0, None)
    if not w.sum() > 0:
        return np.nan
    s = np.ravel(sep)
    order = np.argsort(s, kind="stable")
    cum = np.cumsum(w[order])
    return float(np.interp(fraction * cum[-1], cum, s[order]))


def edge_and_exposure(dataset: MapDataset, lon: float, lat: float, *, edge_distance: float) -> tuple[bool, float]:
    """(near the edge of the safe region or the map, exposure relative to the map's maximum)
    at a galactic position."""
    geom = dataset.geom
    x, y = geom.coord_to_pix(lon, lat, "galactic")
    nx, ny = geom.npix
    margin = edge_distance / geom.binsz
    near = not (margin - 0.5 <= float(x) <= nx - 0.5 - margin and margin - 0.5 <= float(y) <= ny - 0.5 - margin)
    slices = geom.cutout_slices(lon, lat, (2 * edge_distance + 2 * geom.binsz,) * 2, frame="galactic")
    if slices is None:
        return True, 0.0
    safe = dataset.mask_safe.data[(...,) + slices].any(axis=0) if dataset.mask_safe is not None else None
    inside = geom.slice(*slices).separation(lon, lat, frame="galactic") <= edge_distance
    if safe is not None and not np.all(safe[inside]):
        near = True
    expo = np.nan_to_num(np.asarray(dataset.exposure.data, float)).sum(axis=0)
    ix, iy, ok = geom.coord_to_idx(lon, lat, "galactic")
    rel = float(expo[int(iy), int(ix)] / expo.max()) if ok and expo.max() > 0 else 0.0
    return near, rel


def _param(model, name: str) -> tuple[float, float]:
    p = model.parameters[name]
    return p.value, (p.error if p.error > 0 and not p.frozen else np.nan)


def below_poisson_limit(amplitude: float, error: float, npred: float, *, factor: float = 0.5) -> bool:
    """True when a fitted amplitude's error is impossibly small: below ``factor`` times the
    Poisson limit ``amplitude / sqrt(npred)`` that even a background-free source of ``npred``
    counts cannot beat (Cramér-Rao).  Seen when Hesse's finite differences straddle a kink of
    the likelihood: the covariance is then meaningless although Hesse reports success."""
    if not (np.isfinite(error) and np.isfinite(amplitude) and npred > 0 and amplitude != 0):
        return False
    return bool(error < factor * abs(amplitude) / np.sqrt(npred))


def source_record(model: SkyModel, models: Models, datasets, *, ts: float, ts_datasets: dict[str, float],
                  bands, energy_flux_band, edge_distance: float, low_exposure: float, flags: int = 0) -> dict:
    """The SOURCES-table values of one fitted source (see the module docstring).

    ``datasets`` are the full survey datasets (npred, R68, edge and exposure checks);
    ``flags`` carries the group-level bits (fit status, residual origin, settling).
    """
    sp, spec = model.spatial_model, model.spectral_model
    kind, skind = spatial_kind(sp), spec.tag[1]
    lon, lat = sp.position_in("galactic")
    ra, dec = to_frame(lon, lat, "galactic", "icrs")
    rec: dict = {"Spatial_Model": sp.tag[0], "Spectral_Model": spec.tag[0], "GLON": lon % 360.0, "GLAT": lat,
                 "RA": float(ra), "DEC": float(dec)}
    rec["GLON_Err"], rec["GLAT_Err"] = (_param(sp, "lon_0")[1], _param(sp, "lat_0")[1])
    try:
        pe = position_error(model, models)
        ok = pe.semi_major > 0
        rec["Pos_Err_68"] = R68_PER_SIGMA * np.sqrt(pe.semi_major * pe.semi_minor) if ok else np.nan
        rec["Pos_Err_95"] = pe.r95 if ok else np.nan
    except ValueError:
        rec["Pos_Err_68"] = rec["Pos_Err_95"] = np.nan
    size = _SIZE_PARAMETER.get(kind)
    rec["Radius"], rec["Radius_Err"] = _param(sp, size) if size else (0.0, np.nan)
    rec["Width"], rec["Width_Err"] = _param(sp, "width") if kind == "shell" else (np.nan, np.nan)
    rec["Eta"], rec["Eta_Err"] = _param(sp, "eta") if kind == "gauss-general" else (np.nan, np.nan)
    if "e" in sp.parameter_names():
        rec["Elongation"], rec["Elongation_Err"] = _param(sp, "e")
        rec["Phi"], rec["Phi_Err"] = _param(sp, "phi") if not sp.e.frozen else (np.nan, np.nan)
    else:
        rec["Elongation"], rec["Elongation_Err"], rec["Phi"], rec["Phi_Err"] = 0.0, np.nan, np.nan, np.nan
    rec["R68_Model"] = model_r68(sp)
    # spectrum
    rec["Index"], rec["Index_Err"] = _param(spec, _INDEX_PARAMETER.get(skind, "index")) if skind in _INDEX_PARAMETER else (np.nan, np.nan)
    rec["Beta"], rec["Beta_Err"] = _param(spec, "beta") if skind == "lp" else (np.nan, np.nan)
    if skind == "ecpl":
        lam, lam_err = _param(spec, "lambda_")
        rec["Lambda"], rec["Lambda_Err"] = lam, lam_err
        rec["Cutoff_Energy"] = 1.0 / lam if lam > 0 else np.inf
        rec["Cutoff_Energy_Err"] = lam_err / lam**2 if lam > 0 else np.nan
    else:
        rec["Lambda"] = rec["Lambda_Err"] = rec["Cutoff_Energy"] = rec["Cutoff_Energy_Err"] = np.nan
    rec["Amplitude"], rec["Amplitude_Err"] = _param(spec, "amplitude")
    rec["Reference_Energy"] = spec.parameters["reference"].value
    free = [p for p in spec.parameters if not p.frozen]
    cov = models.covariance_of(free) if free else np.zeros((0, 0))
    dnde, dnde_err = propagate_error(lambda: spec(1.0), free, cov)
    rec["DNDE_1TeV"], rec["DNDE_1TeV_Err"] = float(dnde), float(dnde_err)
    for lo, hi in bands:
        f, fe = band_flux(model, models, lo, hi)
        rec[band_column(lo, hi)], rec[band_column(lo, hi) + "_Err"] = float(f), float(fe)
    ef, efe = band_energy_flux(model, models, *energy_flux_band)
    rec["Energy_Flux"], rec["Energy_Flux_Err"] = float(ef) * TEV_TO_ERG, float(efe) * TEV_TO_ERG
    # npred, R68, edge and exposure per dataset
    npred_total, best, best_ts = 0.0, None, -np.inf
    near_any, low = False, False
    for ds in datasets:
        image = DatasetEvaluator(ds, [model]).npred_source(model)
        image = np.where(ds.mask(), image, 0.0).sum(axis=0)
        rec[f"Npred_{ds.name}"] = float(image.sum())
        npred_total += float(image.sum())
        lon_g, lat_g = ds.geom.get_coord(frame="galactic")
        rec[f"R68_{ds.name}"] = containment_radius(image, angular_separation(lon_g, lat_g, lon, lat))
        near, rel = edge_and_exposure(ds, lon, lat, edge_distance=edge_distance)
        near_any |= near
        tsd = ts_datasets.get(ds.name, np.nan)
        rec[f"TS_{ds.name}"] = tsd
        score = tsd if np.isfinite(tsd) else float(image.sum()) * 1e-9
        if score > best_ts:
            best, best_ts, low = ds.name, score, rel < low_exposure
    rec["Npred"] = npred_total
    rec["R68"] = rec[f"R68_{best}"] if best else np.nan
    rec["TS"] = ts
    rec["Sqrt_TS"] = float(np.sqrt(ts)) if np.isfinite(ts) and ts > 0 else (0.0 if np.isfinite(ts) else np.nan)
    if at_bound(model):
        flags |= FLAGS["AT_BOUND"]
    if near_any:
        flags |= FLAGS["NEAR_EDGE"]
    if low:
        flags |= FLAGS["LOW_EXPOSURE"]
    params = [p for p in model.parameters if not p.frozen]
    labels = [lab for p, lab in zip(model.parameters, model.parameter_labels(), strict=True) if not p.frozen]
    cov = models.covariance_of(params) if params else np.zeros((0, 0))
    block = np.full((N_COV, N_COV), np.nan)
    n = min(len(params), N_COV)
    block[:n, :n] = cov[:n, :n]
    # a parameter held at its bound for the errors (AT_BOUND) has none; the others must
    measured = np.array([not p.at_bound() for p in params], dtype=bool)
    if params and not np.all(np.isfinite(np.diag(cov)[measured])) or (params and not np.any(np.diag(cov) > 0)):
        flags |= FLAGS["NO_COVARIANCE"]
    elif below_poisson_limit(rec["Amplitude"], rec["Amplitude_Err"], npred_total):
        flags |= FLAGS["NO_COVARIANCE"]
    rec["Covariance"] = block
    rec["Covariance_Parameters"] = ",".join(lab.split(".")[-1] for lab in labels[:N_COV])
    rec["Flags"] = int(flags)
    return rec
