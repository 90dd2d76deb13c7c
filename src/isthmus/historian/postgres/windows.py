"""The PostgreSQL historian, window layout: one row per tag and minute per write.

The rows layout (:mod:`~isthmus.historian.postgres.store`) stores one row per sample;
PostgreSQL then spends most of a write on per-row work (tuple headers, the primary-key
index, WAL records) and tops out near 150-250k samples/s on this class of machine.  The
window layout stores, for each tag, the samples that one write brought for one minute as
three arrays in one row (see :mod:`~isthmus.historian.postgres.window_schema`): a hub
transaction of 320,000 samples of 1,000 tags becomes 1,000 rows.

Idempotency per sample (the Store contract: a ``(tag, ts)`` is stored once, the first
write wins) without a per-sample key: writers take one transaction-level advisory lock,
read ``last_value`` (the newest stored timestamp of each tag, kept in the same
transaction), and only for the tags whose incoming samples are not all newer than it (a
redelivery, a replay, late data) read back the stored timestamps of that range and drop
the samples already there.  Live data in order costs one indexed lookup per write.

Reads unnest the windows that can hold the range (windows never cross a minute, so the
index on ``(tag_id, ts_first)`` bounds the scan); buckets of whole minutes use the
windows' ``n_ok/v_sum/v_min/v_max`` and only open the windows cut by the range's ends.

Everything else — connection handling, tags, string samples, ``last_value``, the Grafana
views, retention — is the rows store's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import sql

from isthmus.historian.base import Store
from isthmus.historian.common import BAD_THRESHOLD, dedupe_first
from isthmus.historian.postgres import text as text_store
from isthmus.historian.postgres.store import (
    _SAMPLE_ROW,
    BeforeCommit,
    Connection,
    Cursor,
    PostgresStore,
    committed,
    last_per_tag,
    rows_to_batch,
    upsert_last,
)
from isthmus.historian.postgres.window_schema import WINDOW_NS
from isthmus.historian.text import merge_range, newest, split_text
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig
from isthmus.model.errors import StoreError

_LOCK_WINDOWS = 0x15_7A_05_03

# -- COPY BINARY of windows, built by NumPy ------------------------------------------------

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_FIELDS = 11

_HEAD = np.dtype(
    [
        ("nf", ">i2"),
        ("l_tag", ">i4"),
        ("tag", ">i4"),
        ("l_first", ">i4"),
        ("first", ">i8"),
        ("l_last", ">i4"),
        ("last", ">i8"),
        ("l_n", ">i4"),
        ("n", ">i4"),
        ("l_ok", ">i4"),
        ("ok", ">i4"),
    ]
)
_STATS = np.dtype(
    [
        ("l_sum", ">i4"),
        ("sum", ">f8"),
        ("l_min", ">i4"),
        ("min", ">f8"),
        ("l_max", ">i4"),
        ("max", ">f8"),
    ]
)
_NULL_STATS = b"\xff\xff\xff\xff" * 3
# A field holding a one-dimensional array without NULLs: its length, then the array
# header (ndim, has-nulls flag, element type oid, length, lower bound).
_ARRAY = np.dtype(
    [
        ("len", ">i4"),
        ("ndim", ">i4"),
        ("flags", ">i4"),
        ("oid", ">i4"),
        ("dim", ">i4"),
        ("lbound", ">i4"),
    ]
)
_OID_INT8, _OID_FLOAT8, _OID_INT4 = 20, 701, 23
_EL_I8 = np.dtype([("l", ">i4"), ("v", ">i8")])
_EL_F8 = np.dtype([("l", ">i4"), ("v", ">f8")])
_EL_I4 = np.dtype([("l", ">i4"), ("v", ">i4")])


def window_starts(tag_id: npt.NDArray[np.int32], ts: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """Row index where each window begins, for rows sorted by (tag, ts): a new window at
    each new tag or new minute."""
    if len(ts) == 0:
        return np.empty(0, dtype=np.intp)
    minute = ts - np.mod(ts, np.int64(WINDOW_NS))
    new = np.ones(len(ts), dtype=np.bool_)
    new[1:] = (tag_id[1:] != tag_id[:-1]) | (minute[1:] != minute[:-1])
    return np.flatnonzero(new)


def _array_headers(counts: npt.NDArray[np.int64], oid: int, elem_size: int) -> bytes:
    head = np.empty(len(counts), dtype=_ARRAY)
    head["len"] = 20 + counts * (4 + elem_size)
    head["ndim"] = 1
    head["flags"] = 0
    head["oid"] = oid
    head["dim"] = counts
    head["lbound"] = 1
    return head.tobytes()


def encode_windows(batch: Batch) -> tuple[bytes, int]:
    """COPY BINARY of the windows of a batch sorted by (tag, ts) without duplicates;
    returns the stream and the number of windows."""
    n_rows = len(batch)
    starts = window_starts(batch.tag_id, batch.ts)
    ends = np.append(starts[1:], n_rows)
    counts = (ends - starts).astype(np.int64)
    ok = batch.quality < BAD_THRESHOLD
    n_ok = np.add.reduceat(ok.astype(np.int64), starts)
    value = batch.value
    v_sum = np.add.reduceat(np.where(ok, value, 0.0), starts)
    v_min = np.fmin.reduceat(np.where(ok, value, np.inf), starts)  # PostgreSQL's min skips NaN
    v_max = np.maximum.reduceat(np.where(ok, value, -np.inf), starts)  # its max returns it

    head = np.empty(len(starts), dtype=_HEAD)
    head["nf"] = _FIELDS
    head["l_tag"] = 4
    head["tag"] = batch.tag_id[starts]
    head["l_first"] = 8
    head["first"] = batch.ts[starts]
    head["l_last"] = 8
    head["last"] = batch.ts[ends - 1]
    head["l_n"] = 4
    head["n"] = counts
    head["l_ok"] = 4
    head["ok"] = n_ok
    stats = np.empty(len(starts), dtype=_STATS)
    stats["l_sum"] = 8
    stats["sum"] = v_sum
    stats["l_min"] = 8
    stats["min"] = v_min
    stats["l_max"] = 8
    stats["max"] = v_max

    el_ts = np.empty(n_rows, dtype=_EL_I8)
    el_ts["l"] = 8
    el_ts["v"] = batch.ts
    el_value = np.empty(n_rows, dtype=_EL_F8)
    el_value["l"] = 8
    el_value["v"] = value
    el_quality = np.empty(n_rows, dtype=_EL_I4)
    el_quality["l"] = 4
    el_quality["v"] = batch.quality.view(np.int32)

    # bytes, not memoryviews: slices of bytes are not tracked by the garbage collector, so
    # a write of thousands of windows does not trigger a full collection (measured: a
    # ~40 ms pause in ~1 % of writes of 1,000 windows with memoryview slices).
    head_b = head.tobytes()
    stats_b = stats.tobytes()
    arr_ts = _array_headers(counts, _OID_INT8, 8)
    arr_value = _array_headers(counts, _OID_FLOAT8, 8)
    arr_quality = _array_headers(counts, _OID_INT4, 4)
    ts_b = el_ts.tobytes()
    value_b = el_value.tobytes()
    quality_b = el_quality.tobytes()

    hs, ss, asz = _HEAD.itemsize, _STATS.itemsize, _ARRAY.itemsize
    parts: list[bytes] = [_COPY_HEADER]
    has_ok = (n_ok > 0).tolist()
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        parts += (
            head_b[i * hs : (i + 1) * hs],
            stats_b[i * ss : (i + 1) * ss] if has_ok[i] else _NULL_STATS,
            arr_ts[i * asz : (i + 1) * asz],
            ts_b[s * 12 : e * 12],
            arr_value[i * asz : (i + 1) * asz],
            value_b[s * 12 : e * 12],
            arr_quality[i * asz : (i + 1) * asz],
            quality_b[s * 8 : e * 8],
        )
    parts.append(_COPY_TRAILER)
    return b"".join(parts), len(starts)


def drop_stored(batch: Batch, stored_tag: npt.NDArray[Any], stored_ts: npt.NDArray[Any]) -> Batch:
    """The rows of a duplicate-free batch sorted by (tag, ts) whose ``(tag, ts)`` is not
    among the stored ones; order kept."""
    if len(stored_ts) == 0:
        return batch
    n_stored = len(stored_ts)
    tag = np.concatenate([stored_tag.astype(np.int64), batch.tag_id.astype(np.int64)])
    ts = np.concatenate([stored_ts.astype(np.int64), batch.ts])
    src = np.concatenate([np.zeros(n_stored, np.int8), np.ones(len(batch), np.int8)])
    order = np.lexsort((src, ts, tag))  # a stored row sorts right before its batch twin
    t, s, o = tag[order], ts[order], src[order]
    twin = np.zeros(len(order), dtype=np.bool_)
    twin[1:] = (t[1:] == t[:-1]) & (s[1:] == s[:-1])
    keep = np.sort(order[(o == 1) & ~twin] - n_stored)
    return batch.select(keep)


# -- statements -------------------------------------------------------------------------------

# Tags of the batch whose oldest incoming sample is not newer than their stored newest.
_OVERLAP = """
SELECT r.tag
FROM unnest(string_to_array(%s, ',')::integer[], string_to_array(%s, ',')::bigint[]) AS r(tag, lo)
JOIN last_value AS l ON l.tag_id = r.tag
WHERE r.lo <= l.ts
"""

# Stored timestamps of those tags inside the batch's range of each (windows never cross a
# minute: a window holding a sample >= lo starts at or after lo's minute).
_STORED = """
SELECT w.tag_id, u.ts
FROM unnest(%s::integer[], %s::bigint[], %s::bigint[], %s::bigint[]) AS r(tag, lo, lo_minute, hi)
JOIN sample_windows AS w
  ON w.tag_id = r.tag AND w.minute >= r.lo_minute AND w.minute <= r.hi
 AND w.ts_first >= r.lo_minute AND w.ts_first <= r.hi AND w.ts_last >= r.lo
