"""Orders hub → edge and results back over a real nats-server, with a fake executor that
persists command ids like the edge's LocalExecutor: every order answered, none executed
twice — re-sent, redelivered to a restarted receiver, looked up by a restarted hub."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import nats
import pytest

from isthmus.model.clock import SystemClock
from isthmus.model.config import TransportConfig
from isthmus.observe.metrics import Metrics
from isthmus.transport.nats.commands import (
    ORDER_STREAM,
    CommandReceiver,
    CommandSender,
    order_subject,
)
from tests.integration.nats.nats_server import NatsServer
from tests.support import running_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

_sites = itertools.count()


def site_name() -> str:
    return f"cmdsite{next(_sites)}"


def transport(server: NatsServer, ack_wait: float = 1.0) -> TransportConfig:
    return TransportConfig.model_validate(
        {"servers": [server.url], "ack_wait": ack_wait, "ack_timeout": 2.0}
    )


class FakeExecutor:
    """Persists each id's result before answering (in memory): a second call for an id
    returns the first result and writes nothing.  ``stall`` blocks after the write, as an
    edge killed between the write and the result's publish."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.writes: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.stall: set[str] = set()
        self.fail_once: set[str] = set()

    async def handle(self, order: dict[str, Any]) -> Mapping[str, Any]:
        cid = order["id"]
        self.calls[cid] += 1
        if cid in self.fail_once:
            self.fail_once.discard(cid)
            raise RuntimeError("store away")
        if cid in self.results:
            return self.results[cid]
        if time.time_ns() >= order["expires_at_ns"]:
            self.results[cid] = {"state": "expired", "detail": "expired before it arrived"}
            return self.results[cid]
        self.writes[cid] += 1
        self.results[cid] = {
            "state": "verified",
            "read_back": order["value"],
            "written_at_ns": time.time_ns(),
        }
        if cid in self.stall:
            self.stall.discard(cid)
            await asyncio.Event().wait()  # until the receiver is cancelled
        return self.results[cid]


def order(cid: str, value: float = 1.0, ttl: float = 20.0) -> dict[str, Any]:
    return {
        "id": cid,
        "tag": "acme/x/a/l/c/e/sp",
        "value": value,
        "requested_by": "alice",
        "approved_by": None,
        "expires_at_ns": time.time_ns() + int(ttl * 1e9),
    }


def deadline(seconds: float) -> int:
    return time.time_ns() + int(seconds * 1e9)


@contextlib.asynccontextmanager
async def sender(cfg: TransportConfig) -> AsyncIterator[CommandSender]:
    s = CommandSender(cfg, Metrics(), SystemClock(), name="t", lookup_interval=0.3)
    async with running_task(s.run, lambda: s.connected, 10.0, "command sender"):
        yield s


@contextlib.asynccontextmanager
async def receiver(
    cfg: TransportConfig, site: str, ex: FakeExecutor, metrics: Metrics | None = None
) -> AsyncIterator[CommandReceiver]:
    r = CommandReceiver(cfg, site, ex.handle, metrics or Metrics(), SystemClock())
    async with running_task(r.run, lambda: r.connected, 10.0, "command receiver"):
        yield r


async def test_orders_answered_once_in_order(nats_server: NatsServer) -> None:
    cfg, site, ex = transport(nats_server), site_name(), FakeExecutor()
    async with sender(cfg) as hub, receiver(cfg, site, ex):
        results = await asyncio.gather(
            *(hub.send(site, order(f"c{i}", float(i)), deadline(15)) for i in range(50))
        )
        again = await hub.send(site, order("c7", 7.0), deadline(5))  # a retried request
    assert [r["state"] if r else None for r in results] == ["verified"] * 50
    assert [r["read_back"] for r in results if r] == [float(i) for i in range(50)]
    assert again is not None and again == results[7]
    assert max(ex.writes.values()) == 1 and len(ex.writes) == 50
    assert hub.metrics.counters["commands.duplicates_dropped_by_stream"] == 1


async def test_redelivered_order_returns_the_stored_result(nats_server: NatsServer) -> None:
    cfg, site, ex = transport(nats_server, ack_wait=1.0), site_name(), FakeExecutor()
    ex.stall.add("k1")
    async with sender(cfg) as hub:
        waiting = asyncio.create_task(hub.send(site, order("k1", 5.0), deadline(20)))
        async with receiver(cfg, site, ex):
            for _ in range(100):
                if ex.writes["k1"]:
                    break
                await asyncio.sleep(0.05)
        # The receiver died after the write, before publishing the result: the order
        # comes again (ack_wait) to the next one, which must not write again.
        assert not waiting.done()
        async with receiver(cfg, site, ex):
            result = await asyncio.wait_for(waiting, 15)
    assert result is not None and result["state"] == "verified"
    assert ex.writes["k1"] == 1 and ex.calls["k1"] == 2


