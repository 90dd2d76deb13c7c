"""Sparkplug B configuration (pure): the host application source and the edge node.

The edge node's :class:`SparkplugEdgeConfig` lives in :mod:`isthmus.model.config` (it is
the plant config's ``sparkplug_edge:`` section) and is re-exported here."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from isthmus.model.config import (
    TAG_PATH_DEPTH,
    MqttBroker,
    SourceConfig,
    SparkplugEdgeConfig,
    TagConfig,
)
from isthmus.model.durations import Duration

__all__ = ["SparkplugEdgeConfig", "SparkplugSourceConfig", "check_template"]

TEMPLATE_VARIABLES = frozenset({"group", "node", "device", "device_path", "metric"})
_VARIABLE = re.compile(r"\{([^{}]*)\}")
_ID = re.compile(r"^[^/+#\s]+$")


def _sparkplug_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"{what} {value!r}: no '/', '+', '#' or spaces")
    return value


def check_template(template: str) -> str:
    """Variables must be known; ``{device_path}`` counts as 4 segments, any other
    variable as one; the result must have area/line/cell/equipment/tag depth."""
    names = _VARIABLE.findall(template)
    unknown = set(names) - TEMPLATE_VARIABLES
    if unknown:
        raise ValueError(
            f"tag_template: unknown variable(s) {', '.join(sorted(unknown))}; "
            f"use {', '.join(sorted(TEMPLATE_VARIABLES))}"
        )
    depth = template.count("/") + 1 + 3 * names.count("device_path")
    if depth != TAG_PATH_DEPTH:
        raise ValueError(
            f"tag_template {template!r} gives {depth} segments; tags need "
            f"{TAG_PATH_DEPTH} (area/line/cell/equipment/tag)"
        )
    return template


class SparkplugTagConfig(TagConfig):
    """Sparkplug tags have no addressing of their own: births map metrics onto them
    through ``tag_template``."""


class SparkplugSourceConfig(SourceConfig, MqttBroker):
    """A Sparkplug B 3.0 host application (consumer)."""

    can_command: ClassVar[bool] = True  # the source is a Commander
    type: Literal["sparkplug"] = Field(default="sparkplug", description="this connector")
    client_id: str = Field(
        default="", description="MQTT client id; empty: isthmus-<source name>. Must be unique"
    )
    groups: list[str] = Field(
        min_length=1, description="Sparkplug group ids to consume (spBv1.0/GROUP/#)"
    )
    host_id: str | None = Field(
        default=None,
        description="primary host id: publish spBv1.0/STATE/<host_id> (retained, with a "
        "will); empty: no STATE (a passive host)",
    )
    tag_template: str = Field(
        default="sparkplug/{group}/{node}/{device}/{metric}",
        description="tag path of a metric; variables {group} {node} {device} {metric} "
        "(one segment each) and {device_path} (a device id a:b:c:d as four segments)",
    )
    node_device: str = Field(
        default="node", description="the {device} of node-level metrics (NBIRTH/NDATA)"
    )
    reorder_window: int = Field(
        default=8, ge=0, le=64, description="out-of-order messages held while waiting for a gap"
    )
    reorder_timeout: Duration = Field(
        default=2.0, description="how long a seq gap may stay open before a rebirth request"
    )
    rebirth_min_interval: Duration = Field(
        default=5.0, description="at most one rebirth request per edge node per interval"
    )
    send_rebirth: bool = Field(
        default=True, description="false: never publish NCMD rebirth requests (read-only ACL)"
    )
    timestamps: Literal["source", "receive"] = Field(
        default="source",
        description="source: metric/payload timestamps; receive: our receive time (clock skew)",
    )
    qos: Literal[0, 1] = Field(default=0, description="subscription QoS (0 or 1)")
    max_queued_messages: int = Field(
        default=10_000, ge=10, description="incoming queue bound; beyond it the oldest drop"
    )
    auto_tags: bool = Field(
        default=True,
        description="a birth's metrics without a configured tag create one at the template "
        "path (type from the birth); false: they are counted as unmapped",
    )
    max_auto_tags: int = Field(
        default=10_000, ge=0, description="cap on the tags this source creates (a rogue node)"
    )
    tags: list[SparkplugTagConfig] = Field(default_factory=list)  # type: ignore[assignment]

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        for group in value:
            _sparkplug_id(group, "group")
        return value

    @field_validator("host_id")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if not value else _sparkplug_id(value, "host_id")

    @field_validator("tag_template")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)
