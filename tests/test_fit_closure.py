"""Closure on simulated data: Poisson realisations of each model type, fitted from the truth.

For every spatial type (point, Gaussian, disk, shell, Sersic-like generalised Gaussian) and
every spectral type (power law, power law with integral norm, exponential cut-off, log
parabola, broken and smoothly broken power law, a template with a free norm) 50
realisations are drawn through an IACT-like PSF, exposure and energy dispersion
(``fit_sky``) and fitted.  The pulls ``(fit − truth) / error`` must be unbiased with unit
spread.

Thresholds: pooled over the free parameters of a model type (≥ 150 pulls), the mean lies
within ±0.2 and the standard deviation within 0.8–1.2.  Per parameter (50 pulls, standard
error 0.14 on the mean and 0.10 on the spread) the bands are ±0.45 and 0.7–1.3 (about 3σ):
the issue's ±0.2 per parameter would fail an unbiased estimator one time in six.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from fit_sky import make_dataset, simulate

from gpscat.core.fit import Fit
from gpscat.models import spatial as sm
from gpscat.models import spectral as sp
from gpscat.models.sky import FoVBackgroundModel, Models, SkyModel

log = logging.getLogger(__name__)

N_REAL = 50
POS = dict(lon_0=0.013, lat_0=-0.008, frame="galactic")


def _shell():
    s = sm.ShellSpatialModel(radius=0.3, width=0.1, **POS)
    s.radius.min, s.width.min = 0.01, 0.005
    return s


def _sersic():
    s = sm.GeneralizedGaussianSpatialModel(r_0=0.25, eta=0.5, **POS)
    s.r_0.min = 0.01
    return s


SPATIAL = {
    "point": lambda: sm.PointSpatialModel(**POS),
    "gauss": lambda: sm.GaussianSpatialModel(sigma=0.15, **POS),
    "disk": lambda: sm.DiskSpatialModel(r_0=0.25, **POS),
    "shell": _shell,
    "sersic": _sersic,
}


def _frozen(model, *names):
    for n in names:
        getattr(model, n).frozen = True
    return model


def _template():
    e = np.geomspace(0.1, 100, 13)
    values = 3e-12 * e**-2.3 * np.exp(-e / 30)
    norm = sp.PowerLawNormSpectralModel(norm=1.0)
    return sp.CompoundSpectralModel(model1=sp.TemplateSpectralModel(energy=e, values=values), model2=norm)


SPECTRAL = {
    "pl": lambda: sp.PowerLawSpectralModel(index=2.3, amplitude=3e-12),
    "pl2": lambda: sp.PowerLaw2SpectralModel(amplitude=1e-11, index=2.3, emin=0.3, emax=30),
    "ecpl": lambda: sp.ExpCutoffPowerLawSpectralModel(index=2.0, amplitude=4e-12, lambda_=0.1),
    "lp": lambda: sp.LogParabolaSpectralModel(amplitude=3e-12, reference=1.0, alpha=2.3, beta=0.1),
    "bpl": lambda: _frozen(sp.BrokenPowerLawSpectralModel(index1=2.0, index2=2.8, amplitude=1.5e-12, ebreak=2.0), "ebreak"),
    "sbpl": lambda: _frozen(
        sp.SmoothBrokenPowerLawSpectralModel(index1=2.0, index2=2.8, amplitude=3e-12, ebreak=2.0), "ebreak"
    ),
    "template": _template,
}


def _ensemble(dataset, make_models, rng):
    truth = make_models()
    pulls, failures = [], 0
    for _ in range(N_REAL):
        data = simulate(dataset, truth, rng)
        models = make_models()
        result = Fit(data, models).run()
        if not result.success or result.covariance is None:
            failures += 1
            continue
        # (a shell's nearly degenerate radius/width can make Hesse force the matrix
        # positive-definite now and then: its errors are still used)
        true = {id(p): q.value for p, q in zip(models.parameters, truth.parameters, strict=True)}
        pulls.append([(p.value - true[id(p)]) / p.error for p in result.parameters])
    return np.array(pulls), result.labels, failures


def _check(pulls, labels, failures, name):
    mean, std = pulls.mean(axis=0), pulls.std(axis=0, ddof=1)
    for lab, m, s in zip(labels, mean, std, strict=True):
        log.info("%s %-28s pull mean %+.2f std %.2f", name, lab, m, s)
        print(f"{name:10s} {lab:28s} mean {m:+.2f} std {s:.2f}")
    assert failures <= 2, f"{failures} of {N_REAL} fits failed"
    pooled = pulls.ravel()
    assert abs(pooled.mean()) < 0.2 and 0.8 < pooled.std(ddof=1) < 1.2, (pooled.mean(), pooled.std())
    assert np.all(np.abs(mean) < 0.45), dict(zip(labels, mean, strict=True))
    assert np.all((std > 0.7) & (std < 1.3)), dict(zip(labels, std, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SPATIAL))
def test_spatial_closure(kind):
    dataset = make_dataset(npix=40, binsz=0.04, nreco=3)

    def make_models():
        src = SkyModel(sp.PowerLawSpectralModel(index=2.3, amplitude=2e-11), SPATIAL[kind](), name="src")
        return Models([src, FoVBackgroundModel("sim")])

    pulls, labels, failures = _ensemble(dataset, make_models, np.random.default_rng(100 + len(kind)))
    _check(pulls, labels, failures, kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SPECTRAL))
def test_spectral_closure(kind):
    dataset = make_dataset(npix=24, binsz=0.04, nreco=8, ereco=(0.3, 30.0), etrue=(0.1, 100.0), ntrue=30)

    def make_models():
        point = sm.PointSpatialModel(**POS)
        point.freeze()
        return Models([SkyModel(SPECTRAL[kind](), point, name="src"), FoVBackgroundModel("sim")])

    pulls, labels, failures = _ensemble(dataset, make_models, np.random.default_rng(200 + len(kind)))
    _check(pulls, labels, failures, kind)
