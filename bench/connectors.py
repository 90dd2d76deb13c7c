"""Connector benchmark: values/s and CPU per value of our Modbus and OPC UA connectors
end to end into the historian, against the raw library loop and Node-RED, in one run.

Run: ``.venv/bin/python bench/connectors.py [--seconds 8] [--quick] [--only modbus opcua]
[--no-node-red]``.  Writes ``bench/results/connectors.json`` and prints a table.

Servers are the fast fixtures of ``bench/fixtures/`` in their own processes (their CPU
is reported apart, to show they are not the limit):

* Modbus TCP: ``fixtures/modbus_server.py`` (precomputed FC 3 frames, uvloop);
  ``--modbus-tags`` int16 tags from register 0, so one tag value = one register.
* OPC UA: ``fixtures/opcua_server.py`` (asyncua server whose subscription services
  send hand-encoded publish responses): ``--opcua-items`` items, each changing every
  100 ms publishing interval (10,000 items = 100,000 changes/s offered: the target,
  more than any client here sustains), then ``--opcua-steady-items`` (2,000 = 20,000
  changes/s, a load every client keeps up with, to compare CPU per value).

Modes, measured one after the other against the same server:

* ``raw`` — the library alone: pymodbus ``read_holding_registers`` of 125 registers in
  a closed loop (values = registers, nothing decoded); an asyncua subscription whose
  handler counts ``datachange_notification`` calls.
* ``connector`` — our source (``ModbusSource`` with ``poll_interval: 0`` /
  ``OpcUaSource``) emitting into a counting consumer.
* ``pipeline`` — our source → ``Ingest`` (qualify) → local transport →
  ``HistorianWriter`` → ``DuckDBStore`` (in memory): the app's real chain
  (``bench/ingest.py``'s ``HistorianChain``); the rows found in the store are reported.
* ``node_red`` — a headless Node-RED 4.1 (``bench/node_red``) with
  node-red-contrib-modbus 5.23.3 (flex-getter in a closed loop, one request in flight)
  or node-red-contrib-opcua (OpcUa-Client ``subscribe`` of the same items), counting
  values in a function node read over HTTP.  Its CPU is the Node-RED process's.
* ``wire`` (Modbus only) — a reference, not a product: a minimal asyncio client written
  here with 8 requests in flight and NumPy decoding, to show what the fixture and
  Python itself allow when a client pipelines.

CPU per value: ``time.process_time()`` of this process (threads included) for the
Python modes, psutil CPU times of the Node-RED process for Node-RED.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result
from bench.ingest import Counter, HistorianChain, Measure, free_port, measure
from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.modbus.source import ModbusSource
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.model.batch import Batch
from isthmus.observe.metrics import Metrics

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
NODE_RED_DIR = HERE / "node_red"
MODES = ("raw", "connector", "pipeline", "node_red", "wire")
TARGETS = {"modbus": 500_000, "opcua": 100_000}  # values/s on one core, into the historian


# -- processes ---------------------------------------------------------------------------


@dataclass
class Proc:
    port: int
    process: asyncio.subprocess.Process
    ps: psutil.Process

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)


@contextlib.asynccontextmanager
async def started(argv: list[str], port: int, ready: bytes, limit: float = 90.0,
                  cwd: Path | None = None) -> AsyncIterator[Proc]:  # fmt: skip
    """Start ``argv``; yield once a line of its stdout contains ``ready``."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    drain: asyncio.Task[None] | None = None
    try:
        assert process.stdout is not None
        seen: list[bytes] = []

        async def until_ready() -> None:
            assert process.stdout is not None
            while line := await process.stdout.readline():
                seen.append(line)
                if ready in line:
                    return
            raise RuntimeError(f"{argv[:2]} exited: {b''.join(seen[-20:]).decode()}")

        await asyncio.wait_for(until_ready(), limit)

        async def drain_output() -> None:
            assert process.stdout is not None
            while await process.stdout.readline():
                pass

        drain = asyncio.create_task(drain_output())
        yield Proc(port, process, psutil.Process(process.pid))
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 5)
        if process.returncode is None:
            process.kill()
            await process.wait()
        if drain is not None:
            drain.cancel()


