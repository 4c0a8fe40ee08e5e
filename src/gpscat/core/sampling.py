"""Event sampling through the IRFs: source photons and background events.

Pure, vectorised functions; all randomness comes from an explicit ``np.random.Generator``
and is drawn in a fixed order, so a seed fixes the events bit for bit.

Sources (:func:`sample_source_events`).  The true arrival direction is drawn from the
spatial model on a fine grid (:func:`source_grid`: each pixel's flux fraction from
:func:`~gpscat.models.spatial.integrate_geom`, then a uniform position inside the pixel;
point sources exactly at their position), weighted by the exposure at the pixel's offset.
The true energy is drawn from ``flux(E) · A_eff(E, offset)`` on a fine energy grid
(:class:`ExposureTable`; a power law of the local spectral slope inside each fine bin).
The number of events is Poisson with mean
``npred = 1e4 · livetime · Σ_pixels fraction · Σ_E A_eff(E, offset) ∫_E flux dE``.
The reconstructed direction is the true one moved by a PSF radius at a uniform position
angle; the reconstructed energy is ``μ · E_true`` with μ from the energy dispersion.

Background (:func:`sample_background_events`): the IRF rate integrated over fine energy
bins and FoV cells (:class:`BackgroundTable`, computed once per IRF), times the ontime,
sampled per (energy bin, cell), uniform in solid angle inside the cell, then rotated from
the FoV frame to the sky.  This is the same interpolant that the reduction integrates into
background maps, so the simulated counts follow the predicted background.

IRF interpolation.  PSF and energy dispersion tables are interpolated linearly between
their (E_true, offset) nodes, so the distribution at any point is a mixture of the node
distributions with the (bi)linear weights: we draw a node with those weights, then invert
that node's CDF (:func:`sample_migra`, :func:`sample_psf_radius`).  This is the same
distribution as inverting the interpolated CDF (e.g. ``EnergyDispersion2D.sample_migra``),
without an (events × bins) array.  Beyond the outer nodes the nearest node is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gpscat.core.fov import fov_to_sky
from gpscat.core.geom import WcsGeom, angular_separation, to_frame
from gpscat.core.irf import (
    Background2D,
    Background3D,
    EffectiveArea2D,
    EnergyDispersion2D,
    PSF3Gauss,
    PSFTable,
)
from gpscat.models.sky import SkyModel
from gpscat.models.spatial import SpatialModel, integrate_geom

__all__ = [
    "BackgroundTable",
    "EventSample",
    "ExposureTable",
    "SourceGrid",
    "background_table",
    "exposure_table",
    "offset_positions",
    "power_law_inverse_cdf",
    "predicted_counts",
    "sample_background_events",
    "sample_migra",
    "sample_psf_radius",
    "sample_source_events",
    "source_grid",
]

_DEG = np.pi / 180.0


class EventSample(NamedTuple):
    """Sampled events: ICRS direction (deg), reco and true energy (TeV; NaN for background)."""

    ra: np.ndarray
    dec: np.ndarray
    energy: np.ndarray
    energy_true: np.ndarray

    @classmethod
    def empty(cls) -> EventSample:
        return cls(*(np.zeros(0) for _ in range(4)))

    def __len__(self) -> int:  # type: ignore[override]
        return self.energy.size

    def select(self, mask) -> EventSample:
        return EventSample(*(a[mask] for a in self))


# ------------------------------------------------------------------ small pieces


def offset_positions(lon, lat, radius, position_angle):
    """Points at angular distance ``radius`` (deg) and ``position_angle`` (rad, from north
    through east) from (lon, lat) deg; exact on the sphere, broadcast. Returns (lon, lat) deg."""
    lon1, lat1, r = (np.asarray(a, dtype=float) * _DEG for a in (lon, lat, radius))
    pa = np.asarray(position_angle, dtype=float)
    sin_lat2 = np.sin(lat1) * np.cos(r) + np.cos(lat1) * np.sin(r) * np.cos(pa)
    lat2 = np.arcsin(np.clip(sin_lat2, -1.0, 1.0))
    dlon = np.arctan2(np.sin(pa) * np.sin(r) * np.cos(lat1), np.cos(r) - np.sin(lat1) * sin_lat2)
    return np.mod((lon1 + dlon) / _DEG, 360.0), lat2 / _DEG


def power_law_inverse_cdf(lo, hi, index, u) -> np.ndarray:
    """Inverse CDF of ``E^-index`` on [lo, hi] at the uniform deviates ``u``, broadcast."""
    lo, hi, index, u = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (lo, hi, index, u)))
    a = 1.0 - index
    log_ratio = np.log(hi / lo)
    flat = np.abs(a * log_ratio) < 1e-8
    a_safe = np.where(flat, 1.0, a)
    with np.errstate(over="ignore", invalid="ignore"):
        general = lo * (1.0 + u * np.expm1(a_safe * log_ratio)) ** (1.0 / a_safe)
    return np.where(flat, lo * np.exp(u * log_ratio), general)


def _local_index(edges: np.ndarray, values_at_edges: np.ndarray) -> np.ndarray:
    """Power-law index between consecutive edges (1 where undefined: log-uniform)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        g = -np.log(values_at_edges[1:] / values_at_edges[:-1]) / np.log(edges[1:] / edges[:-1])
    return np.where(np.isfinite(g), g, 1.0)


