"""``isthmus query``: a tag's history from the running server or straight from the store.

DuckDB lets one process open the historian file for writing, so while ``isthmus demo``
or ``run`` holds the data directory the query goes through its API, authenticated with
the local CLI token the server leaves in the data directory (mode 0600: whoever may
read the data directory may query).  Otherwise the store is opened directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from isthmus.model.durations import format_ns, parse_duration_ns, parse_time_ns
from isthmus.model.errors import IsthmusError
from isthmus.model.quality import quality_name

CLI_TOKEN_FILE = "cli-token"

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
) -> tuple[Rows, list[str]]:
    import time

    from isthmus.app import running_server
    from isthmus.cli import load_config

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

    url = running_server(data_dir)
    if url is not None:
        return _via_api(url, data_dir, full, start, end, bucket, limit)
    return _via_store(plant, sources, data_dir, full, start, end, bucket_ns, limit)


def _via_api(
    url: str, data_dir: Path, path: str, start: int, end: int, bucket: str | None, limit: int
) -> tuple[Rows, list[str]]:
    token_file = data_dir / CLI_TOKEN_FILE
    try:
        token = token_file.read_text().strip()
    except OSError:
        raise IsthmusError(f"a server runs at {url} but {token_file} is unreadable") from None
    params: dict[str, str | int] = {"from": format_ns(start), "to": format_ns(end), "limit": limit}
    if bucket:
        params["bucket"] = bucket
    try:
        resp = httpx.get(
            f"{url}/api/tags/{path}/samples",
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
    if bucket:
        return body["buckets"], ["timestamp", "avg", "min", "max", "count"]
    return body["samples"], ["timestamp", "value", "quality"]


def _via_store(
    plant: Any,
    sources: Any,
    data_dir: Path,
    path: str,
    start: int,
    end: int,
    bucket_ns: int | None,
    limit: int,
) -> tuple[Rows, list[str]]:
    from isthmus.app import default_stores, full_path
    from isthmus.historian.common import is_embedded

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
        if bucket_ns:
            agg = store.buckets(tag_id, start, end, bucket_ns)
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
            return rows, ["timestamp", "avg", "min", "max", "count"]
        raw = store.raw(tag_id, start, end, limit)
        rows = [
            {
                "timestamp": format_ns(int(raw.ts[i])),
                "value": float(raw.value[i]),
                "quality": quality_name(int(raw.quality[i])),
            }
            for i in range(len(raw))
        ]
        return rows, ["timestamp", "value", "quality"]
    finally:
        store.close()
