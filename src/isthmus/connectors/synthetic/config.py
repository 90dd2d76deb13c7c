"""Synthetic source configuration (pure)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from isthmus.model.config import SourceConfig
from isthmus.model.durations import Duration


class SyntheticSourceConfig(SourceConfig):
    type: Literal["synthetic"] = Field(description="synthetic")
    period: Duration = Field(
        default=0.01, gt=0, description="one sample per tag every period (aligned on it)"
    )
    emit_interval: Duration = Field(
        default=0.05, gt=0, description="how often a batch of the elapsed periods is emitted"
    )
    max_ticks_per_emit: int = Field(
        default=1000, ge=1, description="catch-up bound: periods emitted at most per batch"
    )
