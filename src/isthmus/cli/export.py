"""``isthmus export``: history to a data lake (Hive-partitioned Parquet or CSV), with a
progress bar, straight from the store (the server's scheduled export is the other way)."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isthmus.cli.common import DEFAULT_DATA_DIR, console, load_config, out
from isthmus.historian.common import StoreBusyError, is_embedded
from isthmus.historian.export import (
    FORMATS,
    ExportProgress,
    ExportResult,
    ProgressCallback,
    check_dest,
    check_range,
    compile_glob,
    export,
    parse_when,
)
from isthmus.model.errors import IsthmusError

if TYPE_CHECKING:
    from rich.console import Console


def run_export(
    *,
    config: str | None,
    data_dir: Path,
    since: str,
    until: str,
    fmt: str,
    tags: str | None,
    dest: Path,
    overwrite: bool,
    console: Console | None = None,
) -> ExportResult:
    """``isthmus export``: open the plant's store directly and export with a progress bar.

    The progress bar goes to ``console`` (default: stderr).  Raises :class:`IsthmusError`
    with a readable message for every bad input, and when a running server holds the
    historian file (embedded stores allow one process).
    """
    from isthmus.app import default_stores, full_path, running_server

    plant, sources, _ = load_config(config)
    now = time.time_ns()
    start = parse_when(since, now, "--from")
    end = parse_when(until, now, "--to")
    check_range(start, end)
    if fmt not in FORMATS:
        raise IsthmusError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if tags is not None:
        compile_glob(tags)
    check_dest(dest, overwrite)

    url = running_server(data_dir)
    busy = (
        f"the historian in {data_dir} is held by a running server"
        + (f" ({url})" if url else "")
        + ": stop it (Ctrl-C) before exporting, read the history through its API, or let "
        "the server export on a schedule (the export: section of the plant config)"
    )
    if url is not None and is_embedded(plant.storage):
        raise IsthmusError(busy)
    if is_embedded(plant.storage) and not (data_dir / plant.storage.path).exists():
        raise IsthmusError(f"no history in {data_dir} yet: run `isthmus demo` first")
    store = default_stores().get(plant.storage.type)(plant.storage, data_dir)
    try:
        store.open()
    except StoreBusyError:
        raise IsthmusError(busy) from None
    units = {full_path(plant, t): t.unit for s in sources for t in s.tags}
    try:
        with _progress_bar(console) as report:
            return export(
                store,
                start_ns=start,
                end_ns=end,
                tags_glob=tags,
                fmt=fmt,
                dest=dest,
                overwrite=overwrite,
                units=units,
                progress=report,
            )
    finally:
        store.close()


@contextlib.contextmanager
def _progress_bar(console: Console | None) -> Iterator[ProgressCallback]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]export[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TextColumn("{task.fields[parts]} partitions"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )
    task = bar.add_task("", total=None, rows=0, parts="0/?")

    def report(p: ExportProgress) -> None:
        if p.rows_total is not None:  # a bar of rows when the total is known
            done, total = p.rows_done, p.rows_total
        else:
            done, total = p.days_done, p.days_total
        bar.update(
            task,
            completed=done,
            total=total,
            rows=p.rows_done,
            parts=f"{p.days_done}/{p.days_total}",
            description=p.partition,
        )

    with bar:
        yield report


def cmd_export(args: argparse.Namespace) -> int:
    result = run_export(
        config=args.config,
        data_dir=Path(args.data_dir),
        since=args.from_,
        until=args.to,
        fmt=args.format,
        tags=args.tags,
        dest=Path(args.dest),
        overwrite=args.overwrite,
        console=console,
    )
    out.print(result.summary())
    return 0


def register(sub: Any) -> None:
    export = sub.add_parser(
        "export", help="write history to a data lake: Hive-partitioned Parquet or CSV"
    )
    export.add_argument("dest", help="destination folder (site=/date= partitions below it)")
    export.add_argument("--from", dest="from_", required=True, help="ISO time or 7d, -7d")
    export.add_argument("--to", default="now", help="ISO time, -1h or now (default)")
    export.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    export.add_argument("--tags", default=None, help="glob on UNS paths, e.g. '*/pump1/*'")
    export.add_argument("--overwrite", action="store_true", help="replace exported days")
    export.add_argument("--config", default=None, help="plant config (default: the demo plant)")
    export.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    export.set_defaults(func=cmd_export)
