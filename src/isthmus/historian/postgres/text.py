"""String samples in the PostgreSQL historian (see :mod:`isthmus.historian.text`).

``samples_text(tag_id, ts, value text, quality)`` keyed by ``(tag_id, ts)``, created
by schema migration 3; not partitioned (string samples are few).  Written with one
``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`` per batch.  PostgreSQL
text cannot hold NUL characters: a NUL inside a string is stored as U+FFFD.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from isthmus.historian.text import from_rows
from isthmus.model.batch import Batch

TEXT_TABLE = """
CREATE TABLE samples_text (
    tag_id integer NOT NULL,
    ts bigint NOT NULL,
    value text NOT NULL,
    quality integer NOT NULL,
    PRIMARY KEY (tag_id, ts)
)
"""

_INSERT = """
INSERT INTO samples_text (tag_id, ts, value, quality)
SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::text[], %s::integer[])
ON CONFLICT DO NOTHING
"""

_COLUMNS = "SELECT tag_id, ts, value, quality FROM samples_text "


def insert(cur: Any, strings: Batch) -> int:
    """Store string rows; the caller commits."""
    assert strings.text is not None
    texts = [str(t).replace("\x00", "\ufffd") for t in strings.text.tolist()]
    cur.execute(
        _INSERT,
        [
            strings.tag_id.tolist(),
            strings.ts.tolist(),
            texts,
            strings.quality.view(np.int32).tolist(),
        ],
    )
    return max(int(cur.rowcount), 0)


def _batch(rows: Sequence[tuple[Any, ...]]) -> Batch:
    return from_rows([(int(t), int(s), str(v), int(q) & 0xFFFFFFFF) for t, s, v, q in rows])


def raw(con: Any, tag_id: int, start_ns: int, end_ns: int, limit: int) -> Batch:
    return _batch(
        con.execute(
            _COLUMNS + "WHERE tag_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s",
            [tag_id, start_ns, end_ns, limit],
        ).fetchall()
    )


def before(con: Any, tag_id: int, ts_ns: int, lookback_ns: int) -> Batch:
    return _batch(
        con.execute(
            _COLUMNS + "WHERE tag_id = %s AND ts >= %s AND ts < %s ORDER BY ts DESC LIMIT 1",
            [tag_id, ts_ns - lookback_ns, ts_ns],
        ).fetchall()
    )


def last(con: Any, tag_ids: Sequence[int]) -> Batch:
    return _batch(
        con.execute(
            "SELECT DISTINCT ON (tag_id) tag_id, ts, value, quality FROM samples_text"
            " WHERE tag_id = ANY(%s::integer[]) ORDER BY tag_id, ts DESC",
            [[int(t) for t in tag_ids]],
        ).fetchall()
    )


def has_text(con: Any, tag_id: int, start_ns: int, end_ns: int) -> bool:
    row = con.execute(
        "SELECT 1 FROM samples_text WHERE tag_id = %s AND ts >= %s AND ts < %s LIMIT 1",
        [tag_id, start_ns, end_ns],
    ).fetchone()
    return row is not None


def count(con: Any) -> int:
    row = con.execute("SELECT count(*) FROM samples_text").fetchone()
    return int(row[0]) if row else 0


def purge_before(cur: Any, ts_ns: int) -> int:
    cur.execute("DELETE FROM samples_text WHERE ts < %s", [ts_ns])
    return max(int(cur.rowcount), 0)
