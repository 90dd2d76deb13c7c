"""Ingest benchmark: client CPU per value, raw library loop vs Isthmus connector + pipeline.

Run: ``.venv/bin/python bench/ingest.py [--seconds 6] [--quick]``.  Writes
``bench/results/ingest.json`` and prints a table.

For each protocol a server runs in a *separate process* (so the client's CPU is measured
cleanly with ``time.process_time()`` of this process, worker threads included), then in
the same run:

* Modbus TCP — the server is a minimal asyncio Modbus TCP responder written here (the
  pymodbus server saturates a core at ~3k requests/s and would be the bottleneck).
  ``raw``: a pymodbus ``AsyncModbusTcpClient`` reading 125-register blocks in a loop.
  ``connector``: :class:`ModbusSource` polling ~1000 float32/int16 tags (coalesced into
  125-register blocks) as fast as it can, emitting into a counting consumer.
  ``pipeline``: the same, emitting into ``Ingest`` (qualify) → local transport →
  ``HistorianWriter`` → ``DuckDBStore`` (in memory).
* OPC UA — an asyncua server with N variables changing every 100 ms.
  ``raw``: an asyncua subscription with a no-op handler counting notifications.
  ``connector`` / ``pipeline``: :class:`OpcUaSource` as above.

"CPU per value": Modbus raw counts a register as a value (the raw loop does not decode);
the connector counts decoded tag values (float32 = 2 registers), so its per-register
figure is also reported.  Ratios are pipeline (or connector) CPU per value / raw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import os
import platform
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.modbus.source import ModbusSource
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.fastsubscription import make_source as opcua_source
from isthmus.model.batch import Batch
from isthmus.model.clock import SystemClock
from isthmus.model.config import TagConfig
from isthmus.observe.metrics import Metrics

RESULTS = Path(__file__).parent / "results" / "ingest.json"
OPCUA_NS = "urn:isthmus:bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


# -- servers (child processes) ----------------------------------------------------------


class _ModbusResponder(asyncio.Protocol):
    """Answers FC3/FC4 reads from a fixed register image; any other function (e.g. the
    connector's device identification, FC 43/14) gets exception 1, as plain devices do."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        out = []
        while len(buf) >= 8:
            tid, _pid, length, unit = struct.unpack(">HHHB", buf[:7])
            frame_len = 6 + length
            if len(buf) < frame_len:
                break
            frame, buf = buf[:frame_len], buf[frame_len:]
            fc = frame[7]
            if fc in (3, 4) and len(frame) >= 12:
                addr, count = struct.unpack(">HH", frame[8:12])
                if count <= 125 and (addr + count) * 2 <= len(self.image):
                    payload = self.image[addr * 2 : (addr + count) * 2]
                    pdu = struct.pack(">BB", fc, len(payload)) + payload
                else:
                    pdu = struct.pack(">BB", fc | 0x80, 2)  # illegal data address
            else:  # like a plain device: anything else is an illegal function
                pdu = struct.pack(">BB", fc | 0x80, 1)
            out.append(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
        self.buffer = buf
        if out:
            self.transport.write(b"".join(out))


def modbus_server_main(port: int, registers: int) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 0x3F00, registers, dtype=np.uint16).astype(">u2").tobytes()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _ModbusResponder(image), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def opcua_server_main(port: int, count: int, period: float) -> None:
    logging.disable(logging.WARNING)
    from asyncua import Server, ua

    async def serve() -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(OPCUA_NS)
        nodes = []
        for f in range(0, count, 100):  # folders of 100: building under one parent is slow
            folder = await server.nodes.objects.add_folder(ua.NodeId(f"F{f}", ns), f"F{f}")
            for i in range(f, min(f + 100, count)):
                nodes.append(await folder.add_variable(ua.NodeId(f"V{i}", ns), f"V{i}", 0.0))
        async with server:
            k = 0
            while True:
                k += 1
                start = time.monotonic()
                for i, node in enumerate(nodes):
                    await server.write_attribute_value(
                        node.nodeid, ua.DataValue(ua.Variant(float(k * 1000 + i)))
                    )
                await asyncio.sleep(max(0.0, period - (time.monotonic() - start)))

    asyncio.run(serve())


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Measure:
    name: str
    values: int
    registers: int
    cpu_s: float
    wall_s: float

    def row(self) -> dict[str, Any]:
        per_value = self.cpu_s / self.values * 1e6 if self.values else float("nan")
        per_reg = self.cpu_s / self.registers * 1e6 if self.registers else float("nan")
        return {
            "values": self.values,
            "registers": self.registers,
            "cpu_s": round(self.cpu_s, 3),
            "wall_s": round(self.wall_s, 3),
            "values_per_s": round(self.values / self.wall_s),
            "cpu_us_per_value": round(per_value, 3),
            "cpu_us_per_register": round(per_reg, 3),
            "cpu_share": round(self.cpu_s / self.wall_s, 3),
        }


async def measure(
    name: str,
    seconds: float,
    start: Callable[[], Awaitable[Any]],
    counts: Callable[[], tuple[int, int]],
    warmup: float = 1.0,
) -> Measure:
    """Run ``start()`` as a task; measure CPU and counts over ``seconds`` after warm-up."""
    print(f"  measuring {name} ...", file=sys.stderr, flush=True)
    task = asyncio.ensure_future(start())
    await asyncio.sleep(warmup)
    v0, r0 = counts()
    c0, w0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    v1, r1 = counts()
    c1, w1 = time.process_time(), time.perf_counter()
    task.cancel()
    # not `await task`: Python 3.11's wait_for (inside the libraries) may swallow a cancel
    await asyncio.wait({task}, timeout=5.0)
    return Measure(name, v1 - v0, r1 - r0, c1 - c0, w1 - w0)


class Counter:
    def __init__(self) -> None:
        self.values = 0
        self.batches = 0

    async def emit(self, batch: Batch) -> None:
        self.batches += 1
        self.values += int(np.count_nonzero(batch.quality == 0))


class HistorianChain:
    """emit → qualify (Ingest) → local transport → HistorianWriter → DuckDBStore.

    Built from the pipeline and historian modules; counts values as they are emitted.
    """

    def __init__(self, tags: list[tuple[int, str, TagConfig]]) -> None:
        from isthmus.historian.duckdb.store import DuckDBStore
        from isthmus.model.catalog import CatalogEntry
        from isthmus.model.config import StorageConfig
        from isthmus.pipeline.ingest import Ingest
        from isthmus.pipeline.qualify import Qualifier
        from isthmus.pipeline.writer import HistorianWriter
        from isthmus.transport.local import LocalTransport

        self.metrics = Metrics()
        clock = SystemClock()
        self.store = DuckDBStore(StorageConfig(path=":memory:"), Path("."))
        self.store.open()
        entries = [CatalogEntry(tid, path, "bench", cfg) for tid, path, cfg in tags]
        transport = LocalTransport(self.metrics)
        self.ingest = Ingest(Qualifier(entries), transport, self.metrics, clock)
        self.writer = HistorianWriter(
            self.store, transport, self.metrics, clock, flush_interval=0.25
        )
        self.values = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.writer.run())

    async def emit(self, batch: Batch) -> None:
        self.values += int(np.count_nonzero(batch.quality == 0))
        await self.ingest.emit(batch)

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        written = self.store.count()
        self.store.close()
        return written


