"""S7Source against python-snap7's own S7 server (``snap7.server.Server``, pure Python),
started in the test on a free port with DB, M, I and Q areas holding known bytes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from snap7 import Server, SrvArea

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.s7.config import S7SourceConfig
from isthmus.connectors.s7.errors import WriteFailed, WriteRefused
from isthmus.connectors.s7.source import S7Source
from isthmus.model.batch import Batch
from isthmus.model.quality import Quality
from tests.support import Collector, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

LOGGER = "isthmus.test.s7"

# (address, data_type, expected raw value)
TAGS: list[tuple[str, str | None, float]] = [
    ("DB10.DBX0.0", None, 1.0),
    ("DB10.DBX0.1", None, 0.0),
    ("DB10.DBX0.7", None, 1.0),
    ("DB10.DBB1", None, 200.0),
    ("DB10.DBB2", "int16", -3.0),
    ("DB10.DBW4", "int16", -1234.0),
    ("DB10.DBW6", "uint16", 65000.0),
    ("DB10.DBD8", "int32", -123456789.0),
    ("DB10.DBD12", "uint32", 4000000000.0),
    ("DB10.DBD16", "float32", 1.5),
    ("DB10.DBL20", "float64", -2.25e100),
    ("DB10.DBL28", "int64", -(2**40)),
    ("MW20", "int16", 321.0),
    ("MD24", "float32", -0.75),
    ("M10.2", None, 1.0),
    ("I0.1", None, 1.0),
    ("IW2", "uint16", 4660.0),
    ("Q0.0", None, 1.0),
    ("QW2", "int16", -2.0),
]


def memory() -> dict[tuple[SrvArea, int], bytearray]:
    db = bytearray(64)
    db[0] = 0b1000_0001
    struct.pack_into(
        ">BbxhHiIfdq",
        db,
        1,
        200,
        -3,
        -1234,
        65000,
        -123456789,
        4000000000,
        1.5,
        -2.25e100,
        -(2**40),
    )
    mk = bytearray(32)
    struct.pack_into(">h2xf", mk, 20, 321, -0.75)
    mk[10] = 0b100
    pe = bytearray(8)
    pe[0] = 0b10
    struct.pack_into(">H", pe, 2, 0x1234)
    pa = bytearray(8)
    pa[0] = 1
    struct.pack_into(">h", pa, 2, -2)
    return {(SrvArea.DB, 10): db, (SrvArea.MK, 0): mk, (SrvArea.PE, 0): pe, (SrvArea.PA, 0): pa}


class Plc:
    """A snap7 server on 127.0.0.1:port with the areas of :func:`memory`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.areas = memory()
        self.server: Server | None = None

    def start(self) -> None:
        server = Server(log=False)
        for (area, index), data in self.areas.items():
            server.register_area(area, index, data)
        server.start(tcp_port=self.port)
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def plc() -> Iterator[Plc]:
    logging.getLogger("snap7").setLevel(logging.CRITICAL)
    logging.getLogger("s7").setLevel(logging.CRITICAL)
    p = Plc(free_port())
    p.start()
    try:
        yield p
    finally:
        p.stop()


def make_source(
    port: int, tags: list[dict[str, Any]], collector: Collector, **options: Any
) -> S7Source:
    cfg = S7SourceConfig.model_validate(
        {
            "name": "plc",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval": 0.05,
            "timeout": 1.0,
            "reconnect_max": 0.2,
            "tags": tags,
            **options,
        }
    )
    bound = [BoundTag(100 + i, f"ent/site/{t.path}", t) for i, t in enumerate(cfg.tags)]
    ctx = SourceContext(emit=collector.emit, log=logging.getLogger(LOGGER))
    return S7Source(cfg, bound, ctx)


def tag_maps() -> list[dict[str, Any]]:
    out = []
    for i, (address, data_type, _) in enumerate(TAGS):
        entry: dict[str, Any] = {"path": f"a/l/c/e/t{i}", "address": address}
        if data_type:
            entry["data_type"] = data_type
        out.append(entry)
    return out


