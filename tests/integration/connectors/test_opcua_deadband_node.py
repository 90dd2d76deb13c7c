"""Server-side deadband against node-opcua, a server that implements both absolute and
percent DataChangeFilters and refuses the ones that do not apply.

The node-opcua server (script below, run with ``node``) changes four Double variables
every 50 ms along the same sequence: ten steps of +0.1, then a jump of about 9 (the
level alternates between 0 and 10).  Our source reads one of them without deadband,
one in a group with an absolute deadband of 2, one (an AnalogItem with EURange 0..100)
in a group with a percent deadband of 2 %: the filtered tags must receive the jumps
only.  A Boolean in the absolute group is refused by the server (BadFilterNotAllowed),
a Double without EURange in the percent group by our EURange check: those two tags
only are Bad_ConfigurationError, with the reason in one warning.

Needs ``node`` and node-opcua installed in ``tests/interop/node_opcua`` (``npm ci
--omit=optional``); skips locally when missing, fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.model.quality import Quality
from tests.interop.test_opcua_node import ready_line
from tests.support import Collector, free_port, require_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(40),
    pytest.mark.asyncio(loop_scope="module"),
]

NODE_MODULES = Path(__file__).resolve().parents[2] / "interop" / "node_opcua" / "node_modules"
LOGGER = "isthmus.test.opcua.deadband"

SERVER_JS = r"""
"use strict";
const { OPCUAServer, OPCUACertificateManager, MessageSecurityMode, SecurityPolicy,
        DataType, Variant } = require("node-opcua");

