"""Export history to a data lake: Hive-partitioned Parquet or CSV files.

Layout
    ``DEST/site=<site>/date=YYYY-MM-DD/part-0.parquet`` (or ``.csv``): one directory per
    site and UTC day.  The site is the second segment of each tag's UNS path
    (``enterprise/site/area/line/cell/equipment/tag``) unless one is forced.  Readers
    should glob every file of a partition (``*.parquet``): a day holds one file today,
    and may hold more later.

Schema (same for both formats and every backend)
    ``time``          timestamp, microseconds, UTC (Parquet ``TIMESTAMP(MICROS,
                      isAdjustedToUTC=true)``; CSV ``2026-11-22T10:00:00.123456Z``)
    ``tag``           the full UNS path (string; dictionary-encoded in Parquet)
    ``value``         float64 (booleans are 0/1; Bad samples and string samples carry
                      NaN)
    ``quality``       uint32, the OPC UA status code (see :mod:`isthmus.model.quality`)
    ``quality_name``  string, e.g. ``Good`` or ``Bad_CommunicationError``
    ``unit``          string, the tag's engineering unit (empty when unknown)
    ``text``          string, nullable: the text of a string tag's sample (from the
                      historian's ``samples_text``); null for numeric samples (CSV:
                      an empty field).  The last column, so readers that take the
                      first six by position keep working.

    Row order within a file is not specified (DuckDB stores write storage order, which
    is time order for data that arrived in order; other stores write tag by tag): sort
    on read if it matters.  Microseconds, not nanoseconds: every DuckDB,
    polars, pandas and Spark version reads them as a UTC timestamp; nanosecond Parquet
    timestamps are read as naive by older readers.  Sub-microsecond digits are floored.

Tag globs
    ``--tags`` is an ``fnmatch`` pattern matched case-sensitively against the whole UNS
    path: ``*`` matches any characters *including* ``/`` (so ``**`` is the same as ``*``),
    ``?`` one character, ``[abc]`` / ``[!abc]`` a set.  ``acme/lyon/utilities/*`` is a
    subtree, ``*/pump1/*`` every tag of every ``pump1`` equipment.  A pattern without
    any wildcard also matches the subtree below it (``acme/lyon/utilities``).

Streaming and atomicity
    Data is read and written one (site, day) at a time, so memory stays bounded whatever
    the range.  For :class:`~isthmus.historian.duckdb.store.DuckDBStore` each day is one
    ``COPY (SELECT ...) TO`` run by DuckDB itself (fast, parallel); any other
    :class:`~isthmus.historian.base.Store` is read through ``raw()`` page by page and
    written with pyarrow (CSV pages formatted by an in-memory DuckDB, so both paths
    write the same text).  Each file is written under a hidden temporary name
    (``.part-0.parquet.<token>.tmp``, which no ``*.parquet`` glob matches), flushed to
    disk, then renamed over the final name (atomic on POSIX): a crash never leaves a half
    file, and re-exporting a day replaces its partition.  The day is the unit of
    replacement: re-exporting part of a day, or a different tag glob, leaves that day
    with only the newly exported rows; a day that now has no rows loses its old files.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import numpy as np

from isthmus.historian.base import Store
from isthmus.model.durations import parse_duration_ns, parse_time_ns
from isthmus.model.errors import IsthmusError
from isthmus.model.quality import quality_name

if TYPE_CHECKING:
    pass

Format = Literal["parquet", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "csv")

DAY_NS = 86_400_000_000_000
PAGE = 1_000_000
"""Samples read per ``raw()`` call on the generic path (bounds memory)."""

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How CSV files spell ``time`` (microseconds, UTC), in DuckDB's strftime."""
_ARROW_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""The same in Arrow's strftime, whose ``%S`` carries the microseconds."""

COLUMNS = ("time", "tag", "value", "quality", "quality_name", "unit", "text")

_WILDCARDS = re.compile(r"[*?\[]")
_TMP_SUFFIX = ".tmp"
_PART = re.compile(r"part-\d+\.(?:parquet|csv)")


# -- results and progress -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportProgress:
    """Reported after each exported (site, day) partition."""

    partition: str
    """``site=<site>/date=YYYY-MM-DD`` just written (or emptied)."""
    days_done: int
    days_total: int
    rows_done: int
    rows_total: int | None
    """Known up front for DuckDB stores; None on the generic path."""


ProgressCallback = Callable[[ExportProgress], None]


