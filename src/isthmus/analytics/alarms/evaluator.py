"""Alarm definitions evaluated over batches, in timestamp order.

:class:`AlarmEvaluator` keeps one :class:`~isthmus.analytics.alarms.state.AlarmState`
per alarm name (one instance per alarm, whatever arrives twice) and the latest sample of
every tag an alarm reads.  :meth:`AlarmEvaluator.process` takes a batch, keeps the rows
of watched tags, orders them by timestamp (stable) and feeds each to the alarms that
read its tag; on/off delays run on those timestamps.  :meth:`AlarmEvaluator.tick`
advances what depends on the clock: ``stale`` alarms and delays that elapsed without a
later sample (both stamped at the time they became due, not at the tick) and shelving
expiry.  So evaluating live and replaying the same samples from the historian give the
same journal for every alarm.

Per alarm, time never goes back: a sample older than the last one of its tag is
ignored (counted in ``out_of_order``), and one older than the alarm's latest input is
applied at that latest time.  Not thread-safe: the runtime feeds it from one task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from isthmus.analytics.alarms.model import (
    HIGH_TYPES,
    LOW_TYPES,
    NS,
    AlarmConfigError,
    AlarmDefinition,
    AlarmSettings,
    AlarmType,
    Loc,
    RateDirection,
)
from isthmus.analytics.alarms.state import AlarmState, JournalEntry, Lifecycle, Step
from isthmus.model.batch import Batch
from isthmus.model.clock import Clock
from isthmus.model.quality import SEVERITY_MASK, quality_name

Sample = tuple[int, float, int]
"""(ts ns, value, quality) of a tag's latest sample."""


class UnknownAlarm(KeyError):
    """No alarm of that name."""


@dataclass(slots=True)
class _Alarm:
    definition: AlarmDefinition
    lifecycle: Lifecycle
    tag_id: int | None
    setpoint_id: int | None
    expr_ids: dict[str, int]
    supp_ids: dict[str, int]
    state: AlarmState = field(default_factory=AlarmState)
    prev_good: tuple[int, float] | None = None
    """rate: the previous Good sample (ts, value)."""
    last_good: int = 0
    """stale: time of the latest Good update (or of the start)."""


def _good(quality: int) -> bool:
    return quality & SEVERITY_MASK == 0


