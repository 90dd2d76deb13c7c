"""S7 STRING[n] tags against python-snap7's own S7 server on a free port: text samples
read from a DB (beside numbers in the same block), changes seen, a corrupt header Bad,
writes with read-back, and configuration errors naming the tag."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator

import pytest
from snap7 import SrvArea

from isthmus.connectors.s7.config import S7SourceConfig
from isthmus.connectors.s7.errors import WriteRefused
from isthmus.model.batch import Batch
from isthmus.model.loader import load_plant_config
from isthmus.model.quality import Quality
from tests.integration.connectors.test_s7_source import Plc, make_source, running
from tests.support import Collector, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(10)]

RECIPE, SPEED, OPERATOR, BROKEN = 100, 101, 102, 103


def s7_string(text: bytes, n: int) -> bytes:
    return bytes([n, len(text)]) + text.ljust(n, b"\x00")


@pytest.fixture
def plc() -> Iterator[Plc]:
    logging.getLogger("snap7").setLevel(logging.CRITICAL)
    logging.getLogger("s7").setLevel(logging.CRITICAL)
    p = Plc(free_port())
    db = bytearray(80)
    db[0:12] = s7_string(b"R-100", 10)  # STRING[10] at 0
    struct.pack_into(">f", db, 12, 42.5)  # REAL at 12
    db[16:34] = s7_string(b"Ren\xe9e", 16)  # STRING[16] at 16 (Latin-1 é)
    db[40:46] = bytes([4, 9]) + b"abcd"  # STRING[4] claiming 9 characters
    p.areas[(SrvArea.DB, 20)] = db
    p.start()
    try:
        yield p
    finally:
        p.stop()


def tags() -> list[dict[str, object]]:
    return [
        {
            "path": "a/l/c/e/recipe",
            "address": "DB20.DBB0",
            "data_type": "string",
            "length": 10,
            "writable": True,
        },
        {"path": "a/l/c/e/speed", "address": "DB20.DBD12", "data_type": "float32"},
        {"path": "a/l/c/e/operator", "address": "DB20.DBB16", "data_type": "string", "length": 16},
        {"path": "a/l/c/e/broken", "address": "DB20.DBB40", "data_type": "string", "length": 4},
    ]


def rows(batch: Batch) -> dict[int, tuple[float, int, str | None]]:
    return {
        int(t): (float(v), int(q), x)
        for t, v, q, x in zip(batch.tag_id, batch.value, batch.quality, batch.texts(), strict=True)
    }


async def test_strings_are_read_changed_and_written(plc: Plc) -> None:
    collector = Collector()
    source = make_source(plc.port, tags(), collector)
    async with running(source):
        batch = await collector.wait_for(lambda b: len(b) == 4)
        got = rows(batch)
        assert got[RECIPE][1:] == (Quality.GOOD, "R-100")
        assert got[SPEED] == (42.5, Quality.GOOD, None)
        assert got[OPERATOR][1:] == (Quality.GOOD, "Renée")
        assert got[BROKEN][1:] == (Quality.BAD_DECODING_ERROR, None)
        assert len(source.groups[0].plan.requests) == 1  # one read for all of them

        # the PLC changes a string: the next poll reads it
        plc.areas[(SrvArea.DB, 20)][0:12] = s7_string(b"R-7", 10)
        await collector.wait_for(lambda b: rows(b)[RECIPE][2] == "R-7")

        # writes: text, read back; the PLC's maximum length byte stays
        await source.write("a/l/c/e/recipe", "Crème 2")
        db = plc.areas[(SrvArea.DB, 20)]
        assert bytes(db[0:9]) == bytes([10, 7]) + "Crème 2".encode("latin-1")
        await collector.wait_for(lambda b: rows(b)[RECIPE][2] == "Crème 2")
        with pytest.raises(WriteRefused, match="do not fit STRING"):
            await source.write("a/l/c/e/recipe", "x" * 11)
        with pytest.raises(WriteRefused, match="Latin-1"):
            await source.write("a/l/c/e/recipe", "日本")
        with pytest.raises(WriteRefused, match="write text"):
            await source.write("a/l/c/e/recipe", 3)
    assert source.ctx.metrics.counters["source.plc.errors"] >= 1  # the broken STRING


def test_config_errors_name_the_tag_line() -> None:
    text = """\
version: 1
enterprise: e
site: s
hierarchy: {a: {l: {c: [e]}}}
sources:
  - name: plc
    type: s7
    host: 127.0.0.1
    tags:
      - path: a/l/c/e/ok
        address: DB1.DBB0
        data_type: string
        length: 8
      - path: a/l/c/e/no_length
        address: DB1.DBB20
        data_type: string
      - path: a/l/c/e/word
        address: DB1.DBW40
        data_type: string
        length: 4
"""
    with pytest.raises(Exception) as info:
        load_plant_config(text, "plant.yaml", {"s7": S7SourceConfig})
    message = str(info.value)
    assert "plant.yaml:14" in message and "needs length" in message
    assert "plant.yaml:17" in message and "addressed by its first byte" in message
