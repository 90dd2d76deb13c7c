"""The edge publisher: spool → JetStream, in order, pipelined, acknowledged.

It reads the spool after its acknowledged position, encodes each record (see
:mod:`~isthmus.transport.nats.wire`) and publishes it to ``isthmus.<site>.batch`` with
``Nats-Msg-Id = <site>:<seq>``, keeping up to ``publish_window`` publishes in flight.
The spool is acknowledged up to the highest seq whose publish ack *and those of every
record before it* came back (JetStream has then stored the record, on ``replicas``
servers).  A publish that fails or is not acknowledged within ``ack_timeout`` ends the
session: the connection is dropped, and after a backoff a new one starts again from the
spool's acknowledged position.  Records re-sent that JetStream already stored are
dropped by its de-duplication window (same message id); beyond that window the hub's
idempotent writes absorb them.

Records appended before the current session started (an outage, a restart) are sent
with the historical flag: they are a replay, not live data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from isthmus.model.batch import Batch
from isthmus.model.clock import Clock
from isthmus.model.config import TransportConfig
from isthmus.model.errors import IsthmusError
from isthmus.net.backoff import Backoff
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import BurstLog, Metrics
from isthmus.transport.nats import wire
from isthmus.transport.nats.connect import (
    NATS_ERRORS,
    NatsUnavailable,
    connect,
    ensure_stream,
    msg_id,
    subject_for,
)
from isthmus.transport.spool import Spool

log = logging.getLogger("isthmus.transport.nats")

ACK_PERSIST_S = 0.05
"""The spool's ack file is rewritten (fsync) at most this often while busy."""


class PublishFailed(IsthmusError):
    """A publish was refused or not acknowledged in time: the session restarts."""


@dataclass(slots=True)
class _InFlight:
    future: asyncio.Future[Any]
    sent: float
    samples: int


@dataclass(frozen=True, slots=True)
class _Encoded:
    seq: int
    samples: int
    payload: bytes


