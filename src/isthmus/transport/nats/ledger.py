"""The hub's bookkeeping in PostgreSQL, beside the historian's tables.

``hub_ledger``
    one row per committed message: ``(site, seq)`` is the key, with its sample count,
    whether it was a replay, its oldest and newest sample timestamps, the hub that committed it
    first, when, and how many times it was delivered and committed (``deliveries`` > 1:
    an at-least-once redelivery that the historian's ``(tag, ts)`` key absorbed).
    Written in the samples' own transaction (PostgreSQL historians) and before the NATS
    ack, so ``lost`` and ``duplicates`` can be counted exactly: a site's seqs 1..N must
    all be there once.
``hub_quarantine``
    every message the hub could not decode (malformed, unknown version): its stream,
    stream sequence, subject, the reason and the raw payload, for forensics.  Quarantined
    messages are acknowledged so they never block the stream.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

Connection = psycopg.Connection[tuple[Any, ...]]

_LOCK = 0x15_7A_06_01

SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_ledger (
    site text NOT NULL,
    seq bigint NOT NULL,
    n_samples integer NOT NULL,
    historical boolean NOT NULL,
    ts_min bigint,
    ts_max bigint,
    hub text NOT NULL,
    commit_id bigserial,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    deliveries integer NOT NULL DEFAULT 1,
    PRIMARY KEY (site, seq)
);
CREATE TABLE IF NOT EXISTS hub_quarantine (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    hub text NOT NULL,
    stream text NOT NULL,
    stream_seq bigint,
    subject text NOT NULL,
    reason text NOT NULL,
    payload bytea NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Committed:
    site: str
    seq: int
    samples: int
    historical: bool
    ts_min: int | None = None
    """The oldest sample's timestamp: commit time minus it is the worst sample latency."""
    ts_max: int | None = None
    """The newest sample's timestamp: commit time minus it is the best sample latency."""


@dataclass(frozen=True, slots=True)
class Quarantined:
    stream: str
    stream_seq: int | None
    subject: str
    reason: str
    payload: bytes


class HubLedger:
    """One connection (reconnected when lost); call from a worker thread."""

    def __init__(self, dsn: str, hub: str) -> None:
        self.dsn = dsn
        self.hub = hub
        self._con: Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> Connection:
        if self._con is None or self._con.broken or self._con.closed:
            if self._con is not None:
                self._con.close()
            con: Connection = psycopg.connect(
                self.dsn, autocommit=False, application_name="isthmus-hub"
            )
            self._con = con
        return self._con

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction on the ledger's connection: committed, or rolled back (when
        the connection still works) and re-raised."""
        with self._lock:
            con = self._connection()
            try:
                yield con
                con.commit()
            except BaseException:
                if not con.broken:
                    con.rollback()
                raise

    def open(self) -> None:
        with self._transaction() as con:
            con.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
            con.execute(SCHEMA)

    def record(self, rows: Sequence[Committed]) -> None:
        """Record committed messages in a transaction of the ledger's own."""
        if not rows:
            return
        with self._transaction() as con, con.cursor() as cur:
            self.record_in(cur, rows)

    def record_in(self, cur: Any, rows: Sequence[Committed]) -> None:
        """Record committed messages with ``cur``, inside the caller's transaction (the
        hub passes the historian's write transaction: samples and ledger rows commit
        together)."""
        if not rows:
            return
        cur.executemany(
            "INSERT INTO hub_ledger"
            " (site, seq, n_samples, historical, ts_min, ts_max, hub)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (site, seq) DO UPDATE"
            " SET deliveries = hub_ledger.deliveries + 1",
            [(r.site, r.seq, r.samples, r.historical, r.ts_min, r.ts_max, self.hub) for r in rows],
        )

    def quarantine(self, items: Sequence[Quarantined]) -> None:
        if not items:
            return
        with self._transaction() as con, con.cursor() as cur:
            cur.executemany(
                "INSERT INTO hub_quarantine"
                " (hub, stream, stream_seq, subject, reason, payload)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [(self.hub, q.stream, q.stream_seq, q.subject, q.reason, q.payload) for q in items],
            )

    def tag_rows(self) -> list[tuple[int, str, str, str]]:
        """Every tag of the historian: (id, path, data_type, unit)."""
        with self._transaction() as con:
            rows = con.execute("SELECT id, path, data_type, unit FROM tags").fetchall()
        return [(int(i), str(p), str(d), str(u)) for i, p, d, u in rows]

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