def _inverse_cdf_rows(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray):
    """Bin index and position inside the bin (0..1) of ``u`` in row ``rows`` of ``cdf``.

    ``cdf`` has shape (n_rows, n_edges), non-decreasing from 0 to 1 along each row.  The
    rows are searched at once: row r is shifted by 2r, so the flattened table is sorted.
    """
    n_rows, n_edges = cdf.shape
    flat = (cdf + 2.0 * np.arange(n_rows)[:, None]).ravel()
    pos = np.searchsorted(flat, u + 2.0 * rows, side="right") - 1
    j = np.clip(pos - rows * n_edges, 0, n_edges - 2)
    c0, c1 = cdf[rows, j], cdf[rows, j + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(c1 > c0, (u - c0) / (c1 - c0), 0.5)
    return j, np.clip(t, 0.0, 1.0)


def _corner_weights(axes: list[tuple[np.ndarray, str]], coords: list[np.ndarray]):
    """Flat node index and weight of the 2^k interpolation corners, shapes (n, 2^k).

    Linear weights in the scaled coordinate, clipped to [0, 1] (nearest node outside).
    """
    per_axis = []
    sizes = [nodes.size for nodes, _ in axes]
    for (nodes, scale), c in zip(axes, coords, strict=True):
        xp = np.log(nodes) if scale == "log" else nodes
        x = np.log(c) if scale == "log" else c
        if xp.size == 1:
            per_axis.append((np.zeros(x.shape, dtype=np.intp), np.zeros(x.shape)))
            continue
        i = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, xp.size - 2)
        w = np.clip((x - xp[i]) / (xp[i + 1] - xp[i]), 0.0, 1.0)
        per_axis.append((i, w))
    k = len(axes)
    index, weight = [], []
    for corner in range(2**k):
        flat = 0
        wt = 1.0
        for axis, (i, w) in enumerate(per_axis):
            upper = (corner >> axis) & 1
            node = np.minimum(i + upper, sizes[axis] - 1)
            flat = flat * sizes[axis] + node
            wt = wt * (w if upper else 1.0 - w)
        index.append(flat)
        weight.append(wt)
    return np.stack(index, axis=-1), np.stack(weight, axis=-1)


def _sample_node_mixture(node_cdf: np.ndarray, edges: np.ndarray, axes, coords, rng: np.random.Generator) -> np.ndarray:
    """Draw from the node mixture: ``node_cdf`` (n_nodes, n_edges), rows normalised (or all 0)."""
    index, weight = _corner_weights(axes, coords)
    valid_node = node_cdf[:, -1] > 0
    weight = np.where(valid_node[index], weight, 0.0)
    total = weight.sum(axis=1)
    u_corner = rng.uniform(size=total.size) * total
    pick = np.minimum((np.cumsum(weight, axis=1) <= u_corner[:, None]).sum(axis=1), weight.shape[1] - 1)
    rows = index[np.arange(total.size), pick]
    u = rng.uniform(size=total.size)
    j, t = _inverse_cdf_rows(node_cdf, rows, u)
    out = edges[j] + t * (edges[j + 1] - edges[j])
    return np.where(total > 0, out, np.nan)


