"""The default embedded historian: DuckDB, one row per sample, columnar.

Schema
    ``tags(id, path UNIQUE, data_type, unit)``; ``samples(tag_id, ts, value, quality)``
    with no index (DuckDB's zone maps prune by ``ts`` when data arrives roughly in time
    order); ``last_value(tag_id PRIMARY KEY, ts, value, quality)``, a tiny table kept
    up to date by every write so :meth:`DuckDBStore.last` never scans ``samples``.

Idempotency without a primary key
    A primary key on ``(tag_id, ts)`` costs most of DuckDB's append speed.  Instead
    each batch is (1) de-duplicated in NumPy (first occurrence wins; an O(n) check
    skips the sort for batches already ordered), then (2) inserted with an anti-join
    against the stored rows restricted to the batch's ``[min ts, max ts]`` and tag
    range, which zone maps make cheap when data arrives roughly in time order; late
    data costs a scan of the row groups that overlap its time range.  Writes are
    serialised by a lock, so two writers cannot both insert the same sample.

Threads
    A DuckDB connection is not safe to share between threads.  Writes go through
    one writer connection under a lock; each reading thread gets its own cursor
    (a connection to the same database), so API reads run while the pipeline writes
    and see committed batches only (MVCC).

One process
    DuckDB lets only one process open a database file read-write: while a server holds
    the file, other processes (e.g. the CLI) must query through its API.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from isthmus.historian.base import Aggregates, TagMeta
from isthmus.historian.common import (
    BAD_THRESHOLD,
    StoreBusyError,
    check_bucket,
    dedupe_first,
    resolve_path,
)
from isthmus.historian.duckdb import text as text_store
from isthmus.historian.duckdb.tiers import TieredMixin
from isthmus.historian.text import (
    NotNumericError,
    merge_range,
    newest,
    newest_per_tag,
    write_mixed,
)
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY,
    path VARCHAR NOT NULL UNIQUE,
    data_type VARCHAR NOT NULL,
    unit VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    tag_id INTEGER NOT NULL,
    ts BIGINT NOT NULL,
    value DOUBLE NOT NULL,
    quality UINTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS last_value (
    tag_id INTEGER PRIMARY KEY,
    ts BIGINT NOT NULL,
    value DOUBLE NOT NULL,
    quality UINTEGER NOT NULL
);
"""

# New rows of the registered ``_batch`` (already free of internal duplicates).
_INSERT = """
INSERT INTO samples
SELECT b.tag_id, b.ts, coalesce(b.value, 'NaN'::DOUBLE), b.quality
FROM _batch AS b
ANTI JOIN (
    SELECT tag_id, ts FROM samples
    WHERE ts BETWEEN $ts_lo AND $ts_hi AND tag_id BETWEEN $tag_lo AND $tag_hi
) AS s ON b.tag_id = s.tag_id AND b.ts = s.ts
"""

# NumPy columns are scanned with pandas semantics (NaN → NULL): coalesce restores NaN,
# which Bad samples legitimately carry.
#
# Append without the anti-join: only when the whole batch is newer than every stored row.
_APPEND = (
    "INSERT INTO samples SELECT tag_id, ts, coalesce(value, 'NaN'::DOUBLE), quality FROM _batch"
)

# Any stored sample of a tag is at or before its last_value.ts, so a batch row that was
# a duplicate can never pass the strict ``>`` and replace the newest value.
_UPSERT_LAST = """
INSERT INTO last_value
SELECT tag_id, max(ts), arg_max(coalesce(value, 'NaN'::DOUBLE), ts), arg_max(quality, ts)
FROM _batch GROUP BY tag_id
ON CONFLICT (tag_id) DO UPDATE
SET ts = excluded.ts, value = excluded.value, quality = excluded.quality
WHERE excluded.ts > last_value.ts
"""

_BEFORE = """
SELECT tag_id, ts, value, quality FROM samples
WHERE tag_id = $tag AND ts >= $start AND ts < $end
ORDER BY ts DESC LIMIT 1
"""

_RAW = """
SELECT tag_id, ts, value, quality FROM samples
WHERE tag_id = $tag AND ts >= $start AND ts < $end
ORDER BY ts LIMIT $limit
"""

_LAST = """
SELECT tag_id, ts, value, quality FROM last_value
WHERE tag_id IN (SELECT unnest($tags::INTEGER[]))
ORDER BY tag_id
"""

# Epoch-aligned floor: DuckDB's % truncates toward zero, hence the double modulo.
_BUCKETS = f"""
SELECT bucket, avg(value), min(value), max(value), count(*)
FROM (
    SELECT ts - (((ts % $width) + $width) % $width) AS bucket, value
    FROM samples
    WHERE tag_id = $tag AND ts >= $start AND ts < $end AND quality < {BAD_THRESHOLD}
)
GROUP BY bucket ORDER BY bucket
"""