@contextlib.asynccontextmanager
async def running(source: S7Source) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)


def by_tag(batch: Batch) -> dict[int, tuple[float, int]]:
    return {
        int(t): (float(v), int(q))
        for t, v, q in zip(batch.tag_id, batch.value, batch.quality, strict=True)
    }


def all_good(batch: Batch) -> bool:
    return len(batch) > 0 and not batch.quality.any()


async def test_reads_every_type_and_area(plc: Plc) -> None:
    collector = Collector()
    source = make_source(plc.port, tag_maps(), collector)
    async with running(source):
        batch = await collector.wait_for(all_good)
        assert source.connected
    got = by_tag(batch)
    assert [got[100 + i][0] for i in range(len(TAGS))] == [v for _, _, v in TAGS]
    assert len(set(batch.ts.tolist())) == 1
    assert source.pdu == 480  # granted by the server, plans repacked for it
    assert len(source.groups[0].plan.requests) == 1  # DB, I, Q, M blocks in one request
    assert source.ctx.metrics.counters["source.plc.values"] >= len(TAGS)


async def test_missing_db_makes_only_its_tags_bad(plc: Plc) -> None:
    collector = Collector()
    tags = [
        *tag_maps()[:3],
        {"path": "a/l/c/e/missing", "address": "DB99.DBW0"},
        {"path": "a/l/c/e/past_end", "address": "DB10.DBD200"},
    ]
    source = make_source(plc.port, tags, collector, max_gap=0)
    async with running(source):
        batch = await collector.wait_for(lambda b: len(b) == 5)
        assert source.connected
    got = by_tag(batch)
    assert [got[100 + i] for i in range(3)] == [(1.0, 0), (0.0, 0), (1.0, 0)]
    assert got[103][1] == Quality.BAD_CONFIGURATION_ERROR and np.isnan(got[103][0])
    assert got[104][1] == Quality.BAD_CONFIGURATION_ERROR


async def test_outage_bad_once_then_recovers(plc: Plc, caplog: pytest.LogCaptureFixture) -> None:
    collector = Collector()
    source = make_source(plc.port, tag_maps()[:4], collector)
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with running(source):
        await collector.wait_for(all_good)
        plc.stop()
        bad = await collector.wait_for(
            lambda b: bool((b.quality == Quality.BAD_COMMUNICATION_ERROR).all())
        )
        assert len(bad) == 4 and not source.connected
        await asyncio.sleep(0.6)  # several failed reconnects: no more Bad batches
        n_bad = sum(
            1 for b in collector.batches if (b.quality == Quality.BAD_COMMUNICATION_ERROR).any()
        )
        assert n_bad == 1
        plc.start()
        await collector.wait_for(all_good)
        assert source.connected
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    assert any("connected again" in r.getMessage() for r in caplog.records)


async def test_unreachable_at_start_and_prompt_cancel() -> None:
    collector = Collector()
    source = make_source(free_port(), tag_maps()[:2], collector)
    loop = asyncio.get_running_loop()
    async with running(source):
        bad = await collector.wait_for(lambda b: len(b) == 2)
        assert (bad.quality == Quality.BAD_COMMUNICATION_ERROR).all()
        started = loop.time()
    assert loop.time() - started < 1.0