def _normalised_rows(cdf: np.ndarray) -> np.ndarray:
    cdf = np.maximum.accumulate(np.clip(cdf, 0.0, None), axis=-1)
    total = cdf[:, -1:]
    return np.divide(cdf, total, out=np.zeros_like(cdf), where=total > 0)


def sample_migra(edisp: EnergyDispersion2D, energy_true, offset, *, rng: np.random.Generator) -> np.ndarray:
    """Migration μ = E_reco / E_true for each (E_true TeV, offset deg); NaN where the table is empty."""
    energy_true = np.asarray(energy_true, dtype=float).ravel()
    offset = np.broadcast_to(np.asarray(offset, dtype=float), energy_true.shape).ravel()
    e_nodes, o_nodes = edisp.energy_true.center, edisp.offset.center
    node_cdf = edisp.cdf(e_nodes[:, None], o_nodes[None, :]).reshape(e_nodes.size * o_nodes.size, -1)
    axes = [(e_nodes, "log"), (o_nodes, "lin")]
    return _sample_node_mixture(_normalised_rows(node_cdf), edisp.migra.edges, axes, [energy_true, offset], rng)


def sample_psf_radius(psf: PSF3Gauss | PSFTable, energy_true, offset, *, rng: np.random.Generator) -> np.ndarray:
    """Angular distance (deg) of the reconstructed from the true direction, one per event.

    ``PSF_3GAUSS``: a Gaussian component chosen by its flux weight, then a Rayleigh radius
    (exact for the small-angle Gaussians the PSF is made of).  ``PSF_TABLE``: node mixture
    and inverse of the node's containment (linear between the rad edges, as its
    ``containment_radius``).
    """
    energy_true = np.asarray(energy_true, dtype=float).ravel()
    offset = np.broadcast_to(np.asarray(offset, dtype=float), energy_true.shape).ravel()
    if isinstance(psf, PSF3Gauss):
        p = psf.parameters(energy_true, offset)
        sigmas = np.stack([p["sigma_1"], p["sigma_2"], p["sigma_3"]], axis=1)
        amps = np.stack([np.ones_like(p["ampl_2"]), p["ampl_2"], p["ampl_3"]], axis=1)
        weight = np.clip(amps, 0.0, None) * sigmas**2
        u_comp = rng.uniform(size=energy_true.size) * weight.sum(axis=1)
        pick = np.minimum((np.cumsum(weight, axis=1) <= u_comp[:, None]).sum(axis=1), 2)
        sigma = sigmas[np.arange(energy_true.size), pick]
        return sigma * np.sqrt(-2.0 * np.log1p(-rng.uniform(size=energy_true.size)))
    if isinstance(psf, PSFTable):
        e_nodes, o_nodes = psf.energy_true.center, psf.offset.center
        rad = psf.rad.edges
        cum = psf.containment(rad[None, None, :], e_nodes[:, None, None], o_nodes[None, :, None])
        node_cdf = _normalised_rows(cum.reshape(e_nodes.size * o_nodes.size, rad.size))
        axes = [(e_nodes, "log"), (o_nodes, "lin")]
        return _sample_node_mixture(node_cdf, rad, axes, [energy_true, offset], rng)
    raise TypeError(f"psf must be a PSF3Gauss or PSFTable, got {type(psf).__name__}")


# ------------------------------------------------------------------ sources


@dataclass(frozen=True, eq=False)
class ExposureTable:
    """Exposure (m² s) on a fine (true energy bin, offset node) grid of one observation setup."""

    energy_edges: np.ndarray  # TeV, (n_e + 1,)
    offsets: np.ndarray  # deg, (n_o,) evenly spaced from 0
    exposure: np.ndarray  # m² s, (n_e, n_o)
    offset_max: float

    @property
    def offset_step(self) -> float:
        return float(self.offsets[1] - self.offsets[0])


