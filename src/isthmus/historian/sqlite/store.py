"""A second embedded historian on the standard library's SQLite.

Slower than DuckDB for this workload (see ``docs/decisions/0002-historian-engine.md``)
but needs nothing beyond Python, and several processes may read the file at once.

Schema: ``samples`` is a ``WITHOUT ROWID`` table keyed by ``(tag_id, ts)``, so
``INSERT OR IGNORE`` gives idempotency (first written wins) and the key serves range,
last-value and bucket queries of one tag.  WAL journal: readers never block the writer.

Threads: writes share one connection under a lock; each reading thread opens its own
connection (for ``:memory:`` one connection serves everything, under the same lock,
since an in-memory database is private to its connection).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from isthmus.historian.base import Aggregates, TagMeta
from isthmus.historian.common import BAD_THRESHOLD, check_bucket, resolve_path
from isthmus.historian.sqlite import text as text_store
from isthmus.historian.sqlite.retention import SQLiteRetentionMixin
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
    path TEXT NOT NULL UNIQUE,
    data_type TEXT NOT NULL,
    unit TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    tag_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL,  -- SQLite stores NaN as NULL; read back as NaN
    quality INTEGER NOT NULL,
    PRIMARY KEY (tag_id, ts)
) WITHOUT ROWID;
"""

_BUCKETS = f"""
SELECT bucket, avg(value), min(value), max(value), count(*)
FROM (
    SELECT ts - (((ts % :width) + :width) % :width) AS bucket, value
    FROM samples
    WHERE tag_id = :tag AND ts >= :start AND ts < :end AND quality < {BAD_THRESHOLD}
)
GROUP BY bucket ORDER BY bucket
"""


def _cache_kib(memory_limit: str) -> int:
    """SQLite's ``cache_size`` (negative = KiB) from a size such as ``256MB``."""
    text = memory_limit.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1, "M": 1024, "G": 1024 * 1024, "T": 1024 * 1024 * 1024}
    factor = units.get(text[-1:], 0)
    number = text[:-1] if factor else text
    try:
        kib = float(number) * factor if factor else float(number) / 1024
    except ValueError:
        return 64 * 1024
    return max(1024, int(kib))


