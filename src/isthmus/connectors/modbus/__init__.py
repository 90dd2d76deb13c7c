"""Modbus TCP: polls a register map, coalescing adjacent registers into few requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from isthmus.connectors.base import BoundTag, ConnectorSpec, Source, SourceContext
from isthmus.connectors.modbus.config import ModbusSourceConfig
from isthmus.model.config import SourceConfig, TagConfig


def _factory(
    config: SourceConfig, tags: Sequence[BoundTag[TagConfig]], ctx: SourceContext
) -> Source:
    from isthmus.connectors.modbus.source import ModbusSource

    return ModbusSource(cast(ModbusSourceConfig, config), tags, ctx)  # type: ignore[arg-type]


def spec() -> ConnectorSpec:
    return ConnectorSpec("modbus", "Modbus TCP register polling", ModbusSourceConfig, _factory)