def exposure_table(
    aeff: EffectiveArea2D,
    *,
    livetime: float,
    energy_edges,
    offset_max: float,
    offset_step: float = 0.01,
) -> ExposureTable:
    """Effective area at the log-centres of ``energy_edges`` (TeV) on offsets 0..offset_max, × livetime (s)."""
    edges = np.asarray(energy_edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] <= 0:
        raise ValueError(f"energy_edges must be increasing positive values, got {edges}")
    if not livetime >= 0:
        raise ValueError(f"livetime must be >= 0 s, got {livetime}")
    if not 0 < offset_step < offset_max:
        raise ValueError(f"need 0 < offset_step < offset_max, got {offset_step}, {offset_max}")
    offsets = np.arange(int(np.ceil(offset_max / offset_step)) + 1) * offset_step
    centres = np.sqrt(edges[:-1] * edges[1:])
    expo = aeff.evaluate(centres[:, None], offsets[None, :]) * livetime
    return ExposureTable(edges, offsets, expo, float(offset_max))


@dataclass(frozen=True, eq=False)
class SourceGrid:
    """Where a source's photons come from: pixel centres (deg, in ``frame``) and flux fractions.

    ``geom`` is the fine pixel grid (``ix``, ``iy`` the pixels kept) for extended models,
    None for a point source (one "pixel" at the exact position).
    """

    frame: str
    lon: np.ndarray
    lat: np.ndarray
    fraction: np.ndarray
    geom: WcsGeom | None = None
    ix: np.ndarray | None = None
    iy: np.ndarray | None = None


def _grid_size(spatial: SpatialModel, binsz_max: float, max_pixels: int) -> tuple[float, float]:
    """(radius, pixel size) in deg of the sampling grid of an extended model."""
    radius = float(spatial.evaluation_radius)
    if not radius > 0:
        raise ValueError(f"spatial model {type(spatial).__name__} has no positive evaluation radius ({radius})")
    binsz = min(binsz_max, float(spatial.sample_size))
    return radius, max(binsz, 2 * radius / np.sqrt(max_pixels), 1e-4)


def grid_reach(spatial: SpatialModel, *, binsz_max: float = 0.01, max_pixels: int = 1_000_000) -> float:
    """Upper bound (deg) of the distance from the model's position of any pixel of its
    :func:`source_grid`: 0 for a point source, else the half-diagonal of the grid's square
    (a TAN pixel's angular distance from the tangent point is at most its projected distance)."""
    if spatial.is_point:
        return 0.0
    radius, binsz = _grid_size(spatial, binsz_max, max_pixels)
    return float(np.sqrt(2.0) * (radius + binsz))


def source_grid(spatial: SpatialModel, *, binsz_max: float = 0.01, max_pixels: int = 1_000_000) -> SourceGrid:
    """Sampling grid of a spatial model: a TAN grid centred on it, pixels ≤ ``binsz_max`` deg
    and ≤ the model's own sampling size, covering its evaluation radius."""
    lon0, lat0 = spatial.position
    if spatial.is_point:
        return SourceGrid(spatial.frame, np.array([lon0]), np.array([lat0]), np.array([1.0]))
    radius, binsz = _grid_size(spatial, binsz_max, max_pixels)
    geom = WcsGeom.create((lon0, lat0), 2 * radius + 2 * binsz, binsz, frame=spatial.frame, proj="TAN")
    frac = integrate_geom(spatial, geom)
    iy, ix = np.nonzero(frac > 0)
    lon, lat = geom.get_coord()
    return SourceGrid(spatial.frame, lon[iy, ix], lat[iy, ix], frac[iy, ix], geom, ix, iy)


def _spectral_tables(model: SkyModel, table: ExposureTable):
    """Integral flux per fine bin, local indices, counts per unit fraction vs offset and the
    per-offset-node CDF over energy."""
    edges = table.energy_edges
    flux = np.clip(np.asarray(model.spectral_model.integral(edges[:-1], edges[1:]), dtype=float), 0.0, None)
    index = _local_index(edges, np.asarray(model.spectral_model(edges), dtype=float))
    per_bin = 1e4 * flux[:, None] * table.exposure  # counts per unit spatial fraction, (n_e, n_o)
    counts_vs_offset = per_bin.sum(axis=0)
    cdf = np.concatenate([np.zeros((per_bin.shape[1], 1)), np.cumsum(per_bin.T, axis=1)], axis=1)
    return index, counts_vs_offset, _normalised_rows(cdf)


