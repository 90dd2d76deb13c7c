"""Periodic historian maintenance: rollups into the downsampling tiers and retention per
tag class, run every ``interval_s`` in a worker thread while the system runs.

A store takes part if it implements :class:`~isthmus.historian.base.Maintainable`
(DuckDB: tiers and retention; SQLite and PostgreSQL: retention of raw samples).  One
log line per run gives the counts; a failing run is logged (once per burst) and retried
at the next period, never ending the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from isthmus.historian.base import Maintainable, MaintenanceReport, Store
from isthmus.model.clock import Clock
from isthmus.model.config import DEFAULT_RETENTION_CLASS, TagConfig
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import BurstLog, Metrics

log = logging.getLogger("isthmus.historian.maintenance")

DEFAULT_INTERVAL_S = 60.0


def retention_classes(tags: Iterable[tuple[int, TagConfig]]) -> dict[int, str]:
    """Tag id → its retention class (``default`` when the tag names none)."""
    return {tag_id: cfg.retention_class or DEFAULT_RETENTION_CLASS for tag_id, cfg in tags}


class HistorianMaintenance:
    """Calls ``store.maintain(clock.now_ns())`` every ``interval_s``, first at start."""

    def __init__(
        self,
        store: Maintainable,
        clock: Clock,
        *,
        classes: Mapping[int, str] | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        metrics: Metrics | None = None,
        events: EventLog | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the maintenance interval must be positive")
        self.store = store
        self.clock = clock
        self.classes = dict(classes or {})
        self.interval_s = interval_s
        self.metrics = metrics
        self.runs = 0
        self.last_report: MaintenanceReport | None = None
        self._burst = BurstLog(log, events=events, source="historian", prefix="historian")

    def run_once(self) -> MaintenanceReport:
        """One synchronous run (call from a worker thread)."""
        report = self.store.maintain(self.clock.now_ns())
        self.runs += 1
        self.last_report = report
        log.info("historian maintenance: %s", report.summary())
        if self.metrics is not None:
            self.metrics.inc("historian.samples_rolled_up", report.samples_rolled_up)
            for tier, rows in report.rows_deleted.items():
                self.metrics.inc(f"historian.rows_expired.{tier}", rows)
            self.metrics.set("historian.maintenance_ms", report.seconds * 1e3)
        return report

    async def run(self) -> None:
        """Assign the tags' classes, then maintain every period until cancelled."""
        if self.classes:
            await asyncio.to_thread(self.store.assign_retention_classes, self.classes)
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception as exc:  # the store's own errors, whatever the backend
                if self.metrics is not None:
                    self.metrics.inc("historian.maintenance_errors")
                self._burst.warning("maintain", "historian maintenance failed: %s", exc)
            await asyncio.sleep(self.interval_s)


def start_maintenance(
    store: Store,
    tags: Iterable[tuple[int, TagConfig]],
    clock: Clock,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    metrics: Metrics | None = None,
    events: EventLog | None = None,
) -> HistorianMaintenance | None:
    """The maintenance task of ``store``, or None if the store has no maintenance."""
    if not isinstance(store, Maintainable):
        return None
    return HistorianMaintenance(
        store,
        clock,
        classes=retention_classes(tags),
        interval_s=interval_s,
        metrics=metrics,
        events=events,
    )
