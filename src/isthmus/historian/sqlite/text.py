"""String samples in the SQLite historian (see :mod:`isthmus.historian.text`).

``samples_text(tag_id, ts, value TEXT, quality)``, ``WITHOUT ROWID`` keyed by
``(tag_id, ts)`` like ``samples``: ``INSERT OR IGNORE`` keeps the first written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from isthmus.historian.text import from_rows, text_rows
from isthmus.model.batch import Batch

TEXT_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples_text (
    tag_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value TEXT NOT NULL,
    quality INTEGER NOT NULL,
    PRIMARY KEY (tag_id, ts)
) WITHOUT ROWID;
"""

_COLUMNS = "SELECT tag_id, ts, value, quality FROM samples_text "


def insert(con: sqlite3.Connection, strings: Batch) -> int:
    """Store string rows (first occurrence wins); the caller runs the transaction."""
    before = con.total_changes
    con.executemany("INSERT OR IGNORE INTO samples_text VALUES (?, ?, ?, ?)", text_rows(strings))
    return con.total_changes - before


def raw(con: sqlite3.Connection, tag_id: int, start_ns: int, end_ns: int, limit: int) -> Batch:
    return from_rows(
        con.execute(
            _COLUMNS + "WHERE tag_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
            (tag_id, start_ns, end_ns, limit),
        ).fetchall()
    )


def before(con: sqlite3.Connection, tag_id: int, ts_ns: int, lookback_ns: int) -> Batch:
    return from_rows(
        con.execute(
            _COLUMNS + "WHERE tag_id = ? AND ts >= ? AND ts < ? ORDER BY ts DESC LIMIT 1",
            (tag_id, ts_ns - lookback_ns, ts_ns),
        ).fetchall()
    )


def last(con: sqlite3.Connection, tag_ids: Sequence[int]) -> Batch:
    rows = []
    for tag_id in sorted({int(t) for t in tag_ids}):
        row = con.execute(
            _COLUMNS + "WHERE tag_id = ? ORDER BY ts DESC LIMIT 1", (tag_id,)
        ).fetchone()
        if row is not None:
            rows.append(row)
    return from_rows(rows)


def has_text(con: sqlite3.Connection, tag_id: int, start_ns: int, end_ns: int) -> bool:
    row = con.execute(
        "SELECT 1 FROM samples_text WHERE tag_id = ? AND ts >= ? AND ts < ? LIMIT 1",
        (tag_id, start_ns, end_ns),
    ).fetchone()
    return row is not None


def count(con: sqlite3.Connection) -> int:
    row = con.execute("SELECT count(*) FROM samples_text").fetchone()
    return int(row[0]) if row else 0


def purge_before(con: sqlite3.Connection, ts_ns: int) -> int:
    return con.execute("DELETE FROM samples_text WHERE ts < ?", (ts_ns,)).rowcount
