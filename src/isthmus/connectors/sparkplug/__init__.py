"""Sparkplug B 3.0: a host application source (``type: sparkplug``) and an edge node
(:class:`~isthmus.connectors.sparkplug.edge.SparkplugEdge`) publishing our own tags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from isthmus.connectors.base import BoundTag, ConnectorSpec, Source, SourceContext
from isthmus.connectors.sparkplug.config import SparkplugSourceConfig
from isthmus.model.config import SourceConfig, TagConfig


def _factory(
    config: SourceConfig, tags: Sequence[BoundTag[TagConfig]], ctx: SourceContext
) -> Source:
    from isthmus.connectors.sparkplug.host import SparkplugHost

    return SparkplugHost(cast(SparkplugSourceConfig, config), tags, ctx)  # type: ignore[arg-type]


def spec() -> ConnectorSpec:
    return ConnectorSpec(
        "sparkplug",
        "Sparkplug B 3.0 host application (births, aliases, seq/rebirth, bdSeq, STATE)",
        SparkplugSourceConfig,
        _factory,
    )