def fixture(name: str, *args: str) -> tuple[list[str], int]:
    port = free_port()
    return [sys.executable, str(FIXTURES / name), "--port", str(port), *args], port


async def measured(
    name: str,
    seconds: float,
    start: Callable[[], Awaitable[Any]],
    counts: Callable[[], tuple[int, int]],
    server: Proc,
    warmup: float,
) -> dict[str, Any]:
    """bench/ingest.py's ``measure`` plus the server's CPU share over the same window."""
    s0, w0 = server.cpu(), time.perf_counter()
    m = await measure(name, seconds, start, counts, warmup=warmup)
    row = finish(m)
    # the server's share over warm-up + window: enough to tell whether it is saturated
    row["server_cpu_share"] = round((server.cpu() - s0) / (time.perf_counter() - w0), 3)
    return row


def finish(m: Measure) -> dict[str, Any]:
    row = m.row()
    row["values_per_cpu_s"] = round(m.values / m.cpu_s) if m.cpu_s else None
    return row


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:300])


def watched(
    emit: Callable[[Batch], Awaitable[None]], name: str
) -> tuple[SourceContext, Callable[[], dict[str, Any]]]:
    """A source context whose warnings and link metrics end up in the result row: a
    run that lost its connection says so instead of just looking slow."""
    metrics = Metrics()
    log = logging.getLogger(f"bench.connectors.{name}")
    handler = _Warnings()
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False

    def health() -> dict[str, Any]:
        snap = metrics.snapshot()
        return {
            "reconnects": int(snap.get("source.bench.reconnects", 0)),
            "warnings": handler.messages[:3],
        }

    return SourceContext(emit=emit, log=log, metrics=metrics), health


async def measure_ours(
    name: str,
    label: str,
    make_source: Callable[[SourceContext], Any],
    tags: list[tuple[int, str, Any]],
    pipeline: bool,
    args: argparse.Namespace,
    server: Proc,
    warmup: float,
    count_fast_decoded: bool = False,
) -> dict[str, Any]:
    """Our source alone (values counted as emitted) or, with ``pipeline``, feeding the
    whole chain into the historian; ``make_source(ctx)`` builds the source to run."""
    sink: Counter | HistorianChain = HistorianChain(tags) if pipeline else Counter()
    if isinstance(sink, HistorianChain):
        sink.start()
    ctx, health = watched(sink.emit, f"{label}.{name}")
    source = make_source(ctx)
    row = await measured(name, args.seconds, source.run, lambda: (sink.values,) * 2, server, warmup)
    if count_fast_decoded:
        snapshot = ctx.metrics.snapshot()
        row["fast_decoded_responses"] = int(snapshot.get("source.bench.fast_decoded", 0))
    row |= health()
    if isinstance(sink, HistorianChain):
        row["rows_in_historian"] = await sink.stop()
    return row


# -- Node-RED ----------------------------------------------------------------------------

NODE_RED_SETTINGS = """module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %d,
    httpAdminRoot: false,
    credentialSecret: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
    contextStorage: { default: { module: "memory" } },
    nodesExcludes: %s,
};
"""


def excluded_nodes(keep: str) -> list[str]:
    """Node files of the contrib packages other than ``keep``: not loaded (node-opcua
    alone takes seconds to load)."""
    files: list[str] = []
    for package in ("node-red-contrib-modbus", "node-red-contrib-opcua"):
        if package != keep:
            manifest = NODE_RED_DIR / "node_modules" / package / "package.json"
            nodes = json.loads(manifest.read_text())["node-red"]["nodes"].values()
            files += [Path(n).name for n in nodes]
    return files


COUNT_HTTP: list[dict[str, Any]] = [
    {"id": "http_in", "type": "http in", "z": "bench", "url": "/count", "method": "get",
     "wires": [["http_fn"]]},
    {"id": "http_fn", "type": "function", "z": "bench", "outputs": 1,
     "func": "msg.payload = {values: global.get('values') || 0, "
             "messages: global.get('messages') || 0}; return msg;",
     "wires": [["http_out"]]},
    {"id": "http_out", "type": "http response", "z": "bench", "statusCode": "", "wires": []},
]  # fmt: skip


