"""The PostgreSQL historian (psycopg 3): the hub's store, one row per sample.

Connection
    The DSN comes from the environment variable named by ``storage.dsn_env`` (default
    ``ISTHMUS_PG_DSN``; libpq syntax or a
    ``postgresql://`` URL); secrets never go into the YAML.  ``storage.path`` is ignored.

Schema (see ``docs/historian-postgres.md``; applied by ordered migrations at open)
    ``tags(id, path UNIQUE, data_type, unit)``;
    ``samples(ts bigint, value float8, tag_id int, quality int, PRIMARY KEY (tag_id, ts))``
    partitioned by range on ``ts`` (UTC ns) into daily partitions ``samples_pYYYYMMDD``
    created on demand, or a TimescaleDB hypertable with compression when the extension
    can be created; ``last_value(tag_id PRIMARY KEY, ts, value, quality)`` maintained in
    the write transaction; ``quality_names``; the Grafana views ``samples_v`` and
    ``last_v``; ``schema_migrations(version)`` and ``historian_settings``.
    ``quality`` is the OPC UA status code's 32 bits stored as a signed int4 (the Bad bit
    is the sign bit: Bad ⇔ ``quality < 0``); the views show it unsigned.

Writes
    A batch is de-duplicated in NumPy (first occurrence wins), encoded as PostgreSQL
    binary COPY by NumPy (a packed big-endian record array: no Python per sample), and
    then either (a) copied straight into ``samples`` when it is newer than everything this
    store has seen (under a savepoint: a duplicate written by another process makes the
    COPY fail, and the batch falls back to (b)), or (b) copied into a temporary staging
    table and moved with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``.  The newest
    sample of each tag is upserted into ``last_value`` in the same transaction, only if it
    is newer than the stored one (late data never moves it backwards).

Threads
    One writer connection under a lock; readers borrow an autocommit connection from a
    small pool (one per concurrently reading thread), so reads see committed batches only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from isthmus.historian.base import Aggregates, TagMeta
from isthmus.historian.common import check_bucket, dedupe_first
from isthmus.historian.postgres import text as text_store
from isthmus.historian.postgres import text_views, window_schema
from isthmus.historian.postgres.retention import PostgresRetentionMixin
from isthmus.historian.text import (
    NotNumericError,
    merge_range,
    newest,
    newest_per_tag,
    split_text,
)
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig
from isthmus.model.errors import StoreError
from isthmus.model.quality import Quality, quality_name

DSN_ENV = "ISTHMUS_PG_DSN"
DAY_NS = 86_400 * 1_000_000_000
_EPOCH = dt.date(1970, 1, 1)
_LOCK_MIGRATE = 0x15_7A_05_01  # advisory lock keys (arbitrary, constant)
_LOCK_PARTITIONS = 0x15_7A_05_02
_ATTEMPTS = 3

_T = TypeVar("_T")
Connection = psycopg.Connection[tuple[Any, ...]]
Cursor = psycopg.Cursor[tuple[Any, ...]]
BeforeCommit = Callable[[Cursor], None]

# -- binary COPY, encoded and decoded by NumPy -------------------------------------------

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"

_SAMPLE_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l_ts", ">i4"),
        ("ts", ">i8"),
        ("l_value", ">i4"),
        ("value", ">f8"),
        ("l_tag", ">i4"),
        ("tag_id", ">i4"),
        ("l_quality", ">i4"),
        ("quality", ">i4"),
    ]
)
"""One COPY BINARY tuple of (ts bigint, value float8, tag_id int, quality int)."""

_BUCKET_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l_bucket", ">i4"),
        ("bucket", ">i8"),
        ("l_avg", ">i4"),
        ("avg", ">f8"),
        ("l_min", ">i4"),
        ("min", ">f8"),
        ("l_max", ">i4"),
        ("max", ">f8"),
        ("l_count", ">i4"),
        ("count", ">i8"),
    ]
)
"""One COPY BINARY tuple of (bucket bigint, avg, min, max float8, count bigint)."""


def encode_copy(batch: Batch) -> bytes:
    """The batch as a PostgreSQL COPY BINARY stream of (ts, value, tag_id, quality)."""
    rec = np.empty(len(batch), dtype=_SAMPLE_ROW)
    rec["n"] = 4
    rec["l_ts"] = 8
    rec["ts"] = batch.ts
    rec["l_value"] = 8
    rec["value"] = batch.value
    rec["l_tag"] = 4
    rec["tag_id"] = batch.tag_id
    rec["l_quality"] = 4
    rec["quality"] = batch.quality.view(np.int32)
    return _COPY_HEADER + rec.tobytes() + _COPY_TRAILER


def decode_copy(data: bytes, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """Fixed-width rows of a COPY BINARY stream (columns must be NOT NULL)."""
    if not data:
        return np.empty(0, dtype=dtype)
    if not data.startswith(_COPY_HEADER[:11]):
        raise StoreError("unexpected COPY BINARY header")
    ext = int.from_bytes(data[15:19], "big")
    body = memoryview(data)[19 + ext : len(data) - 2]
    if len(body) % dtype.itemsize:
        raise StoreError("COPY BINARY rows are not fixed-width (a NULL column?)")
    return np.frombuffer(body, dtype=dtype)


# -- schema ------------------------------------------------------------------------------

_BASE = """
CREATE TABLE tags (
    id integer PRIMARY KEY,
    path text NOT NULL UNIQUE,
    data_type text NOT NULL,
    unit text NOT NULL
);
CREATE TABLE last_value (
    tag_id integer PRIMARY KEY,
    ts bigint NOT NULL,
    value double precision NOT NULL,
    quality integer NOT NULL
);
CREATE TABLE historian_settings (key text PRIMARY KEY, value text NOT NULL);
"""

_SAMPLES = """
CREATE TABLE samples (
    ts bigint NOT NULL,
    value double precision NOT NULL,
    tag_id integer NOT NULL,
    quality integer NOT NULL,
    PRIMARY KEY (tag_id, ts)
)
"""

_TIMESCALE = f"""
SELECT create_hypertable('samples', 'ts', chunk_time_interval => {DAY_NS}::bigint);
CREATE FUNCTION isthmus_now_ns() RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1e9)::bigint $$;
SELECT set_integer_now_func('samples', 'isthmus_now_ns');
ALTER TABLE samples SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'tag_id',
    timescaledb.compress_orderby = 'ts'
);
SELECT add_compression_policy('samples', compress_after => {7 * DAY_NS}::bigint);
"""

_VIEWS = """
CREATE TABLE quality_names (
    code bigint PRIMARY KEY,  -- status code with its 16 info bits cleared
    name text NOT NULL
);
CREATE FUNCTION isthmus_ns(timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT (extract(epoch FROM $1) * 1000000000)::bigint $$;
CREATE FUNCTION isthmus_time(bigint) RETURNS timestamptz LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT timestamptz 'epoch' + ($1 / 1000) * interval '1 microsecond' $$;
{samples_v};
CREATE VIEW last_v AS
SELECT
    timestamptz 'epoch' + (l.ts / 1000) * interval '1 microsecond' AS time,
    t.path AS tag,
    l.value,
    l.quality::bigint & 4294967295 AS quality,
    CASE WHEN l.quality < 0 THEN 'Bad'
         WHEN l.quality >= 1073741824 THEN 'Uncertain'
         ELSE 'Good' END AS severity,
    q.name AS quality_name,
    l.ts,
    l.tag_id
FROM last_value AS l
JOIN tags AS t ON t.id = l.tag_id
LEFT JOIN quality_names AS q ON q.code = (l.quality::bigint & 4294901760);
"""


def _migrate_1(cur: Cursor) -> None:
    """Base tables; samples partitioned natively or as a TimescaleDB hypertable."""
    cur.execute(_BASE)
    mode = "native"
    available = cur.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if available:
        try:
            with cur.connection.transaction():  # a savepoint: failure keeps the rest
                cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                cur.execute(_SAMPLES)
                cur.execute(_TIMESCALE)
            mode = "timescaledb"
        except psycopg.Error:
            mode = "native"
    if mode == "native":
        cur.execute(_SAMPLES + " PARTITION BY RANGE (ts)")
    cur.execute(
        "INSERT INTO historian_settings VALUES ('partitioning', %s), ('partition_ns', %s)",
        [mode, str(DAY_NS)],
    )


def _migrate_2(cur: Cursor) -> None:
    """Quality names and the views Grafana users query."""
    cur.execute(_VIEWS.format(samples_v=window_schema.samples_v("samples", "CREATE VIEW")))


def _migrate_3(cur: Cursor) -> None:
    """String samples (``samples_text``)."""
    cur.execute(text_store.TEXT_TABLE)


MIGRATIONS: list[tuple[int, Callable[[Cursor], None]]] = [
    (1, _migrate_1),
    (2, _migrate_2),
    (3, _migrate_3),
    (4, text_views.migrate),  # samples_text_v, last_v.text
    (5, lambda cur: window_schema.migrate(cur, DAY_NS)),  # sample_windows, sample_rows
]
"""Ordered schema steps; each runs once, in its own transaction, recorded by version."""

_QUALITY_NAMES = sorted({int(q) & 0xFFFF0000: quality_name(int(q)) for q in Quality}.items())

# -- statements --------------------------------------------------------------------------

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS _isthmus_stage (
    ts bigint NOT NULL,
    value double precision NOT NULL,
    tag_id integer NOT NULL,
    quality integer NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _isthmus_newest (LIKE _isthmus_stage) ON COMMIT DELETE ROWS;
"""

_MOVE = """
INSERT INTO samples (ts, value, tag_id, quality)
SELECT ts, value, tag_id, quality FROM _isthmus_stage
ON CONFLICT DO NOTHING
"""

# Every stored sample of a tag is at or before its last_value.ts, so a batch row that was
# a duplicate can never pass the strict ``>`` and replace the newest value.
_UPSERT_LAST = """
INSERT INTO last_value (tag_id, ts, value, quality)
SELECT tag_id, ts, value, quality FROM _isthmus_newest
ON CONFLICT (tag_id) DO UPDATE
SET ts = excluded.ts, value = excluded.value, quality = excluded.quality
WHERE excluded.ts > last_value.ts
"""

_BEFORE = """
COPY (
    SELECT ts, value, tag_id, quality FROM samples
    WHERE tag_id = {tag} AND ts >= {start} AND ts < {end}
    ORDER BY ts DESC LIMIT 1
) TO STDOUT (FORMAT BINARY)
"""

_RAW = """
COPY (
    SELECT ts, value, tag_id, quality FROM samples
    WHERE tag_id = {tag} AND ts >= {start} AND ts < {end}
    ORDER BY ts LIMIT {limit}
) TO STDOUT (FORMAT BINARY)
"""

# Epoch-aligned floor: PostgreSQL's % truncates toward zero, hence the double modulo.
_BUCKETS = """
COPY (
    SELECT bucket, avg(value), min(value), max(value), count(*)
    FROM (
        SELECT ts - (((ts % {width}) + {width}) % {width}) AS bucket, value
        FROM samples
        WHERE tag_id = {tag} AND ts >= {start} AND ts < {end} AND quality >= 0
    ) AS s
    GROUP BY bucket ORDER BY bucket
) TO STDOUT (FORMAT BINARY)
"""


def partition_name(day: int, table: str = "samples") -> str:
    return f"{table}_p" + (_EPOCH + dt.timedelta(days=day)).strftime("%Y%m%d")


def partition_day(name: str, table: str = "samples") -> int | None:
    prefix = f"{table}_p"
    if not name.startswith(prefix):
        return None
    try:
        date = dt.datetime.strptime(name[len(prefix) :], "%Y%m%d").date()
    except ValueError:
        return None
    return (date - _EPOCH).days


def rows_to_batch(rec: npt.NDArray[Any]) -> Batch:
    """Decoded ``_SAMPLE_ROW`` records as a batch (quality back to unsigned)."""
    return Batch.of(
        rec["tag_id"], rec["ts"], rec["value"], rec["quality"].astype(np.int32).view(np.uint32)
    )


def upsert_last(cur: Cursor, newest: Batch) -> None:
    """Move ``last_value`` forward to the newest row of each tag (``last_per_tag``) where
    it is newer than the stored one; inside the write transaction."""
    # Binary COPY: adapting lists of Python numbers would cost more client CPU than the
    # whole batch's COPY.
    with cur.copy("COPY _isthmus_newest FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(encode_copy(newest))
    cur.execute(_UPSERT_LAST)


def _rollback(con: Connection) -> None:
    """Roll back unless the connection is gone (keeps the original error visible)."""
    if not con.broken and not con.closed:
        con.rollback()


@contextlib.contextmanager
def committed(con: Connection) -> Iterator[Cursor]:
    """A cursor whose work is committed when the block ends, rolled back (if the
    connection still works) when it raises."""
    try:
        with con.cursor() as cur:
            yield cur
        con.commit()
    except BaseException:
        _rollback(con)
        raise


def last_per_tag(batch: Batch) -> Batch:
    """The newest row of each tag in a duplicate-free batch, ordered by tag."""
    order = np.lexsort((batch.ts, batch.tag_id))
    tags = batch.tag_id[order]
    ends = np.flatnonzero(np.append(tags[1:] != tags[:-1], True))
    return batch.select(order[ends])


class PostgresStore(PostgresRetentionMixin):
    """PostgreSQL historian implementing :class:`isthmus.historian.base.Store`."""

    LAYOUT = "rows"
    TABLE = "samples"
    """The partitioned table holding this layout's numeric samples."""

    def __init__(
        self,
        config: StorageConfig,
        data_dir: Path,
        *,
        dsn: str | None = None,
        direct_copy: bool = True,
    ) -> None:
        self.config = config
        self.data_dir = data_dir  # unused: the data lives in the server
        self._dsn = dsn
        self.direct_copy = direct_copy
        """COPY straight into ``samples`` when a batch is newer than all seen data."""
        self.partitioning = "native"
        self._writer: Connection | None = None
        self._idle: list[Connection] = []
        self._readers: list[Connection] = []
        self._pool_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._open = False
        self._partitions: set[int] = set()
        self._max_ts: int | None = None
        self.retries = 0
        """Writes and reads retried after a lost connection or a deadlock."""

    # -- life cycle ---------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        if self._dsn is not None:
            return self._dsn
        env = self.config.dsn_env
        dsn = os.environ.get(env)
        if not dsn:
            raise StoreError(
                f"storage type postgres needs the environment variable {env} "
                "(e.g. 'host=db.example port=5432 dbname=isthmus user=isthmus')"
            )
        return dsn

    def _connect(self, autocommit: bool) -> Connection:
        con: Connection = psycopg.connect(
            self.dsn, autocommit=autocommit, application_name="isthmus-historian"
        )
        return con

    def open(self) -> None:
        with self._write_lock:
            if self._open:
                return
            writer = self._connect(autocommit=False)
            try:
                self._migrate(writer)
                self._prepare_writer(writer)
                with writer.cursor() as cur:
                    row = cur.execute(
                        "SELECT value FROM historian_settings WHERE key = 'partitioning'"
                    ).fetchone()
                    self.partitioning = str(row[0]) if row else "native"
                    self._check_layout(cur)
                    self._partitions = self._load_partitions(cur)
                    self._max_ts = self._scalar(cur, "SELECT max(ts) FROM last_value")
                writer.commit()
            except BaseException:
                writer.close()
                raise
            self._writer = writer
            self._open = True

    def close(self) -> None:
        with self._write_lock, self._pool_lock:
            self._open = False
            for con in self._readers:
                con.close()
            self._readers.clear()
            self._idle.clear()
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> PostgresStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _migrate(con: Connection) -> None:
        with con.cursor() as cur:
            # Serialises concurrent first opens (several hubs starting together).
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_MIGRATE])
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {int(r[0]) for r in cur.execute("SELECT version FROM schema_migrations")}
            for version, step in MIGRATIONS:
                if version in done:
                    continue
                step(cur)
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", [version])
            newer = [v for v in done if v > MIGRATIONS[-1][0]]
            if newer:
                raise StoreError(
                    f"historian schema version {max(newer)} is newer than this isthmus "
                    f"({MIGRATIONS[-1][0]}): upgrade isthmus"
                )
            cur.executemany(
                "INSERT INTO quality_names VALUES (%s, %s) ON CONFLICT DO NOTHING",
                _QUALITY_NAMES,
            )
        con.commit()

    @staticmethod
    def _prepare_writer(con: Connection) -> None:
        con.execute(_STAGE)
        con.commit()

    def _check_layout(self, cur: Cursor) -> None:
        """Record the layout of a new database; refuse to open one of the other layout
        (its samples would be invisible).  A database from before layouts existed holds
        rows."""
        row = cur.execute("SELECT value FROM historian_settings WHERE key = 'layout'").fetchone()
        if row is None:
            has_rows = cur.execute("SELECT 1 FROM samples LIMIT 1").fetchone() is not None
            layout = "rows" if has_rows else self.LAYOUT
            cur.execute(
                "INSERT INTO historian_settings VALUES ('layout', %s) ON CONFLICT DO NOTHING",
                [layout],
            )
            row = cur.execute(
                "SELECT value FROM historian_settings WHERE key = 'layout'"
            ).fetchone()
        layout = str(row[0]) if row else self.LAYOUT
        if layout != self.LAYOUT:
            raise StoreError(
                f"this PostgreSQL historian stores samples in the {layout!r} layout; "
                f"storage.layout asks for {self.LAYOUT!r}: set storage.layout: {layout}"
            )

    def partition_name(self, day: int) -> str:
        return partition_name(day, self.TABLE)

    def _load_partitions(self, cur: Cursor) -> set[int]:
        rows = cur.execute(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            [self.TABLE],
        ).fetchall()
        days = (partition_day(str(r[0]), self.TABLE) for r in rows)
        return {d for d in days if d is not None}

    @staticmethod
    def _scalar(
        cur: Cursor,
        query: str | sql.Composed,
        params: Sequence[object] | Mapping[str, object] = (),
    ) -> int | None:
        row = cur.execute(query, params).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _write_con(self) -> Connection:
        """The writer connection, reconnected if the server went away since last use."""
        if not self._open or self._writer is None:
            raise RuntimeError("store is not open")
        if self._writer.broken or self._writer.closed:
            self._writer.close()
            writer = self._connect(autocommit=False)
            self._prepare_writer(writer)
            self._writer = writer
        return self._writer

    def _read(self, fn: Callable[[Connection], _T]) -> _T:
        """Run ``fn`` on a pooled autocommit connection; retried once if it was lost."""
        for attempt in range(2):
            with self._pool_lock:
                if not self._open:
                    raise RuntimeError("store is not open")
                con = self._idle.pop() if self._idle else None
            if con is None:
                con = self._connect(autocommit=True)
                with self._pool_lock:
                    self._readers.append(con)
            try:
                return fn(con)
            except psycopg.OperationalError:
                if attempt == 1 or not con.broken:
                    raise
                self.retries += 1  # e.g. an idle pooled connection after a server restart
            finally:
                with self._pool_lock:
                    if con.broken or con.closed or not self._open:
                        con.close()
                        if con in self._readers:
                            self._readers.remove(con)
                    else:
                        self._idle.append(con)
        raise AssertionError("unreachable")

    # -- tags ---------------------------------------------------------------------------

    def register_tags(self, tags: Sequence[TagMeta]) -> dict[str, int]:
        with self._write_lock:
            con = self._write_con()
            ids: dict[str, int] = {}
            with committed(con) as cur:
                # One registrar at a time across processes; readers are not blocked.
                cur.execute("LOCK TABLE tags IN EXCLUSIVE MODE")
                known = {
                    str(path): (int(tag_id), str(data_type), str(unit))
                    for tag_id, path, data_type, unit in cur.execute(
                        "SELECT id, path, data_type, unit FROM tags"
                    )
                }
                next_id = max((v[0] for v in known.values()), default=0) + 1
                new: list[tuple[int, str, str, str]] = []
                changed: list[tuple[str, str, int]] = []
                for tag in tags:
                    if tag.path in ids:
                        continue
                    found = known.get(tag.path)
                    if found is None:
                        new.append((next_id, tag.path, tag.data_type, tag.unit))
                        ids[tag.path] = next_id
                        next_id += 1
                    else:
                        ids[tag.path] = found[0]
                        if found[1:] != (tag.data_type, tag.unit):
                            changed.append((tag.data_type, tag.unit, found[0]))
                if new:
                    cur.executemany("INSERT INTO tags VALUES (%s, %s, %s, %s)", new)
                if changed:
                    cur.executemany(
                        "UPDATE tags SET data_type = %s, unit = %s WHERE id = %s", changed
                    )
            return ids

    def tags(self) -> dict[str, int]:
        rows = self._read(lambda con: con.execute("SELECT path, id FROM tags").fetchall())
        return {str(path): int(tag_id) for path, tag_id in rows}

    # -- writes -------------------------------------------------------------------------

    def _ensure_partitions(self, con: Connection, ts: npt.NDArray[np.int64]) -> None:
        if self.partitioning != "native":
            return
        days = {int(d) for d in np.unique(np.floor_divide(ts, DAY_NS))}
        missing = sorted(days - self._partitions)
        if not missing:
            return
        with committed(con) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_PARTITIONS])
            for day in missing:
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        sql.Identifier(self.partition_name(day)),
                        sql.Identifier(self.TABLE),
                        sql.Literal(day * DAY_NS),
                        sql.Literal((day + 1) * DAY_NS),
                    )
                )
        self._partitions.update(missing)

    def write(self, batch: Batch, before_commit: BeforeCommit | None = None) -> int:
        """Store a batch; ``before_commit(cursor)`` runs inside the transaction that
        commits its numeric samples (the hub records its ledger there)."""
        if batch.text is not None:  # string samples: their own table
            numeric, strings = split_text(batch)
            inserted = self._write_text(strings) if strings is not None else 0
            return inserted + self.write(numeric, before_commit)
        if len(batch) == 0:
            if not self._open:
                raise RuntimeError("store is not open")
            if before_commit is not None:
                self._in_transaction(before_commit)
            return 0
        batch = dedupe_first(batch)
        data = encode_copy(batch)
        newest = last_per_tag(batch)
        ts_lo, ts_hi = int(batch.ts.min()), int(batch.ts.max())
        with self._write_lock:
            inserted = self._retrying(
                batch.ts,
                lambda con: self._write_once(con, data, len(batch), ts_lo, newest, before_commit),
            )
            if inserted and (self._max_ts is None or ts_hi > self._max_ts):
                self._max_ts = ts_hi
            return inserted

    def _retrying(self, ts: npt.NDArray[np.int64], attempt_fn: Callable[[Connection], int]) -> int:
        """``attempt_fn(writer)`` (one transaction) after creating the partitions of ``ts``,
        retried on the errors a retry heals; the caller holds the write lock."""
        for attempt in range(_ATTEMPTS):
            con = self._write_con()
            try:
                if len(ts):
                    self._ensure_partitions(con, ts)
                return attempt_fn(con)
            except (psycopg.OperationalError, psycopg.errors.DeadlockDetected):
                # A lost connection (server restart) or a deadlock with another
                # writer process: nothing was committed, or the commit landed and
                # the retry finds every row already stored; both are safe to retry.
                if attempt == _ATTEMPTS - 1:
                    raise
                self.retries += 1
            except psycopg.errors.CheckViolation:
                # "no partition of relation ... found for row": another process
                # purged a partition this one had cached; learn the real set, retry.
                if attempt == _ATTEMPTS - 1 or self.partitioning != "native":
                    raise
                self.retries += 1
                with con.cursor() as cur:
                    self._partitions = self._load_partitions(cur)
                con.commit()
        raise AssertionError("unreachable")

    def _in_transaction(self, fn: BeforeCommit) -> None:
        with self._write_lock:
            con = self._write_con()
            with committed(con) as cur:
                fn(cur)

    def _write_once(
        self,
        con: Connection,
        data: bytes,
        rows: int,
        ts_lo: int,
        newest: Batch,
        before_commit: BeforeCommit | None = None,
    ) -> int:
        with committed(con) as cur:
            inserted = -1
            if self.direct_copy and (self._max_ts is None or ts_lo > self._max_ts):
                inserted = self._copy_direct(cur, data, rows)
            if inserted < 0:
                with cur.copy("COPY _isthmus_stage FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(data)
                cur.execute(_MOVE)
                inserted = max(cur.rowcount, 0)
            if inserted:
                upsert_last(cur, newest)
            if before_commit is not None:
                before_commit(cur)
        return inserted

    @staticmethod
    def _copy_direct(cur: Cursor, data: bytes, rows: int) -> int:
        """COPY into ``samples`` itself; -1 if a row already exists (nothing written)."""
        try:
            with (
                cur.connection.transaction(),  # a savepoint
                cur.copy(
                    "COPY samples (ts, value, tag_id, quality) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.write(data)
        except psycopg.errors.UniqueViolation:
            return -1
        return rows

    def _write_text(self, strings: Batch) -> int:
        strings = dedupe_first(strings)
        with self._write_lock:
            for attempt in range(_ATTEMPTS):
                con = self._write_con()
                try:
                    with con.cursor() as cur:
                        inserted = text_store.insert(cur, strings)
                    con.commit()
                    return inserted
                except (psycopg.OperationalError, psycopg.errors.DeadlockDetected):
                    _rollback(con)
                    if attempt == _ATTEMPTS - 1:
                        raise
                    self.retries += 1
                except BaseException:
                    _rollback(con)
                    raise
        raise AssertionError("unreachable")

    def purge_before(self, ts_ns: int) -> int:
        with self._write_lock:
            con = self._write_con()
            dropped: list[int] = []
            with committed(con) as cur:
                self._lock_samples(cur)
                deleted = 0
                if self.partitioning == "native":
                    dropped, deleted = self._drop_partitions_before(cur, ts_ns)
                deleted += self._delete_samples_before(cur, None, ts_ns)
                deleted += text_store.purge_before(cur, ts_ns)
                # A tag whose newest sample is older than the cut-off has no sample left.
                cur.execute("DELETE FROM last_value WHERE ts < %s", [ts_ns])
                max_ts = self._scalar(cur, "SELECT max(ts) FROM last_value")
            self._partitions.difference_update(dropped)
            self._max_ts = max_ts
            return deleted

    def delete_tags_before(self, cur: Cursor, tags: list[int], cut: int) -> int:
        """Retention of one class: samples of ``tags`` older than ``cut`` (both tables)
        and their stale ``last_value``; the caller (the retention mixin) commits."""
        self._lock_samples(cur)
        deleted = self._delete_samples_before(cur, tags, cut)
        cur.execute("DELETE FROM samples_text WHERE tag_id = ANY(%s) AND ts < %s", [tags, cut])
        deleted += max(cur.rowcount, 0)
        cur.execute("DELETE FROM last_value WHERE tag_id = ANY(%s) AND ts < %s", [tags, cut])
        return deleted

    def _lock_samples(self, cur: Cursor) -> None:
        """Whatever a layout's writers serialise on (rows: nothing, the key does it)."""

    COUNT_EXPR = "count(*)"
    """SQL counting the samples of this layout's rows."""

    def _drop_partitions_before(self, cur: Cursor, ts_ns: int) -> tuple[list[int], int]:
        """Drop the daily partitions wholly before ``ts_ns``: (their days, samples)."""
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_PARTITIONS])
        dropped: list[int] = []
        deleted = 0
        for day in sorted(self._load_partitions(cur)):
            if (day + 1) * DAY_NS > ts_ns:
                continue
            name = sql.Identifier(self.partition_name(day))
            count = sql.SQL("SELECT {} FROM {}").format(sql.SQL(self.COUNT_EXPR), name)
            deleted += self._scalar(cur, count) or 0
            cur.execute(sql.SQL("DROP TABLE {}").format(name))
            dropped.append(day)
        return dropped, deleted

    def _delete_samples_before(self, cur: Cursor, tags: list[int] | None, cut: int) -> int:
        """Numeric samples of ``tags`` (every tag when None) older than ``cut``."""
        if tags is None:
            cur.execute("DELETE FROM samples WHERE ts < %s", [cut])
        else:
            cur.execute("DELETE FROM samples WHERE tag_id = ANY(%s) AND ts < %s", [tags, cut])
        return max(cur.rowcount, 0)

    # -- reads --------------------------------------------------------------------------

    def _copy_out(self, query: sql.Composed, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        def fetch(con: Connection) -> bytes:
            with con.cursor() as cur, cur.copy(query) as copy:
                return b"".join(bytes(chunk) for chunk in copy)

        return decode_copy(self._read(fetch), dtype)

    def raw(self, tag_id: int, start_ns: int, end_ns: int, limit: int = 100_000) -> Batch:
        if limit <= 0 or end_ns <= start_ns:
            if not self._open:
                raise RuntimeError("store is not open")
            return Batch.empty()
        query = sql.SQL(_RAW).format(
            tag=sql.Literal(int(tag_id)),
            start=sql.Literal(int(start_ns)),
            end=sql.Literal(int(end_ns)),
            limit=sql.Literal(int(limit)),
        )
        numeric = rows_to_batch(self._copy_out(query, _SAMPLE_ROW))
        strings = self._read(lambda con: text_store.raw(con, tag_id, start_ns, end_ns, limit))
        return merge_range(numeric, strings, limit)

    def before(self, tag_id: int, ts_ns: int, lookback_ns: int) -> Batch:
        query = sql.SQL(_BEFORE).format(
            tag=sql.Literal(int(tag_id)),
            start=sql.Literal(int(ts_ns - lookback_ns)),
            end=sql.Literal(int(ts_ns)),
        )
        numeric = rows_to_batch(self._copy_out(query, _SAMPLE_ROW))
        return newest(
            numeric, self._read(lambda con: text_store.before(con, tag_id, ts_ns, lookback_ns))
        )

    def last(self, tag_ids: Sequence[int]) -> Batch:
        if not tag_ids:
            if not self._open:
                raise RuntimeError("store is not open")
            return Batch.empty()
        ids = [int(t) for t in tag_ids]
        rows = self._read(
            lambda con: con.execute(
                "SELECT tag_id, ts, value, quality FROM last_value"
                " WHERE tag_id = ANY(%s::integer[]) ORDER BY tag_id",
                [ids],
            ).fetchall()
        )
        strings = self._read(lambda con: text_store.last(con, ids))
        if not rows:
            return strings
        tag, ts, value, quality = zip(*rows, strict=True)
        numeric = Batch.of(tag, ts, value, np.asarray(quality, dtype=np.int32).view(np.uint32))
        return newest_per_tag(numeric, strings)

    def buckets(self, tag_id: int, start_ns: int, end_ns: int, bucket_ns: int) -> Aggregates:
        check_bucket(bucket_ns)
        if self._read(lambda con: text_store.has_text(con, tag_id, start_ns, end_ns)):
            raise NotNumericError(tag_id)
        rec = self._copy_out(
            self._buckets_query(int(tag_id), int(start_ns), int(end_ns), int(bucket_ns)),
            _BUCKET_ROW,
        )
        return Aggregates(
            bucket_ns=rec["bucket"].astype(np.int64),
            avg=rec["avg"].astype(np.float64),
            min=rec["min"].astype(np.float64),
            max=rec["max"].astype(np.float64),
            count=rec["count"].astype(np.int64),
        )

    def _buckets_query(self, tag_id: int, start_ns: int, end_ns: int, width: int) -> sql.Composed:
        """A ``COPY ... TO STDOUT (FORMAT BINARY)`` of ``_BUCKET_ROW`` records."""
        return sql.SQL(_BUCKETS).format(
            tag=sql.Literal(tag_id),
            start=sql.Literal(start_ns),
            end=sql.Literal(end_ns),
            width=sql.Literal(width),
        )

    def count(self) -> int:
        def fetch(con: Connection) -> int:
            with con.cursor() as cur:
                return self._scalar(cur, f"SELECT {self.COUNT_EXPR} FROM {self.TABLE}") or 0

        return self._read(fetch) + self._read(text_store.count)
