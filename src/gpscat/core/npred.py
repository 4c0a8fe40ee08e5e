"""Predicted counts of a dataset: sources through the IRFs, plus the scaled background.

For a source (a :class:`~gpscat.models.sky.SkyModel`) in true-energy bin *t*::

    R[t]      = PSF_t ⊛ (exposure[t] · spatial fraction per pixel)        (m² s)
    npred[e]  = Σ_t edisp[t, e] · 1e4 · ∫_t dN/dE dE · R[t]               (counts)

evaluated on a pixel-aligned cutout of the dataset grid around the source (so the cost
scales with the source size, not the map), with the PSF and energy dispersion taken at the
cutout centre.  Point sources skip the convolution: their pixel fractions come from the PSF
evaluated at the exact offset of sub-pixel centres (:func:`~gpscat.core.response.point_response`)
times the exposure interpolated at the source, which keeps the likelihood smooth in the
position.  A dataset's observation footprints (:mod:`gpscat.core.footprints`) add the exact
terms of the observations whose safe-mask boundary crosses the source's cutout.  ``R`` is cached on the spatial parameter values and the spectral integrals on the
spectral ones, so a fit step that moves only spectral parameters costs one tensor product.

The background prediction is ``background · norm · (E/reference)^-tilt`` at reco-bin centres.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from scipy.fft import irfft2, next_fast_len, rfft2

from gpscat.core.dataset import MapDataset
from gpscat.core.geom import Map, WcsGeom, angular_separation, to_frame
from gpscat.core.response import (
    PsfProfile,
    cloud_in_cell,
    combine_profiles,
    edisp_matrix_at,
    interp_exposure,
    irf_corners,
    point_response,
    psf_kernels_shared,
    psf_profiles_shared,
    valid_pixels,
)
from gpscat.models.sky import FoVBackgroundModel, SkyModel
from gpscat.models.spatial import TemplateSpatialModel, integrate_geom, oversampling_factor

__all__ = ["PSF_CONTAINMENT", "DatasetEvaluator", "SourceEvaluator", "npred", "npred_background", "npred_source"]

log = logging.getLogger(__name__)

#: PSF containment at which the PSF is truncated (smoothly) and renormalised.
PSF_CONTAINMENT = 0.9999
_MARGIN_DEG = 0.1  # slack around a source before its cutout is re-centred
_MARGIN_PIX = 3
_MAX_SAMPLES = 4_000_000  # sub-pixels per plane of an extended model's cutout


def _box_geom(geom: WcsGeom, x0: int, y0: int, nx: int, ny: int) -> WcsGeom:
    """Pixel-aligned sub-grid of ``geom`` starting at pixel (x0, y0); may extend beyond it."""
    return replace(geom, crpix=(geom.crpix[0] - x0, geom.crpix[1] - y0), npix=(nx, ny))


class _KernelStack:
    """PSF kernels of all true-energy bins, Fourier-transformed once for a cutout shape.

    :meth:`convolve` convolves a (n_true, ny, nx) stack plane by plane ("same" output)
    with one batched real FFT pair.  ``support`` is the half-size (pixels) of the central
    region where the images can be non-zero: the FFT is padded only as much as needed for
    the kernel not to wrap flux from there back into the cutout.
    """

    def __init__(self, kernel_sets: list[list[np.ndarray]], shape: tuple[int, int], *, support: int | None = None):
        k = max(kern.shape[0] // 2 for kernels in kernel_sets for kern in kernels)
        half = min(shape) // 2
        pad = k if support is None else max(0, k + support - half)
        self.shape = shape
        self.fft_shape = (next_fast_len(shape[0] + pad, True), next_fast_len(shape[1] + pad, True))
        # kernel centre at index (0, 0), negative offsets wrapped: output aligned with input
        stack = np.zeros((len(kernel_sets), len(kernel_sets[0])) + self.fft_shape)
        for j, kernels in enumerate(kernel_sets):
            for i, kern in enumerate(kernels):
                h = kern.shape[0] // 2
                idy = np.arange(-h, h + 1) % self.fft_shape[0]
                idx = np.arange(-h, h + 1) % self.fft_shape[1]
                stack[j, i][np.ix_(idy, idx)] = kern
        self.kernel_fft = rfft2(stack)  # (n_sets, n_true, ...)
        self._weights = None
        self._combined = None

    def convolve(self, images: np.ndarray, weights) -> np.ndarray:
        """Convolve with the kernels interpolated with ``weights`` (one per kernel set)."""
        weights = np.asarray(weights, dtype=float)
        if self._weights is None or not np.array_equal(weights, self._weights):
            self._combined = np.tensordot(weights, self.kernel_fft, axes=1)
            self._weights = weights
        full = irfft2(rfft2(images, s=self.fft_shape) * self._combined, s=self.fft_shape)
        ny, nx = self.shape
        return full[:, :ny, :nx]


class SourceEvaluator:
    """Predicted counts of one sky model in one dataset, on a cutout, with caches.

    Parameters
    ----------
    model : SkyModel
    dataset : MapDataset
    psf_containment : float
        PSF containment at which the PSF is truncated (then renormalised).
    point_method : {"exact", "cic"}
        ``"exact"`` integrates the PSF over each pixel at the true offset of the source;
        ``"cic"`` reproduces gammapy: the flux is shared among the 4 nearest pixels with
        bilinear weights, then convolved with the pixel PSF kernel (which broadens the
        point-source image by ~1/6 pixel² in variance).
    """

    def __init__(self, model: SkyModel, dataset: MapDataset, *, psf_containment: float = PSF_CONTAINMENT, point_method: str = "exact"):
        if point_method not in ("exact", "cic"):
            raise ValueError(f"point_method must be 'exact' or 'cic', got {point_method!r}")
        if model.spatial_model is None:
            raise ValueError(f"model {model.name!r} has no spatial model: cannot predict maps")
        if not np.isfinite(model.spatial_model.evaluation_radius):
            raise ValueError(f"model {model.name!r}: {model.spatial_model.tag[0]} has no finite extent; not supported in predictions")
        self.model = model
        self.dataset = dataset
        self.psf_containment = psf_containment
        self.point_method = point_method
        self._psf_valid = valid_pixels(dataset.psf) if dataset.psf is not None else None
        self._edisp_valid = valid_pixels(dataset.edisp) if dataset.edisp is not None else None
        self._profiles_key = ""
        self._corners = None
        self._irf_cell = None
        self._geom: WcsGeom | None = None
        self._spatial_key = None
        self._spectral_key = None
        self._response: np.ndarray | None = None
        self._flux: np.ndarray | None = None
        self._npred: np.ndarray | None = None
        etrue = dataset.energy_axis_true
        self._etrue = etrue
        if dataset.edisp is None and not (dataset.energy_axis.nbin == etrue.nbin and np.allclose(dataset.energy_axis.edges, etrue.edges)):
            raise ValueError(f"dataset {dataset.name!r} has no edisp and its reco/true energy axes differ")

    # -- geometry
    def _position(self) -> tuple[float, float]:
        sp = self.model.spatial_model
        lon, lat = to_frame(sp.lon_0.value, sp.lat_0.value, sp.frame, self.dataset.geom.frame)
        return float(lon), float(lat)

    def _model_radius(self, lon: float, lat: float) -> float:
        """Evaluation radius of the model, capped to what can reach the dataset map."""
        r = self.model.spatial_model.evaluation_radius
        if not np.isfinite(r) or r < 0:
            r = 0.0
        geom = self.dataset.geom
        clon, clat = geom.center_coord
        reach = float(angular_separation(lon, lat, clon, clat)) + 0.5 * float(np.hypot(*geom.width))
        return min(r, reach)

    def _radius_needed(self) -> float:
        psf_r = float(self._profile.rmax.max()) if self._geom is not None else 0.0
        return self._model_radius(*self._position()) + psf_r

    def _needs_setup(self, lon: float, lat: float) -> bool:
        if self._geom is None:
            return True
        # distance from the pixel the cutout was built around (not the cutout's centre: a
        # cutout clipped by the map edge is off-centre, and must not be rebuilt every call)
        x, y = self.dataset.geom.coord_to_pix(lon, lat)
        cx, cy = self._setup_pix
        off = max(abs(float(x) - cx), abs(float(y) - cy)) * self._geom.binsz
        sp = self.model.spatial_model
        if not sp.is_point:
            f = oversampling_factor(sp, self.dataset.geom.binsz)
            if f > 2 * self._oversample or 2 * f < self._oversample:
                return True
        if self._irf_cell is not None and self._irf_weights(lon, lat)[1] != self._irf_cell:
            return True
        return off + self._radius_needed() > self._half_width - self._geom.binsz

    def _irf_weights(self, lon: float, lat: float):
        """Bilinear weights of the PSF's coarse pixels at the position, and their cell."""
        corners, weights, cell = irf_corners(self.dataset.psf, lon, lat, self.dataset.geom.frame, valid=self._psf_valid)
        if self._corners is not None and corners != self._corners:
            return None, None  # another cell (or another nearest valid pixel): set up again
        return weights, cell

    def _setup(self, lon: float, lat: float) -> None:
        ds, geom = self.dataset, self.dataset.geom
        frame, nbin = geom.frame, self._etrue.nbin
        if ds.psf is not None:
            self._corners = None
            corners, weights, self._irf_cell = irf_corners(ds.psf, lon, lat, frame, valid=self._psf_valid)
            self._profiles_key, self._profiles = psf_profiles_shared(ds.psf, corners, containment=self.psf_containment)
            self._corners = corners
            self._profile = combine_profiles(self._profiles, weights)
        else:
            self._profiles = [PsfProfile(np.zeros(nbin), np.zeros((nbin, 2)), np.zeros(nbin), np.zeros(nbin))]
            self._profiles_key = f"no-psf-{nbin}"
            self._profile = self._profiles[0]
        rmax = float(self._profile.rmax.max())
        margin = max(_MARGIN_DEG, _MARGIN_PIX * geom.binsz)
        half = self._model_radius(lon, lat) + rmax + margin
        x, y = (float(v) for v in geom.coord_to_pix(lon, lat))
        _, lat_g = geom.pix_to_coord(x, y)
        stretch = 1.0 / max(np.cos(np.radians(float(lat_g))), 0.05) if geom.proj == "CAR" else 1.0
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        self._setup_pix = (ix, iy)
        kx, ky = int(np.ceil(half * stretch / geom.binsz)) + 1, int(np.ceil(half / geom.binsz)) + 1
        # the cutout: the source's box, clipped to the map plus the PSF reach around it
        pad_x, pad_y = int(np.ceil((rmax + margin) * stretch / geom.binsz)) + 2, int(np.ceil((rmax + margin) / geom.binsz)) + 2
        x0, x1 = max(ix - kx, -pad_x), min(ix + kx + 1, geom.npix[0] + pad_x)
        y0, y1 = max(iy - ky, -pad_y), min(iy + ky + 1, geom.npix[1] + pad_y)
        self._half_width = half
        self._spatial_key = None
        self._npred = None
        self._outside = x1 <= x0 or y1 <= y0
        if self._outside:
            self._geom = _box_geom(geom, ix, iy, 1, 1)
            self._parent_sl = self._cut_sl = (slice(0, 0), slice(0, 0))
            return
        clipped = (x0, x1, y0, y1) != (ix - kx, ix + kx + 1, iy - ky, iy + ky + 1)
        cutout = _box_geom(geom, x0, y0, x1 - x0, y1 - y0)
        psl, csl = cutout.slices_in(geom)
        if any(s.stop <= s.start for s in psl):
            # the box lies in the PSF padding beyond the map edge: no bin of the map receives flux
            self._outside = True
            self._geom = _box_geom(geom, ix, iy, 1, 1)
            self._parent_sl = self._cut_sl = (slice(0, 0), slice(0, 0))
            return
        self._geom = cutout
        self._renormalize = not clipped
        self._coord_cache: dict = {}
        self._parent_sl, self._cut_sl = psl, csl
        expo = np.zeros((nbin,) + self._geom.shape)
        expo[(...,) + csl] = ds.exposure.data[(...,) + psl]
        self._exposure = expo
        self._footprints = self._footprint_terms(csl)
        # the stacked exposure without the crossing observations' masked parts: the exact
        # response is PSF ⊛ (rest · f) + Σ_i C_i · PSF ⊛ (E_i f), 1 + n convolutions
        self._exposure_rest = expo - sum(masked for _, _, masked in self._footprints) if self._footprints else expo
        sp = self.model.spatial_model
        self._oversample = 1 if sp.is_point else oversampling_factor(sp, geom.binsz)
        self._oversample = max(1, min(self._oversample, int(np.sqrt(_MAX_SAMPLES / expo[0].size))))
        self._fine = self._geom.upsample(self._oversample) if self._oversample > 1 else self._geom
        if sp.is_point and self.point_method == "exact":
            self._kernel_fft = None
        else:
            k = int(np.ceil(rmax * stretch / geom.binsz)) + 1
            kgeom = _box_geom(geom, ix - k, iy - k, 2 * k + 1, 2 * k + 1)
            kernels = [psf_kernels_shared(self._profiles_key, i, kgeom, p) for i, p in enumerate(self._profiles)]
            # pad the FFT only as far as flux from the model's support could wrap around
            support = int(np.ceil(self._model_radius(lon, lat) * stretch / geom.binsz)) + 2
            if clipped or isinstance(sp, TemplateSpatialModel):
                support = None
            self._kernel_fft = _KernelStack(kernels, self._geom.shape, support=support)
        log.debug("model %s: cutout %s px around (%.4f, %.4f)", self.model.name, self._geom.npix, lon, lat)

    def _footprint_terms(self, csl) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(mask image, exposure, masked exposure) on the cutout of each observation footprint whose mask
        boundary crosses the part of the cutout inside the map (:mod:`gpscat.core.footprints`)."""
        out = []
        for fp in self.dataset.footprints:
            (cy, cx), (fy, fx) = fp.geom.slices_in(self._geom)
            if cy.stop <= cy.start or cx.stop <= cx.start:
                continue
            mask = np.zeros(self._geom.shape)
            mask[cy, cx] = fp.mask[fy, fx]
            inside = mask[csl]
            if inside.all() or not inside.any():
                continue
            expo = np.zeros_like(self._exposure)
            expo[:, cy, cx] = fp.exposure[:, fy, fx]
            out.append((mask, expo, mask * expo))
        return out

    # -- evaluation
    def _compute_response(self, lon: float, lat: float) -> np.ndarray:
        sp = self.model.spatial_model
        weights = self._irf_weights(lon, lat)[0] if self.dataset.psf is not None else np.ones(1)
        if sp.is_point and self.point_method == "exact":
            profile = combine_profiles(self._profiles, weights)
            frac = point_response(self._geom, lon, lat, profile, coord_cache=self._coord_cache)
            x, y = (float(v) for v in self._geom.coord_to_pix(lon, lat))
            response = frac * interp_exposure(self._exposure, x, y)[:, None, None]
            for mask, expo, masked in self._footprints:  # C_i(r)·E_i(src) − (C_i E_i)(src), times the PSF
                response += frac * (mask * interp_exposure(expo, x, y)[:, None, None] - interp_exposure(masked, x, y)[:, None, None])
            return np.clip(response, 0, None)
        if sp.is_point:
            x, y = self._geom.coord_to_pix(lon, lat)
            frac = cloud_in_cell(self._geom.shape, float(x), float(y))
        elif isinstance(sp, TemplateSpatialModel) and sp.energy_nodes is not None:
            frac = integrate_geom(sp, self._geom, oversample=self._oversample, energy=self._etrue.center, fine=self._fine)
        else:
            frac = integrate_geom(sp, self._geom, oversample=self._oversample, fine=self._fine)
            # the sum is 1 up to sampling errors when the whole model is in the cutout:
            # renormalising removes those errors (smoothly in the parameters)
            if self._renormalize and not isinstance(sp, TemplateSpatialModel) and sp.evaluation_radius <= self._model_radius(lon, lat):
                total = frac.sum()
                frac = frac / total if total > 0 else frac
        response = self._kernel_fft.convolve(self._exposure_rest * frac, weights)
        for mask, expo, _ in self._footprints:
            response += mask * self._kernel_fft.convolve(expo * frac, weights)
        return np.clip(response, 0, None)

    def evaluate(self) -> tuple[tuple[slice, slice], np.ndarray]:
        """Predicted counts of the source: (parent slices, cutout data (n_reco, ny, nx))."""
        sp = self.model.spatial_model
        sp_key = (type(sp), sp.value_key(), sp.frame)
        sp_changed = sp_key != self._spatial_key
        lon, lat = self._position()
        # whether the cutout must be rebuilt depends on the spatial parameters only: with
        # them unchanged (a spectral step of the fit) the check is skipped (the key is None
        # before the first setup and while the source is outside the map)
        if sp_changed and self._needs_setup(lon, lat):
            self._setup(lon, lat)
            sp_changed = True
        if self._outside:
            return self._parent_sl, np.zeros((self.dataset.energy_axis.nbin, 0, 0))
        if sp_changed:
            ds = self.dataset
            self._edisp = (
                edisp_matrix_at(ds.edisp, lon, lat, ds.geom.frame, valid=self._edisp_valid)
                if ds.edisp is not None
                else np.eye(self._etrue.nbin)
            )
            resp = self._compute_response(lon, lat)[(...,) + self._cut_sl]
            self._cut_shape = resp.shape[1:]
            self._response = np.ascontiguousarray(resp.reshape(resp.shape[0], -1))  # (n_true, n_pix)
            self._spatial_key = sp_key
        spec_key = self.model.spectral_model.value_key()
        spec_changed = spec_key != self._spectral_key
        if spec_changed:
            self._flux = np.asarray(self.model.spectral_model.integral(self._etrue.lo, self._etrue.hi), dtype=float)
            self._spectral_key = spec_key
        if sp_changed or spec_changed or self._npred is None:
            weights = self._edisp * (1e4 * self._flux)[:, None]  # (n_true, n_reco)
            self._npred = (weights.T @ self._response).reshape((-1,) + self._cut_shape)
        return self._parent_sl, self._npred


def npred_background(dataset: MapDataset, model: FoVBackgroundModel | None) -> np.ndarray:
    """Background counts times ``norm · (E/reference)^-tilt`` at the reco-bin centres."""
    if dataset.background is None:
        return np.zeros(Map.expected_shape(dataset.geom, (dataset.energy_axis,)))
    bkg = np.asarray(dataset.background.data, dtype=float)
    if model is None:
        return bkg
    scale = model.spectral_model(dataset.energy_axis.center)
    return bkg * scale[:, None, None]


class DatasetEvaluator:
    """Total predicted counts of a dataset for a list of models, with per-source caches.

    Parameters
    ----------
    dataset : MapDataset
    models : iterable of SkyModel / FoVBackgroundModel
        Only those that apply to the dataset are used.
    """

    def __init__(self, dataset: MapDataset, models, *, psf_containment: float = PSF_CONTAINMENT, point_method: str = "exact"):
        self.dataset = dataset
        self.psf_containment = psf_containment
        self.point_method = point_method
        self._evaluators: dict[int, SourceEvaluator] = {}
        self._bkg_key = None
        self._bkg: np.ndarray | None = None
        self.set_models(models)

    def set_models(self, models) -> None:
        """Change the model list; source caches of models kept are reused."""
        models = [m for m in models if m.applies_to(self.dataset.name)]
        bkgs = [m for m in models if isinstance(m, FoVBackgroundModel)]
        if len(bkgs) > 1:
            raise ValueError(f"dataset {self.dataset.name!r} has {len(bkgs)} background models; expected at most 1")
        self.background_model = bkgs[0] if bkgs else None
        self.sky_models = [m for m in models if isinstance(m, SkyModel)]
        keep = {}
        for m in self.sky_models:
            keep[id(m)] = self._evaluators.get(id(m)) or SourceEvaluator(
                m, self.dataset, psf_containment=self.psf_containment, point_method=self.point_method
            )
        self._evaluators = keep
        self._bkg_key = None

    def background_scale(self) -> np.ndarray:
        """Per reco-energy factor of the background: ``norm·(E/reference)^-tilt`` (or 1)."""
        if self.background_model is None:
            return np.ones(self.dataset.energy_axis.nbin)
        return np.asarray(self.background_model.spectral_model(self.dataset.energy_axis.center), dtype=float)

    def source_parts(self) -> list[tuple[tuple[slice, slice], np.ndarray]]:
        """Each source's (parent slices, cutout counts) — the only bins it contributes to."""
        return [self._evaluators[id(m)].evaluate() for m in self.sky_models]

    def npred_background(self) -> np.ndarray:
        key = self.background_model.spectral_model.value_key() if self.background_model else None
        if self._bkg is None or key != self._bkg_key:
            self._bkg = npred_background(self.dataset, self.background_model)
            self._bkg_key = key
        return self._bkg

    def npred_source(self, model: SkyModel) -> np.ndarray:
        """Predicted counts of one source on the full dataset grid."""
        out = np.zeros(Map.expected_shape(self.dataset.geom, (self.dataset.energy_axis,)))
        sl, data = self._evaluators[id(model)].evaluate()
        out[(...,) + sl] += data
        return out

    def npred_signal(self) -> np.ndarray:
        """Sum of all sources (no background), full grid."""
        out = np.zeros(Map.expected_shape(self.dataset.geom, (self.dataset.energy_axis,)))
        for m in self.sky_models:
            sl, data = self._evaluators[id(m)].evaluate()
            out[(...,) + sl] += data
        return out

    def npred(self) -> np.ndarray:
        """Background plus all sources, full grid (n_reco, ny, nx)."""
        out = self.npred_background().copy()
        for m in self.sky_models:
            sl, data = self._evaluators[id(m)].evaluate()
            out[(...,) + sl] += data
        return out


def npred(dataset: MapDataset, models) -> Map:
    """Predicted counts map (background + sources) of ``dataset`` for ``models``."""
    ev = DatasetEvaluator(dataset, models)
    return Map(dataset.geom, ev.npred(), (dataset.energy_axis,), "")


def npred_source(dataset: MapDataset, model: SkyModel) -> Map:
    """Predicted counts map of one source in ``dataset``."""
    ev = DatasetEvaluator(dataset, [model])
    return Map(dataset.geom, ev.npred_source(model), (dataset.energy_axis,), "")
