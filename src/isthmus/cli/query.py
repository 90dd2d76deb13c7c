"""``isthmus query``: a tag's history from the running server or straight from the store.

DuckDB lets one process open the historian file for writing, so while ``isthmus demo``
or ``run`` holds the data directory the query goes through its API, authenticated with
the local CLI token the server leaves in the data directory (mode 0600: whoever may
read the data directory may query).  Otherwise the store is opened directly.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from isthmus.cli.common import DEFAULT_DATA_DIR, fmt_cell, load_config, out
from isthmus.model.durations import format_ns, parse_duration_ns, parse_time_ns
from isthmus.model.errors import IsthmusError
from isthmus.model.quality import quality_name

Rows = list[dict[str, Any]]


def _time(text: str, now_ns: int, what: str) -> int:
    try:
        if text != "now" and not text.startswith("-") and text[:1].isdigit() and "T" not in text:
            return now_ns - parse_duration_ns(text)  # "10m" means ten minutes ago
        return parse_time_ns(text, now_ns)
    except ValueError as exc:
        raise IsthmusError(f"--{what}: {exc}") from None


def run_query(
    *,
    config: str | None,
    data_dir: Path,
    path: str,
    since: str,
    until: str,
    bucket: str | None,
    limit: int,
    interval: str | None = None,
    method: str = "previous",
    extended: bool = False,
) -> tuple[Rows, list[str]]:
    import time

    from isthmus.app import running_server

    plant, sources, _ = load_config(config)
    full = path.strip("/")
    if full.count("/") == 4:
        full = f"{plant.uns_prefix()}/{full}"
    now = time.time_ns()
    start, end = _time(since, now, "since"), _time(until, now, "until")
    if start >= end:
        raise IsthmusError("--since must be before --until")
    bucket_ns = None
    if bucket is not None:
        try:
            bucket_ns = parse_duration_ns(bucket)
        except ValueError as exc:
            raise IsthmusError(f"--bucket: {exc}") from None
        if bucket_ns <= 0:
            raise IsthmusError("--bucket must be positive")
    if limit < 1:
        raise IsthmusError("--limit must be at least 1")
    interval_ns = None
    if interval is not None:
        if bucket is not None:
            raise IsthmusError("--interval and --bucket exclude each other")
        try:
            interval_ns = parse_duration_ns(interval)
        except ValueError as exc:
            raise IsthmusError(f"--interval: {exc}") from None
        if interval_ns <= 0:
            raise IsthmusError("--interval must be positive")
    if method not in ("previous", "linear"):
        raise IsthmusError("--method is previous or linear")
    shape = Shape(bucket, bucket_ns, interval, interval_ns, method, extended)

    url = running_server(data_dir)
    if url is not None:
        return _via_api(url, data_dir, full, start, end, shape, limit)
    return _via_store(plant, sources, data_dir, full, start, end, shape, limit)


@dataclass(frozen=True)
class Shape:
    """What the query returns: raw samples, buckets (maybe extended) or interpolated."""

    bucket: str | None
    bucket_ns: int | None
    interval: str | None
    interval_ns: int | None
    method: str
    extended: bool

    @property
    def columns(self) -> list[str]:
        if self.bucket_ns:
            extra = ["twa", "stddev"] if self.extended else []
            return ["timestamp", "avg", "min", "max", "count", *extra]
        return ["timestamp", "value", "quality"]


def _via_api(
    url: str, data_dir: Path, path: str, start: int, end: int, shape: Shape, limit: int
) -> tuple[Rows, list[str]]:
    from isthmus.app import CLI_TOKEN_FILE

    token_file = data_dir / CLI_TOKEN_FILE
    try:
        token = token_file.read_text().strip()
    except OSError:
        raise IsthmusError(f"a server runs at {url} but {token_file} is unreadable") from None
    params: dict[str, str | int] = {"from": format_ns(start), "to": format_ns(end)}
    route = "samples"
    if shape.interval:
        route = "interpolated"
        params.update(interval=shape.interval, method=shape.method)
    else:
        params["limit"] = limit
        if shape.bucket:
            params["bucket"] = shape.bucket
            if shape.extended:
                params["extended"] = "true"
    try:
        resp = httpx.get(
            f"{url}/api/tags/{path}/{route}",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise IsthmusError(f"cannot reach the server at {url}: {exc}") from None
    if resp.status_code != 200:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        raise IsthmusError(f"{resp.status_code}: {detail}")
    body = resp.json()
    key = "values" if shape.interval else "buckets" if shape.bucket else "samples"
    rows: Rows = body[key]
    return [{c: r.get(c) for c in shape.columns} for r in rows], shape.columns


def _via_store(
    plant: Any,
    sources: Any,
    data_dir: Path,
    path: str,
    start: int,
    end: int,
    shape: Shape,
    limit: int,
) -> tuple[Rows, list[str]]:
    from isthmus.app import default_stores, full_path
    from isthmus.historian.common import is_embedded
    from isthmus.historian.compute import Method
    from isthmus.historian.queries import extended_buckets, interpolated

    if path not in {full_path(plant, t) for s in sources for t in s.tags}:
        raise IsthmusError(f"unknown tag {path!r} (see `isthmus check` or GET /api/tags)")
    if is_embedded(plant.storage) and not (data_dir / plant.storage.path).exists():
        raise IsthmusError(f"no history in {data_dir} yet: run `isthmus demo` first")
    store = default_stores().get(plant.storage.type)(plant.storage, data_dir)
    store.open()
    try:
        tag_id = store.tags().get(path)
        if tag_id is None:
            raise IsthmusError(f"no history for {path!r} in {data_dir} yet")
        if shape.bucket_ns and shape.extended:
            try:
                ext = extended_buckets(store, tag_id, start, end, shape.bucket_ns)
            except ValueError as exc:
                raise IsthmusError(str(exc)) from None
            names = ("avg", "min", "max", "twa", "stddev")
            cols = [ext.avg, ext.min, ext.max, ext.twa, ext.stddev]
            rows = [
                {
                    "timestamp": format_ns(int(ext.bucket_ns[i])),
                    **{name: _finite(float(col[i])) for name, col in zip(names, cols, strict=True)},
                    "count": int(ext.count[i]),
                }
                for i in range(len(ext))
            ]
            return rows, shape.columns
        if shape.bucket_ns:
            agg = store.buckets(tag_id, start, end, shape.bucket_ns)
            rows = [
                {
                    "timestamp": format_ns(int(agg.bucket_ns[i])),
                    "avg": float(agg.avg[i]),
                    "min": float(agg.min[i]),
                    "max": float(agg.max[i]),
                    "count": int(agg.count[i]),
                }
                for i in range(len(agg))
            ]
            return rows, shape.columns
        if shape.interval_ns:
            method: Method = "linear" if shape.method == "linear" else "previous"
            try:
                at, values, quality = interpolated(
                    store, tag_id, start, end, shape.interval_ns, method
                )
            except ValueError as exc:
                raise IsthmusError(str(exc)) from None
            rows = [
                {
                    "timestamp": format_ns(int(at[i])),
                    "value": _finite(float(values[i])),
                    "quality": quality_name(int(quality[i])),
                }
                for i in range(len(at))
            ]
            return rows, shape.columns
        raw = store.raw(tag_id, start, end, limit)
        texts = raw.texts()  # string samples: their text
        rows = [
            {
                "timestamp": format_ns(int(raw.ts[i])),
                "value": texts[i] if texts[i] is not None else float(raw.value[i]),
                "quality": quality_name(int(raw.quality[i])),
            }
            for i in range(len(raw))
        ]
        return rows, shape.columns
    finally:
        store.close()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def cmd_query(args: argparse.Namespace) -> int:
    rows, columns = run_query(
        config=args.config,
        data_dir=Path(args.data_dir),
        path=args.path,
        since=args.since,
        until=args.until,
        bucket=args.bucket,
        limit=args.limit,
        interval=args.interval,
        method=args.method,
        extended=args.extended,
    )
    if args.json:
        out.print_json(json.dumps(rows)) if sys.stdout.isatty() else print(json.dumps(rows))
        return 0
    table = Table(title=args.path, show_lines=False)
    for col in columns:
        table.add_column(col, justify="right" if col not in ("timestamp", "quality") else "left")
    for row in rows:
        table.add_row(*(fmt_cell(row[c]) for c in columns))
    out.print(table)
    out.print(f"[dim]{len(rows)} row(s)[/dim]")
    return 0


def register(sub: Any) -> None:
    query = sub.add_parser("query", help="read a tag's history")
    query.add_argument("path", help="UNS path (enterprise/site/... or area/line/cell/eq/tag)")
    query.add_argument("--since", default="10m", help="duration or ISO time (default 10m)")
    query.add_argument("--until", default="now")
    query.add_argument("--bucket", default=None, help="aggregate per bucket, e.g. 1m")
    query.add_argument("--limit", type=int, default=10_000)
    query.add_argument(
        "--extended", action="store_true", help="with --bucket: time-weighted avg and stddev"
    )
    query.add_argument("--interval", default=None, help="values at fixed instants, e.g. 1m")
    query.add_argument(
        "--method", choices=("previous", "linear"), default="previous", help="with --interval"
    )
    query.add_argument("--json", action="store_true", help="print JSON")
    query.add_argument("--config", default=None, help="plant config (default: the demo plant)")
    query.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    query.set_defaults(func=cmd_query)
