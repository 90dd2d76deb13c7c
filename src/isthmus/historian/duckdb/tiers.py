"""Downsampling tiers and retention per tag class for the DuckDB historian.

Tables (created beside ``samples`` by :data:`TIER_SCHEMA`)
    ``tier_1m`` and ``tier_1h``: one row per tag and non-empty bucket, with the count,
    sum, min and max of its Good/Uncertain samples and the first and last of them with
    their timestamps (Bad samples are left out, as in :meth:`DuckDBStore.buckets`).
    These combine exactly: the 1-hour tier is computed from the 1-minute tier, and a
    bucket of any multiple of a tier's width from that tier's rows (avg = sum / count).
    ``tier_state(name, value)``: the watermarks ``wm:1m`` and ``wm:1h`` (every bucket
    before them is rolled up) and the cut-offs retention applied (``cut:<tier>:<class>``).
    ``tier_dirty(tag_id, bucket)``: 1-minute buckets that received samples after they
    were rolled up (late data, a replayed spool), written by ``write`` in the same
    transaction as the samples.  ``tag_retention(tag_id, class)``: tags not in the
    default class.

Maintenance (:meth:`TieredMixin.maintain`, idempotent and crash-safe)
    1. recompute the late 1-minute buckets (and their hours) from the raw samples;
    2. roll up the closed minutes since ``wm:1m`` from ``samples``, chunk by chunk, each
       chunk in one transaction with its new watermark;
    3. the same for hours since ``wm:1h`` from ``tier_1m``;
    4. per class, delete raw samples and rollups older than the class keeps them, in one
       transaction.  Raw samples are never deleted before they are rolled up (the
       cut-off is capped by ``wm:1m``), nor 1-minute rows before their hour is.

    A crash (or an exception) inside a step rolls that step back; the next run starts
    again from the last committed watermark, so running maintain twice equals once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from isthmus.historian.base import Aggregates, MaintenanceReport
from isthmus.historian.common import BAD_THRESHOLD
from isthmus.historian.retention import check_classes
from isthmus.model.config import DEFAULT_RETENTION_CLASS, StorageConfig

S_NS = 1_000_000_000
MINUTE_NS = 60 * S_NS
HOUR_NS = 3600 * S_NS
TIER_WIDTHS = {"1m": MINUTE_NS, "1h": HOUR_NS}
SETTLE_NS = 10 * S_NS
"""A minute is rolled up once it ended this long ago (samples still in flight)."""
INT64_MIN = -(2**63)

TIER_SCHEMA = """
CREATE TABLE IF NOT EXISTS tier_1m (
    tag_id INTEGER NOT NULL, bucket BIGINT NOT NULL, n BIGINT NOT NULL,
    total DOUBLE NOT NULL, lo DOUBLE NOT NULL, hi DOUBLE NOT NULL,
    first_ts BIGINT NOT NULL, first_val DOUBLE NOT NULL,
    last_ts BIGINT NOT NULL, last_val DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS tier_1h (
    tag_id INTEGER NOT NULL, bucket BIGINT NOT NULL, n BIGINT NOT NULL,
    total DOUBLE NOT NULL, lo DOUBLE NOT NULL, hi DOUBLE NOT NULL,
    first_ts BIGINT NOT NULL, first_val DOUBLE NOT NULL,
    last_ts BIGINT NOT NULL, last_val DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS tier_state (name VARCHAR PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS tier_dirty (tag_id INTEGER NOT NULL, bucket BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS tag_retention (tag_id INTEGER PRIMARY KEY, class VARCHAR NOT NULL);
"""


def _floor(col: str, width: int | str) -> str:
    """SQL for the epoch-aligned floor (DuckDB's % truncates toward zero)."""
    return f"({col} - ((({col} % {width}) + {width}) % {width}))"


def floor_to(ts: int, width: int) -> int:
    return ts - ts % width


def ceil_to(ts: int, width: int) -> int:
    return -((-ts) // width) * width


_GOOD = f"quality < {BAD_THRESHOLD}"

# The 1-minute rows of the raw samples in [lo, hi) (both on the minute grid).
_ROLL_RAW = f"""
SELECT tag_id, {_floor("ts", MINUTE_NS)} AS bucket, count(*), sum(value), min(value), max(value),
       min(ts), arg_min(value, ts), max(ts), arg_max(value, ts)
FROM samples WHERE ts >= $lo AND ts < $hi AND {_GOOD}
GROUP BY tag_id, bucket
"""

# The 1-hour rows of the 1-minute rows in [lo, hi) (both on the hour grid).
_ROLL_1M = f"""
SELECT tag_id, {_floor("bucket", HOUR_NS)} AS hour, sum(n)::BIGINT, sum(total), min(lo), max(hi),
       min(first_ts), arg_min(first_val, first_ts), max(last_ts), arg_max(last_val, last_ts)
FROM tier_1m WHERE bucket >= $lo AND bucket < $hi
GROUP BY tag_id, hour
"""

_SET_STATE = """
INSERT INTO tier_state VALUES ($name, $value)
ON CONFLICT (name) DO UPDATE SET value = excluded.value
"""


@dataclass(frozen=True, slots=True)
class Rollups:
    """Rows of one tier for one tag, oldest first."""

    bucket_ns: npt.NDArray[np.int64]
    avg: npt.NDArray[np.float64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    first: npt.NDArray[np.float64]
    last: npt.NDArray[np.float64]
    first_ts: npt.NDArray[np.int64]
    last_ts: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.bucket_ns)


Segment = tuple[str, int, int]
"""(source, start, end): ``raw``, ``1m`` or ``1h`` rows of ``[start, end)``."""


def plan(start: int, end: int, width: int, watermarks: Mapping[str, int | None]) -> list[Segment]:
    """Which source answers which part of a ``width`` bucketed query over ``[start, end)``.

    The coarsest tier whose width divides ``width`` answers the whole tier buckets it has
    (up to its watermark); finer tiers, then raw samples, answer the edges and the recent
    part.  Buckets of a width no tier divides come from raw samples only.
    """
    levels = [
        (name, w, wm)
        for name, w in sorted(TIER_WIDTHS.items(), key=lambda kv: -kv[1])
        if width % w == 0 and (wm := watermarks.get(name)) is not None
    ]

    def split(lo: int, hi: int, rest: list[tuple[str, int, int]]) -> list[Segment]:
        if lo >= hi:
            return []
        if not rest:
            return [("raw", lo, hi)]
        (name, w, wm), finer = rest[0], rest[1:]
        a, b = ceil_to(lo, w), min(floor_to(hi, w), wm)
        if a >= b:
            return split(lo, hi, finer)
        return [*split(lo, a, finer), (name, a, b), *split(b, hi, finer)]

    return split(start, end, levels)


def _bucket_sql(segments: list[Segment]) -> str:
    parts = []
    for i, (source, _, _) in enumerate(segments):
        if source == "raw":
            parts.append(
                f"SELECT {_floor('ts', '$w')} AS b, count(*) AS n, sum(value) AS s, "
                f"min(value) AS lo, max(value) AS hi FROM samples "
                f"WHERE tag_id = $tag AND ts >= $lo{i} AND ts < $hi{i} AND {_GOOD} GROUP BY b"
            )
        else:
            parts.append(
                f"SELECT {_floor('bucket', '$w')} AS b, sum(n) AS n, sum(total) AS s, "
                f"min(lo) AS lo, max(hi) AS hi FROM tier_{source} "
                f"WHERE tag_id = $tag AND bucket >= $lo{i} AND bucket < $hi{i} GROUP BY b"
            )
    union = " UNION ALL ".join(parts)
    return (
        f"SELECT b, sum(s) / sum(n), min(lo), max(hi), sum(n)::BIGINT FROM ({union}) "
        "GROUP BY b ORDER BY b"
    )


class TieredMixin:
    """Tiers, retention per class and tier-aware bucket queries for ``DuckDBStore``.

    Relies on the store's writer cursor and lock; every step runs under the write lock,
    which is released between rollup chunks so that writes keep flowing.
    """

    config: StorageConfig
    _write_lock: threading.Lock
    _max_ts: int | None
    _tier_wm: int | None = None
    """``wm:1m`` as committed (samples older than it mark their minute as late)."""
    chunk_target_rows = 2_000_000
    """Rollup chunks grow or shrink to hold about this many samples."""

    def _write_cursor(self) -> Any:
        raise NotImplementedError

    def _reader(self) -> Any:
        raise NotImplementedError

    # -- hooks called by the store ---------------------------------------------------

    def _open_tiers(self, cursor: Any) -> None:
        cursor.execute(TIER_SCHEMA)
        self._tier_wm = self._state(cursor, "wm:1m")

    def _mark_late(self, cursor: Any, ts_lo: int) -> None:
        """Inside ``write``'s transaction: remember minutes already rolled up that this
        batch (registered as ``_batch``) adds samples to."""
        wm = self._tier_wm
        if wm is None or ts_lo >= wm:
            return
        cursor.execute(
            f"INSERT INTO tier_dirty SELECT DISTINCT tag_id, {_floor('ts', MINUTE_NS)} "
            "FROM _batch WHERE ts < $wm",
            {"wm": wm},
        )

    def _tiered_buckets(
        self, tag_id: int, start_ns: int, end_ns: int, bucket_ns: int
    ) -> Aggregates | None:
        """The buckets answered with the tiers, or None when raw samples answer it all."""
        if end_ns <= start_ns or all(bucket_ns % w for w in TIER_WIDTHS.values()):
            return None
        cur = self._reader()
        cur.execute("BEGIN TRANSACTION")  # one snapshot: watermarks and rows agree
        try:
            marks = {name: self._state(cur, f"wm:{name}") for name in TIER_WIDTHS}
            segments = plan(start_ns, end_ns, bucket_ns, marks)
            if all(src == "raw" for src, _, _ in segments):
                return None
            params: dict[str, int] = {"tag": tag_id, "w": bucket_ns}
            for i, (_, lo, hi) in enumerate(segments):
                params[f"lo{i}"], params[f"hi{i}"] = lo, hi
            rows = cur.execute(_bucket_sql(segments), params).fetchnumpy()
        finally:
            cur.execute("COMMIT")
        bucket, avg, lo_v, hi_v, count = (rows[k] for k in rows)
        return Aggregates(
            bucket_ns=np.asarray(bucket, dtype=np.int64),
            avg=np.asarray(avg, dtype=np.float64),
            min=np.asarray(lo_v, dtype=np.float64),
            max=np.asarray(hi_v, dtype=np.float64),
            count=np.asarray(count, dtype=np.int64),
        )

    # -- reads ------------------------------------------------------------------------

    @staticmethod
    def _state(cursor: Any, name: str) -> int | None:
        rows = cursor.execute("SELECT value FROM tier_state WHERE name = ?", [name]).fetchall()
        return int(rows[0][0]) if rows else None

    def watermarks(self) -> dict[str, int | None]:
        """Per tier, the end of the rolled-up range (None: nothing rolled up yet)."""
        cur = self._reader()
        return {name: self._state(cur, f"wm:{name}") for name in TIER_WIDTHS}

    def rollups(self, tag_id: int, start_ns: int, end_ns: int, tier: str) -> Rollups:
        """The stored rows of ``tier`` (``1m`` or ``1h``) with ``start <= bucket < end``."""
        if tier not in TIER_WIDTHS:
            raise ValueError(f"unknown tier {tier!r}; tiers: {', '.join(TIER_WIDTHS)}")
        rows = (
            self._reader()
            .execute(
                "SELECT bucket, total / n, lo, hi, n, first_val, last_val, first_ts, last_ts "
                f"FROM tier_{tier} WHERE tag_id = $tag AND bucket >= $lo AND bucket < $hi "
                "ORDER BY bucket",
                {"tag": tag_id, "lo": start_ns, "hi": end_ns},
            )
            .fetchnumpy()
        )
        b, avg, lo, hi, n, first, last, first_ts, last_ts = (rows[k] for k in rows)
        f64, i64 = np.float64, np.int64
        return Rollups(
            bucket_ns=np.asarray(b, dtype=i64),
            avg=np.asarray(avg, dtype=f64),
            min=np.asarray(lo, dtype=f64),
            max=np.asarray(hi, dtype=f64),
            count=np.asarray(n, dtype=i64),
            first=np.asarray(first, dtype=f64),
            last=np.asarray(last, dtype=f64),
            first_ts=np.asarray(first_ts, dtype=i64),
            last_ts=np.asarray(last_ts, dtype=i64),
        )

    # -- retention classes -------------------------------------------------------------

    def assign_retention_classes(self, classes: Mapping[int, str]) -> None:
        check_classes(self.config.retention, classes)
        named = [(int(t), c) for t, c in classes.items() if c != DEFAULT_RETENTION_CLASS]
        with self._write_lock:
            cur = self._write_cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute(
                    "DELETE FROM tag_retention WHERE tag_id IN (SELECT unnest($ids::INTEGER[]))",
                    {"ids": [int(t) for t in classes]},
                )
                if named:
                    cur.execute(
                        "INSERT INTO tag_retention "
                        "SELECT unnest($ids::INTEGER[]), unnest($names::VARCHAR[])",
                        {"ids": [t for t, _ in named], "names": [c for _, c in named]},
                    )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    # -- maintenance -------------------------------------------------------------------

    def maintain(self, now_ns: int) -> MaintenanceReport:
        started = time.perf_counter()
        up = {"1m": 0, "1h": 0}
        late, late_rows = self._recompute_late()
        up["1m"] += late_rows[0]
        up["1h"] += late_rows[1]
        samples, rows_1m = self._roll_minutes(floor_to(now_ns - SETTLE_NS, MINUTE_NS))
        up["1m"] += rows_1m
        up["1h"] += self._roll_hours()
        deleted = self._apply_retention(now_ns)
        return MaintenanceReport(
            samples_rolled_up=samples,
            rows_rolled_up=up,
            rows_deleted=deleted,
            late_buckets=late,
            seconds=time.perf_counter() - started,
        )

    def _run(self, cur: Any, sql: str, params: object = None) -> int:
        rows = cur.execute(sql, params).fetchall()
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def _recompute_late(self) -> tuple[int, tuple[int, int]]:
        """Recompute the minutes (and their hours) that got samples after their rollup,
        from the raw samples, if the tag's class still keeps them."""
        with self._write_lock:
            cur = self._write_cursor()
            if not self._run(cur, "SELECT count(*) FROM tier_dirty"):
                return 0, (0, 0)
            cur.execute("BEGIN TRANSACTION")
            try:
                result = self._recompute_late_in(cur)
                cur.execute("DELETE FROM tier_dirty")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return result

    def _recompute_late_in(self, cur: Any) -> tuple[int, tuple[int, int]]:
        wm_1m = self._state(cur, "wm:1m")
        wm_1h = self._state(cur, "wm:1h")
        if wm_1m is None:
            return 0, (0, 0)
        named = sorted(self.config.retention.classes)
        # The raw cut-off a tag's class applied: its minutes before it have lost samples.
        dirty = cur.execute(
            f"""
            SELECT DISTINCT d.tag_id, d.bucket FROM tier_dirty d
            LEFT JOIN tag_retention r ON r.tag_id = d.tag_id AND r.class IN (SELECT unnest($named))
            LEFT JOIN tier_state c
                ON c.name = 'cut:raw:' || coalesce(r.class, '{DEFAULT_RETENTION_CLASS}')
            WHERE d.bucket < $wm AND d.bucket >= coalesce(c.value, {INT64_MIN})
            ORDER BY 1, 2
            """,
            {"named": named or [""], "wm": wm_1m},
        ).fetchnumpy()
        tags = np.asarray(dirty["tag_id"], dtype=np.int64)
        minutes = np.asarray(dirty["bucket"], dtype=np.int64)
        if not len(tags):
            return 0, (0, 0)
        cur.register("_late", {"tag_id": tags, "bucket": minutes})
        try:
            cur.execute(
                "DELETE FROM tier_1m USING _late "
                "WHERE tier_1m.tag_id = _late.tag_id AND tier_1m.bucket = _late.bucket"
            )
            rows_1m = self._run(
                cur,
                f"INSERT INTO tier_1m SELECT r.* FROM ({_ROLL_RAW}) r "
                "SEMI JOIN _late l ON r.tag_id = l.tag_id AND r.bucket = l.bucket",
                {"lo": int(minutes.min()), "hi": int(minutes.max()) + MINUTE_NS},
            )
        finally:
            cur.unregister("_late")
        rows_1h = 0
        if wm_1h is not None:
            hours = minutes - minutes % HOUR_NS
            keep = hours < wm_1h
            if keep.any():
                pairs = np.unique(np.stack([tags[keep], hours[keep]]), axis=1)
                cur.register("_late_h", {"tag_id": pairs[0], "bucket": pairs[1]})
                try:
                    cur.execute(
                        "DELETE FROM tier_1h USING _late_h WHERE tier_1h.tag_id = _late_h.tag_id "
                        "AND tier_1h.bucket = _late_h.bucket"
                    )
                    rows_1h = self._run(
                        cur,
                        f"INSERT INTO tier_1h SELECT r.* FROM ({_ROLL_1M}) r "
                        "SEMI JOIN _late_h l ON r.tag_id = l.tag_id AND r.hour = l.bucket",
                        {"lo": int(pairs[1].min()), "hi": int(pairs[1].max()) + HOUR_NS},
                    )
                finally:
                    cur.unregister("_late_h")
        return len(tags), (rows_1m, rows_1h)

    def _roll_minutes(self, target: int) -> tuple[int, int]:
        """Roll raw samples up to ``target`` into ``tier_1m``; returns (samples, rows)."""
        samples = rows = 0
        step = HOUR_NS
        while True:
            with self._write_lock:
                cur = self._write_cursor()
                lo = self._state(cur, "wm:1m")
                if lo is None:
                    first = self._run(cur, "SELECT min(ts) FROM samples")
                    has = self._run(cur, "SELECT count(*) FROM samples LIMIT 1")
                    lo = floor_to(first, MINUTE_NS) if has else target
                    lo = min(lo, target)
                if lo >= target:
                    if self._state(cur, "wm:1m") is None:
                        self._commit_state(cur, "wm:1m", lo)
                    return samples, rows
                hi = min(target, floor_to(lo, HOUR_NS) + step)
                cur.execute("BEGIN TRANSACTION")
                try:
                    cur.execute(
                        "DELETE FROM tier_1m WHERE bucket >= $lo AND bucket < $hi",
                        {"lo": lo, "hi": hi},
                    )
                    n_rows = self._run(
                        cur, f"INSERT INTO tier_1m {_ROLL_RAW}", {"lo": lo, "hi": hi}
                    )
                    n_samples = self._run(
                        cur,
                        "SELECT sum(n) FROM tier_1m WHERE bucket >= $lo AND bucket < $hi",
                        {"lo": lo, "hi": hi},
                    )
                    self._set_state(cur, "wm:1m", hi)
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                self._tier_wm = hi
            samples += n_samples
            rows += n_rows
            step = self._next_step(step, n_samples, HOUR_NS)

    def _roll_hours(self) -> int:
        """Roll ``tier_1m`` up to its watermark's hour into ``tier_1h``; returns rows."""
        rows = 0
        step = 24 * HOUR_NS
        while True:
            with self._write_lock:
                cur = self._write_cursor()
                wm_1m = self._state(cur, "wm:1m")
                if wm_1m is None:
                    return rows
                target = floor_to(wm_1m, HOUR_NS)
                lo = self._state(cur, "wm:1h")
                if lo is None:
                    has = self._run(cur, "SELECT count(*) FROM tier_1m LIMIT 1")
                    first = self._run(cur, "SELECT min(bucket) FROM tier_1m")
                    lo = min(floor_to(first, HOUR_NS) if has else target, target)
                if lo >= target:
                    if self._state(cur, "wm:1h") is None:
                        self._commit_state(cur, "wm:1h", lo)
                    return rows
                hi = min(target, lo + step)
                cur.execute("BEGIN TRANSACTION")
                try:
                    cur.execute(
                        "DELETE FROM tier_1h WHERE bucket >= $lo AND bucket < $hi",
                        {"lo": lo, "hi": hi},
                    )
                    n_rows = self._run(cur, f"INSERT INTO tier_1h {_ROLL_1M}", {"lo": lo, "hi": hi})
                    self._set_state(cur, "wm:1h", hi)
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
            rows += n_rows
            step = self._next_step(step, n_rows * 60, HOUR_NS)

    def _next_step(self, step: int, rows: int, unit: int) -> int:
        """Grow a chunk over sparse data (up to 30 days), shrink it over dense data."""
        if rows < self.chunk_target_rows // 2:
            return min(step * 2, 720 * unit)
        if rows > self.chunk_target_rows * 2:
            return max(step // 2, unit)
        return step

    def _set_state(self, cur: Any, name: str, value: int) -> None:
        cur.execute(_SET_STATE, {"name": name, "value": value})

    def _commit_state(self, cur: Any, name: str, value: int) -> None:
        cur.execute("BEGIN TRANSACTION")
        try:
            self._set_state(cur, name, value)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if name == "wm:1m":
            self._tier_wm = value

    def _apply_retention(self, now_ns: int) -> dict[str, int]:
        """Per class, delete what it no longer keeps (one transaction for all)."""
        deleted = {"raw": 0, "1m": 0, "1h": 0}
        retention = self.config.retention
        named = sorted(retention.classes)
        with self._write_lock:
            cur = self._write_cursor()
            wm_1m = self._state(cur, "wm:1m")
            wm_1h = self._state(cur, "wm:1h")
            cur.execute("BEGIN TRANSACTION")
            try:
                # Tags of a class the configuration no longer defines fall back to default.
                cur.execute(
                    "DELETE FROM tag_retention WHERE class NOT IN (SELECT unnest($named))",
                    {"named": named or [""]},
                )
                for name in [DEFAULT_RETENTION_CLASS, *named]:
                    policy = retention.policy(name)
                    if name == DEFAULT_RETENTION_CLASS:
                        members = "tag_id NOT IN (SELECT tag_id FROM tag_retention)"
                    else:
                        members = "tag_id IN (SELECT tag_id FROM tag_retention WHERE class = $cls)"
                    keep = policy.seconds()
                    cuts = {
                        "raw": self._cutoff(now_ns, keep["raw"], MINUTE_NS, wm_1m),
                        "1m": self._cutoff(now_ns, keep["1m"], HOUR_NS, wm_1h),
                        "1h": self._cutoff(now_ns, keep["1h"], HOUR_NS, None, capped=False),
                    }
                    params: dict[str, object] = {}
                    if name != DEFAULT_RETENTION_CLASS:
                        params["cls"] = name
                    for tier, cut in cuts.items():
                        if cut is None:
                            continue
                        table, col = (
                            ("samples", "ts") if tier == "raw" else (f"tier_{tier}", "bucket")
                        )
                        where = f"{col} < $cut AND {members}"
                        deleted[tier] += self._run(
                            cur, f"DELETE FROM {table} WHERE {where}", {**params, "cut": cut}
                        )
                        if tier == "raw":
                            cur.execute(
                                f"DELETE FROM last_value WHERE ts < $cut AND {members}",
                                {**params, "cut": cut},
                            )
                        old = self._state(cur, f"cut:{tier}:{name}")
                        self._set_state(cur, f"cut:{tier}:{name}", max(cut, old or INT64_MIN))
                    # String samples are never rolled up: no watermark holds them back.
                    text_cut = self._cutoff(now_ns, keep["raw"], MINUTE_NS, None, capped=False)
                    if text_cut is not None:
                        deleted["raw"] += self._run(
                            cur,
                            f"DELETE FROM samples_text WHERE ts < $cut AND {members}",
                            {**params, "cut": text_cut},
                        )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            if deleted["raw"]:
                rows = cur.execute("SELECT max(ts) FROM samples").fetchall()
                self._max_ts = None if rows[0][0] is None else int(rows[0][0])
        return deleted

    @staticmethod
    def _cutoff(
        now_ns: int, keep_s: float | None, grid: int, cap: int | None, *, capped: bool = True
    ) -> int | None:
        """Start of what a tier keeps: ``now - keep`` on the tier's grid and, when
        ``capped``, never past ``cap`` (the watermark of the tier rolled up from it;
        None: nothing rolled up yet, so nothing may go)."""
        if keep_s is None or (capped and cap is None):
            return None
        cut = floor_to(now_ns - round(keep_s * S_NS), grid)
        return cut if cap is None else min(cut, cap)
