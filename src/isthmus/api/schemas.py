"""Response and request models: the OpenAPI contract."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from isthmus.model.values import JsonValue

Value = JsonValue
"""A sample value typed by the tag's data type; ``null`` when not a finite number."""


def finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    version: str
    uptime_s: float
    sources: dict[str, bool] = Field(description="connected, per source")
    samples_written: int


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="seconds")


class Me(BaseModel):
    username: str
    role: str
    expires_at: str = Field(description="ISO 8601 UTC")


class TagOut(BaseModel):
    path: str = Field(description="full UNS path: enterprise/site/area/line/cell/equipment/tag")
    name: str = Field(description="the last path segment")
    equipment: str = Field(description="the path of the tag's equipment")
    unit: str
    data_type: str = Field(description="the type at the source (register or node type)")
    value_type: str = Field(description="the engineering value's type: float64 when scaled")
    description: str
    range: tuple[float, float] | None
    writable: bool
    criticality: str
    source: str
    enum: dict[int, str] | None = Field(default=None, description="labels of enum values")


class HierarchyNode(BaseModel):
    name: str
    level: str = Field(description="enterprise, site, area, line, cell, equipment or tag")
    path: str
    children: list[HierarchyNode] = Field(default_factory=list)
    unit: str | None = Field(default=None, description="tags only")
    data_type: str | None = Field(default=None, description="tags only")
    value_type: str | None = Field(default=None, description="tags only")


class LastValue(BaseModel):
    path: str
    value: Value
    quality: str = Field(examples=["Good", "Bad_CommunicationError"])
    quality_code: int
    timestamp: str = Field(description="ISO 8601 UTC")


class LastValues(BaseModel):
    values: list[LastValue] = Field(description="tags without any sample are left out")


class Sample(BaseModel):
    timestamp: str
    value: Value
    quality: str


class RawSamples(BaseModel):
    path: str
    unit: str
    samples: list[Sample]


class Bucket(BaseModel):
    timestamp: str = Field(description="start of the bucket, ISO 8601 UTC")
    avg: float | None
    min: float | None
    max: float | None
    count: int = Field(description="non-Bad samples in the bucket")
    twa: float | None = Field(
        default=None, description="with extended=true: time-weighted average (value held)"
    )
    stddev: float | None = Field(
        default=None, description="with extended=true: standard deviation of the samples"
    )


class BucketedSamples(BaseModel):
    path: str
    unit: str
    bucket: str
    buckets: list[Bucket]


class InterpolatedSamples(BaseModel):
    path: str
    unit: str
    interval: str
    method: str = Field(description="previous (value in force) or linear")
    values: list[Sample]


class EventOut(BaseModel):
    id: int
    ts_ns: int
    kind: str = Field(description="dotted, most general first: source.malformed, link.lost")
    source: str
    severity: str = Field(description="info, warning or critical")
    message: str
    count: int = Field(description="occurrences this event stands for (a burst is one event)")
    details: dict[str, Any] = Field(default_factory=dict)


class EventPage(BaseModel):
    events: list[EventOut]
    next_after: int = Field(description="pass as `after` to get the following events")
