"""A deterministic load source: every tag gets one sample per ``period``.

For fault tests and benchmarks, where a gap or a duplicate must be found exactly.
Sample ``k`` of a tag is at ``ts = k * period`` (UTC ns, aligned on the period) with
``value = value_of(position, k)``; nothing is read from any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from isthmus.connectors.base import BoundTag, ConnectorSpec, Source, SourceContext
from isthmus.connectors.synthetic.config import SyntheticSourceConfig
from isthmus.model.config import SourceConfig, TagConfig


def _factory(
    config: SourceConfig, tags: Sequence[BoundTag[TagConfig]], ctx: SourceContext
) -> Source:
    from isthmus.connectors.synthetic.source import SyntheticSource

    return SyntheticSource(cast(SyntheticSourceConfig, config), tags, ctx)


def spec() -> ConnectorSpec:
    return ConnectorSpec(
        "synthetic",
        "deterministic load: one predictable sample per tag per period (tests, benchmarks)",
        SyntheticSourceConfig,
        _factory,
    )
