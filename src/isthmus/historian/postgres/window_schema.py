"""Schema of the window layout (migration 5) and the views over both layouts.

``sample_windows`` holds one row per tag and *window*: the samples of one tag that one
write brought for one minute (windows never cross a minute boundary, so a window's
``ts_first`` tells which minute and which daily partition it belongs to):

=============  =========================================================================
``tag_id``     the tag (``tags.id``)
``ts_first``   the window's oldest sample (UTC ns); with ``tag_id`` the primary key
``ts_last``    its newest sample
``n``          number of samples (the length of the three arrays)
``n_ok``       samples that are not Bad (what aggregates count)
``v_sum``      sum, min and max of the values of those ``n_ok`` samples (NULL when
``v_min``      ``n_ok = 0``): minute and coarser buckets are answered from these
``v_max``      without opening the arrays
``ts``         ``bigint[]``, ascending, unique
``value``      ``double precision[]``
``quality``    ``integer[]`` (the status code's 32 bits as int4, like ``samples``)
``minute``     the minute of ``ts_first`` (generated): windows of different minutes never
               overlap in time, so reading by ``(tag_id, minute)`` and sorting each
               minute's samples gives time order without sorting the whole range
=============  =========================================================================

Primary key ``(tag_id, minute, ts_first)`` (``minute`` is a function of ``ts_first``: the
same uniqueness as ``(tag_id, ts_first)``, in an order queries can stream).

Partitioned by range of ``ts_first`` into daily partitions ``sample_windows_pYYYYMMDD``
(or a TimescaleDB hypertable when the ``samples`` table is one).  Arrays above
PostgreSQL's 2 kB TOAST threshold are compressed (lz4 when the server has it).

``sample_rows`` is a view with one row per numeric sample over both layouts (``samples``
of the rows layout and the unnested windows); ``samples_v``, the Grafana view, is
rebuilt on it with the same columns, so dashboards work whichever layout a database
uses.  ``isthmus_samples(from_ns, to_ns)`` returns the columns of ``samples_v`` for a
range, reading only the windows that can hold it (the way to query long histories).
"""

from __future__ import annotations

from typing import Any

from isthmus.historian.postgres.text_views import QUALITY_COLUMNS

WINDOW_NS = 60 * 1_000_000_000
"""Windows are aligned on (and never cross) multiples of one minute."""

SAMPLE_WINDOWS = """
CREATE TABLE sample_windows (
    tag_id integer NOT NULL,
    ts_first bigint NOT NULL,
    ts_last bigint NOT NULL,
    n integer NOT NULL,
    n_ok integer NOT NULL,
    v_sum double precision,
    v_min double precision,
    v_max double precision,
    ts bigint[] NOT NULL,
    value double precision[] NOT NULL,
    quality integer[] NOT NULL,
    minute bigint NOT NULL GENERATED ALWAYS AS
        (ts_first - (((ts_first % 60000000000) + 60000000000) % 60000000000)) STORED,
    PRIMARY KEY (tag_id, minute, ts_first)
)
"""

_TIMESCALE = """
SELECT create_hypertable('sample_windows', 'ts_first', chunk_time_interval => {day}::bigint);
SELECT set_integer_now_func('sample_windows', 'isthmus_now_ns');
"""

SAMPLE_ROWS = """
CREATE VIEW sample_rows AS
SELECT ts, value, tag_id, quality FROM samples
UNION ALL
SELECT u.ts, u.value, w.tag_id, u.quality
FROM sample_windows AS w, unnest(w.ts, w.value, w.quality) AS u(ts, value, quality)
"""


def samples_v(source: str, create: str = "CREATE OR REPLACE VIEW") -> str:
    """The Grafana view ``samples_v`` over ``source`` (``samples`` in migration 2,
    ``sample_rows`` from migration 5 on)."""
    return f"""
{create} samples_v AS
SELECT
    timestamptz 'epoch' + (s.ts / 1000) * interval '1 microsecond' AS time,
    t.path AS tag,
    s.value,{QUALITY_COLUMNS.format(a="s")}
FROM {source} AS s
JOIN tags AS t ON t.id = s.tag_id
LEFT JOIN quality_names AS q ON q.code = (s.quality::bigint & 4294901760)
"""


# For Grafana over long ranges: the filter on ``ts`` of a view cannot reach the windows'
# ``ts_first`` (it applies to unnested rows), so ``samples_v`` reads every window of a
# tag.  This function takes the range first; PostgreSQL inlines it, so a ``WHERE tag =``
# on its result still uses the index and partition pruning.
SAMPLES_BETWEEN = """
CREATE FUNCTION isthmus_samples(from_ns bigint, to_ns bigint)
RETURNS TABLE (
    "time" timestamptz, tag text, value double precision, quality bigint, severity text,
    quality_name text, ts bigint, tag_id integer)
LANGUAGE sql STABLE AS $$
SELECT
    timestamptz 'epoch' + (s.ts / 1000) * interval '1 microsecond',
    t.path,
    s.value,
    s.quality::bigint & 4294967295,
    CASE WHEN s.quality < 0 THEN 'Bad'
         WHEN s.quality >= 1073741824 THEN 'Uncertain'
         ELSE 'Good' END,
    q.name,
    s.ts,
    s.tag_id
FROM (
    SELECT ts, value, tag_id, quality FROM samples WHERE ts >= from_ns AND ts < to_ns
    UNION ALL
    SELECT u.ts, u.value, w.tag_id, u.quality
    FROM sample_windows AS w, unnest(w.ts, w.value, w.quality) AS u(ts, value, quality)
    WHERE w.minute >= from_ns - (((from_ns % 60000000000) + 60000000000) % 60000000000)
      AND w.minute < to_ns
      AND w.ts_first >= from_ns - (((from_ns % 60000000000) + 60000000000) % 60000000000)
      AND w.ts_first < to_ns AND w.ts_last >= from_ns
      AND u.ts >= from_ns AND u.ts < to_ns
) AS s
JOIN tags AS t ON t.id = s.tag_id
LEFT JOIN quality_names AS q ON q.code = (s.quality::bigint & 4294901760)
$$
"""


def migrate(cur: Any, day_ns: int) -> None:
    """Migration 5: ``sample_windows`` (partitioned like ``samples``), ``sample_rows``,
    ``samples_v`` over both layouts."""
    row = cur.execute("SELECT value FROM historian_settings WHERE key = 'partitioning'").fetchone()
    if row is not None and row[0] == "timescaledb":
        cur.execute(SAMPLE_WINDOWS)
        cur.execute(_TIMESCALE.format(day=day_ns))
    else:
        cur.execute(SAMPLE_WINDOWS + " PARTITION BY RANGE (ts_first)")
    has_lz4 = cur.execute(
        "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'"
        " AND 'lz4' = ANY(enumvals)"
    ).fetchone()
    if has_lz4:
        for column in ("ts", "value", "quality"):
            cur.execute(f"ALTER TABLE sample_windows ALTER COLUMN {column} SET COMPRESSION lz4")
    cur.execute(SAMPLE_ROWS)
    cur.execute(samples_v("sample_rows"))
    cur.execute(SAMPLES_BETWEEN)
