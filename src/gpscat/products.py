"""File names of stage products that the workflow must know at parse time.

Kept apart from the stage modules so that parsing the Snakefile does not import the
numerical stack (scipy.signal, matplotlib) of every stage.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpscat.config import Config, ConfigError, quantity

__all__ = ["correlation_radii", "output_paths"]


def correlation_radii(cfg: Config) -> list[float]:
    """Correlation radii (deg) of the config, in the given order."""
    radii = [quantity(r, "deg", key=f"significance.correlation_radii[{i}]") for i, r in enumerate(cfg["significance"]["correlation_radii"])]
    for i, r in enumerate(radii):
        if not r > 0:
            raise ConfigError(f"config key significance.correlation_radii[{i}]: must be > 0, got {r}")
    return radii


def output_paths(cfg: Config, output_dir: str | os.PathLike) -> list[Path]:
    """Every file :func:`run` writes into ``output_dir`` (for the workflow's rule outputs)."""
    folder = Path(output_dir)
    quick = bool(cfg["significance"]["quicklook"])
    bands = bool(cfg["significance"]["energy_bands"])
    out = []
    for r in correlation_radii(cfg):
        stems = [f"significance_r{r:.2f}"] + ([f"bands_r{r:.2f}"] if bands else [])
        for stem in stems:
            out.append(folder / f"{stem}.fits")
            if quick:
                out.append(folder / f"{stem}.png")
    return out
