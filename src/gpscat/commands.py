"""Sub-commands of ``gpscat``: arguments of each stage and the call into its module.

Each ``@command`` function adds its arguments to an argparse sub-parser and returns the
callable ``run(cfg, args)``.  Rules call these commands; nothing here does science.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import yaml

from gpscat.config import Config
from gpscat.io.atomic import write_text_atomic

__all__ = ["COMMANDS", "command"]

log = logging.getLogger(__name__)

#: name → (help, add_arguments)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Callable]]] = {}


def command(name: str, help_text: str):
    def deco(add_arguments):
        COMMANDS[name] = (help_text, add_arguments)
        return add_arguments

    return deco


@command("check-config", "validate a configuration and print it with defaults filled")
def _check_config(p: argparse.ArgumentParser):
    p.add_argument("--output", type=Path, default=None, help="write the resolved config as YAML")

    def run(cfg: Config, args):
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        if args.output:
            write_text_atomic(args.output, text)
        else:
            print(text)
        log.info("config OK (hash %s)", cfg.hash[:12])

    return run