CROSS JOIN LATERAL unnest(w.ts) AS u(ts)
WHERE u.ts >= r.lo AND u.ts <= r.hi
"""

_IN_RANGE = """
    w.tag_id = {tag} AND w.minute >= {lo} AND w.minute < {end}
    AND w.ts_first >= {lo} AND w.ts_first < {end} AND w.ts_last >= {start}
"""

# With a limit, only the minutes that can hold the first ``limit`` samples are read.
# Samples before ``start`` can only be in the range's first minute, so the first ``limit``
# samples of the range lie at or before the minute where the running count of samples
# (in index order, window headers only) reaches ``limit`` plus that first minute's count.
# Without this bound the planner sorts the whole range (it cannot tell how many samples
# an array holds).
_RAW_LAST_MINUTE = """
SELECT minute FROM (
    SELECT w.minute, sum(w.n) OVER (ORDER BY w.minute, w.ts_first ROWS UNBOUNDED PRECEDING)
           AS running
    FROM sample_windows AS w
    WHERE {in_range}
    ORDER BY w.minute, w.ts_first
) AS c
WHERE running >= {limit} + (
    SELECT coalesce(sum(w.n), 0) FROM sample_windows AS w WHERE {in_range} AND w.minute = {lo})
LIMIT 1
"""

_RAW = """
COPY (
    SELECT u.ts, u.value, w.tag_id, u.quality
    FROM sample_windows AS w, unnest(w.ts, w.value, w.quality) AS u(ts, value, quality)
    WHERE {in_range} AND w.minute <= {last_minute} AND u.ts >= {start} AND u.ts < {end}
    ORDER BY w.minute, u.ts LIMIT {limit}
) TO STDOUT (FORMAT BINARY)
"""

# The newest sample before ``end`` lies in the newest minute that has a window starting
# before it (that window's first sample is before ``end``; windows of one minute may
# overlap when late data arrived, windows of different minutes never do).
_BEFORE = """
COPY (
    SELECT u.ts, u.value, w.tag_id, u.quality
    FROM sample_windows AS w, unnest(w.ts, w.value, w.quality) AS u(ts, value, quality)
    WHERE w.tag_id = {tag} AND w.ts_first < {end} AND w.ts_last >= {start}
      AND w.minute = (
          SELECT minute FROM sample_windows
          WHERE tag_id = {tag} AND minute >= {lo} AND minute < {end}
            AND ts_first >= {lo} AND ts_first < {end}
          ORDER BY minute DESC, ts_first DESC LIMIT 1)
      AND u.ts >= {start} AND u.ts < {end}
    ORDER BY u.ts DESC LIMIT 1
) TO STDOUT (FORMAT BINARY)
"""

_FLOOR = "(({x}) - (((({x}) % {width}) + {width}) % {width}))"

# Buckets: windows inside the range from their per-window aggregates when a bucket holds
# whole minutes, the others (cut by the range, or all when buckets are finer) unnested.
_BUCKETS = """
COPY (
    SELECT bucket, sum(s) / sum(c), min(mn), max(mx), sum(c)::bigint
    FROM (
        SELECT {floor_first} AS bucket, n_ok AS c, v_sum AS s, v_min AS mn, v_max AS mx
        FROM sample_windows
        WHERE {whole} AND tag_id = {tag} AND minute >= {lo} AND minute < {end}
          AND ts_first >= {start} AND ts_last < {end} AND n_ok > 0
        UNION ALL
        SELECT {floor_u} AS bucket, 1, u.value, u.value, u.value
        FROM sample_windows AS w, unnest(w.ts, w.value, w.quality) AS u(ts, value, quality)
        WHERE w.tag_id = {tag} AND w.minute >= {lo} AND w.minute < {end}
          AND w.ts_first >= {lo} AND w.ts_first < {end} AND w.ts_last >= {start}
          AND NOT ({whole} AND w.ts_first >= {start} AND w.ts_last < {end})
          AND u.ts >= {start} AND u.ts < {end} AND u.quality >= 0
    ) AS parts
    GROUP BY bucket ORDER BY bucket
) TO STDOUT (FORMAT BINARY)
"""

# Windows straddling a cut-off keep their samples at or after it (aggregates recomputed).
_TRIM = """
UPDATE sample_windows AS w
SET ts_first = k.ts[1], ts_last = k.ts[cardinality(k.ts)], n = cardinality(k.ts),
    n_ok = k.n_ok, v_sum = k.v_sum, v_min = k.v_min, v_max = k.v_max,
    ts = k.ts, value = k.value, quality = k.quality
