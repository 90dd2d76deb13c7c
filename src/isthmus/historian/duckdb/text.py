"""String samples in the DuckDB historian (see :mod:`isthmus.historian.text`).

``samples_text(tag_id, ts, value VARCHAR, quality)`` with a primary key on
``(tag_id, ts)``: string samples are few (a serial number, a recipe name), so the key's
cost does not matter and ``ON CONFLICT DO NOTHING`` gives idempotency.  There is no
separate last-value table: the key answers "newest per tag" directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from isthmus.historian.text import from_rows
from isthmus.model.batch import Batch

TEXT_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples_text (
    tag_id INTEGER NOT NULL,
    ts BIGINT NOT NULL,
    value VARCHAR NOT NULL,
    quality UINTEGER NOT NULL,
    PRIMARY KEY (tag_id, ts)
);
"""

_INSERT = """
INSERT INTO samples_text SELECT tag_id, ts, value, quality FROM _text_batch
ON CONFLICT DO NOTHING
"""

_RAW = """
SELECT tag_id, ts, value, quality FROM samples_text
WHERE tag_id = $tag AND ts >= $start AND ts < $end
ORDER BY ts LIMIT $limit
"""

_BEFORE = """
SELECT tag_id, ts, value, quality FROM samples_text
WHERE tag_id = $tag AND ts >= $start AND ts < $end
ORDER BY ts DESC LIMIT 1
"""

_LAST = """
SELECT tag_id, max(ts), arg_max(value, ts), arg_max(quality, ts) FROM samples_text
WHERE tag_id IN (SELECT unnest($tags::INTEGER[]))
GROUP BY tag_id ORDER BY tag_id
"""

_HAS = """
SELECT count(*) FROM (
    SELECT 1 FROM samples_text WHERE tag_id = $tag AND ts >= $start AND ts < $end LIMIT 1
)
"""


def insert(cur: Any, strings: Batch) -> int:
    """Store the string rows of a duplicate-free batch; returns the new rows.  The
    caller holds the write lock and runs the transaction."""
    assert strings.text is not None
    table = {
        "tag_id": strings.tag_id,
        "ts": strings.ts,
        "value": strings.text,
        "quality": strings.quality,
    }
    cur.register("_text_batch", table)
    try:
        rows = cur.execute(_INSERT).fetchall()
    finally:
        cur.unregister("_text_batch")
    return int(rows[0][0]) if rows else 0


def _rows(cur: Any, query: str, params: dict[str, Any]) -> Batch:
    rows = cur.execute(query, params).fetchall()
    return from_rows([(int(t), int(s), str(v), int(q)) for t, s, v, q in rows])


def raw(cur: Any, tag_id: int, start_ns: int, end_ns: int, limit: int) -> Batch:
    return _rows(cur, _RAW, {"tag": tag_id, "start": start_ns, "end": end_ns, "limit": limit})


def before(cur: Any, tag_id: int, ts_ns: int, lookback_ns: int) -> Batch:
    return _rows(cur, _BEFORE, {"tag": tag_id, "start": ts_ns - lookback_ns, "end": ts_ns})


def last(cur: Any, tag_ids: Sequence[int]) -> Batch:
    return _rows(cur, _LAST, {"tags": [int(t) for t in tag_ids]})


def has_text(cur: Any, tag_id: int, start_ns: int, end_ns: int) -> bool:
    rows = cur.execute(_HAS, {"tag": tag_id, "start": start_ns, "end": end_ns}).fetchall()
    return bool(rows and rows[0][0])


def count(cur: Any) -> int:
    rows = cur.execute("SELECT count(*) FROM samples_text").fetchall()
    return int(rows[0][0]) if rows else 0


def purge_before(cur: Any, ts_ns: int) -> int:
    rows = cur.execute("DELETE FROM samples_text WHERE ts < ?", [ts_ns]).fetchall()
    return int(rows[0][0]) if rows else 0
