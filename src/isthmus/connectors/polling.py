"""Poll groups, shared by the connectors that poll (Modbus TCP, S7): tags read at their
own rates.  Pure configuration; each connector schedules its groups at a fixed rate."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from isthmus.model.config import SourceConfig, TagConfig, check_segment
from isthmus.model.durations import Duration


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
