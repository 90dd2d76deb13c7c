"""Grafana views of string samples in the PostgreSQL historian (schema migration 4).

* ``samples_text_v``: one row per string sample, the columns of ``samples_v`` with
  ``text`` in place of ``value``;
* ``last_v`` gains a last column ``text``: numeric tags keep their row from
  ``last_value`` (``text`` NULL); each tag with string samples adds its newest one
  (``value`` NaN, ``text`` set).  Existing queries of ``last_v`` keep working.

``samples_v`` is left as it is (numbers only), so Grafana's aggregates over it and its
partition pruning are unchanged.
"""

from __future__ import annotations

from typing import Any

QUALITY_COLUMNS = """
    {a}.quality::bigint & 4294967295 AS quality,
    CASE WHEN {a}.quality < 0 THEN 'Bad'
         WHEN {a}.quality >= 1073741824 THEN 'Uncertain'
         ELSE 'Good' END AS severity,
    q.name AS quality_name,
    {a}.ts,
    {a}.tag_id"""

SAMPLES_TEXT_V = f"""
CREATE VIEW samples_text_v AS
SELECT
    timestamptz 'epoch' + (x.ts / 1000) * interval '1 microsecond' AS time,
    t.path AS tag,
    x.value AS text,{QUALITY_COLUMNS.format(a="x")}
FROM samples_text AS x
JOIN tags AS t ON t.id = x.tag_id
LEFT JOIN quality_names AS q ON q.code = (x.quality::bigint & 4294901760)
"""

LAST_V = f"""
CREATE OR REPLACE VIEW last_v AS
SELECT
    timestamptz 'epoch' + (l.ts / 1000) * interval '1 microsecond' AS time,
    t.path AS tag,
    l.value,{QUALITY_COLUMNS.format(a="l")},
    NULL::text AS text
FROM last_value AS l
JOIN tags AS t ON t.id = l.tag_id
LEFT JOIN quality_names AS q ON q.code = (l.quality::bigint & 4294901760)
UNION ALL
SELECT
    timestamptz 'epoch' + (x.ts / 1000) * interval '1 microsecond' AS time,
    t.path AS tag,
    'NaN'::double precision AS value,{QUALITY_COLUMNS.format(a="x")},
    x.value AS text
FROM (
    SELECT DISTINCT ON (tag_id) tag_id, ts, value, quality
    FROM samples_text ORDER BY tag_id, ts DESC
) AS x
JOIN tags AS t ON t.id = x.tag_id
LEFT JOIN quality_names AS q ON q.code = (x.quality::bigint & 4294901760)
"""


def migrate(cur: Any) -> None:
    """Migration 4: ``samples_text_v`` and the ``text`` column of ``last_v``."""
    cur.execute(SAMPLES_TEXT_V)
    cur.execute(LAST_V)
