"""OPC UA source configuration (pure)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from isthmus.model.config import SourceConfig, TagConfig
from isthmus.model.durations import Duration


class OpcUaTagConfig(TagConfig):
    node: str = Field(description="NodeId, e.g. ns=2;s=Line1.Filler.Speed")

    @field_validator("node")
    @classmethod
    def _node(cls, value: str) -> str:
        if not any(part in value for part in ("s=", "i=", "g=", "b=")):
            raise ValueError(f"{value!r} is not a NodeId (e.g. ns=2;s=Name or i=2258)")
        return value


class OpcUaSourceConfig(SourceConfig):
    type: Literal["opcua"] = "opcua"
    endpoint: str = Field(description="opc.tcp://host:port[/path]")
    publishing_interval: Duration = 0.1
    sampling_interval: Duration = 0.1
    queue_size: int = Field(default=10, ge=1)
    timeout: Duration = 4.0
    security_policy: Literal["None"] = Field(
        default="None", description="Sign/SignAndEncrypt arrive with the connectors issue"
    )
    reconnect_max: Duration = 30.0
    tags: list[OpcUaTagConfig] = Field(default_factory=list)  # type: ignore[assignment]

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError("an OPC UA endpoint starts with opc.tcp://")
        return value