async def test_writes_with_read_back(plc: Plc) -> None:
    collector = Collector()
    tags: list[dict[str, Any]] = [
        {
            "path": "a/l/c/e/sp",
            "address": "DB10.DBW4",
            "data_type": "int16",
            "writable": True,
            "scale": 0.1,
        },
        {"path": "a/l/c/e/real", "address": "DB10.DBD16", "writable": True},
        {"path": "a/l/c/e/lreal", "address": "DB10.DBL20", "writable": True},
        {"path": "a/l/c/e/bit", "address": "DB10.DBX0.1", "writable": True},
        {"path": "a/l/c/e/mbit", "address": "M10.0", "writable": True},
        {"path": "a/l/c/e/qw", "address": "QW2", "writable": True},
        {"path": "a/l/c/e/ro", "address": "MW20"},
        {"path": "a/l/c/e/in", "address": "IW2"},
    ]
    source = make_source(plc.port, tags, collector, bit_writes="byte")
    db, mk, pa = plc.areas[(SrvArea.DB, 10)], plc.areas[(SrvArea.MK, 0)], plc.areas[(SrvArea.PA, 0)]
    async with running(source):
        await collector.wait_for(all_good)
        await source.write("a/l/c/e/sp", 25.0)
        assert struct.unpack_from(">h", db, 4)[0] == 250
        await source.write(101, -8.5)
        assert struct.unpack_from(">f", db, 16)[0] == -8.5
        await source.write("ent/site/a/l/c/e/lreal", 1e-300)
        assert struct.unpack_from(">d", db, 20)[0] == 1e-300
        await source.write("a/l/c/e/bit", True)
        assert db[0] == 0b1000_0011  # other bits of the byte kept
        await source.write("a/l/c/e/bit", False)
        assert db[0] == 0b1000_0001
        await source.write("a/l/c/e/mbit", 1)
        assert mk[10] == 0b101
        await source.write("a/l/c/e/qw", -300)
        assert struct.unpack_from(">h", pa, 2)[0] == -300
        batch = await collector.wait_for(lambda b: by_tag(b)[100][0] == 250.0)  # raw
        assert by_tag(batch)[103][0] == 0.0
        with pytest.raises(WriteRefused, match="not writable"):
            await source.write("a/l/c/e/ro", 1)
        with pytest.raises(WriteRefused, match="not writable"):
            await source.write("a/l/c/e/in", 1)
        with pytest.raises(WriteRefused, match="outside"):
            await source.write("a/l/c/e/sp", 4000.0)
        with pytest.raises(WriteRefused, match="no tag"):
            await source.write("nope", 1)
        plc.stop()
        await collector.wait_for(lambda b: bool(b.quality.any()))
        with pytest.raises(WriteFailed):
            await source.write("a/l/c/e/sp", 1.0)
    assert source.ctx.metrics.counters["source.plc.writes"] == 7


async def test_poll_groups_emit_their_own_batches(plc: Plc) -> None:
    collector = Collector()
    tags = [
        {"path": "a/l/c/e/fast", "address": "DB10.DBX0.0", "poll_group": "fast"},
        {"path": "a/l/c/e/slow", "address": "MW20", "poll_group": "slow"},
        {"path": "a/l/c/e/default", "address": "QW2"},
    ]
    source = make_source(plc.port, tags, collector, poll_groups={"fast": 0.02, "slow": 5.0})
    async with running(source):
        await asyncio.sleep(0.5)
    sizes = [tuple(b.tag_id.tolist()) for b in collector.batches]
    assert sizes.count((102,)) >= 3  # default group, every 50 ms
    assert sizes.count((100,)) > sizes.count((102,))  # fast group, every 20 ms
    assert sizes.count((101,)) == 1  # slow group: once in 0.5 s


async def test_cancel_while_a_call_is_blocked() -> None:
    """A PLC that accepts TCP but never answers: cancelling returns promptly."""
    hung: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    source = make_source(port, tag_maps()[:1], Collector(), timeout=5.0)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(source.run())
    await asyncio.sleep(0.3)  # the worker waits for the COTP connection confirm
    assert hung and not source.connected
    started = loop.time()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 2.0)
    assert loop.time() - started < 0.5
    for _ in range(20):  # the socket was shut down: the worker thread ends too
        if not any(t.name.startswith("s7-plc") for t in threading.enumerate()):
            break
        await asyncio.sleep(0.05)
    assert not any(t.name.startswith("s7-plc") for t in threading.enumerate())
    server.close()
    for writer in hung:
        writer.close()
