"""ModbusSource against a small asyncio Modbus TCP responder written here, which can be
told to never answer an address range, to refuse a function, or to identify itself:
per-block timeouts, device identification, bit-in-register, poll groups and writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig, ModbusTagConfig
from isthmus.connectors.modbus.errors import WriteFailed, WriteRefused
from isthmus.connectors.modbus.source import ModbusSource
from isthmus.model.quality import Quality
from tests.integration.connectors.test_modbus_source import by_tag, running
from tests.support import Collector

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

LOGGER = "isthmus.test.modbus.devices"


@dataclass
class Responder:
    """A Modbus TCP device: FC 1-6, 15, 16, 22 and 43/14 over 1000 of each table."""

    holding: list[int] = field(default_factory=lambda: [0] * 1000)
    input: list[int] = field(default_factory=lambda: [0] * 1000)
    coils: list[bool] = field(default_factory=lambda: [False] * 1000)
    discrete: list[bool] = field(default_factory=lambda: [False] * 1000)
    silent: list[tuple[int, int, int]] = field(default_factory=list)
    """``(function, first, last)``: requests touching these addresses get no answer."""
    refuse: set[int] = field(default_factory=set)
    """Function codes answered with exception 1 (illegal function)."""
    identity: dict[int, bytes] | None = None
    """Device identification objects; ``None``: function 43 answers exception 1."""
    requests: list[tuple[int, int, int]] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                answer = self._answer(pdu)
                if answer is None:
                    continue
                writer.write(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, pdu: bytes) -> bytes | None:
        fc = pdu[0]
        if fc == 0x2B:
            if self.identity is None or 0x2B in self.refuse:
                return bytes([0xAB, 0x01])
            read_code = pdu[2]
            wanted = [k for k in sorted(self.identity) if read_code != 1 or k <= 2]
            body = b"".join(bytes([k, len(self.identity[k])]) + self.identity[k] for k in wanted)
            return bytes([0x2B, 0x0E, read_code, 0x82, 0, 0, len(wanted)]) + body
        if fc in self.refuse:
            return bytes([fc | 0x80, 0x01])
        address, arg = struct.unpack(">HH", pdu[1:5])
        span = arg if fc in (1, 2, 3, 4, 15, 16) else 1
        self.requests.append((fc, address, span))
        for silent_fc, first, last in self.silent:
            if silent_fc == fc and address <= last and address + span - 1 >= first:
                return None
        if fc in (1, 2):
            table = self.coils if fc == 1 else self.discrete
            bits = table[address : address + arg]
            packed = np.packbits(np.array(bits, dtype=np.uint8), bitorder="little").tobytes()
            return bytes([fc, len(packed)]) + packed
        if fc in (3, 4):
            regs = (self.holding if fc == 3 else self.input)[address : address + arg]
            return bytes([fc, 2 * len(regs)]) + struct.pack(f">{len(regs)}H", *regs)
        if fc == 5:
            self.coils[address] = arg == 0xFF00
            return pdu[:5]
        if fc == 6:
            self.holding[address] = arg
            return pdu[:5]
        if fc == 16:
            values = struct.unpack(f">{arg}H", pdu[6 : 6 + 2 * arg])
            self.holding[address : address + arg] = list(values)
            return pdu[:5]
        if fc == 22:
            and_mask, or_mask = struct.unpack(">HH", pdu[3:7])
            current = self.holding[address]
            self.holding[address] = (current & and_mask) | (or_mask & ~and_mask & 0xFFFF)
            return pdu[:7]
        return bytes([fc | 0x80, 0x01])


def make_source(
    port: int, tags: list[dict[str, Any]], collector: Collector, **options: Any
) -> ModbusSource:
    config = ModbusSourceConfig.model_validate(
        {
            "name": "dev1",
            "host": "127.0.0.1",
            "port": port,
            "poll_interval": 0.05,
            "timeout": 0.2,
            "reconnect_max": 0.3,
            "max_gap": 0,
            "tags": tags,
            **options,
        }
    )
    bound: list[BoundTag[ModbusTagConfig]] = [
        BoundTag(100 + i, f"ent/site/{t.path}", t) for i, t in enumerate(config.tags)
    ]
    ctx = SourceContext(emit=collector.emit, log=logging.getLogger(LOGGER))
    return ModbusSource(config, bound, ctx)


@contextlib.asynccontextmanager
async def responder(device: Responder) -> AsyncIterator[int]:
    port = await device.start()
    try:
        yield port
    finally:
        await device.stop()


async def test_a_block_that_never_answers_makes_only_its_tags_bad() -> None:
    device = Responder(silent=[(3, 100, 101)])
    device.holding[0:2] = [7, 8]
    device.input[5] = 42
    tags = [
        {"path": "a/l/c/e/h0", "data_type": "int16", "address": 0},
        {"path": "a/l/c/e/h1", "data_type": "int16", "address": 1},
        {"path": "a/l/c/e/dead", "data_type": "uint32", "address": 100},
        {"path": "a/l/c/e/in5", "data_type": "int16", "address": 5, "kind": "input"},
    ]
    collector = Collector()
    async with responder(device) as port:
        source = make_source(port, tags, collector)
        async with running(source):
            batches = [
                await collector.wait_for(lambda b: bool(b.quality.any()), limit=3.0)
                for _ in range(3)
            ]
            assert source.connected
    for batch in batches:
        got = by_tag(batch)
        assert got[100] == (7.0, Quality.GOOD)
        assert got[101] == (8.0, Quality.GOOD)
        assert got[103] == (42.0, Quality.GOOD)
        assert np.isnan(got[102][0])
        assert got[102][1] == Quality.BAD_COMMUNICATION_ERROR
    # Consecutive cycles on one connection: a timeout does not cost the link.
    assert source.ctx.metrics.counters.get("source.dev1.reconnects", 0) == 0
    assert source.device_info == {}  # function 43 answered with exception 1


async def test_device_identification_is_read_once_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    device = Responder(
        identity={0: b"Acme", 1: b"PLC-9", 2: b"v2.1", 3: b"https://acme.example", 5: b"X9"}
    )
    collector = Collector()
    tags = [{"path": "a/l/c/e/h0", "data_type": "int16", "address": 0}]
    async with responder(device) as port:
        source = make_source(port, tags, collector)
        async with running(source):
            await collector.wait_for(lambda b: not b.quality.any())
            await collector.wait_for(lambda b: not b.quality.any())
    assert source.device_info == {
        "VendorName": "Acme",
        "ProductCode": "PLC-9",
        "MajorMinorRevision": "v2.1",
        "VendorUrl": "https://acme.example",
        "ModelName": "X9",
    }
    logged = [r.getMessage() for r in caplog.records if "VendorName" in r.getMessage()]
    assert len(logged) == 1 and "Acme" in logged[0]


async def test_identification_off_sends_no_function_43() -> None:
    device = Responder(identity={0: b"Acme"}, refuse={0x2B})
    collector = Collector()
    tags = [{"path": "a/l/c/e/h0", "data_type": "int16", "address": 0}]
    async with responder(device) as port:
        source = make_source(port, tags, collector, device_identification=False)
        async with running(source):
            await collector.wait_for(lambda b: not b.quality.any())
    assert source.device_info == {}


async def test_bits_in_registers() -> None:
    device = Responder()
    device.holding[3] = 0b1000_0000_0010_0001
    device.input[4] = 0x0100
    tags = [
        {"path": "a/l/c/e/b0", "data_type": "bool", "address": 3, "bit": 0},
        {"path": "a/l/c/e/b1", "data_type": "bool", "address": 3, "bit": 1},
        {"path": "a/l/c/e/b5", "data_type": "bool", "address": 3, "bit": 5},
        {"path": "a/l/c/e/b15", "data_type": "bool", "address": 3, "bit": 15},
        {"path": "a/l/c/e/word", "data_type": "uint16", "address": 3},
        {"path": "a/l/c/e/i8", "data_type": "bool", "address": 4, "bit": 8, "kind": "input"},
        {
            "path": "a/l/c/e/i0",
            "data_type": "bool",
            "address": 4,
            "bit": 0,
            "kind": "input",
            "byte_order": "little",
        },
    ]
    collector = Collector()
    async with responder(device) as port:
        source = make_source(port, tags, collector)
        async with running(source):
            batch = await collector.wait_for(lambda b: not b.quality.any())
    got = {k: v for k, (v, _) in by_tag(batch).items()}
    assert [got[100 + i] for i in range(7)] == [1.0, 0.0, 1.0, 1.0, 32801.0, 1.0, 1.0]
    # One request per register kind: the bits share their register's read.
    assert {(fc, a, n) for fc, a, n in device.requests} == {(3, 3, 1), (4, 4, 1)}


async def test_poll_groups_have_their_own_rates_and_batches() -> None:
    device = Responder()
    tags = [
        {"path": "a/l/c/e/fast1", "data_type": "int16", "address": 0, "poll_group": "fast"},
        {"path": "a/l/c/e/fast2", "data_type": "int16", "address": 1, "poll_group": "fast"},
        {"path": "a/l/c/e/slow", "data_type": "int16", "address": 2, "poll_group": "slow"},
        {"path": "a/l/c/e/default", "data_type": "int16", "address": 3},
    ]
    collector = Collector()
    async with responder(device) as port:
        source = make_source(
            port, tags, collector, poll_interval=0.2, poll_groups={"fast": "40ms", "slow": "1s"}
        )
        async with running(source):
            await collector.wait_for(lambda b: 102 in b.tag_id)
            start = len(collector.batches)
            await asyncio.sleep(1.0)
            window = collector.batches[start:]
    kinds = [tuple(sorted(int(t) for t in b.tag_id)) for b in window]
    assert set(kinds) <= {(100, 101), (102,), (103,)}  # one batch per group cycle
    assert 15 <= kinds.count((100, 101)) <= 27  # 25 cycles of 40 ms (slack for a busy CI)
    assert 3 <= kinds.count((103,)) <= 6  # 5 cycles of 200 ms
    assert kinds.count((102,)) <= 2  # 1 s
    # Coalescing stays within a group: addresses 0..3 are contiguous but read apart.
    assert {(a, n) for fc, a, n in device.requests} == {(0, 2), (2, 1), (3, 1)}


async def test_writes_bit_in_register_with_mask_write() -> None:
    device = Responder()
    device.holding[7] = 0b0000_0000_1111_0000
    tags = [
        {"path": "a/l/c/e/flag", "data_type": "bool", "address": 7, "bit": 2, "writable": True},
        {"path": "a/l/c/e/other", "data_type": "bool", "address": 7, "bit": 4, "writable": True},
        {
            "path": "a/l/c/e/swapped",
            "data_type": "bool",
            "address": 7,
            "bit": 0,
            "writable": True,
            "byte_order": "little",
        },
    ]
    collector = Collector()
    async with responder(device) as port:
        source = make_source(port, tags, collector)
        async with running(source):
            await collector.wait_for(lambda b: not b.quality.any())
            await source.write("a/l/c/e/flag", True)
            assert device.holding[7] == 0b0000_0000_1111_0100
            await source.write("ent/site/a/l/c/e/other", 0)
            assert device.holding[7] == 0b0000_0000_1110_0100
            await source.write(102, True)  # bit 0 of the byte-swapped register: wire bit 8
            assert device.holding[7] == 0b0000_0001_1110_0100
            assert (22, 7, 1) in device.requests
            device.refuse.add(22)
            with pytest.raises(WriteFailed, match="illegal function") as info:
                await source.write("a/l/c/e/flag", False)
            assert info.value.code == 1
            assert device.holding[7] == 0b0000_0001_1110_0100  # nothing written
    assert source.ctx.metrics.counters["source.dev1.writes"] == 3
    assert source.ctx.metrics.counters["source.dev1.write_errors"] == 1


async def test_write_timeout_and_refusals() -> None:
    device = Responder(silent=[(6, 9, 9)])
    tags = [
        {"path": "a/l/c/e/sp", "data_type": "int16", "address": 9, "writable": True},
        {"path": "a/l/c/e/ro", "data_type": "int16", "address": 10},
        {"path": "a/l/c/e/in", "data_type": "int16", "address": 1, "kind": "input"},
    ]
    collector = Collector()
    async with responder(device) as port:
        source = make_source(port, tags, collector)
        with pytest.raises(WriteFailed, match="not connected"):
            await source.write("a/l/c/e/sp", 1)
        async with running(source):
            await collector.wait_for(lambda b: not b.quality.any())
            with pytest.raises(WriteFailed, match="no answer"):
                await source.write("a/l/c/e/sp", 1)
            with pytest.raises(WriteRefused, match="not writable"):
                await source.write("a/l/c/e/ro", 1)
            with pytest.raises(WriteRefused, match="no tag"):
                await source.write("a/l/c/e/nope", 1)
            with pytest.raises(WriteRefused, match="int16 range"):
                await source.write(100, 40000)
            # The poll goes on after a write timed out.
            await collector.wait_for(lambda b: not b.quality.any())