class DuckDBStore(TieredMixin):
    """Embedded DuckDB historian implementing :class:`isthmus.historian.base.Store`."""

    def __init__(
        self,
        config: StorageConfig,
        data_dir: Path,
        *,
        threads: int | None = None,
        append_fast_path: bool = True,
    ) -> None:
        self.config = config
        self.path = resolve_path(config, data_dir)
        self.threads = threads
        self.append_fast_path = append_fast_path
        """Skip the anti-join when a batch is entirely newer than all stored data."""
        self._root: Any = None  # only used to create cursors, under _cursor_lock
        self._writer: Any = None
        self._readers: dict[int, Any] = {}
        self._cursor_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._max_ts: int | None = None

    # -- life cycle ---------------------------------------------------------------------

    def open(self) -> None:
        if self._root is not None:
            return
        settings: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": self.config.memory_limit
        }
        if self.threads is not None:
            settings["threads"] = self.threads
        if self.path is None:
            database = ":memory:"
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            database = str(self.path)
        try:
            root = duckdb.connect(database, config=settings)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreBusyError(
                    f"historian file {database} is held by another process; "
                    "query the running server through its API instead"
                ) from exc
            raise
        root.execute(_SCHEMA)
        root.execute(text_store.TEXT_SCHEMA)
        self._root = root
        self._writer = root.cursor()
        self._max_ts = self._scalar_int(self._writer, "SELECT max(ts) FROM samples")
        self._open_tiers(self._writer)  # downsampling tiers: duckdb/tiers.py

    def close(self) -> None:
        with self._write_lock, self._cursor_lock:
            for cursor in self._readers.values():
                cursor.close()
            self._readers.clear()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._root is not None:
                self._root.close()
                self._root = None

    def __enter__(self) -> DuckDBStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reader(self) -> Any:
        """This thread's cursor (created on first use)."""
        ident = threading.get_ident()
        cursor = self._readers.get(ident)
        if cursor is None:
            with self._cursor_lock:
                if self._root is None:
                    raise RuntimeError("store is not open")
                cursor = self._root.cursor()
                self._readers[ident] = cursor
        return cursor

    def _write_cursor(self) -> Any:
        if self._writer is None:
            raise RuntimeError("store is not open")
        return self._writer

    @staticmethod
    def _scalar_int(cursor: Any, sql: str, params: object = None) -> int | None:
        rows = cursor.execute(sql, params).fetchall()
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    @staticmethod
    def _changed(cursor: Any) -> int:
        """Rows affected by the statement just executed (fetches its whole result)."""
        rows = cursor.fetchall()
        return int(rows[0][0]) if rows else 0

    # -- tags ---------------------------------------------------------------------------

    def register_tags(self, tags: Sequence[TagMeta]) -> dict[str, int]:
        with self._write_lock:
            cur = self._write_cursor()
            known = {
                path: (int(tag_id), data_type, unit)
                for tag_id, path, data_type, unit in cur.execute(
                    "SELECT id, path, data_type, unit FROM tags"
                ).fetchall()
            }
            next_id = max((v[0] for v in known.values()), default=0) + 1
            ids: dict[str, int] = {}
            cur.execute("BEGIN TRANSACTION")
            try:
                for tag in tags:
                    if tag.path in ids:
                        continue
                    found = known.get(tag.path)
                    if found is None:
                        cur.execute(
                            "INSERT INTO tags VALUES (?, ?, ?, ?)",
                            [next_id, tag.path, tag.data_type, tag.unit],
                        )
                        ids[tag.path] = next_id
                        next_id += 1
                    else:
                        ids[tag.path] = found[0]
                        if found[1:] != (tag.data_type, tag.unit):
                            cur.execute(
                                "UPDATE tags SET data_type = ?, unit = ? WHERE id = ?",
                                [tag.data_type, tag.unit, found[0]],
                            )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return ids

    def tags(self) -> dict[str, int]:
        """Every registered path with its id."""
        rows = self._reader().execute("SELECT path, id FROM tags").fetchall()
        return {str(path): int(tag_id) for path, tag_id in rows}

    # -- writes -------------------------------------------------------------------------

    def write(self, batch: Batch) -> int:
        if len(batch) == 0:
            return 0
        if batch.text is not None:  # string samples: their own table
            return write_mixed(batch, self.write, self._write_text)
        batch = dedupe_first(batch)
        # A dict of NumPy columns is scanned by DuckDB in place; no pyarrow needed
        # (importing it would cost ~40 MB of resident memory for nothing).
        table = {
            "tag_id": batch.tag_id,
            "ts": batch.ts,
            "value": batch.value,
            "quality": batch.quality,
        }
        ts_lo, ts_hi = int(batch.ts.min()), int(batch.ts.max())
        with self._write_lock:
            cur = self._write_cursor()
            cur.register("_batch", table)
            try:
                cur.execute("BEGIN TRANSACTION")
                try:
                    if self.append_fast_path and (self._max_ts is None or ts_lo > self._max_ts):
                        inserted = self._changed(cur.execute(_APPEND))
                    else:
                        params = {
                            "ts_lo": ts_lo,
                            "ts_hi": ts_hi,
                            "tag_lo": int(batch.tag_id.min()),
                            "tag_hi": int(batch.tag_id.max()),
                        }
                        inserted = self._changed(cur.execute(_INSERT, params))
                    if inserted:
                        cur.execute(_UPSERT_LAST)
                        self._mark_late(cur, ts_lo)  # minutes already rolled up
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
            finally:
                cur.unregister("_batch")
            if inserted and (self._max_ts is None or ts_hi > self._max_ts):
                self._max_ts = ts_hi
            return inserted

    def _write_text(self, strings: Batch) -> int:
        strings = dedupe_first(strings)
        with self._write_lock:
            cur = self._write_cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                inserted = text_store.insert(cur, strings)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return inserted

    def purge_before(self, ts_ns: int) -> int:
        with self._write_lock:
            cur = self._write_cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                deleted = self._changed(cur.execute("DELETE FROM samples WHERE ts < ?", [ts_ns]))
                deleted += text_store.purge_before(cur, ts_ns)
                # A tag whose newest sample is older than the cut-off has no sample left.
                cur.execute("DELETE FROM last_value WHERE ts < ?", [ts_ns])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            if deleted:
                self._max_ts = self._scalar_int(cur, "SELECT max(ts) FROM samples")
            return deleted

    # -- reads --------------------------------------------------------------------------

    @staticmethod
    def _batch(columns: dict[str, Any]) -> Batch:
        return Batch.of(columns["tag_id"], columns["ts"], columns["value"], columns["quality"])

    def raw(self, tag_id: int, start_ns: int, end_ns: int, limit: int = 100_000) -> Batch:
        if limit <= 0 or end_ns <= start_ns:
            return Batch.empty()
        params = {"tag": tag_id, "start": start_ns, "end": end_ns, "limit": limit}
        numeric = self._batch(self._reader().execute(_RAW, params).fetchnumpy())
        strings = text_store.raw(self._reader(), tag_id, start_ns, end_ns, limit)
        return merge_range(numeric, strings, limit)

    def before(self, tag_id: int, ts_ns: int, lookback_ns: int) -> Batch:
        params = {"tag": tag_id, "start": ts_ns - lookback_ns, "end": ts_ns}
        numeric = self._batch(self._reader().execute(_BEFORE, params).fetchnumpy())
        return newest(numeric, text_store.before(self._reader(), tag_id, ts_ns, lookback_ns))

    def last(self, tag_ids: Sequence[int]) -> Batch:
        if not tag_ids:
            return Batch.empty()
        params = {"tags": [int(t) for t in tag_ids]}
        numeric = self._batch(self._reader().execute(_LAST, params).fetchnumpy())
        return newest_per_tag(numeric, text_store.last(self._reader(), tag_ids))

    def buckets(self, tag_id: int, start_ns: int, end_ns: int, bucket_ns: int) -> Aggregates:
        check_bucket(bucket_ns)
        if text_store.has_text(self._reader(), tag_id, start_ns, end_ns):
            raise NotNumericError(tag_id)
        tiered = self._tiered_buckets(tag_id, start_ns, end_ns, bucket_ns)
        if tiered is not None:  # whole tier buckets come from tier_1m / tier_1h
            return tiered
        params = {"tag": tag_id, "start": start_ns, "end": end_ns, "width": bucket_ns}
        rows = self._reader().execute(_BUCKETS, params).fetchnumpy()
        bucket, avg, lo, hi, count = (rows[k] for k in rows)
        return Aggregates(
            bucket_ns=np.asarray(bucket, dtype=np.int64),
            avg=np.asarray(avg, dtype=np.float64),
            min=np.asarray(lo, dtype=np.float64),
            max=np.asarray(hi, dtype=np.float64),
            count=np.asarray(count, dtype=np.int64),
        )

    def count(self) -> int:
        numeric = self._scalar_int(self._reader(), "SELECT count(*) FROM samples") or 0
        return numeric + text_store.count(self._reader())