def _pointing_in(frame: str, pointing: tuple[float, float]) -> tuple[float, float]:
    lon, lat = to_frame(pointing[0], pointing[1], "icrs", frame)
    return float(lon), float(lat)


def _pixel_counts(grid: SourceGrid, counts_vs_offset: np.ndarray, table: ExposureTable, pointing) -> np.ndarray:
    plon, plat = _pointing_in(grid.frame, pointing)
    off = angular_separation(grid.lon, grid.lat, plon, plat)
    per_unit = np.interp(off, table.offsets, counts_vs_offset, right=0.0)
    return np.where(off < table.offset_max, grid.fraction * per_unit, 0.0)


def predicted_counts(model: SkyModel, grid: SourceGrid, table: ExposureTable, *, pointing: tuple[float, float]) -> np.ndarray:
    """Expected true-photon counts per grid pixel (within ``offset_max`` of the pointing, RA/Dec deg)."""
    _, counts_vs_offset, _ = _spectral_tables(model, table)
    return _pixel_counts(grid, counts_vs_offset, table, pointing)


def sample_source_events(
    model: SkyModel,
    grid: SourceGrid,
    table: ExposureTable,
    *,
    pointing: tuple[float, float],
    psf: PSF3Gauss | PSFTable,
    edisp: EnergyDispersion2D,
    rng: np.random.Generator,
    n_events: int | None = None,
) -> EventSample:
    """Photons of one source in one observation (pointing RA/Dec deg).

    ``n_events`` fixes the number of events (default: Poisson with the predicted mean).
    Events whose migration is undefined (empty dispersion table) are dropped.
    """
    index, counts_vs_offset, e_cdf = _spectral_tables(model, table)
    mu_pix = _pixel_counts(grid, counts_vs_offset, table, pointing)
    total = float(mu_pix.sum())
    n = int(rng.poisson(total)) if n_events is None else int(n_events)
    if n < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    if n == 0 or total <= 0:
        return EventSample.empty()
    pix_cdf = np.cumsum(mu_pix) / total
    pix = np.minimum(np.searchsorted(pix_cdf, rng.uniform(size=n), side="right"), mu_pix.size - 1)
    if grid.geom is None:
        lon, lat = grid.lon[pix], grid.lat[pix]
    else:
        x = grid.ix[pix] + rng.uniform(-0.5, 0.5, size=n)
        y = grid.iy[pix] + rng.uniform(-0.5, 0.5, size=n)
        lon, lat = grid.geom.pix_to_coord(x, y)
    plon, plat = _pointing_in(grid.frame, pointing)
    offset = angular_separation(lon, lat, plon, plat)

    rows = np.clip(np.rint(offset / table.offset_step).astype(np.intp), 0, table.offsets.size - 1)
    j, t = _inverse_cdf_rows(e_cdf, rows, rng.uniform(size=n))
    edges = table.energy_edges
    energy_true = power_law_inverse_cdf(edges[j], edges[j + 1], index[j], t)

    radius = sample_psf_radius(psf, energy_true, offset, rng=rng)
    lon, lat = offset_positions(lon, lat, radius, rng.uniform(0.0, 2 * np.pi, size=n))
    energy = sample_migra(edisp, energy_true, offset, rng=rng) * energy_true
    ra, dec = to_frame(lon, lat, grid.frame, "icrs")
    return EventSample(np.asarray(ra), np.asarray(dec), energy, energy_true).select(np.isfinite(energy))


# ------------------------------------------------------------------ background


@dataclass(frozen=True, eq=False)
class BackgroundTable:
    """Background rate (s⁻¹) per (fine reco-energy bin, FoV cell), with its flattened CDF."""

    energy_edges: np.ndarray  # TeV
    index: np.ndarray  # local power-law index per energy bin
    cell_lon: np.ndarray  # deg, FoV cell centres
    cell_lat: np.ndarray
    cell_size: float  # deg
    rate: np.ndarray  # s^-1, (n_e, n_cells)
    cdf: np.ndarray  # flattened normalised cumulative of ``rate``
    alignment: str
    offset_max: float

    @property
    def total_rate(self) -> float:
        return float(self.rate.sum())


