"""Our Sparkplug host and edge against an implementation we did not write: Eclipse Tahu
JS (npm ``sparkplug-client`` as an edge node, ``sparkplug-payload`` as a decoder), driven
by ``sparkplug_peer.js`` in this folder, over a private Mosquitto.

Needs ``node`` and ``npm ci --omit=optional`` in ``tests/interop/node_sparkplug`` (CI
does it); skips locally when either is missing, fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.sparkplug.config import (
    SparkplugEdgeConfig,
    SparkplugSourceConfig,
    SparkplugTagConfig,
)
from isthmus.connectors.sparkplug.edge import SparkplugEdge
from isthmus.connectors.sparkplug.host import SparkplugHost
from isthmus.model.batch import Batch
from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.config import TagConfig
from isthmus.model.quality import Quality
from isthmus.transport.local import LocalTransport
from tests.integration.mqtt.conftest import Broker, broker
from tests.integration.mqtt.helpers import wait_for
from tests.support import Collector, require_binary, running_task

__all__ = ["broker"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(15)]

NODE_DIR = Path(__file__).parent
PEER = NODE_DIR / "sparkplug_peer.js"


def require_node_modules() -> None:
    require_binary("node", "the Sparkplug interop test runs Eclipse Tahu JS")
    why = "run `npm ci --omit=optional` in tests/interop/node_sparkplug"
    if (NODE_DIR / "node_modules" / "sparkplug-client").is_dir():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"sparkplug-client is required in CI: {why}")
    pytest.skip(f"sparkplug-client not installed: {why}")


@contextlib.asynccontextmanager
async def peer(mode: str, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    require_node_modules()
    proc = await asyncio.create_subprocess_exec(
        "node", str(PEER), mode, str(port), cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def read_json_until(
    proc: asyncio.subprocess.Process, done: Any, within: float = 8.0
) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while True:
            line = await proc.stdout.readline()
            assert line, "peer exited"
            seen.append(json.loads(line))
            if done(seen[-1]):
                return seen


def last(collector: Collector, tag_id: int) -> tuple[float, int] | None:
    for b in reversed(collector.batches):
        hits = np.flatnonzero(b.tag_id == tag_id)
        if len(hits):
            k = int(hits[-1])
            return float(b.value[k]), int(b.quality[k])
    return None


def quality(collector: Collector, tag_id: int) -> int | None:
    sample = last(collector, tag_id)
    return None if sample is None else sample[1]


async def test_our_host_consumes_tahu_edge_node(broker: Broker) -> None:
    require_node_modules()
    cfg = SparkplugSourceConfig.model_validate(
        {
            "name": "sp",
            "host": broker.host,
            "port": broker.port,
            "groups": ["tahu"],
            "rebirth_min_interval": 0.5,
            "tags": [
                {"path": "sp/tahu/js1/node/temp"},
                {"path": "sp/tahu/js1/dev1/Motor.Level"},
                {"path": "sp/tahu/js1/node/recipe", "data_type": "string"},
            ],
            "tag_template": "sp/{group}/{node}/{device}/{metric}",
        }
    )
    bound: list[BoundTag[SparkplugTagConfig]] = [
        BoundTag(i, f"e/s/{t.path}", t) for i, t in enumerate(cfg.tags)
    ]
    collector = Collector()
    ctx = SourceContext(emit=collector.emit)
    host = SparkplugHost(cfg, bound, ctx)
    async with peer("edge", broker.port) as proc:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"births"
        await asyncio.sleep(0.3)
        # we connect after its births: its data makes us ask for a rebirth (NCMD), which
        # the Tahu client answers with new births
        async with running_task(host.run, lambda: host.connected):
            async with asyncio.timeout(8):
                lines = []
                while b"births" not in (line := await proc.stdout.readline()):
                    lines.append(line.decode().strip())
            assert "ncmd Node Control/Rebirth=true" in lines
            await wait_for(lambda: (last(collector, 1) or (0.0, 0))[0] < -8.0, 5.0)
            temp, level = last(collector, 0), last(collector, 1)
            assert temp is not None and temp[0] > 20.5 and temp[1] == Quality.GOOD
            assert level is not None and float(level[0]).is_integer()
            # Tahu's String metric arrives as text on the string tag (id 2)
            texts = [
                x
                for b in collector.batches
                for t, x in zip(b.tag_id.tolist(), b.texts(), strict=True)
                if t == 2
            ]
            assert len(texts) >= 2 and all(x and x.endswith(" crème") for x in texts), texts
            assert ctx.metrics.snapshot()["source.sp.rebirth_requests"] >= 1
            # kill -9: the broker sends the Tahu client's will (NDEATH, bdSeq 0)
            proc.send_signal(signal.SIGKILL)
            await wait_for(lambda: quality(collector, 0) == Quality.BAD_NO_COMMUNICATION, 8.0)
            assert quality(collector, 1) == Quality.BAD_NO_COMMUNICATION


async def test_tahu_decodes_our_edge_node(broker: Broker) -> None:
    require_node_modules()
    paths = ["a/l/c/press/temp", "a/l/c/press/on", "a/l/c/press/count", "a/l/c/press/recipe"]
    kinds = ["float64", "bool", "int16", "string"]
    catalog = TagCatalog(
        CatalogEntry(10 + i, f"ent/site/{p}", "sim", TagConfig(path=p, data_type=k))  # type: ignore[arg-type]
        for i, (p, k) in enumerate(zip(paths, kinds, strict=True))
    )
    transport = LocalTransport()
    cfg = SparkplugEdgeConfig(host=broker.host, port=broker.port, group="isthmus", edge_node="e1")
    edge = SparkplugEdge(cfg, catalog, transport)
    async with peer("listen", broker.port) as proc:
        await read_json_until(proc, lambda doc: doc.get("ready"))
        await edge.start()
        try:
            seen = await read_json_until(proc, lambda doc: "DBIRTH" in doc["topic"])
            nbirth, dbirth = seen[0], seen[-1]
            assert nbirth["topic"] == "spBv1.0/isthmus/NBIRTH/e1" and nbirth["seq"] == 0
            assert {"name": "bdSeq", "type": "Int64"}.items() <= nbirth["metrics"][0].items()
            assert nbirth["metrics"][0]["value"] == edge.bd_seq
            assert dbirth["topic"] == "spBv1.0/isthmus/DBIRTH/e1/a:l:c:press"
            assert sorted((m["alias"], m["name"], m["type"]) for m in dbirth["metrics"]) == [
                (10, "temp", "Double"), (11, "on", "Boolean"), (12, "count", "Int16"),
                (13, "recipe", "String"),
            ]  # fmt: skip
            assert all(m["isNull"] or m["value"] is None for m in dbirth["metrics"])
            await transport.publish(
                Batch.of(
                    [10, 11, 12, 13],
                    time.time_ns(),
                    [21.5, 1.0, -3.0, np.nan],
                    Quality.GOOD,
                    text=[None, None, None, "R-7 ünï"],
                )
            )
            (ddata,) = (await read_json_until(proc, lambda doc: "DDATA" in doc["topic"]))[-1:]
            assert ddata["seq"] == dbirth["seq"] + 1
            assert sorted((m["alias"], m["value"]) for m in ddata["metrics"]) == [
                (10, 21.5), (11, True), (12, -3), (13, "R-7 ünï"),
            ]  # fmt: skip
            assert all(m.get("name") in (None, "") for m in ddata["metrics"])
        finally:
            await edge.stop()
        seen = await read_json_until(proc, lambda doc: "NDEATH" in doc["topic"])
        assert seen[-1]["metrics"][0]["value"] == edge.bd_seq
