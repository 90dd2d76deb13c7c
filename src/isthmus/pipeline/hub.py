"""The hub consumer: JetStream → historian, acknowledged only after the commit.

Every hub process binds to the same durable pull consumer (``hub_consumer``) on each
site stream ``ISTHMUS_<SITE>``: JetStream hands each message to one of them (queue-group
semantics), and redelivers it if it is not acknowledged within ``ack_wait`` (a hub
killed mid-batch).  A fetched batch of messages is decoded, its tags mapped to the
store's ids (registered on first sight), written with its ``hub_ledger`` rows (see
:mod:`~isthmus.transport.nats.ledger`) in one PostgreSQL transaction, and only then
acknowledged.
A store that fails is retried with backoff while the messages are kept in progress;
nothing is acknowledged before it is committed.  Undecodable messages are counted,
copied to ``hub_quarantine``, acknowledged and reported once per burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from isthmus.historian.base import Store, TagMeta
from isthmus.historian.postgres.store import PostgresStore
from isthmus.model.batch import Batch
from isthmus.model.clock import Clock
from isthmus.model.config import TransportConfig
from isthmus.net.backoff import Backoff
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import BurstLog, Metrics
from isthmus.transport.nats import wire
from isthmus.transport.nats.connect import (
    NATS_ERRORS,
    NatsUnavailable,
    connect,
    stream_for,
)
from isthmus.transport.nats.ledger import Committed, HubLedger, Quarantined

log = logging.getLogger("isthmus.pipeline.hub")

_T = TypeVar("_T")
DISCOVER_S = 2.0


class HubConsumer:
    def __init__(
        self,
        cfg: TransportConfig,
        store: Store,
        ledger: HubLedger,
        metrics: Metrics,
        clock: Clock,
        name: str = "hub",
        events: EventLog | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self.name = name
        self._nc: Client | None = None
        self._ids: dict[str, int] = {}
        self._burst = BurstLog(log, events=events, source="hub", prefix="hub")

    @property
    def connected(self) -> bool:
        """Connected to NATS now (False while the client reconnects)."""
        return self._nc is not None and self._nc.is_connected

    # -- sessions ---------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            nc = None
            tasks: dict[str, asyncio.Task[None]] = {}
            try:
                nc = await connect(self.cfg, f"isthmus-hub-{self.name}", self._burst)
                js = nc.jetstream()
                self._nc = nc
                while True:
                    try:
                        streams = await self._streams(js)
                    except NATS_ERRORS as exc:  # e.g. a cluster electing a leader
                        if not tasks:
                            raise
                        self._burst.warning("discover", "hub: stream discovery failed: %s", exc)
                        streams = []
                    for stream in streams:
                        if stream not in tasks:
                            tasks[stream] = asyncio.create_task(
                                self._consume(js, stream, backoff), name=f"hub-{stream}"
                            )
                    if tasks:
                        await asyncio.wait(
                            tasks.values(), timeout=DISCOVER_S, return_when="FIRST_EXCEPTION"
                        )
                    else:
                        await asyncio.sleep(DISCOVER_S)
                    failed = False
                    for stream, task in list(tasks.items()):
                        if task.done():
                            # One stream's trouble (not there yet, consumer refused) must not
                            # stop the others: restart its consumer after a pause.
                            del tasks[stream]
                            failed = True
                            why = None if task.cancelled() else task.exception()
                            self.metrics.inc("hub.consumer_restarts")
                            self._burst.warning(
                                f"consume-{stream}", "hub: consuming %s stopped: %r", stream, why
                            )
                    if failed:
                        await asyncio.sleep(backoff.next_delay())
            except (*NATS_ERRORS, NatsUnavailable) as exc:  # type: ignore[misc]
                self.metrics.inc("hub.session_failures")
                self._burst.warning("session", "hub NATS session ended, retrying: %s", exc)
            finally:
                self._nc = None
                for task in tasks.values():
                    task.cancel()
                for task in tasks.values():
                    with contextlib.suppress(BaseException):
                        await task
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(nc.close(), 2.0)
            await asyncio.sleep(backoff.next_delay())

    async def _streams(self, js: JetStreamContext) -> list[str]:
        if self.cfg.sites:
            return [stream_for(site) for site in self.cfg.sites]
        infos = await js.streams_info()
        return sorted(
            i.config.name for i in infos if i.config.name and i.config.name.startswith("ISTHMUS_")
        )

    async def _consume(self, js: JetStreamContext, stream: str, backoff: Backoff) -> None:
        durable = self.cfg.hub_consumer
        with contextlib.suppress(*NATS_ERRORS):
            await js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self.cfg.ack_wait,
                    max_ack_pending=max(256, 8 * self.cfg.fetch_batch),
                    max_waiting=512,
                ),
            )
        psub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        while True:
            # What is there now (no_wait), else wait for one message only: a batch
            # fetch would linger for the rest until its timeout, adding latency.
            try:
                msgs = await psub.fetch(self.cfg.fetch_batch, timeout=0.05)
            except TimeoutError:
                try:
                    msgs = await psub.fetch(1, timeout=1.0)
                except TimeoutError:
                    continue
            backoff.reset()
            await self._handle(stream, msgs)

    # -- one fetched batch -------------------------------------------------------------------

    async def _handle(self, stream: str, msgs: list[Msg]) -> None:
        good: list[tuple[Msg, wire.Message]] = []
        bad: list[tuple[Msg, Quarantined]] = []
        for msg in msgs:
            try:
                good.append((msg, wire.decode(msg.data)))
            except wire.WireError as exc:
                seq = msg.metadata.sequence.stream if msg.reply else None
                bad.append((msg, Quarantined(stream, seq, msg.subject, str(exc), msg.data)))
        if bad:
            kinds = (
                "unknown-version"
                if all(wire.peek_version(q.payload) not in (None, wire.VERSION) for _, q in bad)
                else "malformed"
            )
            self.metrics.inc("hub.quarantined_messages", len(bad))
            self._burst.warning(
                "quarantine",
                "hub quarantined %d %s message(s) from %s (first: %s); the rest continues",
                len(bad),
                kinds,
                stream,
                bad[0][1].reason,
            )
            items = [q for _, q in bad]
            await self._retry("quarantine", [m for m, _ in bad], self.ledger.quarantine, items)
            for msg, _ in bad:
                await msg.ack()
        if not good:
            return
        batch = await self._to_store(good)
        rows = [
            Committed(
                m.site,
                m.seq,
                len(m.batch),
                m.batch.historical,
                int(m.batch.ts.min()) if len(m.batch) else None,
                int(m.batch.ts.max()) if len(m.batch) else None,
            )
            for _, m in good
        ]
        written = await self._retry("write", [m for m, _ in good], self._commit, batch, rows)
        for msg, _ in good:
            await msg.ack()
        self.metrics.inc("hub.messages", len(good))
        self.metrics.inc("hub.samples", len(batch))
        self.metrics.inc("hub.samples_written", written)
        self.metrics.inc("historian.samples_written", written)  # what /health shows
        self.metrics.inc("hub.duplicates_skipped", len(batch) - written)
        redelivered = sum(1 for m, _ in good if m.reply and m.metadata.num_delivered > 1)
        if redelivered:
            self.metrics.inc("hub.redelivered_messages", redelivered)

    def _commit(self, batch: Batch, rows: list[Committed]) -> int:
        """Samples and ledger rows: one transaction with a PostgreSQL historian (a crash
        can never leave one without the other), two otherwise."""
        if isinstance(self.store, PostgresStore):
            return self.store.write(batch, lambda cur: self.ledger.record_in(cur, rows))
        written = self.store.write(batch)
        self.ledger.record(rows)
        return written

    async def _to_store(self, good: list[tuple[Msg, wire.Message]]) -> Batch:
        unknown = {t.path: t for _, m in good for t in m.tags if t.path not in self._ids}
        if unknown:
            metas = [TagMeta(t.path, t.data_type, t.unit) for t in unknown.values()]
            ids = await self._retry(
                "register", [m for m, _ in good], self.store.register_tags, metas
            )
            self._ids.update(ids)
        parts = []
        for _, m in good:
            table = np.array([self._ids[t.path] for t in m.tags], dtype=np.int32)
            b = m.batch
            ids_col = table[b.tag_id] if len(b) else b.tag_id
            parts.append(Batch(ids_col, b.ts, b.value, b.quality, b.historical, b.text))
        return Batch.concat(parts)

    async def _retry(self, what: str, msgs: list[Msg], fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn`` in a worker thread until it succeeds; the messages are kept in
        progress meanwhile (so JetStream does not hand them to another hub)."""
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            try:
                return await asyncio.to_thread(fn, *args)
            except Exception as exc:  # the store's and psycopg's errors, whatever backend
                self.metrics.inc(f"hub.{what}_errors")
                self._burst.warning(what, "hub %s failed, retrying: %s", what, exc)
                await asyncio.sleep(backoff.next_delay())
                for msg in msgs:
                    with contextlib.suppress(*NATS_ERRORS):
                        await msg.in_progress()
