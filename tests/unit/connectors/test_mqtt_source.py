"""MqttSource's decoding and batching, without a broker."""

from __future__ import annotations

import logging

import pytest

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.mqtt.config import MqttSourceConfig, MqttTagConfig
from isthmus.connectors.mqtt.source import RESOLVE_CACHE_MAX, MqttSource
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.quality import Quality


async def _drop(batch: Batch) -> None:
    return None


def source() -> tuple[MqttSource, SourceContext]:
    cfg = MqttSourceConfig.model_validate(
        {
            "name": "m",
            "type": "mqtt",
            "host": "h",
            "subscriptions": [
                {
                    "topic": "p/{line}/{m}",
                    "values": [{"field": "$.t", "tag": "a/{line}/c/{m}/t"}],
                }
            ],
            "tags": [{"path": "a/l1/c/m1/t"}, {"path": "a/l2/c/m1/t"}],
        }
    )
    tags: list[BoundTag[MqttTagConfig]] = [
        BoundTag(10 + i, f"e/s/{t.path}", t) for i, t in enumerate(cfg.tags)
    ]
    ctx = SourceContext(emit=_drop, clock=ManualClock(5))
    return MqttSource(cfg, tags, ctx), ctx


def test_messages_accumulate_into_one_batch() -> None:
    src, ctx = source()
    for i in range(10):
        src.handle("p/l1/m1", f'{{"t": {i}}}'.encode())
        src.handle("p/l2/m1", b'{"t": -1}')
    batch = src.take_batch()
    assert batch is not None and len(batch) == 20
    assert batch.tag_id.tolist()[:2] == [10, 11]
    assert batch.ts.tolist() == [5] * 20
    assert src.take_batch() is None
    assert ctx.metrics.counters["source.m.messages"] == 20


def test_unknown_and_unmatched_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    src, ctx = source()
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            src.handle("p/l9/m1", b'{"t": 1}')
        src.handle("q/other", b"1")
    assert src.take_batch() is None
    assert ctx.metrics.counters["source.m.unknown_tags"] == 50
    assert ctx.metrics.counters["source.m.unmatched"] == 1
    assert len([r for r in caplog.records if "not configured" in r.message]) == 1


def test_rejections_counted_and_logged_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    src, ctx = source()
    with caplog.at_level(logging.WARNING):
        for _ in range(100):
            src.handle("p/l1/m1", b"\x00garbage")
    batch = src.take_batch()
    assert batch is not None
    assert set(batch.quality.tolist()) == {Quality.BAD_DECODING_ERROR}
    assert ctx.metrics.counters["source.m.rejected"] == 100
    assert len([r for r in caplog.records if "rejected" in r.message]) == 1


def test_resolve_cache_is_bounded() -> None:
    src, _ = source()
    for i in range(RESOLVE_CACHE_MAX + 10):
        src.handle(f"p/x{i}/m1", b'{"t": 1}')
    assert len(src._cache) <= RESOLVE_CACHE_MAX


def test_refused_subscription_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    src, ctx = source()
    with caplog.at_level(logging.WARNING):
        src._check_granted(src._subs[0], (1,))
        assert "source.m.refused_subscriptions" not in ctx.metrics.counters
        src._check_granted(src._subs[0], (0x80,))
    assert ctx.metrics.counters["source.m.refused_subscriptions"] == 1
    assert "refused the subscription to p/+/+" in caplog.text