class SQLiteStore(SQLiteRetentionMixin):
    """Embedded SQLite historian implementing :class:`isthmus.historian.base.Store`."""

    def __init__(self, config: StorageConfig, data_dir: Path) -> None:
        self.config = config
        self.path = resolve_path(config, data_dir)
        self._writer: sqlite3.Connection | None = None
        self._readers: dict[int, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._readers_lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        database = ":memory:" if self.path is None else str(self.path)
        con = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        con.execute("PRAGMA busy_timeout = 10000")
        con.execute(f"PRAGMA cache_size = -{_cache_kib(self.config.memory_limit) // 4}")
        return con

    def open(self) -> None:
        if self._writer is not None:
            return
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        if self.path is not None:
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
        con.executescript(_SCHEMA)
        con.executescript(text_store.TEXT_SCHEMA)
        self._writer = con

    def close(self) -> None:
        with self._lock, self._readers_lock:
            for con in self._readers.values():
                con.close()
            self._readers.clear()
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> SQLiteStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_con(self) -> sqlite3.Connection:
        if self._writer is None:
            raise RuntimeError("store is not open")
        return self._writer

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection for this thread's reads (the shared one, locked, in memory)."""
        if self.path is None:
            with self._lock:
                yield self._write_con()
            return
        ident = threading.get_ident()
        con = self._readers.get(ident)
        if con is None:
            with self._readers_lock:
                self._write_con()  # raises if closed
                con = self._connect()
                self._readers[ident] = con
        yield con

    # -- tags ---------------------------------------------------------------------------

    def register_tags(self, tags: Sequence[TagMeta]) -> dict[str, int]:
        with self._lock:
            con = self._write_con()
            ids: dict[str, int] = {}
            con.execute("BEGIN IMMEDIATE")
            try:
                for tag in tags:
                    row = con.execute(
                        "SELECT id, data_type, unit FROM tags WHERE path = ?", (tag.path,)
                    ).fetchone()
                    if row is None:
                        cursor = con.execute(
                            "INSERT INTO tags (path, data_type, unit) VALUES (?, ?, ?)",
                            (tag.path, tag.data_type, tag.unit),
                        )
                        assert cursor.lastrowid is not None
                        ids[tag.path] = int(cursor.lastrowid)
                    else:
                        ids[tag.path] = int(row[0])
                        if (row[1], row[2]) != (tag.data_type, tag.unit):
                            con.execute(
                                "UPDATE tags SET data_type = ?, unit = ? WHERE id = ?",
                                (tag.data_type, tag.unit, row[0]),
                            )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return ids

    def tags(self) -> dict[str, int]:
        """Every registered path with its id."""
        with self._read() as con:
            return {str(p): int(i) for p, i in con.execute("SELECT path, id FROM tags")}

    # -- writes -------------------------------------------------------------------------

    def write(self, batch: Batch) -> int:
        if len(batch) == 0:
            return 0
        if batch.text is not None:  # string samples: their own table
            return write_mixed(batch, self.write, self._write_text)
        rows = zip(
            batch.tag_id.tolist(),
            batch.ts.tolist(),
            batch.value.tolist(),
            batch.quality.tolist(),
            strict=True,
        )
        with self._lock:
            con = self._write_con()
            before = con.total_changes
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?, ?)", rows)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return con.total_changes - before

    def _write_text(self, strings: Batch) -> int:
        with self._lock:
            con = self._write_con()
            con.execute("BEGIN IMMEDIATE")
            try:
                inserted = text_store.insert(con, strings)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return inserted

    def purge_before(self, ts_ns: int) -> int:
        with self._lock:
            con = self._write_con()
            deleted = con.execute("DELETE FROM samples WHERE ts < ?", (ts_ns,)).rowcount
            return deleted + text_store.purge_before(con, ts_ns)

    # -- reads --------------------------------------------------------------------------

    def raw(self, tag_id: int, start_ns: int, end_ns: int, limit: int = 100_000) -> Batch:
        if limit <= 0 or end_ns <= start_ns:
            return Batch.empty()
        with self._read() as con:
            rows = con.execute(
                "SELECT tag_id, ts, value, quality FROM samples "
                "WHERE tag_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                (tag_id, start_ns, end_ns, limit),
            ).fetchall()
            strings = text_store.raw(con, tag_id, start_ns, end_ns, limit)
        return merge_range(_to_batch(rows), strings, limit)

    def before(self, tag_id: int, ts_ns: int, lookback_ns: int) -> Batch:
        with self._read() as con:
            rows = con.execute(
                "SELECT tag_id, ts, value, quality FROM samples "
                "WHERE tag_id = ? AND ts >= ? AND ts < ? ORDER BY ts DESC LIMIT 1",
                (tag_id, ts_ns - lookback_ns, ts_ns),
            ).fetchall()
            strings = text_store.before(con, tag_id, ts_ns, lookback_ns)
        return newest(_to_batch(rows), strings)

    def last(self, tag_ids: Sequence[int]) -> Batch:
        rows = []
        with self._read() as con:
            for tag_id in sorted({int(t) for t in tag_ids}):
                row = con.execute(
                    "SELECT tag_id, ts, value, quality FROM samples "
                    "WHERE tag_id = ? ORDER BY ts DESC LIMIT 1",
                    (tag_id,),
                ).fetchone()
                if row is not None:
                    rows.append(row)
            strings = text_store.last(con, tag_ids)
        return newest_per_tag(_to_batch(rows), strings)

    def buckets(self, tag_id: int, start_ns: int, end_ns: int, bucket_ns: int) -> Aggregates:
        check_bucket(bucket_ns)
        params = {"tag": tag_id, "start": start_ns, "end": end_ns, "width": bucket_ns}
        with self._read() as con:
            if text_store.has_text(con, tag_id, start_ns, end_ns):
                raise NotNumericError(tag_id)
            rows = con.execute(_BUCKETS, params).fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
        return Aggregates(
            bucket_ns=np.array(columns[0], dtype=np.int64),
            avg=np.array(columns[1], dtype=np.float64),
            min=np.array(columns[2], dtype=np.float64),
            max=np.array(columns[3], dtype=np.float64),
            count=np.array(columns[4], dtype=np.int64),
        )

    def count(self) -> int:
        with self._read() as con:
            row = con.execute("SELECT count(*) FROM samples").fetchone()
            strings = text_store.count(con)
        return (int(row[0]) if row else 0) + strings


def _to_batch(rows: list[tuple[int, int, float, int]]) -> Batch:
    if not rows:
        return Batch.empty()
    tag_id, ts, value, quality = zip(*rows, strict=True)
    return Batch.of(tag_id, ts, value, quality)
