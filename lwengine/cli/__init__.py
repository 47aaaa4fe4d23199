"""Command line: ``lwengine info | demo | spec | search | index | dock | bench``.

Each command family lives in its own module exposing ``register(subparsers)``.
"""
from __future__ import annotations

import argparse
import importlib

_COMMAND_MODULES = [
    "lwengine.cli.spec",
    "lwengine.cli.search",
    "lwengine.cli.dock",
    "lwengine.cli.bench",
    "lwengine.cli.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lwengine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print the build and run-time configuration")
    p.set_defaults(func=_cmd_info)
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # that command family is not part of this build
            raise
        mod.register(sub)
    return parser


def _cmd_info(args) -> int:
    from .._config import show_config

    show_config()
    return 0


def main(argv=None) -> int:
    from ..cli_errors import run_command

    args = build_parser().parse_args(argv)
    return run_command(args.func, args)
