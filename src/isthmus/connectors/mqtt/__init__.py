"""MQTT: subscribes to topic templates and maps JSON or plain payloads onto tags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from isthmus.connectors.base import BoundTag, ConnectorSpec, Source, SourceContext
from isthmus.connectors.mqtt.config import MqttSourceConfig
from isthmus.model.config import SourceConfig, TagConfig


def _factory(
    config: SourceConfig, tags: Sequence[BoundTag[TagConfig]], ctx: SourceContext
) -> Source:
    from isthmus.connectors.mqtt.source import MqttSource

    return MqttSource(cast(MqttSourceConfig, config), tags, ctx)  # type: ignore[arg-type]


def spec() -> ConnectorSpec:
    return ConnectorSpec(
        "mqtt",
        "MQTT subscriber (JSON or plain payloads, topic templates)",
        MqttSourceConfig,
        _factory,
    )
