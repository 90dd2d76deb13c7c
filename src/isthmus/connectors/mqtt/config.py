"""MQTT source configuration (pure)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from isthmus.connectors.mqtt.command import DEFAULT_PAYLOAD, check_template, check_topic
from isthmus.connectors.mqtt.mapping import (
    PathError,
    TemplateError,
    parse_path,
    parse_topic,
    template_regex,
    template_variables,
)
from isthmus.model.config import MqttBroker, SourceConfig, Strict, TagConfig
from isthmus.model.durations import Duration


class MqttCommand(Strict):
    """Where a writable tag's commands are published (see :mod:`.command`)."""

    topic: str = Field(
        description="topic template; placeholders {value} {path} {tag} {ts}, no wildcard"
    )
    payload: str = Field(
        default=DEFAULT_PAYLOAD,
        description="payload template; {value} is JSON (a number, true/false or a quoted "
        "string), {path} {tag} {ts} as text",
    )
    qos: Literal[0, 1] = Field(
        default=1, description="1: the write waits for the broker's PUBACK; 0: no acknowledgement"
    )
    retain: bool = Field(default=False, description="publish the command retained")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value)

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: str) -> str:
        return check_template(value, "payload")


class MqttTagConfig(TagConfig):
    """MQTT tags have no addressing of their own: subscriptions map messages onto them.
    A writable tag says where its commands go (``command``)."""

    command: MqttCommand | None = Field(
        default=None,
        description="writable tags: {topic, payload, qos, retain} of the command message",
    )


class MqttValueMap(Strict):
    field: str = Field(
        default="$", description="JSON path of the value in the payload ($: the whole payload)"
    )
    tag: str = Field(
        description="tag path template, e.g. packaging/{line}/filling/{machine}/temperature"
    )

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        try:
            parse_path(value)
        except PathError as exc:
            raise ValueError(str(exc)) from None
        return value


class MqttSubscription(Strict):
    topic: str = Field(
        description="topic template: {name} captures a level, + and a final # are wildcards"
    )
    qos: Literal[0, 1] = Field(default=0, description="subscription QoS (0 or 1)")
    values: list[MqttValueMap] = Field(
        min_length=1, description="which payload fields go to which tags"
    )
    timestamp: str | None = Field(
        default=None,
        description="JSON path of the source timestamp (ISO 8601 or epoch ms); "
        "absent: the receive time",
    )
    quality: str | None = Field(
        default=None,
        description="JSON path of a quality (Good/Uncertain/Bad, a name, a status code "
        "or a boolean); absent: Good",
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        try:
            parse_topic(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("timestamp", "quality")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_path(value)
            except PathError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _variables(self) -> MqttSubscription:
        have = set(parse_topic(self.topic).variables)
        for value in self.values:
            missing = template_variables(value.tag) - have
            if missing:
                names = ", ".join(sorted(missing))
                raise ValueError(
                    f"tag template {value.tag!r} uses {names} which topic {self.topic!r} "
                    "does not capture"
                )
        return self


class MqttSourceConfig(SourceConfig, MqttBroker):
    can_command: ClassVar[bool] = True  # writable tags publish to their command topic
    type: Literal["mqtt"] = Field(default="mqtt", description="this connector: mqtt")
    client_id: str = Field(
        default="", description="MQTT client id; empty: isthmus-<source name>. Must be unique"
    )
    clean_session: bool = Field(
        default=True, description="false: the broker keeps QoS 1 messages while we are away"
    )
    batch_interval: Duration = Field(
        default=0.05, description="longest time messages are collected into one batch"
    )
    batch_max: int = Field(default=1000, ge=1, le=100_000, description="most values in one batch")
    max_queued_messages: int = Field(
        default=10_000,
        ge=10,
        description="bound of the incoming message queue; beyond it the oldest are dropped",
    )
    subscriptions: list[MqttSubscription] = Field(
        min_length=1, description="topic templates and how their payloads map onto tags"
    )
    tags: list[MqttTagConfig] = Field(default_factory=list)  # type: ignore[assignment]

    def reference_issues(self) -> list[tuple[tuple[str | int, ...], str]]:
        """A value map whose tag template can match none of this source's tags would
        silently map nothing; a writable tag without ``command`` could never be written:
        errors naming the field."""
        issues = super().reference_issues()
        for t, tag in enumerate(self.tags):
            if tag.writable and tag.command is None:
                issues.append(
                    (
                        ("tags", t, "writable"),
                        f"writable tag {tag.path!r} has no command: give command: {{topic: "
                        "..., payload: ...}} (where its commands are published)",
                    )
                )
        paths = [t.path for t in self.tags]
        for s, sub in enumerate(self.subscriptions):
            for v, value in enumerate(sub.values):
                pattern = template_regex(value.tag)
                if not any(pattern.fullmatch(path) for path in paths):
                    issues.append(
                        (
                            ("subscriptions", s, "values", v, "tag"),
                            f"tag template {value.tag!r} matches none of the tags of source "
                            f"{self.name!r}; declare the tag under its tags:",
                        )
                    )
        return issues