async function main() {
    const [port, pkiDir] = process.argv.slice(2);
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: pkiDir, automaticallyAcceptUnknownCertificate: true,
        disableFileWatchers: true,
    });
    await serverCertificateManager.initialize();
    const server = new OPCUAServer({
        port: Number(port), hostname: "127.0.0.1", serverCertificateManager,
        securityModes: [MessageSecurityMode.None], securityPolicies: [SecurityPolicy.None],
        allowAnonymous: true,
    });
    await server.initialize();
    const space = server.engine.addressSpace;
    const ns = space.getOwnNamespace();
    const plant = ns.addFolder(space.rootFolder.objects, { browseName: "Plant" });
    const double = (name) => ns.addVariable({
        organizedBy: plant, browseName: name, nodeId: "s=Plant." + name,
        dataType: "Double", value: { dataType: DataType.Double, value: 0 },
    });
    const vars = [double("Raw"), double("Noisy"), double("NoRange")];
    vars.push(ns.addAnalogDataItem({
        organizedBy: plant, browseName: "Level", nodeId: "s=Plant.Level",
        dataType: "Double", engineeringUnitsRange: { low: 0, high: 100 },
        value: { dataType: DataType.Double, value: 0 },
    }));
    const flag = ns.addVariable({
        organizedBy: plant, browseName: "Flag", nodeId: "s=Plant.Flag",
        dataType: "Boolean", value: { dataType: DataType.Boolean, value: false },
    });
    let k = 0;
    setInterval(() => {
        k += 1;
        const value = 10 * (Math.floor(k / 10) % 2) + 0.1 * (k % 10);
        for (const v of vars) {
            v.setValueFromSource(new Variant({ dataType: DataType.Double, value }));
        }
        flag.setValueFromSource(new Variant({ dataType: DataType.Boolean, value: k % 2 === 0 }));
    }, 50);
    await server.start();
    console.log("LISTENING " + port);
}
main().catch((err) => { console.error(err); process.exit(1); });
"""


def require_node_opcua() -> None:
    require_binary("node", "a node-opcua server that implements deadband filters")
    if (NODE_MODULES / "node-opcua").is_dir():
        return
    why = f"run `npm ci --omit=optional` in {NODE_MODULES.parent}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"node-opcua is required in CI: {why}")
    pytest.skip(f"node-opcua not installed: {why}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def node_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    require_node_opcua()
    work = tmp_path_factory.mktemp("node_opcua_deadband")
    script = work / "deadband_server.js"
    script.write_text(SERVER_JS)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        str(port),
        str(work / "pki"),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
    )
    try:
        # node-opcua writes its own warnings to stdout first (e.g. W27 on node 20)
        line = await asyncio.wait_for(ready_line(proc), 30)
        assert line[:2] == ["LISTENING", str(port)], line
        yield f"opc.tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)


TAGS: list[dict[str, Any]] = [
    {"path": "a/l/c/e/raw", "node": "ns=1;s=Plant.Raw"},
    {"path": "a/l/c/e/noisy", "node": "ns=1;s=Plant.Noisy", "group": "abs"},
    {"path": "a/l/c/e/flag", "node": "ns=1;s=Plant.Flag", "group": "abs"},
    {"path": "a/l/c/e/level", "node": "ns=1;s=Plant.Level", "group": "pct"},
    {"path": "a/l/c/e/norange", "node": "ns=1;s=Plant.NoRange", "group": "pct"},
]
RAW, NOISY, FLAG, LEVEL, NORANGE = range(100, 105)


async def test_node_opcua_applies_and_refuses_deadbands(
    node_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    config = OpcUaSourceConfig.model_validate(
        {
            "name": "ua",
            "endpoint": node_server,
            "publishing_interval": 0.1,
            "sampling_interval": 0.02,
            "queue_size": 100,
            "timeout": 4.0,
            "reconnect_max": 0.5,
            "groups": [
                {"name": "abs", "deadband": {"type": "absolute", "value": 2.0}},
                {"name": "pct", "deadband": {"type": "percent", "value": 2.0}},
            ],
            "tags": TAGS,
        }
    )
    bound: list[BoundTag[OpcUaTagConfig]] = [
        BoundTag(100 + i, f"x/y/{t.path}", t) for i, t in enumerate(config.tags)
    ]
    collector = Collector()
    source = opcua_source(
        config, bound, SourceContext(emit=collector.emit, log=logging.getLogger(LOGGER))
    )
    task = asyncio.create_task(source.run())
    try:
        for _ in range(200):
            if source.connected:
                break
            await asyncio.sleep(0.05)
        assert source.connected
        await asyncio.sleep(3.0)  # six up-and-down cycles of the sequence
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 3.0)

    batch = collector.all()

    def good(tag: int) -> Any:
        return batch.value[(batch.tag_id == tag) & (batch.quality == Quality.GOOD)]

    raw, noisy, level = good(RAW), good(NOISY), good(LEVEL)
    print(
        f"good samples in 3 s: raw {len(raw)}, absolute 2.0 {len(noisy)}, percent 2 % {len(level)}"
    )
    assert len(raw) >= 40  # every change (60 in 3 s), nothing filtered
    for filtered in (noisy, level):
        jumps = filtered[1:]  # after the initial value: only the jumps pass
        assert 3 <= len(jumps) <= 8, filtered
        # each one the level's first sampled value after a jump: usually level + 0, but
        # a late server sample (a loaded machine) may catch level + 0.1 .. 0.9
        levels = np.where(jumps >= 5.0, 10.0, 0.0)
        offsets = jumps - levels
        assert np.all((offsets > -1e-9) & (offsets < 0.9 + 1e-9)), filtered
        assert np.all(np.diff(levels) != 0), filtered  # never twice the same level
        assert len(filtered) * 5 < len(raw)
    # refused items: those tags only, once, with the reason
    for tag in (FLAG, NORANGE):
        assert list(batch.quality[batch.tag_id == tag]) == [Quality.BAD_CONFIGURATION_ERROR]
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    (warning,) = [m for m in messages if "cannot be subscribed" in m]
    assert "Plant.Flag: BadFilterNotAllowed" in warning
    assert "the server does not allow a deadband" in warning
    assert "Plant.NoRange" in warning and "EURange" in warning
    assert "Plant.Level" not in warning and "Plant.Noisy" not in warning