def placed(flows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node-RED tells flow nodes from config nodes by their x/y position."""
    return [n | {"x": 100 + 50 * i, "y": 100} if "z" in n else n for i, n in enumerate(flows)]


def modbus_flows(port: int, in_flight: int) -> list[dict[str, Any]]:
    """Inject → ``in_flight`` requests → flex-getter ⟲ count (each response re-sends)."""
    request = "{fc: 3, unitid: 1, address: (k * 125) % 1875, quantity: 125}"
    return placed([
        {"id": "bench", "type": "tab", "label": "bench"},
        {"id": "client", "type": "modbus-client", "name": "fixture", "clienttype": "tcp",
         "bufferCommands": False, "parallelUnitIdsAllowed": True, "stateLogEnabled": False,
         "queueLogEnabled": False, "failureLogEnabled": False, "tcpHost": "127.0.0.1",
         "tcpPort": str(port), "tcpType": "DEFAULT", "unit_id": 1, "commandDelay": 1,
         "clientTimeout": 2000, "reconnectTimeout": 2000, "reconnectOnTimeout": True},
        {"id": "inject", "type": "inject", "z": "bench", "once": True, "onceDelay": 1,
         "repeat": "", "topic": "", "payload": "", "payloadType": "date",
         "wires": [["start"]]},
        {"id": "start", "type": "function", "z": "bench", "outputs": 1,
         "func": f"const out = []; for (let k = 0; k < {in_flight}; k++) "
                 f"out.push({{payload: {request}, k}}); return [out];",
         "wires": [["getter"]]},
        {"id": "getter", "type": "modbus-flex-getter", "z": "bench", "name": "getter",
         "showStatusActivities": False, "showErrors": False, "logIOActivities": False,
         "server": "client", "useIOFile": False, "ioFile": "", "useIOForPayload": False,
         "emptyMsgOnFail": True, "wires": [["count"], []]},
        {"id": "count", "type": "function", "z": "bench", "outputs": 1,
         "func": "const n = Array.isArray(msg.payload) ? msg.payload.length : 0;"
                 "global.set('values', (global.get('values') || 0) + n);"
                 "global.set('messages', (global.get('messages') || 0) + 1);"
                 "const k = (msg.k || 0) + 1;"
                 f"return {{payload: {request}, k}};",
         "wires": [["getter"]]},
        {"id": "catch", "type": "catch", "z": "bench", "scope": ["getter"],
         "wires": [["retry"]]},
        {"id": "retry", "type": "delay", "z": "bench", "pauseType": "delay", "timeout": "100",
         "timeoutUnits": "milliseconds", "wires": [["start1"]]},
        {"id": "start1", "type": "function", "z": "bench", "outputs": 1,
         "func": f"const k = 0; return {{payload: {request}, k}};", "wires": [["getter"]]},
        *COUNT_HTTP,
    ])  # fmt: skip


def opcua_flows(endpoint: str, node_ids: list[str]) -> list[dict[str, Any]]:
    """Inject → one ``multiple`` subscribe of every item → count each change message."""
    items = json.dumps([{"nodeId": n} for n in node_ids])
    return placed([
        {"id": "bench", "type": "tab", "label": "bench"},
        {"id": "endpoint", "type": "OpcUa-Endpoint", "endpoint": endpoint, "secpol": "None",
         "secmode": "None", "none": True, "login": False, "usercert": False},
        {"id": "inject", "type": "inject", "z": "bench", "once": True, "onceDelay": 2,
         "repeat": "", "topic": "", "payload": "", "payloadType": "date",
         "wires": [["items"]]},
        {"id": "items", "type": "function", "z": "bench", "outputs": 1,
         "func": f"return {{topic: 'multiple', interval: 100, payload: {items}}};",
         "wires": [["client"]]},
        {"id": "client", "type": "OpcUa-Client", "z": "bench", "endpoint": "endpoint",
         "action": "subscribe", "time": 100, "timeUnit": "ms", "deadbandtype": "a",
         "deadbandvalue": 0, "certificate": "n", "securitymode": "None",
         "securitypolicy": "None", "useTransport": False, "setstatusandtime": False,
         "keepsessionalive": False, "name": "client", "wires": [["count"], [], []]},
        {"id": "count", "type": "function", "z": "bench", "outputs": 0,
         "func": "if (typeof msg.topic === 'string' && msg.topic.startsWith('ns=')) {"
                 "global.set('values', (global.get('values') || 0) + 1); }"
                 "global.set('messages', (global.get('messages') || 0) + 1); return null;",
         "wires": []},
        *COUNT_HTTP,
    ])  # fmt: skip


def node_red_installed() -> bool:
    return shutil.which("node") is not None and (NODE_RED_DIR / "node_modules/node-red").is_dir()


async def bench_node_red(
    flows: list[dict[str, Any]], keep: str, seconds: float, warmup: float, server: Proc
) -> dict[str, Any]:
    print("  measuring node_red ...", file=sys.stderr, flush=True)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="isthmus-node-red-") as user_dir:
        user = Path(user_dir)
        (user / "settings.js").write_text(
            NODE_RED_SETTINGS % (port, json.dumps(excluded_nodes(keep)))
        )
        (user / "flows.json").write_text(json.dumps(flows, indent=1))
        argv = [
            "node",
            str(NODE_RED_DIR / "node_modules/node-red/red.js"),
            "--userDir", str(user), "--settings", str(user / "settings.js"),
            str(user / "flows.json"),
        ]  # fmt: skip
        async with started(argv, port, b"Started flows", limit=60, cwd=NODE_RED_DIR) as red:

            def count() -> int:
                url = f"http://127.0.0.1:{port}/count"
                with urllib.request.urlopen(url, timeout=5) as r:
                    return int(json.loads(r.read())["values"])

            deadline = time.monotonic() + 30
            while await asyncio.to_thread(count) == 0:  # first values: connected, subscribed
                if time.monotonic() > deadline:
                    raise RuntimeError("Node-RED delivered no value in 30 s")
                await asyncio.sleep(0.25)
            await asyncio.sleep(warmup)
            v0, c0, s0 = await asyncio.to_thread(count), red.cpu(), server.cpu()
            w0 = time.perf_counter()
            await asyncio.sleep(seconds)
            v1, c1, s1 = await asyncio.to_thread(count), red.cpu(), server.cpu()
            w1 = time.perf_counter()
            rss = red.ps.memory_info().rss
    row = finish(Measure("node_red", v1 - v0, v1 - v0, c1 - c0, w1 - w0))
    row["server_cpu_share"] = round((s1 - s0) / (w1 - w0), 3)
    row["rss_mib"] = round(rss / 2**20)
    return row


# -- Modbus ------------------------------------------------------------------------------


def modbus_config(port: int, n_tags: int) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate(
        {
            "name": "bench",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval": 0,
            "timeout": 2.0,
            "device_identification": False,
            "tags": [
                {"path": f"a/l/c/e/r{i}", "data_type": "int16", "address": i} for i in range(n_tags)
            ],
        }
    )


class WireClient(asyncio.Protocol):
    """Reference only: FC 3 reads of 125 registers with ``depth`` requests in flight,
    responses decoded with NumPy."""

    def __init__(self, depth: int, span: int) -> None:
        self.depth = depth
        self.span = span
        self.buffer = b""
        self.transport: Any = None
        self.values = 0
        self.tid = 0
        self.checksum = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"".join(self.request() for _ in range(self.depth)))

    def request(self) -> bytes:
        self.tid = (self.tid + 1) & 0xFFFF
        address = (self.tid * 125) % self.span
        return struct.pack(">HHHBBHH", self.tid, 0, 6, 1, 3, address, 125)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        pos, out = 0, []
        while len(buf) - pos >= 9:
            frame_end = pos + 6 + ((buf[pos + 4] << 8) | buf[pos + 5])
            if frame_end > len(buf):
                break
            regs = np.frombuffer(buf, dtype=">i2", count=buf[pos + 8] // 2, offset=pos + 9)
            self.checksum += int(regs[0])
            self.values += len(regs)
            out.append(self.request())
            pos = frame_end
        self.buffer = buf[pos:]
        self.transport.write(b"".join(out))


async def bench_modbus(args: argparse.Namespace) -> dict[str, Any]:
    from pymodbus.client import AsyncModbusTcpClient

    n_tags = args.modbus_tags
    argv, port = fixture("modbus_server.py", "--registers", str(max(n_tags, 2000) + 125))
    results: dict[str, Any] = {}
    warmup = args.warmup
    async with started(argv, port, b"LISTENING") as server:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await client.connect()
        raw = {"registers": 0}

        async def raw_loop() -> None:
            me = asyncio.current_task()
            address = 0
            while True:
                rr = await client.read_holding_registers(address, count=125, device_id=1)
                if me is not None and me.cancelling():
                    return
                assert not rr.isError() and len(rr.registers) == 125
                raw["registers"] += 125
                address = (address + 125) % n_tags

        if "raw" in args.modes:
            results["raw"] = await measured(
                "raw", args.seconds, raw_loop, lambda: (raw["registers"],) * 2, server, warmup
            )
        client.close()

        config = modbus_config(port, n_tags)
        bound: list[BoundTag[ModbusTagConfig]] = [
            BoundTag(i, t.path, t) for i, t in enumerate(config.tags)
        ]

        tags = [(b.tag_id, b.uns_path, b.config) for b in bound]
        for mode in ("connector", "pipeline"):
            if mode in args.modes:
                results[mode] = await measure_ours(
                    mode,
                    "modbus",
                    lambda ctx: ModbusSource(config, bound, ctx),
                    tags,
                    mode == "pipeline",
                    args,
                    server,
                    warmup,
                )

        loop = asyncio.get_running_loop()
        wire: dict[str, WireClient] = {}

        async def wire_run() -> None:
            transport, protocol = await loop.create_connection(
                lambda: WireClient(8, n_tags), "127.0.0.1", port
            )
            wire["client"] = protocol
            try:
                await asyncio.Event().wait()
            finally:
                transport.close()

        def wire_counts() -> tuple[int, int]:
            v = wire["client"].values if "client" in wire else 0
            return v, v

        if "wire" in args.modes:
            results["wire"] = await measured(
                "wire", args.seconds, wire_run, wire_counts, server, warmup
            )
        if args.node_red and "node_red" in args.modes:
            results["node_red"] = await bench_node_red(
                modbus_flows(port, 1), "node-red-contrib-modbus", args.seconds, warmup, server
            )
    results["setup"] = {
        "tags": n_tags,
        "data_type": "int16 (one register per value)",
        "requests_per_poll": -(-n_tags // 125),
        "registers_per_request": 125,
        "in_flight": {"raw": 1, "connector": 1, "pipeline": 1, "node_red": 1, "wire": 8},
    }
    return results


# -- OPC UA ------------------------------------------------------------------------------


async def measure_raw_asyncua(
    endpoint: str, node_ids: list[str], seconds: float, server: Any, warmup: float
) -> dict[str, Any]:
    """The raw library loop: one asyncua subscription whose handler counts changes."""
    from asyncua.client.client import Client

    class Handler:
        count = 0
        lost = 0

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            Handler.count += 1

        def status_change_notification(self, status: Any) -> None:
            Handler.lost += 1  # asyncua's own liveness probe gave up on the session

    async def raw_run() -> None:
        client = Client(endpoint, timeout=10)
        await client.connect()
        try:
            sub: Any = await client.create_subscription(100, Handler())
            nodes = [client.get_node(n) for n in node_ids]
            await sub.subscribe_data_change(nodes, queuesize=1, sampling_interval=100.0)
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 2)

    row = await measured("raw", seconds, raw_run, lambda: (Handler.count,) * 2, server, warmup)
    row["reconnects"] = Handler.lost
    return row


def opcua_source_config(endpoint: str, node_ids: list[str], **extra: Any) -> OpcUaSourceConfig:
    """Our OPC UA source on every item of the fixture, as the raw loop subscribes them."""
    return OpcUaSourceConfig.model_validate(
        {
            "name": "bench",
            "endpoint": endpoint,
            "publishing_interval": 0.1,
            "sampling_interval": 0.1,
            "queue_size": 1,
            "timeout": 10.0,
            "tags": [{"path": f"a/l/c/e/v{i}", "node": n} for i, n in enumerate(node_ids)],
        }
        | extra
    )


async def bench_opcua(args: argparse.Namespace, n_items: int) -> dict[str, Any]:
    node_ids = [f"ns=2;s=V{i}" for i in range(n_items)]
    argv, port = fixture("opcua_server.py")
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    warmup = max(args.warmup, 1.5)
    results: dict[str, Any] = {}
    async with started(argv, port, b"LISTENING") as server:
        if "raw" in args.modes:
            results["raw"] = await measure_raw_asyncua(
                endpoint, node_ids, args.seconds, server, warmup
            )

        config = opcua_source_config(endpoint, node_ids)
        bound: list[BoundTag[OpcUaTagConfig]] = [
            BoundTag(i, t.path, t) for i, t in enumerate(config.tags)
        ]

        tags = [(b.tag_id, b.uns_path, b.config) for b in bound]
        for mode in ("connector", "pipeline"):
            if mode in args.modes:
                results[mode] = await measure_ours(
                    mode,
                    "opcua",
                    lambda ctx: opcua_source(config, bound, ctx),
                    tags,
                    mode == "pipeline",
                    args,
                    server,
                    warmup,
                )
        if args.node_red and "node_red" in args.modes:
            results["node_red"] = await bench_node_red(
                opcua_flows(endpoint, node_ids),
                "node-red-contrib-opcua",
                args.seconds,
                warmup,
                server,
            )
    if "connector" in args.modes:
        results["decode"] = decode_costs(min(n_items, 10_000))
    results["setup"] = {
        "items": n_items,
        "publishing_interval_ms": 100,
        "offered_changes_per_s": n_items * 10,
        "server": "bench/fixtures/opcua_server.py (asyncua + hand-encoded publish responses)",
    }
    return results


def decode_costs(n_items: int) -> dict[str, Any]:
    """Where an OPC UA client's time goes, measured alone: decoding one publish response
    of ``n_items`` Double changes with asyncua's generic decoder (what the raw loop and
    our source both use) vs reading the same bytes as a NumPy record array (possible
    only when every item has the same layout — a fast path would check that and fall
    back to asyncua otherwise)."""
    from asyncua import ua
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary

    from bench.fixtures.opcua_server import ITEM, OPC_EPOCH_OFFSET, encode_publish, opc_now

    items = np.zeros(n_items, dtype=ITEM)
    items["handle"] = np.arange(n_items)
    items["mask"], items["vtype"], items["ts"] = 0x05, 11, opc_now()
    items["value"] = np.arange(n_items) * 0.5
    raw = encode_publish(1, 1, 1, items, 0)

    def best(fn: Callable[[], Any], repeat: int) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return min(times) / n_items * 1e6

    def asyncua_decode() -> None:
        response = struct_from_binary(ua.PublishResponse, Buffer(raw))
        (change,) = response.Parameters.NotificationMessage.NotificationData
        assert len(change.MonitoredItems) == n_items

    def numpy_decode() -> None:
        offset = len(raw) - 12 - ITEM.itemsize * n_items  # before DiagnosticInfos, Results
        view = np.frombuffer(raw, dtype=ITEM, count=n_items, offset=offset)
        assert (view["vtype"] == 11).all() and (view["mask"] == 0x05).all()
        value, handle = view["value"].copy(), view["handle"].copy()
        ts = (view["ts"] - OPC_EPOCH_OFFSET) * 100
        assert len(value) == len(handle) == len(ts)

    return {
        "items_per_response": n_items,
        "asyncua_us_per_item": round(best(asyncua_decode, 3), 3),
        "numpy_us_per_item": round(best(numpy_decode, 20), 4),
    }


# -- main --------------------------------------------------------------------------------


def ratios(section: dict[str, Any]) -> dict[str, Any]:
    """Per mode: CPU per value and values/s relative to raw, and to Node-RED."""
    out: dict[str, Any] = {}
    for ref in ("raw", "node_red"):
        base = section.get(ref)
        if not base or not base["values"]:
            continue
        for mode in ("connector", "pipeline", "node_red", "wire"):
            row = section.get(mode)
            if mode == ref or not row or not row["values"]:
                continue
            out[f"{mode}_vs_{ref}"] = {
                "cpu_per_value": round(row["cpu_us_per_value"] / base["cpu_us_per_value"], 3),
                "values_per_s": round(row["values_per_s"] / base["values_per_s"], 3),
            }
    return out


def print_table(results: dict[str, Any]) -> None:
    head = f"{'':12} {'mode':10} {'values/s':>10} {'µs CPU/value':>13} {'values/CPU-s':>13}"
    print(head + f" {'CPU':>5} {'server CPU':>10}")
    for proto in ("modbus", "opcua", "opcua_steady"):
        section = results.get(proto)
        if not section:
            continue
        for mode in ("raw", "connector", "pipeline", "node_red", "wire"):
            row = section.get(mode)
            if row:
                print(
                    f"{proto:12} {mode:10} {row['values_per_s']:>10,} "
                    f"{row['cpu_us_per_value']:>13.2f} {row['values_per_cpu_s'] or 0:>13,} "
                    f"{row['cpu_share']:>5.2f} {row['server_cpu_share']:>10.2f}"
                )
        for key, r in section["ratio"].items():
            print(
                f"{proto:12} {key}: CPU/value x{r['cpu_per_value']}, values/s x{r['values_per_s']}"
            )
        if "decode" in section:
            d = section["decode"]
            print(
                f"{proto:12} decoding one publish response alone: asyncua "
                f"{d['asyncua_us_per_item']} µs/item, NumPy record view {d['numpy_us_per_item']}"
            )
        target = section["target"]
        print(
            f"{proto:12} target {target['values_per_s']:,}/s on one core into the historian: "
            f"pipeline {target.get('pipeline_values_per_cpu_s', 0):,} per CPU-second"
        )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    runs: list[tuple[str, str, Callable[[], Awaitable[dict[str, Any]]]]] = [
        ("modbus", "modbus", lambda: bench_modbus(args)),
        ("opcua", "opcua", lambda: bench_opcua(args, args.opcua_items)),
    ]
    if args.opcua_steady_items:  # a load every client sustains: CPU per value compared
        runs.append(("opcua_steady", "opcua", lambda: bench_opcua(args, args.opcua_steady_items)))
    for name, proto, run in runs:
        if proto not in args.only:
            continue
        section = await run()
        section["ratio"] = ratios(section)
        section["target"] = {
            "values_per_s": TARGETS[proto],
            **{
                f"{mode}_values_per_cpu_s": section[mode]["values_per_cpu_s"]
                for mode in ("raw", "pipeline")
                if mode in section
            },
        }
        results[name] = section
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per mode")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--modbus-tags", type=int, default=2000)
    parser.add_argument("--opcua-items", type=int, default=10_000, help="the saturating run")
    parser.add_argument(
        "--opcua-steady-items", type=int, default=2_000, help="a second, sustainable run (0: off)"
    )
    parser.add_argument("--only", nargs="+", default=["modbus", "opcua"])
    parser.add_argument("--no-node-red", dest="node_red", action="store_false")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=list(MODES),
        choices=MODES,
        help="a subset (e.g. for py-spy); bench/results/connectors.json only for a full run",
    )
    parser.add_argument("--quick", action="store_true", help="2 s per mode (< 60 s in all)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.opcua_steady_items = 2.0, 0.5, 0
    if args.node_red and not node_red_installed():
        print(f"Node-RED not installed: run `npm ci --omit=optional` in {NODE_RED_DIR}")
        args.node_red = False
    logging.basicConfig(level=logging.ERROR)
    # asyncua logs each lost session with a traceback; the rows count them instead
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    started_at = time.monotonic()
    results = asyncio.run(main_async(args))
    results["meta"] = {
        "seconds_per_mode": args.seconds,
        "warmup_s": args.warmup,
        "node_red": args.node_red,
        "total_s": round(time.monotonic() - started_at, 1),
        "pid": os.getpid(),
        "note": "client CPU = process_time() of this process; servers in their own processes",
    }
    print_table(results)
    if set(args.modes) == set(MODES):
        path = write_result("connectors", results)
        print(f"wrote {path} in {results['meta']['total_s']} s")


if __name__ == "__main__":
    main()
