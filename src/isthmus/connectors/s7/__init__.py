"""Siemens S7 (python-snap7): polls DB, I, Q and M areas by absolute address."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from isthmus.connectors.base import BoundTag, ConnectorSpec, Source, SourceContext
from isthmus.connectors.s7.config import S7SourceConfig
from isthmus.model.config import SourceConfig, TagConfig


def _factory(
    config: SourceConfig, tags: Sequence[BoundTag[TagConfig]], ctx: SourceContext
) -> Source:
    from isthmus.connectors.s7.source import S7Source

    return S7Source(cast(S7SourceConfig, config), tags, ctx)  # type: ignore[arg-type]


def spec() -> ConnectorSpec:
    return ConnectorSpec(
        "s7", "Siemens S7 (S7-300/400/1200/1500) by absolute address", S7SourceConfig, _factory
    )
