"""Response and request models: the OpenAPI contract."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from isthmus.model.values import JsonValue

Value = JsonValue
"""A sample value typed by the tag's data type; ``null`` when not a finite number."""


# Patterns of the strings the API takes: the schema says exactly what a field accepts, so
# a request valid by the schema is never refused for its syntax.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
PATH_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT})*$"
"""A full UNS path: segments as ``isthmus.model.config.SEGMENT`` allows them."""
SCOPE_PATTERN = rf"^/?{_SEGMENT}(/{_SEGMENT})*/?$"
"""A hierarchy prefix (``acme/lyon/utilities``) as ``rbac.normalize_scope`` reads it."""
_DURATION = r"[0-9]{1,15}(\.[0-9]{1,9})?(ns|us|ms|s|min|m|h|d|w)?"
DURATION_PATTERN = rf"^{_DURATION}$"
"""What ``isthmus.model.durations.parse_duration_ns`` reads: ``500ms``, ``10s``, ``1m``
(ASCII digits: a JSON Schema ``\\d`` would let generators draw other scripts' digits)."""
_ISO = (
    r"(19[7-9][0-9]|2[01][0-9]{2}|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])?)?"
)
TIME_PATTERN = rf"^(now|-{_DURATION}|{_ISO})$"
"""``now``, ``-10m`` (before now) or an ISO 8601 date or time (UTC unless it says), in
1970-2259: what ``isthmus.model.durations.parse_time_ns`` reads."""


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
    write_limits: tuple[float, float] | None = Field(
        default=None, description="commands only inside [low, high] (within the range)"
    )
    max_step: float | None = Field(default=None, description="largest change per command")
    min_interval: float | None = Field(
        default=None, description="seconds between two commands to the tag"
    )


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
