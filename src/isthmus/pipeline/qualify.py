"""Qualify: raw values → engineering values with a quality, deadband and stale checks.

Pure and vectorised.  Per tag (indexed by tag id) the qualifier holds its parameters
(scale, offset, engineering range, absolute deadband, stale timeout) and a little state
(last recorded value and quality, when it was last *received*).  For each batch:

1. ``value = raw * scale + offset``;
2. a Good sample that is not finite becomes ``Bad_OutOfRange``; one outside the
   engineering range becomes ``Uncertain_EngineeringUnitsExceeded`` (value kept);
3. deadband: with a deadband > 0, a sample is recorded only when its quality differs
   from the last recorded one or its value moved by more than the deadband; with the
   default deadband 0 every received sample is recorded;
4. late samples (older than the last recorded one of their tag) pass untouched and do
   not move the state.

String samples (rows with a ``text``, see :class:`~isthmus.model.batch.Batch`) pass
through: no scale, range or finiteness check (their value is NaN by design, never
``Bad_OutOfRange``).  Their "deadband" is *changed or not*: a string sample is recorded
when its text or its quality differs from the last recorded one (a serial number polled
twice a second is stored once, not 170,000 times a day).  A stale string tag's
``Uncertain_LastUsableValue`` sample carries its last text.

:meth:`Qualifier.stale` yields ``Uncertain_LastUsableValue`` samples for tags that were
not *received* for longer than their ``stale_after``; the next received sample clears it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry
from isthmus.model.quality import SEVERITY_MASK, Quality

_NEVER = np.uint32(0xFFFFFFFF)  # "no sample recorded yet"; not a valid status code


class Qualifier:
    def __init__(self, entries: Iterable[CatalogEntry]) -> None:
        self.known = np.zeros(0, dtype=np.bool_)
        self.scale = np.ones(0)
        self.offset = np.zeros(0)
        self.low = np.full(0, -np.inf)
        self.high = np.full(0, np.inf)
        self.deadband = np.zeros(0)
        self.stale_after_ns = np.zeros(0, dtype=np.int64)
        self.last_value = np.full(0, np.nan)
        self.last_text: npt.NDArray[np.object_] = np.full(0, None, dtype=object)
        self.last_quality = np.full(0, _NEVER, dtype=np.uint32)
        self.last_ts = np.full(0, np.iinfo(np.int64).min, dtype=np.int64)
        self.last_seen_ns = np.zeros(0, dtype=np.int64)
        self.is_stale = np.zeros(0, dtype=np.bool_)
        self.unknown_samples = 0
        self.suppressed_samples = 0
        self.add(entries)

    def add(self, entries: Iterable[CatalogEntry]) -> None:
        """Qualify these tags too (tags created at run time); arrays grow as needed."""
        entries = list(entries)
        size = max((e.tag_id for e in entries), default=-1) + 1
        if size > len(self.known):
            grow = size - len(self.known)

            def extend(arr: npt.NDArray[Any], fill: object) -> npt.NDArray[Any]:
                return np.concatenate([arr, np.full(grow, fill, dtype=arr.dtype)])

            self.known = extend(self.known, False)
            self.scale = extend(self.scale, 1.0)
            self.offset = extend(self.offset, 0.0)
            self.low = extend(self.low, -np.inf)
            self.high = extend(self.high, np.inf)
            self.deadband = extend(self.deadband, 0.0)
            self.stale_after_ns = extend(self.stale_after_ns, 0)
            self.last_value = extend(self.last_value, np.nan)
            self.last_text = extend(self.last_text, None)
            self.last_quality = extend(self.last_quality, _NEVER)
            self.last_ts = extend(self.last_ts, np.iinfo(np.int64).min)
            self.last_seen_ns = extend(self.last_seen_ns, 0)
            self.is_stale = extend(self.is_stale, False)
        for e in entries:
            c = e.config
            i = e.tag_id
            self.known[i] = True
            self.scale[i] = c.scale
            self.offset[i] = c.offset
            if c.range is not None:
                self.low[i], self.high[i] = c.range
            self.deadband[i] = c.deadband
            if c.stale_after:
                self.stale_after_ns[i] = int(c.stale_after * 1e9)

    def apply(self, batch: Batch) -> Batch:
        """Qualify a batch; returns the samples to record (possibly fewer)."""
        if len(batch) == 0:
            return batch
        tag = batch.tag_id
        valid = (tag >= 0) & (tag < len(self.known))
        valid[valid] = self.known[tag[valid]]
        if not valid.all():
            self.unknown_samples += int((~valid).sum())
            batch = batch.select(valid)
            tag = batch.tag_id
            if len(batch) == 0:
                return batch

        with np.errstate(over="ignore", invalid="ignore"):  # non-finite results → Bad below
            value = batch.value * self.scale[tag] + self.offset[tag]
        quality = batch.quality.copy()
        good = (quality & np.uint32(SEVERITY_MASK)) == 0
        finite = np.isfinite(value)
        if batch.text is not None:
            finite |= batch.is_text  # a string row's NaN value is not a number out of range
        quality[good & ~finite] = Quality.BAD_OUT_OF_RANGE
        outside = good & finite & ((value < self.low[tag]) | (value > self.high[tag]))
        quality[outside] = Quality.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED
        qualified = Batch(tag, batch.ts, value, quality, batch.historical, batch.text)

        # Every received sample refreshes liveness, whatever the deadband decides.
        np.maximum.at(self.last_seen_ns, tag, batch.ts)
        self.is_stale[tag] = False

        keep = self._deadband(qualified)
        self.suppressed_samples += int(len(keep) - keep.sum())
        return qualified if keep.all() else qualified.select(keep)

    def _deadband(self, b: Batch) -> npt.NDArray[np.bool_]:
        keep = np.zeros(len(b), dtype=np.bool_)
        # Process in time order; a tag seen k times in one batch takes k rounds, each
        # round vectorised over all tags (k is small: a poll or a publish response).
        order = np.lexsort((b.ts, b.tag_id))
        tags = b.tag_id[order]
        starts = np.r_[True, tags[1:] != tags[:-1]]
        group_start = np.maximum.accumulate(np.where(starts, np.arange(len(tags)), 0))
        rank = np.arange(len(tags)) - group_start
        for r in range(int(rank.max()) + 1):
            rows = order[rank == r]
            t = b.tag_id[rows]
            v = b.value[rows]
            q = b.quality[rows]
            ts = b.ts[rows]
            late = ts < self.last_ts[t]
            prev_q = self.last_quality[t]
            prev_v = self.last_value[t]
            changed_q = q != prev_q
            bad = (q & np.uint32(0x80000000)) != 0
            with np.errstate(invalid="ignore", over="ignore"):
                moved = np.abs(v - prev_v) > self.deadband[t]
            zero_db = self.deadband[t] == 0
            record = changed_q | zero_db | (~bad & moved) | late
            if b.text is not None:
                text = b.text[rows]
                is_text = np.asarray(text != None, dtype=np.bool_)  # noqa: E711
                if is_text.any():
                    changed_text = np.asarray(text != self.last_text[t], dtype=np.bool_)
                    record = np.where(is_text, changed_q | changed_text | late, record)
            keep[rows] = record
            update = record & ~late
            ut = t[update]
            self.last_value[ut] = v[update]
            self.last_quality[ut] = q[update]
            self.last_ts[ut] = ts[update]
            if b.text is not None:  # a tag's type is fixed: numeric rows keep None
                self.last_text[ut] = b.text[rows][update]
        return keep

    def stale(self, now_ns: int) -> Batch:
        """Samples marking tags whose data stopped arriving (once per silence)."""
        candidates = (
            (self.stale_after_ns > 0)
            & (self.last_seen_ns > 0)
            & ~self.is_stale
            & ((now_ns - self.last_seen_ns) > self.stale_after_ns)
            & (self.last_quality != _NEVER)
        )
        idx = np.flatnonzero(candidates)
        if len(idx) == 0:
            return Batch.empty()
        self.is_stale[idx] = True
        quality = np.full(len(idx), Quality.UNCERTAIN_LAST_USABLE_VALUE, dtype=np.uint32)
        self.last_quality[idx] = quality
        self.last_ts[idx] = now_ns
        text = self.last_text[idx]
        has_text = bool((text != None).any())  # noqa: E711 (elementwise)
        return Batch.of(idx, now_ns, self.last_value[idx], quality, text=text if has_text else None)
