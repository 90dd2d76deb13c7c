"""The S7 source as a Commander, against python-snap7's S7 server on 127.0.0.1,
directly and through the DroppingProxy: write then read back, scale/offset round
trips, refusals before sending, a PLC that refuses, and the outcome of a connection
dropped after the write request."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from snap7 import SrvArea

from isthmus.connectors.base import BoundTag, Commander, CommandWriteError, SourceContext
from isthmus.connectors.s7.config import S7SourceConfig
from isthmus.connectors.s7.errors import WriteFailed
from isthmus.connectors.s7.source import S7Source
from tests.integration.connectors.proxy import S7, DroppingProxy, s7_write, write_through_drops
from tests.integration.connectors.test_s7_source import Plc
from tests.support import Collector, free_port, running_source

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]

TAGS: list[dict[str, Any]] = [
    {"path": "a/l/c/e/temp_sp", "address": "DB10.DBW4", "data_type": "int16", "scale": 0.1,
     "offset": -50, "writable": True},
    {"path": "a/l/c/e/speed_sp", "address": "DB10.DBD16", "data_type": "float32",
     "writable": True},
    {"path": "a/l/c/e/run", "address": "DB10.DBX0.1", "writable": True},
    {"path": "a/l/c/e/total", "address": "DB10.DBL28", "data_type": "int64", "writable": True},
    {"path": "a/l/c/e/count", "address": "MW20", "data_type": "int16", "writable": True},
    {"path": "a/l/c/e/recipe", "address": "DB10.DBB40", "data_type": "string", "length": 10,
     "writable": True},
    {"path": "a/l/c/e/ghost", "address": "DB99.DBW0", "data_type": "int16", "writable": True},
    {"path": "a/l/c/e/input", "address": "IW2", "data_type": "uint16"},
]  # fmt: skip


@pytest.fixture
def plc() -> Iterator[Plc]:
    logging.getLogger("snap7").setLevel(logging.CRITICAL)
    logging.getLogger("s7").setLevel(logging.CRITICAL)
    p = Plc(free_port())
    db = p.areas[(SrvArea.DB, 10)]
    db[40:52] = bytes([10, 3]) + b"R-1" + bytes(7)  # STRING[10] 'R-1'
    p.start()
    try:
        yield p
    finally:
        p.stop()


def make_source(port: int, timeout: float = 1.0) -> S7Source:
    cfg = S7SourceConfig.model_validate(
        {
            "name": "plc",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval": 0.05,
            "timeout": timeout,
            "reconnect_max": 0.2,
            # snap7's test server writes a BIT request's byte whole: read-modify-write
            "bit_writes": "byte",
            "tags": [t for t in TAGS if t["path"] != "a/l/c/e/ghost"],
        }
    )
    bound = [BoundTag(100 + i, f"ent/site/{t.path}", t) for i, t in enumerate(cfg.tags)]
    ctx = SourceContext(emit=Collector().emit, log=logging.getLogger("isthmus.test.cmd.s7"))
    return S7Source(cfg, bound, ctx)


def db(plc: Plc) -> bytearray:
    return plc.areas[(SrvArea.DB, 10)]


async def test_write_then_read_back_equal(plc: Plc) -> None:
    source = make_source(plc.port)
    assert isinstance(source, Commander)
    async with running_source(source, connected_within=5):
        await source.write("a/l/c/e/speed_sp", -8.5)
        assert struct.unpack_from(">f", db(plc), 16)[0] == -8.5
        assert await source.read_back("a/l/c/e/speed_sp", 1.0) == -8.5
        big = -(2**60) - 1  # beyond float64 precision: exact both ways
        await source.write("ent/site/a/l/c/e/total", big)
        got = await source.read_back(103, 1.0)
        assert got == big and isinstance(got, int)
        await source.write("a/l/c/e/run", True)
        assert db(plc)[0] & 0b10
        assert await source.read_back("a/l/c/e/run", 1.0) is True
        await source.write("a/l/c/e/count", -300)
        assert await source.read_back("a/l/c/e/count", 1.0) == -300
        await source.write("a/l/c/e/recipe", "Crème 2")
        assert await source.read_back("a/l/c/e/recipe", 1.0) == "Crème 2"
        # a fresh read: a change in the PLC shows at once
        struct.pack_into(">h", plc.areas[(SrvArea.MK, 0)], 20, 77)
        assert await source.read_back("a/l/c/e/count", 1.0) == 77
        assert await source.read_back("a/l/c/e/input", 1.0) == 0x1234
        assert await source.read_back("a/l/c/e/nothing", 1.0) is None
    assert await source.read_back("a/l/c/e/count", 0.5) is None  # not connected


async def test_scale_and_offset_round_trip(plc: Plc) -> None:
    source = make_source(plc.port)
    async with running_source(source, connected_within=5):
        await source.write("a/l/c/e/temp_sp", 21.37)  # raw 713.7 → 714
        assert struct.unpack_from(">h", db(plc), 4)[0] == 714
        assert await source.read_back("a/l/c/e/temp_sp", 1.0) == pytest.approx(21.4)
        await source.write("a/l/c/e/temp_sp", -50.25)  # raw -2.5 → -3 (half away from zero)
        assert struct.unpack_from(">h", db(plc), 4)[0] == -3
        assert await source.read_back("a/l/c/e/temp_sp", 1.0) == pytest.approx(-50.3)


async def test_refusals_are_failed_and_send_nothing(plc: Plc) -> None:
    async with DroppingProxy("127.0.0.1", plc.port, framing=S7, watch=s7_write) as proxy:
        source = make_source(proxy.port)
        async with running_source(source, connected_within=5):
            before = bytes(db(plc))
            cases: list[tuple[str, Any, str]] = [
                ("a/l/c/e/temp_sp", 4000.0, "outside"),  # raw 40500
                ("a/l/c/e/count", 2**15, "outside"),
                ("a/l/c/e/speed_sp", 1e39, "REAL"),
                ("a/l/c/e/speed_sp", float("inf"), "finite"),
                ("a/l/c/e/run", 2, "true/false"),
                ("a/l/c/e/recipe", "x" * 11, "do not fit"),
                ("a/l/c/e/count", "12", "not text"),
                ("a/l/c/e/input", 1, "not writable"),
                ("a/l/c/e/nothing", 1, "no tag"),
            ]
            for tag, value, match in cases:
                with pytest.raises(CommandWriteError, match=match) as info:
                    await source.write(tag, value)
                assert info.value.outcome == "failed", tag
            assert proxy.matched == 0  # no write request reached the PLC
            assert bytes(db(plc)) == before
    with pytest.raises(WriteFailed, match="not connected") as failed:
        await make_source(plc.port).write("a/l/c/e/count", 1)
    assert failed.value.outcome == "failed"


async def test_a_plc_refusal_is_failed(plc: Plc) -> None:
    cfg = S7SourceConfig.model_validate(
        {"name": "plc", "host": "127.0.0.1", "port": plc.port, "poll_interval": 0.05,
         "timeout": 1.0, "reconnect_max": 0.2,
         "tags": [t for t in TAGS if t["path"] in ("a/l/c/e/ghost", "a/l/c/e/count")]}
    )  # fmt: skip
    bound = [BoundTag(100 + i, t.path, t) for i, t in enumerate(cfg.tags)]
    source = S7Source(cfg, bound, SourceContext(emit=Collector().emit))
    async with running_source(source, connected_within=5):
        with pytest.raises(WriteFailed, match="refused") as info:
            await source.write("a/l/c/e/ghost", 1)  # DB99 does not exist in the PLC
        assert info.value.outcome == "failed"
        assert await source.read_back("a/l/c/e/ghost", 1.0) is None
        await source.write("a/l/c/e/count", 5)  # the connection is still good
        assert await source.read_back("a/l/c/e/count", 1.0) == 5


async def test_connection_dropped_after_the_write_request_is_uncertain(plc: Plc) -> None:

    async def count() -> int:
        return int(struct.unpack_from(">h", plc.areas[(SrvArea.MK, 0)], 20)[0])

    async with DroppingProxy("127.0.0.1", plc.port, framing=S7, watch=s7_write) as proxy:
        source = make_source(proxy.port, timeout=0.5)
        async with running_source(source, connected_within=5):
            outcomes = await write_through_drops(
                proxy, source, "a/l/c/e/count", count, (11, 22, 33, 44, 55), watch=s7_write,
                where="PLC",
            )  # fmt: skip
    print(f"\nS7 outcomes through the dropping proxy: {outcomes}")
    assert set(outcomes.values()) == {"uncertain"}
