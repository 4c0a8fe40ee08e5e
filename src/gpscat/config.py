"""Configuration: load, validate against the one JSON schema, and give typed access.

The schema (``gpscat/schemas/config.schema.yaml``) is the single source of truth for keys
and defaults; the Snakefile validates with ``snakemake.utils.validate(config, SCHEMA_PATH)``
and the CLI with :func:`load_config` / :func:`validate_config`.  Quantities are strings with
units; :func:`quantity` parses them and checks the physical type, naming the config key in
any error.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import astropy.units as u
import jsonschema
import yaml

from gpscat.core.geom import MapAxis, WcsGeom
from gpscat.core.pointings import Pointing, strip_pointings
from gpscat.core.tiles import TileGrid

__all__ = [
    "SCHEMA_PATH",
    "Config",
    "ConfigError",
    "DatasetConfig",
    "EnergyAxisConfig",
    "SurveyConfig",
    "config_hash",
    "load_config",
    "quantity",
    "required_tile_margin",
    "validate_config",
]

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"
_UNITS = {"angle": "deg", "energy": "TeV", "time": "s"}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid (the message names the key)."""


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return SCHEMA_PATH.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _validator():
    """The (cached) default-filling validator: parsing the schema costs ~0.15 s."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schema = yaml.load(_schema_text(), Loader=loader)  # noqa: S506 - a safe loader
    return _with_defaults(jsonschema.Draft202012Validator)(schema)


def _with_defaults(validator_cls):
    """A validator class that fills ``default`` values of absent properties (deep copies)."""
    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if prop not in instance and "default" in sub:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


def _key_path(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def validate_config(raw: Mapping[str, Any], *, source: str = "config") -> dict:
    """Validate a config mapping against the schema and return a copy with defaults filled.

    Raises
    ------
    ConfigError
        Naming the key path and what was expected (unknown key, wrong type, bad quantity).
    """
    data = copy.deepcopy(dict(raw))
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = _key_path(e.absolute_path)
        if e.validator == "additionalProperties":
            msg = f"{source}: unknown key under {key}: {e.message}"
        else:
            msg = f"{source}: invalid value at {key}: {e.message}"
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more error(s))"
        raise ConfigError(msg)
    cfg = Config(data, source=source)
    cfg.check()  # parse every quantity now, so that a wrong unit fails at load time
    return data


def quantity(value: Any, unit: str, *, key: str) -> float:
    """Parse ``"2.5 deg"`` → 2.5 in ``unit``; a ConfigError names ``key`` on failure."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ConfigError(f"config key {key}: expected a quantity with unit like '1 {unit}', got the bare number {value}")
    try:
        q = u.Quantity(str(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {key}: cannot parse quantity {value!r} ({exc})") from None
    try:
        return float(q.to_value(unit))
    except u.UnitConversionError:
        raise ConfigError(
            f"config key {key}: expected a quantity convertible to {unit!r}, got {value!r}"
        ) from None


def config_hash(data: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a (validated) config mapping."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------- typed views


@dataclass(frozen=True)
class EnergyAxisConfig:
    min: float  # TeV
    max: float  # TeV
    nbins: int | None = None
    per_decade: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping, *, key: str) -> EnergyAxisConfig:
        emin = quantity(d["min"], "TeV", key=f"{key}.min")
        emax = quantity(d["max"], "TeV", key=f"{key}.max")
        if not 0 < emin < emax:
            raise ConfigError(f"config key {key}: need 0 < min < max, got {d['min']!r}, {d['max']!r}")
        nbins, per_decade = d.get("nbins"), d.get("per_decade")
        if nbins is not None and per_decade is not None:
            raise ConfigError(f"config key {key}: give nbins or per_decade, not both")
        if nbins is None and per_decade is None:
            per_decade = 10
        return cls(emin, emax, nbins, per_decade)

    def axis(self, name: str) -> MapAxis:
        return MapAxis.from_energy_bounds(self.min, self.max, nbin=self.nbins, per_decade=self.per_decade, name=name)


@dataclass(frozen=True)
class SurveyConfig:
    frame: str
    center: tuple[float, float]  # deg
    width: tuple[float, float]  # deg
    projection: str

    def geom(self, binsz: float) -> WcsGeom:
        return WcsGeom.create(self.center, self.width, binsz, frame=self.frame, proj=self.projection)


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    binsz: float  # deg
    energy: EnergyAxisConfig
    energy_true: EnergyAxisConfig
    offset_max: float  # deg
    cutout_width: float  # deg
    safe_mask_methods: tuple[str, ...]
    aeff_percent: float
    bias_percent: float
    psf_max_radius: float  # deg
    psf_nbins: int
    irf_binsz: float  # deg, coarse PSF/EDISP grid
    edisp: bool
    stack: bool

    @classmethod
    def from_dict(cls, d: Mapping, *, key: str) -> DatasetConfig:
        energy = EnergyAxisConfig.from_dict(d["energy"], key=f"{key}.energy")
        if "energy_true" in d:
            energy_true = EnergyAxisConfig.from_dict(d["energy_true"], key=f"{key}.energy_true")
        else:  # a wider true-energy range with finer binning, as is usual for map making
            energy_true = EnergyAxisConfig(energy.min / 2, energy.max * 2, None, 10)
        offset_max = quantity(d["offset_max"], "deg", key=f"{key}.offset_max")
        psf = d.get("psf", {})
        psf_max = quantity(psf.get("max_radius", "0.66 deg"), "deg", key=f"{key}.psf.max_radius")
        if "cutout_width" in d:
            cutout = quantity(d["cutout_width"], "deg", key=f"{key}.cutout_width")
            if cutout < 2 * offset_max:
                raise ConfigError(f"config key {key}.cutout_width: must be >= 2 × offset_max = {2 * offset_max} deg")
        else:
            cutout = 2 * offset_max + 2 * psf_max
        sm = d.get("safe_mask", {})
        return cls(
            name=d["name"],
            binsz=quantity(d.get("binsz", "0.02 deg"), "deg", key=f"{key}.binsz"),
            energy=energy,
            energy_true=energy_true,
            offset_max=offset_max,
            cutout_width=cutout,
            safe_mask_methods=tuple(sm.get("methods", ["offset-max"])),
            aeff_percent=float(sm.get("aeff_percent", 10)),
            bias_percent=float(sm.get("bias_percent", 10)),
            psf_max_radius=psf_max,
            psf_nbins=int(psf.get("nbins", 66)),
            irf_binsz=quantity(psf.get("binsz", "0.5 deg"), "deg", key=f"{key}.psf.binsz"),
            edisp=bool(d.get("edisp", False)),
            stack=bool(d.get("stack", True)),
        )

    @property
    def energy_axis(self) -> MapAxis:
        return self.energy.axis("energy")

    @property
    def energy_axis_true(self) -> MapAxis:
        return self.energy_true.axis("energy_true")


class Config:
    """Read-only view of a validated configuration.

    ``cfg.survey``, ``cfg.datasets`` are typed; every section is available as a read-only
    mapping through ``cfg[section]``; ``cfg.base_dir`` resolves relative paths.
    """

    def __init__(self, data: Mapping[str, Any], *, source: str = "config", base_dir: str | os.PathLike = "."):
        self._data = _freeze(copy.deepcopy(dict(data)))
        self.source = source
        self.base_dir = Path(base_dir)

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self._data.get(section, MappingProxyType({}))

    def __contains__(self, section: str) -> bool:
        return section in self._data

    def to_dict(self) -> dict:
        return _thaw(self._data)

    @property
    def hash(self) -> str:
        return config_hash(self.to_dict())

    @property
    def survey(self) -> SurveyConfig:
        s = self["survey"]
        c, w = s.get("center", ["0 deg", "0 deg"]), s.get("width", ["6 deg", "4 deg"])
        center = (quantity(c[0], "deg", key="survey.center[0]"), quantity(c[1], "deg", key="survey.center[1]"))
        width = (quantity(w[0], "deg", key="survey.width[0]"), quantity(w[1], "deg", key="survey.width[1]"))
        if min(width) <= 0:
            raise ConfigError(f"config key survey.width: must be positive, got {list(w)}")
        return SurveyConfig(s.get("frame", "galactic"), center, width, s.get("projection", "CAR"))

    @property
    def datasets(self) -> tuple[DatasetConfig, ...]:
        out = tuple(DatasetConfig.from_dict(d, key=f"datasets[{i}]") for i, d in enumerate(self["datasets"]))
        names = [d.name for d in out]
        if len(set(names)) != len(names):
            raise ConfigError(f"config key datasets: dataset names must be unique, got {names}")
        return out

    def dataset(self, name: str) -> DatasetConfig:
        for d in self.datasets:
            if d.name == name:
                return d
        raise ConfigError(f"config key datasets: no dataset named {name!r}; have {[d.name for d in self.datasets]}")

    def pointings(self) -> list[Pointing]:
        """Simulated pointings (``simulation.pointings``: explicit ``list`` wins over the strip).

        Observation ids are consecutive from ``simulation.first_obs_id`` in pattern order.
        """
        sim = self["simulation"]
        p = sim.get("pointings", {})
        frame = p.get("frame", "galactic")
        first = int(sim.get("first_obs_id", 1))
        key = "simulation.pointings"
        if p.get("list"):
            return [
                Pointing(
                    first + i,
                    quantity(lon, "deg", key=f"{key}.list[{i}][0]") % 360.0,
                    quantity(lat, "deg", key=f"{key}.list[{i}][1]"),
                    frame,
                )
                for i, (lon, lat) in enumerate(p["list"])
            ]
        return strip_pointings(
            quantity(p.get("lon_min", "-2 deg"), "deg", key=f"{key}.lon_min"),
            quantity(p.get("lon_max", "2 deg"), "deg", key=f"{key}.lon_max"),
            quantity(p.get("lon_step", "1 deg"), "deg", key=f"{key}.lon_step"),
            [quantity(b, "deg", key=f"{key}.lat_rows[{i}]") for i, b in enumerate(p.get("lat_rows", ["0 deg"]))],
            frame=frame,
            first_obs_id=first,
        )

    @property
    def tiles(self) -> TileGrid | None:
        """The survey tile grid (``tiles``), or ``None`` when the survey is one tile.

        ``None`` also when ``tiles.size`` covers the survey: one tile is the untiled
        workflow, with its files unchanged.
        """
        t = self["tiles"]
        if t.get("size") is None:
            return None
        size = tuple(quantity(v, "deg", key=f"tiles.size[{i}]") for i, v in enumerate(t["size"]))
        if min(size) <= 0:
            raise ConfigError(f"config key tiles.size: must be positive, got {list(t['size'])}")
        margin = quantity(t.get("margin", "1 deg"), "deg", key="tiles.margin")
        if margin < 0:
            raise ConfigError(f"config key tiles.margin: must be >= 0, got {t.get('margin')!r}")
        grid = TileGrid(self.survey.width, size, margin)
        return None if len(grid) == 1 else grid

    def check_tiles(self) -> None:
        """``tiles.margin`` covers the reach of the map stages (:func:`required_tile_margin`).

        Needs the whole config (the workflow at parse time, ``load_config``): a stage job's
        ``--params`` carry only its own sections.
        """
        grid = self.tiles
        if grid is None:
            return
        need, what = required_tile_margin(self)
        if grid.margin < need - 1e-9:
            raise ConfigError(
                f"config key tiles.margin: {self['tiles']['margin']!r} is smaller than the {need:g} deg the maps of a "
                f"tile's core need ({what}); raise tiles.margin to at least '{need:g} deg'"
            )

    def path(self, value: str | os.PathLike) -> Path:
        """Resolve a config path relative to the config's base directory."""
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p

    def check(self) -> None:
        """Parse all typed sections (raises ConfigError on a bad quantity or unit)."""
        self.survey  # noqa: B018
        self.datasets  # noqa: B018
        for i, r in enumerate(self["significance"].get("correlation_radii", [])):
            quantity(r, "deg", key=f"significance.correlation_radii[{i}]")
        for k in ("r_in", "width"):
            if k in self["background"].get("ring", {}):
                quantity(self["background"]["ring"][k], "deg", key=f"background.ring.{k}")
        quantity(self["associate"].get("psf_r68", "0.1 deg"), "deg", key="associate.psf_r68")
        self.tiles  # noqa: B018
        sim = self["simulation"]
        if sim.get("enabled"):
            quantity(sim.get("livetime", "0.5 h"), "s", key="simulation.livetime")
            if not self.pointings():
                raise ConfigError("config key simulation.pointings: the pattern gives no pointing")


def required_tile_margin(cfg: Config) -> tuple[float, str]:
    """Smallest ``tiles.margin`` (deg) for which a tile's core sees what the whole survey shows.

    The largest reach of any map operation around a core pixel: correlation radii, the
    detection footprint (seed moments, Hough shells, detection exclusion), the ring
    background and the first-pass exclusion.  Returns the margin and the key that sets it.
    The fit regions of interest depend on the data and are checked by each fit job.
    """

    def deg(value, key):
        return quantity(value, "deg", key=key)

    reach: dict[str, float] = {}
    for i, r in enumerate(cfg["significance"].get("correlation_radii", [])):
        reach[f"significance.correlation_radii[{i}]"] = deg(r, f"significance.correlation_radii[{i}]")
    d = cfg["detect"]
    if d:
        reach["detect.size.max_radius"] = deg(d["size"]["max_radius"], "detect.size.max_radius")
        if d["hough"]["enabled"]:
            reach["detect.hough.radius_max + correlation_radius"] = deg(d["hough"]["radius_max"], "detect.hough.radius_max") + deg(
                d["hough"]["correlation_radius"], "detect.hough.correlation_radius")
        reach["detect.exclusion.correlation_radius + dilate"] = deg(d["exclusion"]["correlation_radius"], "detect.exclusion.correlation_radius") + deg(
            d["exclusion"]["dilate"], "detect.exclusion.dilate")
    b = cfg["background"]
    if b and b["method"] == "ring":
        ring = b["ring"]
        if ring["adaptive"]:
            reach["background.ring.r_out_max"] = deg(ring["r_out_max"], "background.ring.r_out_max")
        else:
            reach["background.ring.r_in + width"] = deg(ring["r_in"], "background.ring.r_in") + deg(ring["width"], "background.ring.width")
    if b and b["exclusion"]["hysteresis"]["enabled"]:
        h = b["exclusion"]["hysteresis"]
        key = "background.exclusion.hysteresis"
        reach[f"{key}.correlation_radius + dilate"] = deg(h["correlation_radius"], f"{key}.correlation_radius") + deg(h["dilate"], f"{key}.dilate")
    if not reach:
        return 0.0, "nothing"
    key = max(reach, key=reach.get)
    return reach[key], key


def load_config(path: str | os.PathLike | None = None, *, overrides: Mapping | None = None) -> Config:
    """Load a YAML config file (or only ``overrides``), validate, fill defaults."""
    raw: dict = {}
    source = "config"
    base_dir = Path(".")
    if path is not None:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    if overrides:
        raw = _deep_update(raw, overrides)
    data = validate_config(raw, source=source)
    cfg = Config(data, source=source, base_dir=base_dir)
    cfg.check_tiles()
    return cfg


def _deep_update(base: dict, new: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _freeze(obj):
    if isinstance(obj, dict):
        return MappingProxyType({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    return obj


def _thaw(obj):
    if isinstance(obj, Mapping):
        return {k: _thaw(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_thaw(v) for v in obj]
    return obj
