"""Retention per tag class for the PostgreSQL historian.

Daily partitions that every class has expired are dropped whole (``purge_before`` at
the earliest cut-off, cheap); classes that keep less lose their older rows with a
``DELETE ... WHERE tag_id = ANY(...)``.  No downsampling tiers (see the DuckDB store).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from isthmus.historian.base import MaintenanceReport
from isthmus.historian.retention import InMemoryClasses, raw_cutoffs


class PostgresRetentionMixin(InMemoryClasses):
    _write_lock: threading.Lock

    def _write_con(self) -> Any:
        raise NotImplementedError

    def purge_before(self, ts_ns: int) -> int:
        raise NotImplementedError

    def tags(self) -> dict[str, int]:
        raise NotImplementedError

    def delete_tags_before(self, cur: Any, tags: list[int], cut: int) -> int:
        raise NotImplementedError

    def maintain(self, now_ns: int) -> MaintenanceReport:
        started = time.perf_counter()
        ids = list(self.tags().values())
        groups = raw_cutoffs(self.config.retention, self._retention_classes or {}, ids, now_ns)
        deleted = 0
        covered = sum(len(tags) for tags, _ in groups)
        if groups and covered == len(set(ids)):  # every tag expires: drop common partitions
            floor = min(cut for _, cut in groups)
            deleted += self.purge_before(floor)
        else:
            floor = None
        later = [(tags, cut) for tags, cut in groups if floor is None or cut > floor]
        if later:
            with self._write_lock:
                con = self._write_con()
                try:
                    with con.cursor() as cur:
                        for tags, cut in later:
                            deleted += self.delete_tags_before(cur, tags, cut)
                    con.commit()
                except BaseException:
                    con.rollback()
                    raise
        return MaintenanceReport(
            rows_deleted={"raw": deleted}, seconds=time.perf_counter() - started
        )