def background_table(
    bkg: Background3D | Background2D,
    *,
    energy_edges,
    offset_max: float,
    cell_size: float = 0.05,
) -> BackgroundTable:
    """Integrate the background IRF over fine reco-energy bins (TeV) and FoV cells (deg).

    Missing table values are filled along energy and ``BKG_2D`` padded by one offset bin,
    as the reduction does (:func:`gpscat.core.reduce.make_background`).
    """
    edges = np.asarray(energy_edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] <= 0:
        raise ValueError(f"energy_edges must be increasing positive values, got {edges}")
    if not 0 < cell_size < offset_max:
        raise ValueError(f"need 0 < cell_size < offset_max, got {cell_size}, {offset_max}")
    if getattr(bkg, "fov_alignment", "RADEC") == "ALTAZ":
        raise ValueError("ALTAZ-aligned background IRFs cannot be simulated (the FoV turns during the observation); use a RADEC-aligned one")
    bkg = bkg.fill_missing_energy()
    n = int(np.ceil(offset_max / cell_size))
    centres = (np.arange(-n, n) + 0.5) * cell_size
    lon, lat = (a.ravel() for a in np.meshgrid(centres, centres, indexing="xy"))
    keep = angular_separation(lon, lat, 0.0, 0.0) < offset_max + cell_size
    lon, lat = lon[keep], lat[keep]
    lat0, lat1 = np.radians(lat - cell_size / 2), np.radians(lat + cell_size / 2)
    omega = np.radians(cell_size) * (np.sin(lat1) - np.sin(lat0))
    if isinstance(bkg, Background3D):
        per_sr = bkg.integrate(edges, lon, lat)
        alignment = bkg.fov_alignment
    elif isinstance(bkg, Background2D):
        per_sr = bkg.pad_offset().integrate(edges, angular_separation(lon, lat, 0.0, 0.0))
        alignment = "RADEC"
    else:
        raise TypeError(f"bkg must be a Background3D or Background2D, got {type(bkg).__name__}")
    rate = per_sr * omega[None, :]
    spectrum = rate.sum(axis=1) / np.diff(edges)
    log_c = np.log(np.sqrt(edges[:-1] * edges[1:]))
    with np.errstate(divide="ignore", invalid="ignore"):
        index = -np.gradient(np.log(spectrum), log_c) if edges.size > 2 else np.ones(1)
    index = np.where(np.isfinite(index), index, 1.0)
    total = rate.sum()
    cdf = np.cumsum(rate.ravel()) / total if total > 0 else np.zeros(rate.size)
    return BackgroundTable(edges, index, lon, lat, float(cell_size), rate, cdf, alignment, float(offset_max))


def sample_background_events(
    table: BackgroundTable,
    *,
    pointing: tuple[float, float],
    ontime: float,
    rng: np.random.Generator,
) -> EventSample:
    """Background events of one observation (pointing RA/Dec deg, ontime s), within ``offset_max``."""
    if not ontime >= 0:
        raise ValueError(f"ontime must be >= 0 s, got {ontime}")
    n = int(rng.poisson(table.total_rate * ontime))
    if n == 0:
        return EventSample.empty()
    flat = np.minimum(np.searchsorted(table.cdf, rng.uniform(size=n), side="right"), table.cdf.size - 1)
    k, c = np.divmod(flat, table.cell_lon.size)
    edges = table.energy_edges
    energy = power_law_inverse_cdf(edges[k], edges[k + 1], table.index[k], rng.uniform(size=n))
    half = 0.5 * table.cell_size
    lon = table.cell_lon[c] + rng.uniform(-half, half, size=n)
    s0, s1 = np.sin(np.radians(table.cell_lat[c] - half)), np.sin(np.radians(table.cell_lat[c] + half))
    lat = np.degrees(np.arcsin(s0 + rng.uniform(size=n) * (s1 - s0)))
    inside = angular_separation(lon, lat, 0.0, 0.0) < table.offset_max
    ra, dec = fov_to_sky(lon[inside], lat[inside], pointing[0], pointing[1], alignment=table.alignment)
    return EventSample(ra, dec, energy[inside], np.full(int(inside.sum()), np.nan))
