"""The S7 examples in the docs and sample.yaml are valid, the docs name every option,
and bit writes go out as the request the docs describe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from snap7 import Area, WordLen

from isthmus.connectors.s7.config import BitWrite, S7SourceConfig, S7TagConfig, parse_address
from isthmus.connectors.s7.source import _write_sync
from isthmus.model.config import TagConfig

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs/connectors/s7.md"


def test_sample_yaml_validates() -> None:
    blocks = yaml.safe_load((ROOT / "src/isthmus/connectors/s7/sample.yaml").read_text())
    (cfg,) = [S7SourceConfig.model_validate(block) for block in blocks]
    assert set(cfg.poll_groups) == {"fast", "slow"}
    assert {t.parsed.area.value for t in cfg.tags} == {"DB", "I", "Q", "M"}


def test_docs_example_validates() -> None:
    example = re.search(r"```yaml\n(.*?)```", PAGE.read_text(), re.S)
    assert example is not None
    (block,) = yaml.safe_load(example.group(1))["sources"]
    cfg = S7SourceConfig.model_validate(block)
    assert {t.poll_group for t in cfg.tags} == {None, "fast", "slow"}
    assert cfg.tags[4].address == "I0.1"


def test_docs_name_every_option() -> None:
    """Every S7 option; the options every tag has (unit, range, retention_class...) are
    documented once, in the configuration reference and the user guide."""
    page = PAGE.read_text()
    common = set(TagConfig.model_fields) - {"path"}
    for model in (S7SourceConfig, S7TagConfig):
        for name in set(model.model_fields) - common:
            assert f"`{name}`" in page, name


class FakeClient:
    def __init__(self, byte: int) -> None:
        self.byte = byte
        self.calls: list[tuple[Any, ...]] = []

    def read_area(self, area: Area, db: int, start: int, size: int) -> bytearray:
        self.calls.append(("read", area, db, start, size))
        return bytearray([self.byte])

    def write_area(
        self, area: Area, db: int, start: int, data: bytearray, word_len: WordLen | None = None
    ) -> int:
        self.calls.append(("write", area, db, start, bytes(data), word_len))
        return 0


@pytest.mark.parametrize(
    ("mode", "value", "calls"),
    [
        (BitWrite.BIT, b"\x01", [("write", Area.DB, 3, 4 * 8 + 6, b"\x01", WordLen.Bit)]),
        (
            BitWrite.BYTE,
            b"\x01",
            [("read", Area.DB, 3, 4, 1), ("write", Area.DB, 3, 4, b"\x41", None)],
        ),
        (
            BitWrite.BYTE,
            b"\x00",
            [("read", Area.DB, 3, 4, 1), ("write", Area.DB, 3, 4, b"\x01", None)],
        ),
    ],
)
def test_bit_write_requests(mode: BitWrite, value: bytes, calls: list[tuple[Any, ...]]) -> None:
    client = FakeClient(0x01 if value == b"\x01" else 0x41)
    _write_sync(client, parse_address("DB3.DBX4.6"), value, mode)  # type: ignore[arg-type]
    assert client.calls == calls