FROM (
    SELECT w2.tag_id, w2.ts_first AS old_first,
           array_agg(u.ts ORDER BY u.ts) AS ts,
           array_agg(u.value ORDER BY u.ts) AS value,
           array_agg(u.quality ORDER BY u.ts) AS quality,
           count(*) FILTER (WHERE u.quality >= 0)::integer AS n_ok,
           sum(u.value) FILTER (WHERE u.quality >= 0) AS v_sum,
           min(u.value) FILTER (WHERE u.quality >= 0) AS v_min,
           max(u.value) FILTER (WHERE u.quality >= 0) AS v_max
    FROM sample_windows AS w2, unnest(w2.ts, w2.value, w2.quality) AS u(ts, value, quality)
    WHERE w2.minute = %(cut_minute)s AND w2.ts_first >= %(cut_minute)s
      AND w2.ts_first < %(cut)s AND w2.ts_last >= %(cut)s AND u.ts >= %(cut)s {tags}
    GROUP BY w2.tag_id, w2.ts_first
) AS k
WHERE w.tag_id = k.tag_id AND w.minute = %(cut_minute)s AND w.ts_first = k.old_first
"""


def _floor(x: str, width: int) -> str:
    return _FLOOR.format(x=x, width=width)


def _minute_floor(ts: int) -> int:
    return ts - ts % WINDOW_NS


class PostgresWindowStore(PostgresStore):
    """PostgreSQL historian, window layout; implements :class:`~isthmus.historian.base.Store`."""

    LAYOUT = "windows"
    TABLE = "sample_windows"

    def __init__(self, config: StorageConfig, data_dir: Path, *, dsn: str | None = None) -> None:
        super().__init__(config, data_dir, dsn=dsn, direct_copy=False)
        self.windows_written = 0
        """Rows of ``sample_windows`` written by this store (for the benchmarks)."""

    # -- writes ---------------------------------------------------------------------------

    def write(self, batch: Batch, before_commit: BeforeCommit | None = None) -> int:
        if not self._open:
            raise RuntimeError("store is not open")
        if len(batch) == 0 and before_commit is None:
            return 0
        numeric, strings = split_text(batch)
        if strings is not None:
            strings = dedupe_first(strings)
        if len(numeric):
            numeric = dedupe_first(numeric)
            if not _sorted_by_tag(numeric):
                numeric = numeric.select(np.lexsort((numeric.ts, numeric.tag_id)))
        with self._write_lock:
            return self._retrying(
                numeric.ts,
                lambda con: self._write_once_windows(con, numeric, strings, before_commit),
            )

    def _write_once_windows(
        self,
        con: Connection,
        numeric: Batch,
        strings: Batch | None,
        before_commit: BeforeCommit | None,
    ) -> int:
        inserted = 0
        with committed(con) as cur:
            if len(numeric):
                cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_WINDOWS])
                fresh = self._new_samples(cur, numeric)
                if len(fresh):
                    data, windows = encode_windows(fresh)
                    with cur.copy(
                        "COPY sample_windows (tag_id, ts_first, ts_last, n, n_ok, v_sum,"
                        " v_min, v_max, ts, value, quality) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.write(data)
                    upsert_last(cur, last_per_tag(fresh))
                    inserted += len(fresh)
                    self.windows_written += windows
            if strings is not None and len(strings):
                inserted += text_store.insert(cur, strings)
            if before_commit is not None:
                before_commit(cur)
        return inserted

    @staticmethod
    def _new_samples(cur: Cursor, batch: Batch) -> Batch:
        """The rows of ``batch`` (sorted by tag, ts; no duplicates) not stored yet."""
        firsts = np.flatnonzero(np.append(True, batch.tag_id[1:] != batch.tag_id[:-1]))
        lasts = np.append(firsts[1:], len(batch)) - 1
        tags = batch.tag_id[firsts]
        lo = batch.ts[firsts]
        # Lists joined to text by hand: adapting 1,000-element Python lists costs psycopg
        # more than the query itself.
        overlap = [int(r[0]) for r in cur.execute(_OVERLAP, [_csv(tags), _csv(lo)]).fetchall()]
        if not overlap:
            return batch
        pick = np.isin(tags, np.asarray(overlap, dtype=np.int32))
        hi = batch.ts[lasts]
        lo_pick = lo[pick]
        lo_minute = lo_pick - np.mod(lo_pick, np.int64(WINDOW_NS))
        rows = cur.execute(
            _STORED,
            [tags[pick].tolist(), lo_pick.tolist(), lo_minute.tolist(), hi[pick].tolist()],
        ).fetchall()
        if not rows:
            return batch
        stored = np.asarray(rows, dtype=np.int64)
        return drop_stored(batch, stored[:, 0], stored[:, 1])

    def _lock_samples(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_WINDOWS])

    def _delete_samples_before(self, cur: Cursor, tags: list[int] | None, cut: int) -> int:
        """Samples of ``tags`` (every tag when None) older than ``cut``: windows wholly
        before it deleted, windows straddling it trimmed; returns the samples removed."""
        only = "" if tags is None else " AND tag_id = ANY(%(tags)s)"
        only_w2 = "" if tags is None else " AND w2.tag_id = ANY(%(tags)s)"
        # Only windows of the cut-off's minute can straddle it (windows never cross a
        # minute): the bounds keep retention runs to the index and that minute.
        params: dict[str, Any] = {"cut": cut, "tags": tags, "cut_minute": _minute_floor(cut)}
        straddling = self._scalar(
            cur,
            "SELECT coalesce(sum(n), 0) FROM sample_windows WHERE minute = %(cut_minute)s"
            " AND ts_first >= %(cut_minute)s AND ts_first < %(cut)s AND ts_last >= %(cut)s" + only,
            params,
        )
        whole = self._scalar(
            cur,
            "WITH d AS (DELETE FROM sample_windows WHERE minute <= %(cut_minute)s"
            " AND ts_first < %(cut)s AND ts_last < %(cut)s" + only + " RETURNING n)"
            " SELECT coalesce(sum(n), 0) FROM d",
            params,
        )
        kept = self._scalar(
            cur,
            "WITH t AS (" + _TRIM.format(tags=only_w2) + " RETURNING w.n)"
            " SELECT coalesce(sum(n), 0) FROM t",
            params,
        )
        return (whole or 0) + (straddling or 0) - (kept or 0)

    # -- reads ----------------------------------------------------------------------------

    def raw(self, tag_id: int, start_ns: int, end_ns: int, limit: int = 100_000) -> Batch:
        if limit <= 0 or end_ns <= start_ns:
            if not self._open:
                raise RuntimeError("store is not open")
            return Batch.empty()
        params = {
            "tag": sql.Literal(int(tag_id)),
            "lo": sql.Literal(_minute_floor(int(start_ns))),
            "start": sql.Literal(int(start_ns)),
            "end": sql.Literal(int(end_ns)),
            "limit": sql.Literal(int(limit)),
        }
        in_range = sql.SQL(_IN_RANGE).format(**params)
        bound = sql.SQL(_RAW_LAST_MINUTE).format(in_range=in_range, **params)
        last_minute = self._read(lambda con: con.execute(bound).fetchone())
        query = sql.SQL(_RAW).format(
            in_range=in_range,
            last_minute=sql.Literal(int(last_minute[0]) if last_minute else int(end_ns)),
            **params,
        )
        numeric = rows_to_batch(self._copy_out(query, _SAMPLE_ROW))
        strings = self._read(lambda con: text_store.raw(con, tag_id, start_ns, end_ns, limit))
        return merge_range(numeric, strings, limit)

    def before(self, tag_id: int, ts_ns: int, lookback_ns: int) -> Batch:
        start = int(ts_ns - lookback_ns)
        query = sql.SQL(_BEFORE).format(
            tag=sql.Literal(int(tag_id)),
            start=sql.Literal(start),
            lo=sql.Literal(_minute_floor(start)),
            end=sql.Literal(int(ts_ns)),
        )
        numeric = rows_to_batch(self._copy_out(query, _SAMPLE_ROW))
        return newest(
            numeric, self._read(lambda con: text_store.before(con, tag_id, ts_ns, lookback_ns))
        )

    def _buckets_query(self, tag_id: int, start_ns: int, end_ns: int, width: int) -> sql.Composed:
        return sql.SQL(
            _BUCKETS.format(
                floor_first=_floor("ts_first", width),
                floor_u=_floor("u.ts", width),
                whole="TRUE" if width % WINDOW_NS == 0 else "FALSE",
                tag="{tag}",
                start="{start}",
                end="{end}",
                lo="{lo}",
            )
        ).format(
            tag=sql.Literal(tag_id),
            start=sql.Literal(start_ns),
            end=sql.Literal(end_ns),
            lo=sql.Literal(_minute_floor(start_ns)),
        )

    COUNT_EXPR = "coalesce(sum(n), 0)"


def _csv(values: npt.NDArray[Any]) -> str:
    return ",".join(map(str, values.tolist()))


def _sorted_by_tag(batch: Batch) -> bool:
    if len(batch) < 2:
        return True
    d_tag = np.diff(batch.tag_id)
    return bool(np.all((d_tag > 0) | ((d_tag == 0) & (np.diff(batch.ts) > 0))))


def postgres_store(config: StorageConfig, data_dir: Path, *, dsn: str | None = None) -> Store:
    """The PostgreSQL historian of ``storage.layout`` (``windows`` or ``rows``)."""
    if config.layout == "rows":
        return PostgresStore(config, data_dir, dsn=dsn)
    if config.layout == "windows":
        return PostgresWindowStore(config, data_dir, dsn=dsn)
    raise StoreError(f"unknown postgres layout {config.layout!r}")
