"""The fast publish decoder against a real asyncua server: the same rows with it on and off.

Two sources subscribe to the same nodes of one server on 127.0.0.1, one with
``fast_decode`` (the default) and one without.  Rounds of writes with explicit source
timestamps (numbers of every numeric type, a Bad status, a string and an array in
some rounds so that those responses fall back to asyncua) must give both sources the
same rows; then the server restarts and the same holds after the reconnect.  The
server's subscriptions must not keep unacknowledged notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asyncua import Server, ua

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.connectors.opcua.fastsubscription import supported
from isthmus.connectors.opcua.source import OpcUaSource
from isthmus.model.batch import Batch
from tests.support import Collector, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40), pytest.mark.asyncio]

LOGGER = "isthmus.test.opcua.fast"
V = ua.VariantType
NUMERIC = {  # node name → (variant type, value of round r)
    "Dbl": (V.Double, lambda r: 1.25 + r),
    "Flt": (V.Float, lambda r: 0.5 * r - 3.0),
    "I16": (V.Int16, lambda r: -300 + r),
    "U64": (V.UInt64, lambda r: 2**63 + 2**11 * r),
    "Bool": (V.Boolean, lambda r: r % 2 == 1),
    "SB": (V.SByte, lambda r: -r),
    "I32": (V.Int32, lambda r: 100_000 + r),
}
BASE = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def stamp(r: int, k: int) -> datetime:
    return BASE + timedelta(seconds=r, microseconds=17 * k + 3)


async def start_server(port: int) -> tuple[Server, dict[str, Any], int]:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/fast/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:isthmus:test:fast")
    obj = await server.nodes.objects.add_object(ua.NodeId("Plant", ns), "Plant")
    nodes: dict[str, Any] = {}
    for name, (vtype, value) in NUMERIC.items():
        nodes[name] = await obj.add_variable(ua.NodeId(name, ns), name, value(0), varianttype=vtype)
    nodes["Text"] = await obj.add_variable(ua.NodeId("Text", ns), "Text", "start")
    nodes["Arr"] = await obj.add_variable(
        ua.NodeId("Arr", ns), "Arr", [0.0, 1.0, 2.0], varianttype=V.Double
    )
    await server.start()
    return server, nodes, ns


def make_source(name: str, endpoint: str, ns: int, fast: bool, collector: Collector) -> OpcUaSource:
    tags: list[dict[str, Any]] = [
        {"path": f"a/l/c/e/{n}", "node": f"ns={ns};s={n}"} for n in NUMERIC
    ]
    tags.append({"path": "a/l/c/e/Text", "node": f"ns={ns};s=Text", "data_type": "string"})
    tags.append({"path": "a/l/c/e/Arr", "node": f"ns={ns};s=Arr", "array_length": 3})
    config = OpcUaSourceConfig.model_validate(
        {
            "name": name,
            "endpoint": endpoint,
            "publishing_interval": 0.05,
            "sampling_interval": 0.02,
            "timeout": 2.0,
            "reconnect_max": 0.5,
            "fast_decode": fast,
            "tags": tags,
        }
    )
    bound: list[BoundTag[OpcUaTagConfig]] = [
        BoundTag(300 + i, t.path, t) for i, t in enumerate(config.tags)
    ]
    return opcua_source(
        config, bound, SourceContext(emit=collector.emit, log=logging.getLogger(LOGGER))
    )


@contextlib.asynccontextmanager
async def running(*sources: OpcUaSource) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(s.run()) for s in sources]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 3.0)


async def write_round(nodes: dict[str, Any], r: int) -> None:
    for k, (name, (vtype, value)) in enumerate(NUMERIC.items()):
        status = ua.StatusCode(
            ua.StatusCodes.BadSensorFailure if name == "SB" and r % 3 == 2 else 0
        )
        await nodes[name].write_value(
            ua.DataValue(
                ua.Variant(value(r), vtype), StatusCode=status, SourceTimestamp=stamp(r, k)
            )
        )
    if r % 2 == 0:  # string and array changes: these responses take asyncua's decoder
        await nodes["Text"].write_value(
            ua.DataValue(ua.Variant(f"round {r}", V.String), SourceTimestamp=stamp(r, 20))
        )
        await nodes["Arr"].write_value(
            ua.DataValue(ua.Variant([r, r + 0.5], V.Double), SourceTimestamp=stamp(r, 21))
        )


def arrived(collector: Collector, r: int) -> bool:
    """Round r's Double (written first... and last-checked) has been received."""
    want = int((stamp(r, 0) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 1000
    ints = NUMERIC["I32"][1](r)
    return any((b.ts == want).any() and (b.value == float(ints)).any() for b in collector.batches)


async def until(predicate: Any, limit: float = 8.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - polls two sources' state and batches
            await asyncio.sleep(0.02)


def written_rows(batches: list[Batch], rounds: range) -> list[tuple[Any, ...]]:
    """Rows stamped with a source timestamp we wrote (not the Bad/recovery rows, whose
    stamps are each source's own clock), in a canonical order."""
    stamps = {
        int((stamp(r, k) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 1000
        for r in rounds
        for k in range(22)
    }
    rows = []
    for b in batches:
        for i in range(len(b)):
            ts = int(b.ts[i])
            if ts in stamps:
                text = None if b.text is None else b.text[i]
                rows.append(
                    (int(b.tag_id[i]), ts, repr(float(b.value[i])), int(b.quality[i]), text)
                )
    return sorted(set(rows))


async def test_fast_and_slow_paths_give_the_same_rows() -> None:
    if not supported():
        pytest.fail("the fast path is not supported by the installed asyncua")
    port = free_port()
    server, nodes, ns = await start_server(port)
    endpoint = f"opc.tcp://127.0.0.1:{port}/fast/"
    fast_rows, slow_rows = Collector(), Collector()
    fast = make_source("uafast", endpoint, ns, True, fast_rows)
    slow = make_source("uaslow", endpoint, ns, False, slow_rows)
    try:
        async with running(fast, slow):
            await until(lambda: fast.connected and slow.connected)
            await asyncio.sleep(0.3)
            for r in range(1, 7):
                await write_round(nodes, r)
                await until(lambda r=r: arrived(fast_rows, r) and arrived(slow_rows, r))
            before = fast.ctx.metrics.counters.get("source.uafast.fast_decoded", 0)
            assert before >= 3  # the numeric-only rounds went through the fast decoder
            for sub in server.iserver.subscription_service.subscriptions.values():
                assert len(sub._not_acknowledged_results) <= 2  # acknowledged as before

            await server.stop()
            await until(lambda: not fast.connected and not slow.connected)
            await server.start()
            await until(lambda: fast.connected and slow.connected, limit=15.0)
            await asyncio.sleep(0.3)
            for r in range(7, 12):
                await write_round(nodes, r)
                await until(lambda r=r: arrived(fast_rows, r) and arrived(slow_rows, r))
            after = fast.ctx.metrics.counters.get("source.uafast.fast_decoded", 0)
            assert after >= before + 2  # still fast after the reconnect
            for sub in server.iserver.subscription_service.subscriptions.values():
                assert len(sub._not_acknowledged_results) <= 2
    finally:
        await server.stop()
    assert "source.uaslow.fast_decoded" not in slow.ctx.metrics.counters
    rounds = range(1, 12)
    got_fast = written_rows(fast_rows.batches, rounds)
    got_slow = written_rows(slow_rows.batches, rounds)
    assert got_fast == got_slow
    # every numeric write of every round is there (7 nodes x 11 rounds), plus text/array
    assert len({(t, ts) for t, ts, *_ in got_fast if t < 307}) == 7 * 11
    assert any(text == "round 10" for *_, text in got_fast)
