"""The ``isthmus`` command, one module per command group.

Every user-facing failure ends with a clear message and exit status 1, never a
traceback (set ``ISTHMUS_DEBUG=1`` to see one).  A command group is a module with a
``register(subparsers)`` function; :data:`GROUPS` lists them in help order.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from isthmus import __version__
from isthmus.cli import audit, export, opcua, query, serve, sim, tokens, users
from isthmus.cli.common import console, load_config, setup_logging
from isthmus.model.errors import ConfigError, IsthmusError

__all__ = ["build_parser", "load_config", "main"]

GROUPS = (serve, sim, opcua, query, export, users, tokens, audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isthmus", description="Isthmus: machines to business across a governed boundary"
    )
    parser.add_argument("--version", action="version", version=f"isthmus {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


_TIME_OPTIONS = frozenset({"--from", "--to", "--since", "--until"})
_RELATIVE = re.compile(r"^-\d+(\.\d+)?(ns|us|ms|s|min|m|h|d|w)$")


def _glue_relative_times(argv: Sequence[str]) -> list[str]:
    """``--from -1h`` → ``--from=-1h``: argparse would take ``-1h`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _TIME_OPTIONS and i + 1 < len(argv) and _RELATIVE.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = _glue_relative_times(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for issue in exc.issues:
            console.print(str(issue), markup=False, highlight=False)
        console.print(f"[red]{len(exc.issues)} error(s)[/red]")
        return 1
    except IsthmusError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("ISTHMUS_DEBUG"):
            raise
        console.print(f"[red]unexpected error:[/red] {type(exc).__name__}: {exc}")
        console.print("[dim]set ISTHMUS_DEBUG=1 for details[/dim]")
        return 1
