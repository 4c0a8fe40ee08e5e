"""The group fit core: ROI cutouts, residual search, model selection, TS, flux points."""

from __future__ import annotations

from fit_sky import make_dataset

from gpscat.core.npred import DatasetEvaluator
from gpscat.models import spatial as sm
from gpscat.models import spectral as sp
from gpscat.models.sky import SkyModel


def test_clipped_cutout_is_not_rebuilt_every_evaluation():
    """A source whose cutout the map edge clips keeps its cutout while it moves a little."""
    ds = make_dataset(npix=30, nreco=2, name="sim")
    src = SkyModel(sp.PowerLawSpectralModel(), sm.GaussianSpatialModel(lon_0=0.25, lat_0=0.0, sigma=0.2, frame="galactic"), name="edge")
    ev = DatasetEvaluator(ds, [src])
    ev.npred()
    inner = ev._evaluators[id(src)]
    geom = inner._geom
    for k in range(5):
        src.spatial_model.sigma.value = 0.2 + 0.001 * k
        src.spatial_model.lon_0.value = 0.25 + 0.002 * k
        ev.npred()
        assert inner._geom is geom
