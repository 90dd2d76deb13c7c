"""``isthmus audit verify|export``: check the tamper-evident audit log, copy it out.

Both work whether or not a server runs (they only read; ``verify`` takes the log's
shared lock so it never sees a record half-written)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

from rich.markup import escape

from isthmus.cli.common import DEFAULT_DATA_DIR, out
from isthmus.model.durations import parse_time_ns
from isthmus.model.errors import IsthmusError
from isthmus.security.audit import AUDIT_DIR, ExportFormat, export_records, verify


def _data_dir(args: argparse.Namespace) -> Path:
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise IsthmusError(f"no data directory {data_dir}: pass the server's --data-dir")
    return data_dir


def cmd_verify(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    result = verify(data_dir)
    if result.ok:
        if result.records == 0 and not (data_dir / AUDIT_DIR).exists():
            out.print(f"no audit log in {data_dir} yet: 0 records", markup=False, highlight=False)
            return 0
        where = escape(str(data_dir / AUDIT_DIR))
        out.print(f"[green]intact[/green]: {result.records} record(s) in {where}", highlight=False)
        out.print(f"  last record {result.last_seq}, mac {result.last_mac}", highlight=False)
        out.print("  (keep this mac elsewhere to detect a later rollback)", style="dim")
        return 0
    where = f"{result.file}:{result.line}" if result.line is not None else str(result.file)
    seq = f", record {result.first_bad}" if result.first_bad is not None else ""
    out.print(f"[red]NOT intact[/red]: {escape(f'{where}{seq}: {result.reason}')}", highlight=False)
    out.print(f"  {result.records} record(s) verified before it", highlight=False)
    return 1


def _when(text: str | None, now_ns: int, option: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_time_ns(text, now_ns)
    except (ValueError, OverflowError) as exc:
        raise IsthmusError(f"{option}: {exc}") from None


def cmd_export(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    now = time.time_ns()
    start = _when(args.since, now, "--from")
    end = _when(args.until, now, "--to")
    if start is not None and end is not None and start > end:
        raise IsthmusError("--from is after --to")
    fmt = cast(ExportFormat, args.format)
    if args.output is None:
        count = export_records(data_dir, start, end, fmt, sys.stdout)
        sys.stdout.flush()
    else:
        dest = Path(args.output)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.overwrite else os.O_EXCL)
        try:
            fd = os.open(dest, flags, 0o600)  # the audit trail names people: keep it private
        except FileExistsError:
            raise IsthmusError(f"{dest} exists: pass --overwrite to replace it") from None
        except OSError as exc:
            raise IsthmusError(f"{dest}: cannot write: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            count = export_records(data_dir, start, end, fmt, fh)
        print(f"exported {count} record(s) to {dest}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify or export the tamper-evident audit log")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    ver = actions.add_parser(
        "verify", help="check every record, the chain and its anchor (exit 1 if tampered)"
    )
    ver.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory")
    ver.set_defaults(func=cmd_verify)

    exp = actions.add_parser("export", help="records in a time range as JSON lines or CSV")
    exp.add_argument(
        "--from", dest="since", default=None, help="ISO 8601 or relative (-7d); default: start"
    )
    exp.add_argument(
        "--to", dest="until", default=None, help="ISO 8601 or relative (-1h); default: now"
    )
    exp.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    exp.add_argument("--output", "-o", default=None, help="file (mode 0600); default: stdout")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    exp.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the server's data directory")
    exp.set_defaults(func=cmd_export)