class AlarmEvaluator:
    """Evaluates ``definitions`` over batches; ``tag_ids`` maps the paths below the site
    (``area/line/cell/equipment/tag``) to the tag ids of the batches."""

    def __init__(
        self,
        definitions: Sequence[AlarmDefinition],
        tag_ids: Mapping[str, int],
        clock: Clock,
        *,
        settings: AlarmSettings | None = None,
        lateness: float = 0.0,
        start_ns: int | None = None,
        loc: Loc = ("alarms",),
    ) -> None:
        """``lateness`` (seconds): how far behind the clock a tick stops firing delays
        and stale conditions, so a sample delayed in transit by up to that long still
        counts.  ``start_ns`` (default: the clock's now) starts every stale timer."""
        self.clock = clock
        self.lateness_ns = round(lateness * NS)
        start = clock.now_ns() if start_ns is None else start_ns
        self.out_of_order = 0
        self._alarms: dict[str, _Alarm] = {}
        self._by_tag: dict[int, list[_Alarm]] = {}
        self._supp_by_tag: dict[int, list[_Alarm]] = {}
        self._last: dict[int, Sample] = {}
        issues: list[tuple[Loc, str]] = []

        def tag_id(path: str, d: AlarmDefinition, fld: str) -> int:
            tid = tag_ids.get(path)
            if tid is None:
                issues.append(((*loc, d.index, fld), f"unknown tag {path!r} ({d.name})"))
                return -1
            return tid

        for d in definitions:
            alarm = _Alarm(
                definition=d,
                lifecycle=d.lifecycle(settings),
                tag_id=None if d.tag is None else tag_id(d.tag, d, "tag"),
                setpoint_id=None if d.setpoint is None else tag_id(d.setpoint, d, "setpoint"),
                expr_ids={
                    p: tag_id(p, d, "expression")
                    for p in ([] if d.expression is None else d.expression.refs())
                },
                supp_ids={p: tag_id(p, d, "suppress_when") for p in d.suppression_inputs()},
                last_good=start,
            )
            if d.name in self._alarms:
                issues.append(((*loc, d.index, "name"), f"duplicate alarm name {d.name!r}"))
            self._alarms[d.name] = alarm
            inputs = set(alarm.expr_ids.values())
            if d.type is not AlarmType.EXPRESSION:
                inputs |= {i for i in (alarm.tag_id, alarm.setpoint_id) if i is not None}
            for tid in inputs:
                self._by_tag.setdefault(tid, []).append(alarm)
            for tid in set(alarm.supp_ids.values()):
                self._supp_by_tag.setdefault(tid, []).append(alarm)
        if issues:
            raise AlarmConfigError(issues)
        self._watched = np.fromiter(set(self._by_tag) | set(self._supp_by_tag), dtype=np.int32)

    # --- reading ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._alarms)

    def definition(self, name: str) -> AlarmDefinition:
        return self._get(name).definition

    def state(self, name: str) -> AlarmState:
        return self._get(name).state

    def states(self) -> dict[str, AlarmState]:
        return {name: a.state for name, a in self._alarms.items()}

    def _get(self, name: str) -> _Alarm:
        try:
            return self._alarms[name]
        except KeyError:
            raise UnknownAlarm(name) from None

    # --- samples ------------------------------------------------------------------------

    def process(self, batch: Batch) -> list[JournalEntry]:
        """Apply a batch's samples in timestamp order; the journal entries they caused."""
        if not len(batch) or not len(self._watched):
            return []
        rows = batch.select(np.isin(batch.tag_id, self._watched))
        if not len(rows):
            return []
        order = np.argsort(rows.ts, kind="stable")
        tags = rows.tag_id[order].tolist()
        stamps = rows.ts[order].tolist()
        values = rows.value[order].tolist()
        qualities = rows.quality[order].tolist()
        journal: list[JournalEntry] = []
        for tid, ts, value, quality in zip(tags, stamps, values, qualities, strict=True):
            prev = self._last.get(tid)
            if prev is not None and ts < prev[0]:
                self.out_of_order += 1
                continue
            self._last[tid] = (ts, value, quality)
            for alarm in self._by_tag.get(tid, ()):
                journal += self._evaluate(alarm, tid, ts)
            for alarm in self._supp_by_tag.get(tid, ()):
                journal += self._suppress(alarm, ts)
        return journal

    def _apply(self, alarm: _Alarm, step: Step) -> list[JournalEntry]:
        alarm.state, entries = step
        return entries

    def _evaluate(self, alarm: _Alarm, tid: int, ts: int) -> list[JournalEntry]:
        d = alarm.definition
        lc = alarm.lifecycle
        kind = d.type
        if kind is AlarmType.STALE:
            _, seen, seen_quality = self._last[tid]
            entries = self._stale_due(alarm, ts)
            if _good(seen_quality):
                alarm.last_good = max(alarm.last_good, ts)
                entries += self._apply(alarm, lc.evaluate(alarm.state, ts, False, seen))
            return entries
        if kind is AlarmType.EXPRESSION:
            return self._expression(alarm, ts)
        assert alarm.tag_id is not None
        sample = self._last.get(alarm.tag_id)
        if sample is None:
            return []
        _, value, quality = sample
        st = alarm.state
        if kind is AlarmType.DEVIATION:
            assert alarm.setpoint_id is not None
            sp = self._last.get(alarm.setpoint_id)
            if sp is None:
                return []
            if not (_good(quality) and _good(sp[2])) or not math.isfinite(value - sp[1]):
                bad_q = quality if not _good(quality) else sp[2]
                return self._bad(alarm, ts, bad_q)
            deviation = abs(value - sp[1])
            limit = d.config.limit or 0.0
            raw = not deviation < limit - d.config.deadband if st.condition else deviation > limit
            return self._apply(alarm, lc.evaluate(st, ts, raw, value))
        if not _good(quality) or not math.isfinite(value):
            return self._bad(alarm, ts, quality)
        if kind is AlarmType.DISCRETE:
            states = d.config.state or [1.0]
            return self._apply(alarm, lc.evaluate(st, ts, value in states, value))
        if kind is AlarmType.RATE:
            prev, alarm.prev_good = alarm.prev_good, (ts, value)
            if prev is None or ts <= prev[0]:
                return []
            rate = (value - prev[1]) / ((ts - prev[0]) / NS)
            signed = {
                RateDirection.RISING: rate,
                RateDirection.FALLING: -rate,
                RateDirection.BOTH: abs(rate),
            }[d.config.direction]
            limit = d.config.limit or 0.0
            raw = not signed < limit - d.config.deadband if st.condition else signed > limit
            return self._apply(alarm, lc.evaluate(st, ts, raw, rate))
        trip = d.config.limit
        assert trip is not None
        deadband = d.config.deadband
        if kind in HIGH_TYPES:
            raw = not value < trip - deadband if st.condition else value > trip
        else:
            assert kind in LOW_TYPES
            raw = not value > trip + deadband if st.condition else value < trip
        return self._apply(alarm, lc.evaluate(st, ts, raw, value))

    def _bad(self, alarm: _Alarm, ts: int, quality: int) -> list[JournalEntry]:
        comment = f"bad input: {quality_name(quality)}"
        return self._apply(
            alarm, alarm.lifecycle.evaluate(alarm.state, ts, None, bad=True, comment=comment)
        )

    def _values(self, ids: Mapping[str, int]) -> tuple[dict[str, float], int] | None:
        """Latest values of ``ids``; ``None`` until each has a sample.  Also the worst
        quality seen (0 when all are Good)."""
        values: dict[str, float] = {}
        worst = 0
        for path, tid in ids.items():
            sample = self._last.get(tid)
            if sample is None:
                return None
            values[path] = sample[1]
            if not _good(sample[2]) and worst == 0:
                worst = sample[2]
        return values, worst

    def _expression(self, alarm: _Alarm, ts: int) -> list[JournalEntry]:
        expression = alarm.definition.expression
        assert expression is not None
        got = self._values(alarm.expr_ids)
        if got is None:
            return []
        values, worst = got
        if worst:
            return self._bad(alarm, ts, worst)
        result = expression.evaluate(values)
        if result is None:
            return self._apply(
                alarm,
                alarm.lifecycle.evaluate(
                    alarm.state, ts, None, bad=True, comment="bad input: expression unknown"
                ),
            )
        return self._apply(
            alarm, alarm.lifecycle.evaluate(alarm.state, ts, bool(result), float(result))
        )

    def _suppress(self, alarm: _Alarm, ts: int) -> list[JournalEntry]:
        """The design condition; unknown or Bad inputs never suppress (fail-safe: the
        alarm stays annunciated)."""
        expression = alarm.definition.suppress_when
        assert expression is not None
        got = self._values(alarm.supp_ids)
        suppressed = False
        if got is not None and not got[1]:
            suppressed = bool(expression.evaluate(got[0]))
        return self._apply(alarm, alarm.lifecycle.suppression(alarm.state, ts, suppressed))

    def _stale_due(self, alarm: _Alarm, before: int) -> list[JournalEntry]:
        """A stale alarm whose duration elapsed before ``before``: the condition at the
        moment it elapsed."""
        duration = alarm.definition.config.duration
        assert duration is not None
        due = alarm.last_good + round(duration * NS)
        st = alarm.state
        if due >= before or st.condition or st.pending is True:
            return []
        return self._apply(alarm, alarm.lifecycle.evaluate(st, due, True, None))

    # --- the clock ----------------------------------------------------------------------

    def tick(self, now_ns: int | None = None) -> list[JournalEntry]:
        """Stale conditions and delays due before ``now - lateness`` and shelves expired
        by ``now`` (default: the clock's now) take effect, each at its own time."""
        now = self.clock.now_ns() if now_ns is None else now_ns
        sample_now = now - self.lateness_ns
        journal: list[JournalEntry] = []
        for alarm in self._alarms.values():
            if alarm.definition.type is AlarmType.STALE:
                journal += self._stale_due(alarm, sample_now)
            journal += self._apply(alarm, alarm.lifecycle.tick(alarm.state, now, sample_now))
        return journal

    # --- operator actions ---------------------------------------------------------------

    def _now(self, ts: int | None) -> int:
        return self.clock.now_ns() if ts is None else ts

    def acknowledge(
        self, name: str, user: str, comment: str = "", ts: int | None = None
    ) -> list[JournalEntry]:
        alarm = self._get(name)
        return self._apply(
            alarm, alarm.lifecycle.acknowledge(alarm.state, self._now(ts), user, comment)
        )

    def shelve(
        self, name: str, user: str, reason: str, duration: float, ts: int | None = None
    ) -> list[JournalEntry]:
        """Shelve for ``duration`` seconds; :class:`ActionRefused` beyond the maximum of
        the alarm's priority, without a reason, or out of service."""
        alarm = self._get(name)
        step = alarm.lifecycle.shelve(
            alarm.state, self._now(ts), user, reason, round(duration * NS)
        )
        return self._apply(alarm, step)

    def unshelve(
        self, name: str, user: str, comment: str = "", ts: int | None = None
    ) -> list[JournalEntry]:
        alarm = self._get(name)
        return self._apply(
            alarm, alarm.lifecycle.unshelve(alarm.state, self._now(ts), user, comment)
        )

    def remove_from_service(
        self, name: str, user: str, comment: str = "", ts: int | None = None
    ) -> list[JournalEntry]:
        alarm = self._get(name)
        return self._apply(
            alarm, alarm.lifecycle.remove_from_service(alarm.state, self._now(ts), user, comment)
        )

    def return_to_service(
        self, name: str, user: str, comment: str = "", ts: int | None = None
    ) -> list[JournalEntry]:
        alarm = self._get(name)
        return self._apply(
            alarm, alarm.lifecycle.return_to_service(alarm.state, self._now(ts), user, comment)
        )


def evaluate_history(
    definitions: Sequence[AlarmDefinition],
    tag_ids: Mapping[str, int],
    batches: Iterable[Batch],
    clock: Clock,
    *,
    start_ns: int,
    end_ns: int,
    settings: AlarmSettings | None = None,
) -> list[JournalEntry]:
    """Recompute the journal from stored samples (from ``start_ns``, with a final tick at
    ``end_ns``): what live evaluation journalled over the same samples."""
    evaluator = AlarmEvaluator(definitions, tag_ids, clock, settings=settings, start_ns=start_ns)
    journal: list[JournalEntry] = []
    for batch in batches:
        journal += evaluator.process(batch)
    journal += evaluator.tick(end_ns)
    return journal