# -- Modbus -----------------------------------------------------------------------------


def modbus_tags(n_tags: int) -> tuple[ModbusSourceConfig, int]:
    """Alternating float32/int16 tags packed from register 0; returns (config, registers)."""
    specs: list[dict[str, Any]] = []
    address = 0
    for i in range(n_tags):
        dt = "float32" if i % 2 == 0 else "int16"
        specs.append({"path": f"a/l/c/e/t{i}", "data_type": dt, "address": address})
        address += 2 if dt == "float32" else 1
    return (
        ModbusSourceConfig.model_validate(
            {
                "name": "bench",
                "host": "127.0.0.1",
                "port": 1,
                "poll_interval": 0,
                "timeout": 2.0,
                "tags": specs,
            }
        ),
        address,
    )


async def bench_modbus(seconds: float, n_tags: int, with_pipeline: bool) -> dict[str, Any]:
    from pymodbus.client import AsyncModbusTcpClient

    base, registers = modbus_tags(n_tags)
    port = free_port()
    proc = mp.Process(target=modbus_server_main, args=(port, registers + 8), daemon=True)
    proc.start()
    try:
        wait_port(port)
        config = base.model_copy(update={"port": port})
        bound: list[BoundTag[ModbusTagConfig]] = [
            BoundTag(i, t.path, t) for i, t in enumerate(config.tags)
        ]

        # raw: pymodbus reading 125-register blocks in a closed loop
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await client.connect()
        done = {"requests": 0}

        async def raw_loop() -> None:
            me = asyncio.current_task()
            addr = 0
            while True:
                rr = await client.read_holding_registers(addr, count=125, device_id=1)
                if me is not None and me.cancelling():
                    return
                assert not rr.isError()
                done["requests"] += 1
                addr = (addr + 125) % (registers - 125)

        raw = await measure(
            "raw", seconds, raw_loop, lambda: (done["requests"] * 125, done["requests"] * 125)
        )

        # raw_decoded: what a user writes with the library alone to get the same values:
        # the same coalesced blocks, each tag decoded by pymodbus's convert_from_registers.
        blocks = ModbusSource(config, bound, SourceContext(emit=Counter().emit)).plan.blocks
        layout = [
            (
                b.address,
                b.count,
                [
                    (t.address - b.address, 2 if t.data_type == "float32" else 1, t.data_type)
                    for t in config.tags
                    if b.address <= t.address < b.address + b.count
                ],
            )
            for b in blocks
        ]
        dtypes = {"float32": client.DATATYPE.FLOAT32, "int16": client.DATATYPE.INT16}
        decoded = {"values": 0, "registers": 0}

        async def raw_decoded_loop() -> None:
            me = asyncio.current_task()
            while True:
                for address, count, tags in layout:
                    rr = await client.read_holding_registers(address, count=count, device_id=1)
                    if me is not None and me.cancelling():
                        return
                    regs = rr.registers
                    values = [
                        client.convert_from_registers(regs[o : o + w], dtypes[dt])
                        for o, w, dt in tags
                    ]
                    decoded["values"] += len(values)
                    decoded["registers"] += count

        raw_dec = await measure(
            "raw_decoded",
            seconds,
            raw_decoded_loop,
            lambda: (decoded["values"], decoded["registers"]),
        )
        client.close()

        results: dict[str, Any] = {"raw": raw.row(), "raw_decoded": raw_dec.row()}
        plan_registers = 0

        async def run_source(
            name: str, emit: Callable[[Batch], Awaitable[None]], counter: Callable[[], int]
        ) -> Measure:
            nonlocal plan_registers
            source = ModbusSource(config, bound, SourceContext(emit=emit, metrics=Metrics()))
            plan_registers = source.plan.registers
            regs_per_value = plan_registers / len(source.plan)
            return await measure(
                name,
                seconds,
                source.run,
                lambda: (counter(), int(counter() * regs_per_value)),
            )

        counter = Counter()
        conn = await run_source("connector", counter.emit, lambda: counter.values)
        results["connector"] = conn.row()
        if with_pipeline:
            chain = HistorianChain([(b.tag_id, b.uns_path, b.config) for b in bound])
            chain.start()
            pipe = await run_source("pipeline", chain.emit, lambda: chain.values)
            results["pipeline"] = pipe.row()
            results["pipeline"]["rows_in_historian"] = await chain.stop()
        results["setup"] = {
            "tags": n_tags,
            "registers_per_poll": plan_registers,
            "requests_per_poll": -(-plan_registers // 125),
        }
        return results
    finally:
        proc.terminate()
        proc.join(5)


# -- OPC UA -----------------------------------------------------------------------------


async def bench_opcua(seconds: float, n_vars: int, with_pipeline: bool) -> dict[str, Any]:
    from asyncua import Client

    port = free_port()
    proc = mp.Process(target=opcua_server_main, args=(port, n_vars, 0.1), daemon=True)
    proc.start()
    endpoint = f"opc.tcp://127.0.0.1:{port}/bench/"
    try:
        wait_port(port, timeout=90)
        # the server registers its namespace before listening; find its index
        async with Client(endpoint) as probe:
            ns = await probe.get_namespace_index(OPCUA_NS)
        node_ids = [f"ns={ns};s=V{i}" for i in range(n_vars)]

        # raw: asyncua subscription, no-op handler counting notifications
        class Handler:
            count = 0

            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                Handler.count += 1

        async def raw_run() -> None:
            client = Client(endpoint)
            await client.connect()
            try:
                sub = await client.create_subscription(100, Handler())
                nodes = [client.get_node(n) for n in node_ids]
                await sub.subscribe_data_change(nodes, queuesize=10, sampling_interval=100.0)
                await asyncio.Event().wait()
            finally:
                await client.disconnect()

        raw = await measure(
            "raw", seconds, raw_run, lambda: (Handler.count, Handler.count), warmup=3.0
        )
        results: dict[str, Any] = {"raw": raw.row()}

        config = OpcUaSourceConfig.model_validate(
            {
                "name": "bench",
                "endpoint": endpoint,
                "publishing_interval": 0.1,
                "sampling_interval": 0.1,
                "tags": [{"path": f"a/l/c/e/v{i}", "node": n} for i, n in enumerate(node_ids)],
            }
        )
        bound: list[BoundTag[OpcUaTagConfig]] = [
            BoundTag(i, t.path, t) for i, t in enumerate(config.tags)
        ]

        async def run_source(
            name: str, emit: Callable[[Batch], Awaitable[None]], counter: Callable[[], int]
        ) -> Measure:
            source = opcua_source(config, bound, SourceContext(emit=emit, metrics=Metrics()))
            return await measure(
                name, seconds, source.run, lambda: (counter(), counter()), warmup=3.0
            )

        counter = Counter()
        results["connector"] = (
            await run_source("connector", counter.emit, lambda: counter.values)
        ).row()
        if with_pipeline:
            chain = HistorianChain([(b.tag_id, b.uns_path, b.config) for b in bound])
            chain.start()
            results["pipeline"] = (
                await run_source("pipeline", chain.emit, lambda: chain.values)
            ).row()
            results["pipeline"]["rows_in_historian"] = await chain.stop()
        results["setup"] = {
            "variables": n_vars,
            "publishing_interval_ms": 100,
            "server_update_period_ms": 100,
        }
        return results
    finally:
        proc.terminate()
        proc.join(5)


# -- main -------------------------------------------------------------------------------


def ratios(section: dict[str, Any]) -> dict[str, float]:
    raw = section["raw"]["cpu_us_per_value"]
    out: dict[str, float] = {}
    for key in ("connector", "pipeline"):
        if key in section:
            out[f"{key}_per_value"] = round(section[key]["cpu_us_per_value"] / raw, 3)
            if "raw_decoded" in section:
                out[f"{key}_per_value_vs_raw_decoded"] = round(
                    section[key]["cpu_us_per_value"] / section["raw_decoded"]["cpu_us_per_value"],
                    3,
                )
            if section[key].get("cpu_us_per_register") and "cpu_us_per_register" in section["raw"]:
                out[f"{key}_per_register"] = round(
                    section[key]["cpu_us_per_register"] / section["raw"]["cpu_us_per_register"], 3
                )
    return out


def print_table(results: dict[str, Any]) -> None:
    print(f"{'':8} {'mode':10} {'values/s':>10} {'CPU µs/value':>13} {'CPU share':>9}")
    for proto in ("modbus", "opcua"):
        if proto not in results:
            continue
        for mode in ("raw", "raw_decoded", "connector", "pipeline"):
            row = results[proto].get(mode)
            if row:
                print(
                    f"{proto:8} {mode:10} {row['values_per_s']:>10} "
                    f"{row['cpu_us_per_value']:>13.2f} {row['cpu_share']:>9.2f}"
                )
        print(f"{proto:8} ratios vs raw: {results[proto]['ratio']}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    pipeline_ok = True
    try:
        import isthmus.historian.duckdb.store
        import isthmus.pipeline.ingest
        import isthmus.pipeline.writer  # noqa: F401
    except ImportError as exc:  # pipeline or historian not there yet: connector only
        print(f"pipeline chain unavailable ({exc}); measuring the connector only")
        pipeline_ok = False
    results: dict[str, Any] = {}
    if "modbus" in args.only:
        results["modbus"] = await bench_modbus(args.seconds, args.modbus_tags, pipeline_ok)
        results["modbus"]["ratio"] = ratios(results["modbus"])
    if "opcua" in args.only:
        results["opcua"] = await bench_opcua(args.seconds, args.opcua_vars, pipeline_ok)
        results["opcua"]["ratio"] = ratios(results["opcua"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per mode")
    parser.add_argument("--modbus-tags", type=int, default=1000)
    parser.add_argument("--opcua-vars", type=int, default=500)
    parser.add_argument("--only", nargs="+", default=["modbus", "opcua"])
    parser.add_argument("--quick", action="store_true", help="2 s per mode (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 2.0
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    results = asyncio.run(main_async(args))
    results["meta"] = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "seconds_per_mode": args.seconds,
        "total_s": round(time.monotonic() - started, 1),
        "note": "client CPU = time.process_time() of the benchmark process (server elsewhere)",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {RESULTS} in {results['meta']['total_s']} s")


if __name__ == "__main__":
    main()