async def test_failing_handler_is_retried_and_restarted_hub_looks_results_up(
    nats_server: NatsServer,
) -> None:
    cfg, site, ex = transport(nats_server), site_name(), FakeExecutor()
    ex.fail_once.add("f1")
    metrics = Metrics()
    async with receiver(cfg, site, ex, metrics):
        async with sender(cfg) as hub:
            first = await hub.send(site, order("f1", 3.0), deadline(15))
        assert first is not None and first["state"] == "verified"
        assert metrics.counters["commands.handler_errors"] == 1
        async with sender(cfg) as hub2:  # another hub process (or this one restarted)
            assert await hub2.lookup(site, "f1") == first
            assert await hub2.lookup(site, "never-sent") is None
            assert await hub2.send(site, order("f1", 3.0), deadline(5)) == first
    assert ex.writes["f1"] == 1


async def test_no_edge_means_no_result_and_a_late_edge_refuses_expired_orders(
    nats_server: NatsServer,
) -> None:
    cfg, site, ex = transport(nats_server), site_name(), FakeExecutor()
    async with sender(cfg) as hub:
        t0 = time.monotonic()
        got = await hub.send(site, order("e1", 1.0, ttl=1.0), deadline(1.0))
        assert got is None and time.monotonic() - t0 < 3.0  # the hub reports uncertain
        pending = asyncio.create_task(hub.send(site, order("e2", 2.0, ttl=30), deadline(30)))
        await asyncio.sleep(0.2)
        async with receiver(cfg, site, ex):  # the edge comes back after e1 expired
            late = await asyncio.wait_for(pending, 15)
            for _ in range(100):
                if "e1" in ex.results:
                    break
                await asyncio.sleep(0.05)
        e1 = await hub.lookup(site, "e1")
    assert e1 is not None and e1["state"] == "expired"
    assert late is not None and late["state"] == "verified"
    assert ex.writes == Counter({"e2": 1})


async def test_malformed_and_misrouted_orders_are_refused(nats_server: NatsServer) -> None:
    cfg, site, ex = transport(nats_server), site_name(), FakeExecutor()
    metrics = Metrics()
    async with sender(cfg) as hub, receiver(cfg, site, ex, metrics):
        nc = await nats.connect(servers=[nats_server.url])
        try:
            js = nc.jetstream()
            bad = {"v": 1, "id": "m1", "tag": "x"}  # no value, no site...
            await js.publish(order_subject(site), json.dumps(bad).encode())
            await js.publish(order_subject(site), b"\x00garbage")
            future = {**order("m2"), "v": 99, "site": site}
            await js.publish(order_subject(site), json.dumps(future).encode())
            wrong = {**order("m3"), "v": 1, "site": "elsewhere"}
            await js.publish(order_subject(site), json.dumps(wrong).encode())
            ok = await hub.send(site, order("m4"), deadline(10))  # behind them, in order
            assert ok is not None and ok["state"] == "verified"
            states = {cid: await hub.lookup(site, cid) for cid in ("m1", "m2", "m3")}
            info = await js.stream_info(ORDER_STREAM)
        finally:
            await nc.close()
    assert {k: v["state"] if v else None for k, v in states.items()} == {
        "m1": "refused",
        "m2": "refused",
        "m3": "refused",
    }
    assert states["m2"] is not None and "version" in states["m2"]["detail"]
    assert metrics.counters["commands.quarantined_orders"] == 3
    assert ex.writes == Counter({"m4": 1})
    assert info.state.messages >= 5  # kept for forensics (terminated, not deleted)


async def test_commands_survive_a_nats_restart(nats_server: NatsServer) -> None:
    cfg, site, ex = transport(nats_server), site_name(), FakeExecutor()
    async with sender(cfg) as hub, receiver(cfg, site, ex):
        assert (await hub.send(site, order("r0"), deadline(10))) is not None
        nats_server.stop()
        sends = [
            asyncio.create_task(hub.send(site, order(f"r{i}", float(i)), deadline(30)))
            for i in range(1, 11)
        ]
        await asyncio.sleep(1.5)
        nats_server.start()
        results = await asyncio.wait_for(asyncio.gather(*sends), 40)
    assert [r["state"] if r else None for r in results] == ["verified"] * 10
    assert max(ex.writes.values()) == 1 and len(ex.writes) == 11
