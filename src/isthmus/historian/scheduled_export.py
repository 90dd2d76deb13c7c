"""The scheduled export: the running server writes whole UTC days to the data lake.

Once a day at ``export.at`` (UTC) the last ``export.days`` whole days before today are
exported with ``overwrite`` (each day partition is replaced atomically, so a re-run
after a failure or with late data just rewrites those days).  It runs inside the server
because an embedded historian is held by the server process; the export itself runs in
a worker thread on the server's own store (readers have their own cursors).

Every run raises one event: ``export.done`` (info) or ``export.failed`` (warning, with
the error); metrics ``export.runs``, ``export.failures``, ``export.rows``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

from isthmus.historian.base import Store
from isthmus.historian.export import ExportResult, export
from isthmus.model.clock import Clock
from isthmus.model.config import ExportConfig
from isthmus.model.errors import IsthmusError
from isthmus.model.events import Severity
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import Metrics

log = logging.getLogger("isthmus.export")

DAY_NS = 86_400 * 1_000_000_000


def next_run_ns(now_ns: int, at_s: float) -> int:
    """The first time of day ``at_s`` (seconds after UTC midnight) strictly after now."""
    today = now_ns - now_ns % DAY_NS
    candidate = today + int(at_s * 1e9)
    return candidate if candidate > now_ns else candidate + DAY_NS


def days_to_export(now_ns: int, days: int) -> tuple[int, int]:
    """``[start, end)``: the ``days`` whole UTC days before today."""
    today = now_ns - now_ns % DAY_NS
    return today - days * DAY_NS, today


class ScheduledExport:
    def __init__(
        self,
        config: ExportConfig,
        store: Store,
        data_dir: Path,
        clock: Clock,
        metrics: Metrics,
        events: EventLog,
        units: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        dest = Path(config.dest).expanduser()
        self.dest = dest if dest.is_absolute() else data_dir / dest
        self.clock = clock
        self.metrics = metrics
        self.events = events
        self.units = dict(units or {})
        self.last: ExportResult | None = None

    async def run(self) -> None:
        """Until cancelled: sleep until the next run time, export, repeat."""
        while True:
            now = self.clock.now_ns()
            await asyncio.sleep((next_run_ns(now, self.config.at) - now) / 1e9)
            await self.run_once()

    async def run_once(self) -> ExportResult | None:
        start, end = days_to_export(self.clock.now_ns(), self.config.days)
        self.metrics.inc("export.runs")
        try:
            result = await asyncio.to_thread(
                export,
                self.store,
                start_ns=start,
                end_ns=end,
                tags_glob=self.config.tags,
                fmt=self.config.format,
                dest=self.dest,
                overwrite=True,
                units=self.units,
            )
        except (IsthmusError, OSError) as exc:
            self.metrics.inc("export.failures")
            log.warning("scheduled export to %s failed: %s", self.dest, exc)
            self.events.raise_event(
                "export.failed", "export", f"scheduled export to {self.dest} failed: {exc}"
            )
            return None
        self.last = result
        self.metrics.inc("export.rows", result.rows)
        log.info("scheduled export: %s", result.summary())
        self.events.raise_event(
            "export.done",
            "export",
            f"scheduled export: {result.summary()}",
            severity=Severity.INFO,
            rows=result.rows,
            files=len(result.files),
        )
        return result