class EdgePublisher:
    def __init__(
        self,
        spool: Spool,
        cfg: TransportConfig,
        site: str,
        tags: Mapping[int, wire.WireTag],
        metrics: Metrics,
        clock: Clock,
        wake: asyncio.Event | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.spool = spool
        self.cfg = cfg
        self.site = site
        self.tags = tags
        self.metrics = metrics
        self.clock = clock
        self.wake = wake or asyncio.Event()
        self.subject = subject_for(site)
        self.connected = False
        self._stream_declared = False
        self._acked = spool.acked_seq
        self._burst = BurstLog(log, events=events, source="nats-publisher", prefix="transport")

    # -- encoding (worker thread) ---------------------------------------------------------

    def _encode(self, seq: int, batch: Batch, historical: bool) -> _Encoded:
        uniq, local = wire.localise(batch)
        metas = [self.tags.get(int(i)) for i in uniq]
        if any(m is None for m in metas):
            known = np.array([m is not None for m in metas], dtype=np.bool_)
            keep = known[local.tag_id]
            self.metrics.inc("transport.nats.unknown_tag_samples", int((~keep).sum()))
            self._burst.warning("unknown-tag", "samples of tags the edge does not know: dropped")
            uniq, local = wire.localise(batch.select(keep))
            metas = [self.tags.get(int(i)) for i in uniq]
        table = [m for m in metas if m is not None]
        if historical != local.historical:
            local = Batch(
                local.tag_id, local.ts, local.value, local.quality, historical, local.text
            )
        payload = wire.encode(self.site, seq, self.clock.now_ns(), table, local)
        return _Encoded(seq, len(local), payload)

    def _read(self, after: int, count: int, live_from: int) -> list[_Encoded]:
        return [
            self._encode(seq, batch, seq < live_from)
            for seq, batch in self.spool.read(after, count)
        ]

    # -- sessions ---------------------------------------------------------------------------

    async def drain(self, within: float) -> bool:
        """Wait (at most ``within`` s) until every spooled record is acknowledged, while
        connected: a clean stop leaves nothing behind when the hub link is up."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._acked >= self.spool.next_seq - 1:
                return True
            if not self.connected:
                return False
            await asyncio.sleep(0.05)
        return False

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        try:
            while True:
                nc = None
                try:
                    nc = await connect(self.cfg, f"isthmus-edge-{self.site}", self._burst)
                    js = nc.jetstream(
                        # Re-declaring a known stream must not hold publishing up for long.
                        timeout=2.0 if self._stream_declared else 5.0,
                        publish_async_max_pending=self.cfg.publish_window,
                    )
                    await self._ensure_stream(js)
                    self.connected = True
                    self.metrics.inc("transport.nats.sessions")
                    await self._pump(js, backoff)
                except (*NATS_ERRORS, NatsUnavailable, PublishFailed) as exc:  # type: ignore[misc]
                    self.metrics.inc("transport.nats.session_failures")
                    self._burst.warning(
                        "session", "NATS publish session ended, the spool keeps data: %s", exc
                    )
                finally:
                    self.connected = False
                    if nc is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(nc.close(), 2.0)
                await asyncio.sleep(backoff.next_delay())
        finally:
            with contextlib.suppress(Exception):
                self.spool.ack(self._acked)

    async def _ensure_stream(self, js: Any) -> None:
        """Declare the stream; once it was declared, a failing declaration (a cluster
        electing a new leader) does not stop publishing: publish acks tell the truth."""
        try:
            await ensure_stream(js, self.cfg, self.site)
            self._stream_declared = True
        except NATS_ERRORS as exc:
            if not self._stream_declared:
                raise
            log.debug("stream declaration failed, publishing anyway: %s", exc)

    async def _pump(self, js: object, backoff: Backoff) -> None:
        from nats.js import JetStreamContext

        assert isinstance(js, JetStreamContext)
        if self._acked > self.spool.acked_seq:  # acks of the last session not yet persisted
            await asyncio.to_thread(self.spool.ack, self._acked)
        live_from = self.spool.next_seq
        cursor = self.spool.acked_seq
        self._acked = cursor
        persisted = cursor
        last_persist = 0.0
        window = self.cfg.publish_window
        inflight: OrderedDict[int, _InFlight] = OrderedDict()
        while True:
            room = window - len(inflight)
            self.wake.clear()
            got: list[_Encoded] = []
            if room > 0:
                got = await asyncio.to_thread(self._read, cursor, room, live_from)
            for enc in got:
                future = await js.publish_async(
                    self.subject,
                    enc.payload,
                    wait_stall=self.cfg.ack_timeout,
                    headers={"Nats-Msg-Id": msg_id(self.site, enc.seq)},
                )
                inflight[enc.seq] = _InFlight(future, time.monotonic(), enc.samples)
                cursor = enc.seq
            if got and len(inflight) < window:
                continue  # more may be waiting in the spool: fill the window first
            # Wait for an ack, or new data, or the oldest publish's deadline.
            waits: set[asyncio.Future[Any]] = {f.future for f in inflight.values()}
            wake = asyncio.ensure_future(self.wake.wait())
            timeout = 0.5
            if inflight:
                oldest = next(iter(inflight.values()))
                timeout = max(0.0, oldest.sent + self.cfg.ack_timeout - time.monotonic())
            try:
                await asyncio.wait({*waits, wake}, timeout=timeout, return_when="FIRST_COMPLETED")
            finally:
                wake.cancel()
            while inflight:
                seq, entry = next(iter(inflight.items()))
                if not entry.future.done():
                    if time.monotonic() - entry.sent > self.cfg.ack_timeout:
                        self.metrics.inc("transport.nats.publish_timeouts")
                        raise PublishFailed(f"record {seq} not acknowledged in time")
                    break
                exc = entry.future.exception()
                if exc is not None:
                    raise PublishFailed(f"record {seq}: {exc}") from exc
                ack = entry.future.result()
                if getattr(ack, "duplicate", False):
                    self.metrics.inc("transport.nats.duplicates_dropped_by_stream")
                inflight.popitem(last=False)
                self._acked = seq
                self.metrics.inc("transport.nats.published_records")
                self.metrics.inc("transport.nats.published_samples", entry.samples)
                backoff.reset()
            now = time.monotonic()
            if self._acked > persisted and (not inflight or now - last_persist >= ACK_PERSIST_S):
                await asyncio.to_thread(self.spool.ack, self._acked)
                persisted = self._acked
                last_persist = now
                self.metrics.set("transport.nats.acked_seq", float(persisted))
