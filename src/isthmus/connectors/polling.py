"""Poll groups, shared by the connectors that poll (Modbus TCP, S7): tags read at their
own rates — the configuration, and the fixed-rate scheduler that runs them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from isthmus.model.config import SourceConfig, TagConfig, check_segment
from isthmus.model.durations import Duration
from isthmus.observe.metrics import Metrics

PlanT = TypeVar("PlanT")


class PolledTagConfig(TagConfig):
    poll_group: str | None = Field(
        default=None, description="a name from the source's poll_groups; default: poll_interval"
    )


class PolledSourceConfig(SourceConfig):
    poll_interval: Duration = Field(
        default=1.0, description="period of tags without poll_group (fixed rate; 0: flat out)"
    )
    poll_groups: dict[str, Duration] = Field(
        default={},  # pydantic copies mutable defaults per instance
        description="named poll rates, e.g. {fast: 100ms, slow: 10s}; tags pick one",
    )
    tags: list[PolledTagConfig] = Field(default_factory=list)  # type: ignore[assignment]

    @field_validator("poll_groups")
    @classmethod
    def _group_names(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            check_segment(name)
        return value

    def poll_group_errors(self) -> list[InitErrorDetails]:
        """One error per tag naming an undeclared group, located at ``tags.N.poll_group``
        (a connector's validator raises them with its own, as one ValidationError)."""
        errors: list[InitErrorDetails] = []
        declared = ", ".join(sorted(self.poll_groups)) or "none"
        for i, tag in enumerate(self.tags):
            if tag.poll_group is not None and tag.poll_group not in self.poll_groups:
                message = (
                    f"poll group {tag.poll_group!r} is not declared in poll_groups "
                    f"(declared: {declared})"
                )
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError("unknown_poll_group", message),
                        loc=("tags", i, "poll_group"),
                        input=tag.poll_group,
                    )
                )
        return errors

    def group_interval(self, group: str | None) -> float:
        """The poll period of a poll group (``None``: the default group)."""
        return self.poll_interval if group is None else self.poll_groups[group]


@dataclass(frozen=True, slots=True, eq=False)
class PollGroup(Generic[PlanT]):
    """Tags polled together at one rate: one read plan, one batch per cycle."""

    name: str | None
    """``None``: the default group (tags without ``poll_group``, at ``poll_interval``)."""
    interval: float
    plan: PlanT

    @property
    def label(self) -> str:
        return self.name or "default"


def group_tag_ids(groups: Sequence[PollGroup]) -> npt.NDArray[np.int32]:  # type: ignore[type-arg]
    """Every tag id of the groups, in plan order (a plan has ``tag_ids``)."""
    if not groups:
        return np.empty(0, dtype=np.int32)
    return np.concatenate([g.plan.tag_ids for g in groups]).astype(np.int32, copy=False)


GroupT = TypeVar("GroupT", bound=PollGroup)  # type: ignore[type-arg]  # any plan type


async def poll_groups(
    groups: Sequence[GroupT],
    poll_once: Callable[[GroupT], Awaitable[None]],
    metrics: Metrics,
    prefix: str,
) -> None:
    """Poll every group at its own fixed rate until one of them raises (the connection is
    lost): that exception propagates and the other groups are stopped.  No group: idle
    until cancelled.  Metrics: ``<prefix>.cycle_seconds[.<group>]``, ``<prefix>.overruns``."""
    if not groups:
        await asyncio.Event().wait()
    if len(groups) == 1:
        await _fixed_rate(groups[0], poll_once, metrics, prefix)
        return
    tasks = [asyncio.create_task(_fixed_rate(g, poll_once, metrics, prefix)) for g in groups]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _fixed_rate(
    group: GroupT, poll_once: Callable[[GroupT], Awaitable[None]], metrics: Metrics, prefix: str
) -> None:
    """One group's schedule: cycles start on a fixed grid; an overrun skips the missed
    slots (counted) and keeps the phase.  Interval 0: as fast as possible (benchmarks)."""
    loop = asyncio.get_running_loop()
    interval = group.interval
    m_cycle = f"{prefix}.cycle_seconds" + ("" if group.name is None else f".{group.name}")
    m_overruns = f"{prefix}.overruns"
    next_at = loop.time()
    while True:
        started = loop.time()
        await poll_once(group)
        now = loop.time()
        metrics.set(m_cycle, now - started)
        if interval <= 0:
            await asyncio.sleep(0)
            continue
        next_at += interval
        if next_at < now:
            missed = int((now - next_at) // interval) + 1
            next_at += missed * interval
            metrics.inc(m_overruns, missed)
        await asyncio.sleep(next_at - now)