@dataclass(slots=True)
class ExportResult:
    dest: Path
    fmt: Format
    start_ns: int
    end_ns: int
    tags: int
    """How many tags matched the glob."""
    rows: int = 0
    files: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    """Old files of re-exported days that the new export does not contain."""
    bytes: int = 0
    seconds: float = 0.0

    @property
    def partitions(self) -> list[str]:
        return sorted({f"{f.parent.parent.name}/{f.parent.name}" for f in self.files})

    def summary(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        return (
            f"exported {self.rows:,} rows of {self.tags} tags into {len(self.files)} "
            f"{self.fmt} files ({self.bytes / 1e6:.1f} MB, {len(self.partitions)} partitions) "
            f"under {self.dest} in {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        )


# -- tag globs -----------------------------------------------------------------------------


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A predicate on full UNS paths for a ``--tags`` pattern (see the module doc)."""
    pattern = pattern.strip()
    if not pattern or pattern.strip("/") == "":
        raise IsthmusError("--tags: the pattern is empty")
    pattern = pattern.strip("/")
    if "//" in pattern:
        raise IsthmusError(f"--tags {pattern!r}: empty path segment ('//')")
    if _WILDCARDS.search(pattern) is None:
        prefix = pattern + "/"
        return lambda path: path == pattern or path.startswith(prefix)
    regex = re.compile(fnmatch.translate(pattern))
    return lambda path: regex.match(path) is not None


def match_tags(pattern: str | None, paths: Mapping[str, int]) -> dict[str, int]:
    """The tags (path → id) a pattern selects, sorted by path; all of them for None."""
    if pattern is None:
        return dict(sorted(paths.items()))
    matches = compile_glob(pattern)
    return {path: tag_id for path, tag_id in sorted(paths.items()) if matches(path)}


# -- time ranges ---------------------------------------------------------------------------


def parse_when(text: str, now_ns: int, what: str) -> int:
    """``2026-11-21``, ``2026-11-21T06:00:00Z``, ``now``, ``-1d`` or ``1d`` (= 1 day ago)."""
    text = text.strip()
    try:
        if text and text[0].isdigit() and "-" not in text and ":" not in text:
            return now_ns - parse_duration_ns(text)
        return parse_time_ns(text, now_ns)
    except ValueError as exc:
        raise IsthmusError(f"{what}: {exc}") from None


def check_range(start_ns: int, end_ns: int) -> None:
    if start_ns >= end_ns:
        raise IsthmusError(
            f"--from ({_iso(start_ns)}) must be before --to ({_iso(end_ns)}): the range is empty"
        )


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def _day_floor(ts_ns: int) -> int:
    return ts_ns - ts_ns % DAY_NS  # Python's % floors, also before 1970


def _day_name(day_ns: int) -> str:
    return datetime.fromtimestamp(day_ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%d")


def days_of(start_ns: int, end_ns: int) -> list[tuple[int, int, int]]:
    """``(day_start, lo, hi)`` for each UTC day the range ``[start, end)`` touches."""
    out = []
    day = _day_floor(start_ns)
    while day < end_ns:
        out.append((day, max(start_ns, day), min(end_ns, day + DAY_NS)))
        day += DAY_NS
    return out


# -- layout --------------------------------------------------------------------------------


def site_of(path: str, forced: str | None) -> str:
    if forced is not None:
        return forced
    parts = path.split("/")
    return parts[1] if len(parts) > 1 and parts[1] else "unknown"


def partition_dir(dest: Path, site: str, day_ns: int) -> Path:
    return dest / f"site={quote(site, safe='')}" / f"date={_day_name(day_ns)}"


def check_dest(dest: Path, overwrite: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise IsthmusError(f"{dest} exists and is not a directory")
    if dest.is_dir() and not overwrite and any(dest.iterdir()):
        raise IsthmusError(
            f"{dest} is not empty: pass --overwrite to replace the exported days "
            "(other days are kept), or choose an empty directory"
        )


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        _fsync_file(path)


def _clean_leftovers(dest: Path) -> None:
    """Remove temporary files a crashed export left behind (never visible to readers)."""
    for tmp in dest.glob(f"site=*/date=*/.part-*{_TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            tmp.unlink()


class _Partition:
    """Writes one (site, day) partition: temp files, then atomic renames."""

    def __init__(self, directory: Path, fmt: Format) -> None:
        self.dir = directory
        self.fmt = fmt
        self.token = secrets.token_hex(4)
        self.pending: list[tuple[Path, Path]] = []  # (temp, final)

    def new_file(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{len(self.pending)}.{self.fmt}"
        tmp = self.dir / f".{name}.{self.token}{_TMP_SUFFIX}"
        self.pending.append((tmp, self.dir / name))
        return tmp

    def commit(self) -> tuple[list[Path], list[Path], int]:
        """Publish the new files, drop the day's old ones; (files, removed, bytes)."""
        files: list[Path] = []
        size = 0
        for tmp, final in self.pending:
            _fsync_file(tmp)
            size += tmp.stat().st_size
            os.replace(tmp, final)
            files.append(final)
        removed: list[Path] = []
        if self.dir.is_dir():
            keep = {f.name for f in files}
            for old in sorted(self.dir.iterdir()):
                if old.name not in keep and _PART.fullmatch(old.name) and old.is_file():
                    old.unlink()  # only files an export wrote: part-N.parquet / .csv
                    removed.append(old)
            _fsync_dir(self.dir)
            if not files:
                with contextlib.suppress(OSError):
                    self.dir.rmdir()  # only if empty
        return files, removed, size

    def abort(self) -> None:
        for tmp, _ in self.pending:
            with contextlib.suppress(OSError):
                tmp.unlink()


# -- export --------------------------------------------------------------------------------


def export(
    store: Store,
    *,
    start_ns: int,
    end_ns: int,
    tags_glob: str | None,
    fmt: str,
    dest: Path,
    site: str | None = None,
    overwrite: bool = False,
    units: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Export ``[start_ns, end_ns)`` of the tags matching ``tags_glob`` into ``dest``.

    ``site`` forces the ``site=`` partition of every tag (default: each path's second
    segment).  ``units`` (path → unit) fills the ``unit`` column on the generic path;
    DuckDB stores use their own ``tags`` table.  Raises :class:`IsthmusError` for a bad
    format or range, an empty glob match, or a non-empty ``dest`` without ``overwrite``.
    """
    if fmt not in FORMATS:
        raise IsthmusError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    fmt_: Format = "parquet" if fmt == "parquet" else "csv"
    check_range(start_ns, end_ns)
    known = store.tags()
    selected = match_tags(tags_glob, known)
    if not selected:
        if not known:
            raise IsthmusError("the historian holds no tags yet: nothing to export")
        example = next(iter(sorted(known)))
        raise IsthmusError(
            f"--tags {tags_glob!r} matches none of the {len(known)} tags "
            f"(full UNS paths such as {example!r}; '*' also matches '/')"
        )
    check_dest(dest, overwrite)
    dest.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(dest)

    began = time.perf_counter()
    result = ExportResult(dest, fmt_, start_ns, end_ns, tags=len(selected))
    by_site: dict[str, dict[str, int]] = {}
    for path, tag_id in selected.items():
        by_site.setdefault(site_of(path, site), {})[path] = tag_id

    from isthmus.historian.duckdb.store import DuckDBStore

    if isinstance(store, DuckDBStore):
        writer: _Writer = _DuckDBWriter(store, fmt_, by_site, start_ns, end_ns)
    else:
        writer = _GenericWriter(store, fmt_, units or {})

    days = days_of(start_ns, end_ns)
    total = len(days) * len(by_site)
    done = 0
    for day, lo, hi in days:
        for site_name, tags in by_site.items():
            part = _Partition(partition_dir(dest, site_name, day), fmt_)
            try:
                rows = writer.write_day(part, site_name, tags, day, lo, hi)
                files, removed, size = part.commit()
            except BaseException:
                part.abort()
                raise
            result.rows += rows
            result.files.extend(files)
            result.removed.extend(removed)
            result.bytes += size
            done += 1
            if progress is not None:
                progress(
                    ExportProgress(
                        partition=f"{part.dir.parent.name}/{part.dir.name}",
                        days_done=done,
                        days_total=total,
                        rows_done=result.rows,
                        rows_total=writer.rows_total,
                    )
                )
    writer.close()
    _fsync_dir(dest)
    result.seconds = time.perf_counter() - began
    return result


class _Writer:
    rows_total: int | None = None

    def write_day(
        self, part: _Partition, site: str, tags: dict[str, int], day: int, lo: int, hi: int
    ) -> int:
        raise NotImplementedError

    def close(self) -> None:
        return None


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _enum(values: Iterator[str]) -> str:
    """An inline ENUM type of the distinct values (never empty)."""
    distinct = sorted(set(values)) or [""]
    return "ENUM(" + ", ".join(_sql_str(v) for v in distinct) + ")"


def _floor_us(col: str) -> str:
    return f"(({col} - ((({col} % 1000) + 1000) % 1000)) // 1000)"


class _DuckDBWriter(_Writer):
    """One ``COPY (SELECT ...) TO`` per (site, day), run by DuckDB on a read cursor.

    The selected tags go to a small temporary table whose ``path`` and ``unit`` are
    ENUMs: the join then carries small integers instead of strings (twice as fast; the
    Parquet writer stores them as dictionary-encoded strings either way).  ``time`` is
    ``make_timestamptz(micros)``, which needs no ICU time zone conversion (older DuckDB:
    the epoch plus an interval, the same value).  Rows are not sorted (sorting a day by
    tag costs 2-3x the whole export): they come in storage order, which is time order
    for data that arrived in order.  String samples (``samples_text``) are added with
    ``UNION ALL`` only for the (site, day) partitions that hold some, so a numeric-only
    export scans what it always did.
    """

    def __init__(
        self,
        store: Any,
        fmt: Format,
        by_site: dict[str, dict[str, int]],
        start_ns: int,
        end_ns: int,
    ) -> None:
        import pyarrow as pa

        self.cur = store._reader()
        self.fmt = fmt
        ids: list[int] = []
        sites: list[str] = []
        for site_name, tags in by_site.items():
            for tag_id in tags.values():
                ids.append(tag_id)
                sites.append(site_name)
        known = self.cur.execute("SELECT path, unit FROM tags").fetchall()
        self.cur.register(
            "_export_selection",
            pa.table({"id": pa.array(ids, pa.int32()), "site": pa.array(sites, pa.string())}),
        )
        try:
            self.cur.execute(
                "CREATE OR REPLACE TEMP TABLE _export_tags (id INTEGER, site VARCHAR, "
                f"path {_enum(p for p, _ in known)}, unit {_enum(u for _, u in known)})"
            )
            self.cur.execute(
                "INSERT INTO _export_tags SELECT e.id, e.site, t.path, t.unit "
                "FROM _export_selection e JOIN tags t ON t.id = e.id"
            )
        finally:
            self.cur.unregister("_export_selection")
        has_tz = self.cur.execute(
            "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'make_timestamptz' "
            "AND parameter_types = ['BIGINT']"
        ).fetchall()[0][0]
        micros = _floor_us("s.ts")
        self.time_sql = (
            f"make_timestamptz({micros})"
            if has_tz
            else f"TIMESTAMPTZ '1970-01-01 00:00:00+00' + to_microseconds({micros})"
        )
        # One scan of the range: rows per (day, site) for the progress bar and to skip
        # empty days, the distinct qualities to name, and which days hold strings.
        day_sql = f"ts - (((ts % {DAY_NS}) + {DAY_NS}) % {DAY_NS})"
        rows = self.cur.execute(
            f"""
            SELECT s.day, t.site, count(*), list(DISTINCT s.quality), bool_or(s.is_text)
            FROM (
                SELECT {day_sql} AS day, tag_id, quality, false AS is_text FROM samples
                WHERE ts >= $start AND ts < $end
                UNION ALL
                SELECT {day_sql} AS day, tag_id, quality, true AS is_text FROM samples_text
                WHERE ts >= $start AND ts < $end
            ) s JOIN _export_tags t ON s.tag_id = t.id
            GROUP BY ALL
            """,
            {"start": start_ns, "end": end_ns},
        ).fetchall()
        self.counts = {(int(d), str(s)): int(n) for d, s, n, _, _ in rows}
        self.with_text = {(int(d), str(s)) for d, s, _, _, has in rows if has}
        self.rows_total = sum(self.counts.values())
        codes = sorted({int(q) for _, _, _, qs, _ in rows for q in qs})
        whens = " ".join(f"WHEN {c} THEN {_sql_str(quality_name(c))}" for c in codes)
        names = _enum(quality_name(c) for c in codes)
        self.quality_sql = f"(CASE s.quality {whens} END)::{names}" if codes else "NULL"

    def write_day(
        self, part: _Partition, site: str, tags: dict[str, int], day: int, lo: int, hi: int
    ) -> int:
        expected = self.counts.get((day, site), 0)
        if expected == 0:
            return 0
        if self.fmt == "parquet":
            time_sql = self.time_sql
            options = "FORMAT PARQUET, COMPRESSION ZSTD"
        else:
            time_sql = f"strftime(make_timestamp({_floor_us('s.ts')}), '{TIME_FORMAT}')"
            options = "FORMAT CSV, HEADER true"
        target = part.new_file()
        rows_sql = "samples"
        if (day, site) in self.with_text:
            rows_sql = """(
                SELECT tag_id, ts, value, quality, NULL::VARCHAR AS text FROM samples
                UNION ALL
                SELECT tag_id, ts, 'NaN'::DOUBLE, quality, value FROM samples_text
            )"""
            text_sql = "s.text"
        else:
            text_sql = "NULL::VARCHAR"
        sql = f"""
            COPY (
                SELECT {time_sql} AS time, g.path AS tag, s.value, s.quality,
                       {self.quality_sql} AS quality_name, g.unit, {text_sql} AS text
                FROM {rows_sql} s JOIN _export_tags g ON s.tag_id = g.id
                WHERE s.ts >= {int(lo)} AND s.ts < {int(hi)} AND g.site = {_sql_str(site)}
            ) TO {_sql_str(str(target))} ({options})
        """
        written = self.cur.execute(sql).fetchall()
        return int(written[0][0]) if written else expected

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cur.execute("DROP TABLE IF EXISTS _export_tags")


class _GenericWriter(_Writer):
    """Any :class:`Store`: ``raw()`` page by page per tag, written with pyarrow."""

    def __init__(self, store: Store, fmt: Format, units: Mapping[str, str]) -> None:
        self.store = store
        self.fmt = fmt
        self.units = units

    def _tables(self, tags: dict[str, int], lo: int, hi: int) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.compute as pc

        for path, tag_id in tags.items():
            start = lo
            while start < hi:
                batch = self.store.raw(tag_id, start, hi, PAGE)
                n = len(batch)
                if n == 0:
                    break
                ts_us = batch.ts // 1000  # floor, as the DuckDB path does
                codes, inverse = np.unique(batch.quality, return_inverse=True)
                names = pa.array([quality_name(int(c)) for c in codes], pa.string())
                zeros = pa.array(np.zeros(n, dtype=np.int32))
                time_col: Any = pa.array(ts_us, pa.timestamp("us", tz="UTC"))
                if self.fmt == "csv":
                    time_col = pc.strftime(time_col, format=_ARROW_TIME_FORMAT)
                text_col = (
                    pa.nulls(n, pa.string())
                    if batch.text is None
                    else pa.array(batch.texts(), pa.string())
                )
                yield pa.table(
                    {
                        "time": time_col,
                        "tag": pc.take(pa.array([path], pa.string()), zeros),
                        "value": pa.array(batch.value, pa.float64()),
                        "quality": pa.array(batch.quality, pa.uint32()),
                        "quality_name": pc.take(names, pa.array(inverse.astype(np.int32))),
                        "unit": pc.take(pa.array([self.units.get(path, "")], pa.string()), zeros),
                        "text": text_col,
                    }
                )
                if n < PAGE:
                    break
                start = int(batch.ts[-1]) + 1

    def write_day(
        self, part: _Partition, site: str, tags: dict[str, int], day: int, lo: int, hi: int
    ) -> int:
        rows = 0
        sink: Any = None
        try:
            for table in self._tables(tags, lo, hi):
                if sink is None:
                    sink = self._open(part.new_file(), table.schema)
                sink.write_table(table)
                rows += table.num_rows
        finally:
            if sink is not None:
                sink.close()
        return rows

    def _open(self, path: Path, schema: Any) -> Any:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetWriter(path, schema, compression="zstd")
        return _CsvSink(path)


class _CsvSink:
    """Appends pages to one CSV file, formatted by DuckDB exactly as the DuckDB path does.

    pyarrow's CSV writer would spell 72.0 as ``72`` (readers then guess int64) and quote
    every string; DuckDB writes ``72.0`` and quotes only when needed.
    """

    def __init__(self, path: Path) -> None:
        import duckdb

        self.path = path
        self.page = path.with_name(path.name + ".page")
        self.out = path.open("wb")
        self.con = duckdb.connect(":memory:", config={"threads": 1})
        self.header = True

    def write_table(self, table: Any) -> None:
        self.con.register("_page", table)
        try:
            self.con.execute(
                f"COPY _page TO {_sql_str(str(self.page))} "
                f"(FORMAT CSV, HEADER {'true' if self.header else 'false'})"
            )
        finally:
            self.con.unregister("_page")
        self.header = False
        with self.page.open("rb") as page:
            shutil.copyfileobj(page, self.out, 1 << 20)

    def close(self) -> None:
        self.out.close()
        self.con.close()
        with contextlib.suppress(OSError):
            self.page.unlink()


__all__: Sequence[str] = (
    "COLUMNS",
    "ExportProgress",
    "ExportResult",
    "compile_glob",
    "days_of",
    "export",
    "match_tags",
    "parse_when",
)
