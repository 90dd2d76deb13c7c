"""Our Modbus client against a server we did not write: the npm package ``modbus-serial``
(``ServerTCP``), driven by ``tests/interop/node/modbus_server.js``.

Needs ``node`` and ``npm ci --omit=optional`` in ``tests/interop/node`` (CI does it);
skips locally when either is missing, fails under ``CI=true``.
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
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.modbus.errors import WriteFailed
from isthmus.connectors.modbus.source import ModbusSource
from isthmus.model.quality import Quality
from tests.integration.connectors.test_modbus_source import by_tag, running
from tests.support import Collector, free_port, require_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(15)]

NODE_DIR = Path(__file__).parent / "node"
SERVER = NODE_DIR / "modbus_server.js"

TAGS: list[dict[str, Any]] = [
    {"path": "a/l/c/e/f32", "address": 0, "data_type": "float32", "writable": True},
    {"path": "a/l/c/e/i16", "address": 2, "data_type": "int16", "scale": 0.1, "writable": True},
    {"path": "a/l/c/e/bit0", "address": 3, "data_type": "bool", "bit": 0, "writable": True},
    {"path": "a/l/c/e/bit1", "address": 3, "data_type": "bool", "bit": 1},
    {"path": "a/l/c/e/bit2", "address": 3, "data_type": "bool", "bit": 2},
    {"path": "a/l/c/e/u32", "address": 4, "data_type": "uint32", "word_order": "little"},
    {"path": "a/l/c/e/in7", "address": 7, "data_type": "uint16", "kind": "input",
     "poll_group": "fast"},
    {"path": "a/l/c/e/in99", "address": 99, "data_type": "uint16", "kind": "input"},
    {"path": "a/l/c/e/in150", "address": 150, "data_type": "uint16", "kind": "input"},
    {"path": "a/l/c/e/coil1", "address": 1, "data_type": "bool", "kind": "coil",
     "writable": True},
    {"path": "a/l/c/e/di2", "address": 2, "data_type": "bool", "kind": "discrete"},
]  # fmt: skip
EXPECTED = {
    100: 12.5,
    101: -300.0,
    102: 1.0,
    103: 0.0,
    104: 1.0,
    105: 123456.0,
    106: 71.0,
    107: 991.0,
    109: 1.0,
    110: 1.0,
}


def require_node_modules() -> None:
    require_binary("node", "interop: the npm modbus-serial server")
    if (NODE_DIR / "node_modules" / "modbus-serial").is_dir():
        return
    why = f"run `npm ci --omit=optional` in {NODE_DIR}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"modbus-serial is required in CI: {why}")
    pytest.skip(f"modbus-serial not installed: {why}")


@pytest_asyncio.fixture
async def node_server() -> AsyncIterator[int]:
    require_node_modules()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SERVER),
        str(port),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 5)
        assert line.decode().strip() == f"LISTENING {port}", line
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 2)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def make_source(port: int, collector: Collector) -> ModbusSource:
    config = ModbusSourceConfig.model_validate(
        {
            "name": "node",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval": 0.1,
            "poll_groups": {"fast": "50ms"},
            "timeout": 1.0,
            "max_gap": 0,
            "tags": TAGS,
        }
    )
    bound: list[BoundTag[ModbusTagConfig]] = [
        BoundTag(100 + i, t.path, t) for i, t in enumerate(config.tags)
    ]
    ctx = SourceContext(emit=collector.emit, log=logging.getLogger("isthmus.test.node"))
    return ModbusSource(config, bound, ctx)


async def test_reads_identifies_and_writes_a_modbus_serial_server(node_server: int) -> None:
    collector = Collector()
    source = make_source(node_server, collector)
    async with running(source):
        batch = await collector.wait_for(lambda b: len(b) > 1)
        got = by_tag(batch)
        assert {t: got[t][0] for t in EXPECTED if t in got} == {
            t: v for t, v in EXPECTED.items() if t in got
        }
        # Exception 2 for input 150 (its own block): only that tag is Bad.
        assert got[108][1] == Quality.BAD_CONFIGURATION_ERROR and np.isnan(got[108][0])
        assert all(q == Quality.GOOD for t, (_, q) in got.items() if t != 108)
        fast = await collector.wait_for(lambda b: len(b) == 1)
        assert by_tag(fast) == {106: (71.0, Quality.GOOD)}
        assert source.device_info == {
            "VendorName": "modbus-serial",
            "ProductCode": "MS-TCP",
            "MajorMinorRevision": "8.0",
            "ProductName": "ServerTCP",
            "ModelName": "interop-1",
        }
        await source.write("a/l/c/e/f32", -4.75)  # FC 16
        await source.write("a/l/c/e/i16", 123.4)  # FC 6, raw 1234
        await source.write("a/l/c/e/coil1", False)  # FC 5
        batch = await collector.wait_for(lambda b: len(b) > 1 and by_tag(b)[109][0] == 0.0)
        got = by_tag(batch)
        assert got[100][0] == -4.75 and got[101][0] == 1234.0
        # modbus-serial has no function 22: a bit write fails, nothing else written.
        with pytest.raises(WriteFailed, match="illegal function") as info:
            await source.write("a/l/c/e/bit0", False)
        assert info.value.code == 1
