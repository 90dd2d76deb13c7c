"""Retention per tag class for the SQLite historian: a delete per class, by primary key
range ``(tag_id, ts < cut-off)``.  No downsampling tiers (see the DuckDB store)."""

from __future__ import annotations

import sqlite3
import threading
import time

from isthmus.historian.base import MaintenanceReport
from isthmus.historian.retention import InMemoryClasses, raw_cutoffs


class SQLiteRetentionMixin(InMemoryClasses):
    _lock: threading.Lock

    def _write_con(self) -> sqlite3.Connection:
        raise NotImplementedError

    def maintain(self, now_ns: int) -> MaintenanceReport:
        started = time.perf_counter()
        with self._lock:
            con = self._write_con()
            ids = [int(row[0]) for row in con.execute("SELECT id FROM tags")]
            groups = raw_cutoffs(self.config.retention, self._retention_classes or {}, ids, now_ns)
            rows = [(tag, cut) for tags, cut in groups for tag in tags]
            deleted = 0
            con.execute("BEGIN IMMEDIATE")
            try:
                for table in ("samples", "samples_text"):
                    cur = con.executemany(f"DELETE FROM {table} WHERE tag_id = ? AND ts < ?", rows)
                    deleted += max(cur.rowcount, 0)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return MaintenanceReport(
            rows_deleted={"raw": deleted}, seconds=time.perf_counter() - started
        )
