"""OpcUaSource.batch_of on asyncua notification objects (pure: no server, no socket):
scalar and array items in one publish, short arrays, byte strings, non-numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from asyncua import ua

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig, OpcUaTagConfig
from isthmus.connectors.opcua.source import OpcUaSource
from isthmus.model.batch import Batch
from isthmus.model.quality import Quality

STAMP = datetime(2026, 1, 1, tzinfo=UTC)
STAMP_NS = 1_767_225_600_000_000_000


async def _drop(batch: Batch) -> None:
    pass


def source() -> OpcUaSource:
    config = OpcUaSourceConfig.model_validate(
        {
            "name": "ua",
            "endpoint": "opc.tcp://127.0.0.1:4840",
            "pki_dir": "/nonexistent",
            "tags": [
                {"path": "a/l/c/e/arr", "node": "ns=2;s=A", "array_length": 3},  # item 0
                {"path": "a/l/c/e/x", "node": "ns=2;s=X"},  # item 1
                {"path": "a/l/c/e/b", "node": "ns=2;s=B", "index": 1},  # item 2
            ],
        }
    )
    bound: list[BoundTag[OpcUaTagConfig]] = [
        BoundTag(10 + i, f"e/s/{t.path}", t) for i, t in enumerate(config.tags)
    ]
    return OpcUaSource(config, bound, SourceContext(emit=_drop))


def item(handle: int, value: Any, code: int = 0) -> Any:
    notification = ua.MonitoredItemNotification()
    notification.ClientHandle = handle
    dv = ua.DataValue(ua.Variant(value), ua.StatusCode(code))
    dv.SourceTimestamp = STAMP
    notification.Value = dv
    return notification


def rows(batch: Batch | None) -> dict[int, tuple[float, int]]:
    assert batch is not None
    assert (batch.ts == STAMP_NS).all()
    return {
        int(t): (float(v), int(q))
        for t, v, q in zip(batch.tag_id, batch.value, batch.quality, strict=True)
    }


def test_scalar_and_array_items_in_one_publish() -> None:
    src = source()
    # tags: arr.0 (10), x (11), b (12), arr.1 (13), arr.2 (14)
    out = rows(src.batch_of([item(1, 4.5), item(0, [1.0, 2.0, 3.0]), item(2, b"\x07\x09")]))
    assert out == {
        11: (4.5, 0),
        10: (1.0, 0),
        13: (2.0, 0),
        14: (3.0, 0),
        12: (9.0, 0),  # element 1 of a ByteString (a Byte array)
    }


def test_short_array_marks_only_the_missing_elements() -> None:
    src = source()
    out = rows(src.batch_of([item(0, [5.0])]))
    assert out[10] == (5.0, 0)
    assert np.isnan(out[13][0]) and out[13][1] == Quality.BAD_OUT_OF_RANGE
    assert out[14][1] == Quality.BAD_OUT_OF_RANGE
    assert src.ctx.metrics.counters["source.ua.array_errors"] == 2


def test_array_status_non_numbers_and_scalars() -> None:
    src = source()
    uncertain = 0x40000000
    out = rows(src.batch_of([item(0, [1, "two", True], uncertain)]))
    assert out[10] == (1.0, uncertain)
    assert np.isnan(out[13][0]) and out[13][1] == Quality.BAD_DECODING_ERROR
    assert out[14] == (1.0, uncertain)
    # a scalar where an array is configured: a one-element array
    out = rows(src.batch_of([item(0, 7.0)]))
    assert out[10] == (7.0, 0) and out[13][1] == Quality.BAD_OUT_OF_RANGE
    # an array where a scalar is configured
    out = rows(src.batch_of([item(1, [1.0, 2.0])]))
    assert np.isnan(out[11][0]) and out[11][1] == Quality.BAD_DECODING_ERROR
    # a Bad status without a value: the server's status for every element
    bad = 0x80310000
    out = rows(src.batch_of([item(0, None, bad)]))
    assert {out[t][1] for t in (10, 13, 14)} == {bad}


def test_unknown_handles_are_dropped() -> None:
    src = source()
    out = rows(src.batch_of([item(1, 1.0), item(99, 2.0), item(-5, 3.0)]))
    assert out == {11: (1.0, 0)}
