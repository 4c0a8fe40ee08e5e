"""Truth of a simulated survey: per injected source, what it is and how significant it should be.

For every source the model gives its position, morphology, size and band fluxes.  The
expected significance comes from the simulation itself, without sampling noise in the
answer: per observation and reco-energy band, the predicted counts of the source and the
distribution of its reconstructed directions (a fixed-seed Monte Carlo of ``n_mc`` events
per observation, weighted to the prediction) give the radius ``R68`` that holds 68% of
its events; the background predicted by the IRF in that circle then gives the Asimov
significance ``sqrt(TS)`` of a known-background counting experiment (Li & Ma with α → 0,
:func:`gpscat.core.stats.cash_significance` of ``n_on = s + b``).  Bands add their TS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpscat.core.fov import sky_to_fov
from gpscat.core.geom import angular_separation
from gpscat.core.irf import Background2D, Background3D
from gpscat.core.sampling import offset_positions, predicted_counts, sample_source_events
from gpscat.core.simulation import SimulationSetup
from gpscat.core.stats import cash_significance

__all__ = ["FLUX_BANDS", "source_truth", "spatial_summary", "weighted_quantile"]

#: true-energy bands (TeV) of the truth fluxes
FLUX_BANDS = ((0.05, 1.0), (1.0, 100.0))
_SIZE_PARAMETER = {"GaussianSpatialModel": "sigma", "GeneralizedGaussianSpatialModel": "r_0", "DiskSpatialModel": "r_0", "ShellSpatialModel": "radius", "Shell2SpatialModel": "r_0"}


def weighted_quantile(values, weights, q: float) -> float:
    """The ``q`` quantile of ``values`` with ``weights`` (NaN when the weights sum to 0)."""
    values = np.asarray(values, dtype=float)
    weights = np.asarray(weights, dtype=float)
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if values.size == 0 or weights.sum() <= 0:
        return float("nan")
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][min(np.searchsorted(cum, q * cum[-1]), values.size - 1)])


def spatial_summary(setup: SimulationSetup, i: int) -> dict:
    """Morphology summary of source ``i``: tag, size parameter, shell width, e, phi, R68 of the model."""
    spatial = setup.models[i].spatial_model
    tag = spatial.tag[0]
    values = spatial.values()
    size = values.get(_SIZE_PARAMETER.get(tag, ""), 0.0) if not spatial.is_point else 0.0
    grid = setup.grids[i]
    lon0, lat0 = spatial.position
    r68 = 0.0 if spatial.is_point else weighted_quantile(angular_separation(grid.lon, grid.lat, lon0, lat0), grid.fraction, 0.68)
    return {
        "spatial": tag,
        "size": float(size),
        "width": float(values["eta"] * values["r_0"] if tag == "Shell2SpatialModel" else values.get("width", 0.0)),
        "e": float(values.get("e", 0.0)),
        "phi": float(values.get("phi", 0.0)),
        "r68": float(r68),
    }


def _background_in_circle(bkg, centre, radius: float, pointing, band, ontime: float) -> float:
    """IRF background counts (reco band) in a circle, from a polar grid of 8 × 24 points."""
    if radius <= 0:
        return 0.0
    n_r, n_phi = 8, 24
    r = radius * np.sqrt((np.arange(n_r) + 0.5) / n_r)  # equal-area rings
    phi = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    lon, lat = offset_positions(centre[0], centre[1], r[:, None], phi[None, :])
    omega = 2 * np.pi * (1 - np.cos(np.radians(radius)))
    if isinstance(bkg, Background3D):
        fx, fy = sky_to_fov(lon, lat, pointing[0], pointing[1], alignment=bkg.fov_alignment)
        rate = bkg.fill_missing_energy().integrate(np.asarray(band), fx, fy)
    elif isinstance(bkg, Background2D):
        rate = bkg.fill_missing_energy().pad_offset().integrate(np.asarray(band), angular_separation(lon, lat, pointing[0], pointing[1]))
    else:
        raise TypeError(f"bkg must be a Background3D or Background2D, got {type(bkg).__name__}")
    return float(rate.mean() * omega * ontime)


def source_truth(
    setup: SimulationSetup,
    pointings: Sequence[tuple[float, float]],
    *,
    bands: Sequence[tuple[float, float]] = ((0.1, 1.0), (1.0, 100.0)),
    n_mc: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-source truth columns of a survey (see :data:`gpscat.io.simulation.TRUTH_COLUMNS`).

    Parameters
    ----------
    setup : SimulationSetup
        Models, IRFs and tables of the survey.
    pointings : sequence of (RA, Dec)
        Pointings (deg, ICRS), one per observation.
    bands : sequence of (min, max)
        Reco-energy bands (TeV) of the expected significances.
    n_mc : int
        Monte-Carlo events per (source, observation) for the event distributions.
    seed : int
        Seed of that Monte Carlo (the truth does not depend on the survey's seed).
    """
    if n_mc < 10:
        raise ValueError(f"n_mc must be >= 10, got {n_mc}")
    bands = [tuple(map(float, b)) for b in bands]
    for lo, hi in bands:
        if not 0 < lo < hi:
            raise ValueError(f"truth band must satisfy 0 < min < max, got {(lo, hi)}")
    n_src, n_band = len(setup.models), len(bands)
    cols: dict[str, list] = {k: [] for k in ("name", "mc_id", "spatial", "spectral", "glon", "glat", "ra", "dec", "size", "width", "e", "phi", "r68", "flux_lo", "flux_hi", "dnde_1tev", "npred", "n_obs")}
    band_cols = {k: np.full((n_src, n_band), np.nan) for k in ("npred_band", "r68_band", "npred_r68_band", "bkg_r68_band", "sqrt_ts_band")}
    sqrt_ts = np.zeros(n_src)
    bkg = setup.irfs.get("bkg")
    for i, model in enumerate(setup.models):
        spatial, spectral = model.spatial_model, model.spectral_model
        glon, glat = spatial.position_in("galactic")
        glon = glon % 360.0
        ra, dec = spatial.position_in("icrs")
        summary = spatial_summary(setup, i)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), i + 1]))
        npred, n_obs = 0.0, 0
        dist, weight, band_of, obs_of = [], [], [], []
        for j, pnt in enumerate(pointings):
            if not setup.reaches(i, pnt):
                continue
            mu = float(predicted_counts(model, setup.grids[i], setup.exposure, pointing=pnt).sum())
            if mu <= 0:
                continue
            npred += mu
            n_obs += 1
            ev = sample_source_events(model, setup.grids[i], setup.exposure, pointing=pnt, psf=setup.irfs["psf"], edisp=setup.irfs["edisp"], rng=rng, n_events=n_mc)
            b = np.full(len(ev), -1)
            for k, (lo, hi) in enumerate(bands):
                b[(ev.energy >= lo) & (ev.energy < hi)] = k
            dist.append(angular_separation(ev.ra, ev.dec, ra, dec))
            weight.append(np.full(len(ev), mu / n_mc))
            band_of.append(b)
            obs_of.append(np.full(len(ev), j))
        if dist:
            dist, weight, band_of, obs_of = (np.concatenate(a) for a in (dist, weight, band_of, obs_of))
        ts_total = 0.0
        for k, band in enumerate(bands):
            if not len(dist):
                break
            sel = band_of == k
            s_tot = float(weight[sel].sum())
            band_cols["npred_band"][i, k] = s_tot
            r68 = weighted_quantile(dist[sel], weight[sel], 0.68)
            if not np.isfinite(r68):
                continue
            s = float(weight[sel & (dist <= r68)].sum())
            b_tot = 0.0
            if bkg is not None:
                for j in np.unique(obs_of[sel]):
                    b_tot += _background_in_circle(bkg, (ra, dec), r68, pointings[j], band, setup.ontime)
            band_cols["r68_band"][i, k] = r68
            band_cols["npred_r68_band"][i, k] = s
            band_cols["bkg_r68_band"][i, k] = b_tot
            sig = float(cash_significance(s + b_tot, b_tot)) if b_tot > 0 else float("inf") if s > 0 else 0.0
            band_cols["sqrt_ts_band"][i, k] = sig
            ts_total += max(sig, 0.0) ** 2
        sqrt_ts[i] = np.sqrt(ts_total)
        (lo1, hi1), (lo2, hi2) = FLUX_BANDS
        for key, value in (
            ("name", model.name), ("mc_id", i + 1), ("spatial", summary["spatial"]), ("spectral", spectral.tag[0]),
            ("glon", glon), ("glat", glat), ("ra", ra), ("dec", dec), ("size", summary["size"]), ("width", summary["width"]),
            ("e", summary["e"]), ("phi", summary["phi"]), ("r68", summary["r68"]),
            ("flux_lo", float(spectral.integral(lo1, hi1))), ("flux_hi", float(spectral.integral(lo2, hi2))),
            ("dnde_1tev", float(spectral(1.0))), ("npred", npred), ("n_obs", n_obs),
        ):
            cols[key].append(value)
    out = {k: np.asarray(v) for k, v in cols.items()}
    out.update(band_cols)
    out["sqrt_ts"] = sqrt_ts
    return out
