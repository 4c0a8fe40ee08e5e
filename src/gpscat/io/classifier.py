"""The seed classifier file (joblib) and the classified seeds' DS9 regions.

The model file is a joblib pickle of one plain dict (see :data:`MODEL_KEYS`): the fitted
scikit-learn estimator with everything needed to apply it and to know where it came from —
feature names and order, classes, the working-point threshold, the seed-table axes
(datasets, correlation radii) the features were built on, the scikit-learn and gpscat
versions, and the training provenance (seed, number of skies, config hash, metrics).
A dict rather than a class of ours, so that renaming code never breaks old files.
Like any pickle, only load model files you trust.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import joblib
import sklearn
from astropy.io import fits
from astropy.table import Table

from gpscat.io.atomic import atomic_path, write_text_atomic
from gpscat.io.seeds import SEED_COLUMNS, seed_regions

__all__ = [
    "CLASS_COLORS",
    "MODEL_FORMAT",
    "MODEL_KEYS",
    "read_classifier",
    "write_classified_regions",
    "write_classified_seeds",
    "write_classifier",
]

log = logging.getLogger(__name__)

MODEL_FORMAT = "gpscat-seed-classifier/1"
#: keys of the model dict
MODEL_KEYS = (
    "format", "estimator", "features", "classes", "threshold", "association", "datasets", "radii",
    "sklearn_version", "gpscat_version", "provenance", "metrics",
)
#: DS9 colour per class
CLASS_COLORS = {"point": "green", "extended": "yellow", "shell": "cyan", "spurious": "red"}


def write_classifier(path: str | os.PathLike, model: dict) -> None:
    """Write the model dict atomically (joblib, compressed)."""
    missing = [k for k in MODEL_KEYS if k not in model and k != "format"]
    if missing:
        raise ValueError(f"classifier model lacks keys {missing}")
    with atomic_path(path) as tmp:
        joblib.dump({**model, "format": MODEL_FORMAT}, tmp, compress=3)


def read_classifier(path: str | os.PathLike) -> dict:
    """Read a model dict written by :func:`write_classifier` (checks format and keys).

    A scikit-learn version different from the one that trained the model gives a warning
    (predictions may differ); retrain with ``gpscat classify-train``.
    """
    try:
        model = joblib.load(path)
    except (OSError, EOFError, ValueError) as exc:
        raise OSError(f"{path}: cannot read the classifier model: {exc}") from exc
    if not isinstance(model, dict) or model.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a gpscat seed classifier (format {getattr(model, 'get', lambda k: None)('format')!r}, expected {MODEL_FORMAT!r})")
    missing = [k for k in MODEL_KEYS if k not in model]
    if missing:
        raise ValueError(f"{path}: classifier model lacks keys {missing}")
    if model["sklearn_version"] != sklearn.__version__:
        log.warning("%s: trained with scikit-learn %s, running %s: retrain if predictions look off", path, model["sklearn_version"], sklearn.__version__)
    return model


def write_classified_regions(path: str | os.PathLike, table: Table, *, frame: str = "galactic") -> None:
    """DS9 regions of classified seeds: shapes of :func:`gpscat.io.seeds.seed_regions`,
    coloured by ``Class`` (:data:`CLASS_COLORS`), dashed when not ``Selected``, labelled
    ``<ID> <class> P=<P_Real>``."""
    regions = seed_regions(table, frame=frame)
    for reg, row in zip(regions, table, strict=True):
        reg.visual["color"] = CLASS_COLORS.get(str(row["Class"]).strip(), "white")
        if not bool(row["Selected"]):
            reg.visual["linestyle"] = "dashed"
        reg.meta["text"] = f"{int(row['ID'])} {str(row['Class']).strip()} P={float(row['P_Real']):.2f}"
    text = regions.serialize(format="ds9") if len(regions) else f"# Region file format: DS9\n{frame}\n"
    write_text_atomic(path, text)


def write_classified_seeds(
    path: str | os.PathLike, table: Table, *, header: Mapping | None = None, extra_hdus: Sequence[fits.hdu.base.ExtensionHDU] = ()
) -> None:
    """Write the classified seed table (HDU ``SEEDS``, as :func:`gpscat.io.seeds.write_seeds`)
    followed by ``extra_hdus`` (e.g. the associate stage's ``ASSOCIATIONS`` and
    ``KNOWN_SOURCES``), atomically."""
    missing = [c for c in SEED_COLUMNS if c not in table.colnames]
    if missing:
        raise ValueError(f"seed table lacks columns {missing}")
    out = table.copy(copy_data=False)
    out.meta.update(header or {})
    hdu = fits.table_to_hdu(out)
    hdu.name = "SEEDS"
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu, *extra_hdus]).writeto(tmp)
