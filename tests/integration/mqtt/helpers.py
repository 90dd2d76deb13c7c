"""Shared helpers for the MQTT integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import numpy as np

from isthmus.connectors.base import BoundTag, SourceContext
from isthmus.connectors.mqtt.config import MqttSourceConfig, MqttTagConfig
from isthmus.connectors.mqtt.source import MqttSource
from tests.support import Collector


def make_source(
    raw: dict[str, Any], collector: Collector
) -> tuple[MqttSource, SourceContext, dict[str, int]]:
    cfg = MqttSourceConfig.model_validate(raw)
    tags = [BoundTag(i, f"ent/site/{t.path}", t) for i, t in enumerate(cfg.tags)]
    ids: dict[str, int] = {t.config.path: t.tag_id for t in tags}
    ctx = SourceContext(emit=collector.emit)
    bound: list[BoundTag[MqttTagConfig]] = tags
    return MqttSource(cfg, bound, ctx), ctx, ids


@contextlib.asynccontextmanager
async def running(source: MqttSource, within: float = 5.0) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run())
    try:
        await wait_for(lambda: source.connected, within)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(cond: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def publish(
    port: int,
    messages: list[tuple[str, bytes | str]],
    *,
    qos: int = 1,
    retain: bool = False,
    **kwargs: Any,
) -> None:
    async with aiomqtt.Client("127.0.0.1", port, **kwargs) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=qos, retain=retain)


def values_of(collector: Collector, tag_id: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    b = collector.all()
    selected: np.ndarray[Any, np.dtype[np.float64]] = b.value[b.tag_id == tag_id]
    return selected
