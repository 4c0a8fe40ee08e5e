"""Command line: ``gpscat <stage> ...`` — what each Snakemake rule calls.

Every stage command takes the configuration either as a file (``--config my.yaml``) or as
the JSON of the sections it needs (``--params '{...}'``, what the rules pass so that
Snakemake reruns a stage when, and only when, its settings change).  Both are validated
against the same schema.  Logging goes to stderr (rules redirect it to their log file).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gpscat import __version__
from gpscat.commands import COMMANDS
from gpscat.config import Config, ConfigError, load_config, validate_config

__all__ = ["main"]

log = logging.getLogger("gpscat")


def _config_from_args(args) -> Config:
    if args.params:
        try:
            raw = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--params: not valid JSON: {exc}") from None
        data = validate_config(raw, source="--params")
        return Config(data, source="--params")
    return load_config(args.config)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpscat", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gpscat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, (help_text, add_arguments) in sorted(COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text)
        src = p.add_mutually_exclusive_group()
        src.add_argument("--config", type=Path, default=None, help="config YAML (default: schema defaults)")
        src.add_argument("--params", default=None, help="config sections as JSON (used by the workflow)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        runner = add_arguments(p)
        p.set_defaults(_run=runner)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)
    try:
        cfg = _config_from_args(args)
        args._run(cfg, args)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except (OSError, ValueError, KeyError) as exc:
        log.error("%s: %s", args.command, exc)
        if args.verbose:
            raise
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
