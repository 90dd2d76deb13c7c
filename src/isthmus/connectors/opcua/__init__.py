"""OPC UA: reads tags by subscription (data-change notifications), batch per publish."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from isthmus.connectors.base import BoundTag, ConnectorSpec, Source, SourceContext
from isthmus.connectors.opcua.config import OpcUaSourceConfig
from isthmus.model.config import SourceConfig, TagConfig


def _factory(
    config: SourceConfig, tags: Sequence[BoundTag[TagConfig]], ctx: SourceContext
) -> Source:
    from isthmus.connectors.opcua.fastsubscription import make_source

    return make_source(cast(OpcUaSourceConfig, config), tags, ctx)  # type: ignore[arg-type]


def spec() -> ConnectorSpec:
    return ConnectorSpec("opcua", "OPC UA client by subscription", OpcUaSourceConfig, _factory)
