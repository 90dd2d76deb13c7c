"""OPC UA source configuration (pure).

Subscription groups: every group is its own OPC UA subscription with its own
publishing interval, sampling interval, queue size and server-side data-change
deadband; tags pick one with ``group:``, the others form the default group (the
source-level settings).

Arrays: a tag reads one element of an array node (``index: N``), or a whole array of
known length (``array_length: N``) is expanded here, at validation, into N element
tags named ``<tag>.<i>`` (``[`` and ``]`` are not allowed in hierarchy names).  The
first element tag keeps the array tag's place in ``tags`` and the others are appended
at the end, so the positions (and so the file lines in error messages) of the tags
the file declares do not move.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from isthmus.model.config import DataType, SourceConfig, Strict, TagConfig, check_segment
from isthmus.model.durations import Duration

MAX_ARRAY_LENGTH = 10_000


class Deadband(Strict):
    """A data-change filter the *server* applies (OPC UA DataChangeFilter)."""

    type: Literal["absolute", "percent"] = Field(
        description="absolute: change in the value's units; percent: of the node's EURange"
    )
    value: float = Field(gt=0, description="the change below which the server sends nothing")

    @model_validator(mode="after")
    def _percent(self) -> Deadband:
        if self.type == "percent" and self.value > 100:
            raise ValueError("a percent deadband is at most 100")
        return self


class SubscriptionGroup(Strict):
    """Tags subscribed together: one OPC UA subscription."""

    name: str = Field(description="the name tags give in group:")
    publishing_interval: Duration | None = Field(
        default=None, description="this subscription's publishing interval; default: source's"
    )
    sampling_interval: Duration | None = Field(
        default=None, description="sampling interval of its items; default: source's"
    )
    queue_size: int | None = Field(
        default=None, ge=1, description="per monitored item; default: source's"
    )
    deadband: Deadband | None = Field(
        default=None, description="server-side data-change deadband of its items"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_segment(value)


class OpcUaTagConfig(TagConfig):
    node: str = Field(description="NodeId, e.g. ns=2;s=Line1.Filler.Speed")
    group: str | None = Field(
        default=None, description="a name from the source's groups; default: the source's settings"
    )
    index: int | None = Field(
        default=None, ge=0, description="array node: read this element (0-based)"
    )
    array_length: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ARRAY_LENGTH,
        description="array node: expand into tags <tag>.0 ... <tag>.N-1, one per element",
    )

    @field_validator("node")
    @classmethod
    def _node(cls, value: str) -> str:
        if not any(part in value for part in ("s=", "i=", "g=", "b=")):
            raise ValueError(f"{value!r} is not a NodeId (e.g. ns=2;s=Name or i=2258)")
        return value

    @model_validator(mode="after")
    def _array(self) -> OpcUaTagConfig:
        if self.index is not None and self.array_length is not None:
            raise ValueError(
                "index (one element) and array_length (every element) exclude each other"
            )
        if self.writable and (self.index is not None or self.array_length is not None):
            raise ValueError("array elements are read-only: remove writable")
        if self.data_type is DataType.STRING and (
            self.index is not None or self.array_length is not None
        ):
            raise ValueError("a string tag reads a scalar String node: remove index/array_length")
        return self

    def elements(self) -> list[OpcUaTagConfig]:
        """The element tags of an ``array_length`` tag; ``[self]`` otherwise."""
        if self.array_length is None:
            return [self]
        return [
            self.model_copy(update={"path": f"{self.path}.{i}", "index": i, "array_length": None})
            for i in range(self.array_length)
        ]


class OpcUaSourceConfig(SourceConfig):
    can_command: ClassVar[bool] = True  # the source is a Commander
    type: Literal["opcua"] = "opcua"
    endpoint: str = Field(description="opc.tcp://host:port[/path]")
    publishing_interval: Duration = Field(
        default=0.1, description="subscription publishing interval: one batch per publish"
    )
    sampling_interval: Duration = Field(
        default=0.1, description="requested sampling interval of every monitored item"
    )
    queue_size: int = Field(
        default=10, ge=1, description="per monitored item: changes kept between publishes"
    )
    timeout: Duration = Field(default=4.0, description="per request; bounds connect, subscribe")
    security_policy: Literal[
        "None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"
    ] = Field(default="None", description="secure channel policy; never downgraded")
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = Field(
        default="None", description="None with policy None; Sign or SignAndEncrypt otherwise"
    )
    identity: Literal["anonymous", "username", "certificate"] = Field(
        default="anonymous", description="user identity of the session"
    )
    username: str | None = Field(default=None, description="identity username: the user name")
    password_env: str | None = Field(
        default=None, description="identity username: environment variable with the password"
    )
    user_certificate: str | None = Field(
        default=None, description="identity certificate: user certificate file (DER or PEM)"
    )
    user_private_key: str | None = Field(
        default=None, description="identity certificate: its private key file (PEM)"
    )
    pki_dir: str | None = Field(
        default=None,
        description="our certificate and the trust stores; default DATA_DIR/pki",
    )
    reconnect_max: Duration = Field(default=30.0, description="cap of the reconnect backoff")
    fast_decode: bool = Field(
        default=True,
        description="decode numeric data changes straight to NumPy (asyncua's decoder otherwise)",
    )
    groups: list[SubscriptionGroup] = Field(
        default_factory=list,
        description="subscription groups: own intervals, queue size, server deadband",
    )
    tags: list[OpcUaTagConfig] = Field(default_factory=list)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _groups_and_arrays(self) -> OpcUaSourceConfig:
        errors: list[InitErrorDetails] = []
        seen: set[str] = set()
        for i, group in enumerate(self.groups):
            if group.name in seen:
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "duplicate_group", f"group {group.name!r} is declared twice"
                        ),
                        loc=("groups", i, "name"),
                        input=group.name,
                    )
                )
            seen.add(group.name)
        declared = ", ".join(sorted(seen)) or "none"
        for i, tag in enumerate(self.tags):
            if tag.group is not None and tag.group not in seen:
                message = f"group {tag.group!r} is not declared in groups (declared: {declared})"
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError("unknown_group", message),
                        loc=("tags", i, "group"),
                        input=tag.group,
                    )
                )
        if errors:
            # Raised as a ValidationError so each error names its own field.
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        if any(t.array_length is not None for t in self.tags):
            tags = list(self.tags)
            extra: list[OpcUaTagConfig] = []
            for i, tag in enumerate(self.tags):
                first, *rest = tag.elements()
                tags[i] = first
                extra.extend(rest)
            object.__setattr__(self, "tags", tags + extra)  # frozen model, still validating
        return self

    def group(self, name: str | None) -> SubscriptionGroup:
        """A group with every setting resolved (``None``: the default group)."""
        found = next((g for g in self.groups if g.name == name), None)
        base = found or SubscriptionGroup(name=name or "default")
        return SubscriptionGroup(
            name=base.name,
            publishing_interval=(
                self.publishing_interval
                if base.publishing_interval is None
                else base.publishing_interval
            ),
            sampling_interval=(
                self.sampling_interval if base.sampling_interval is None else base.sampling_interval
            ),
            queue_size=self.queue_size if base.queue_size is None else base.queue_size,
            deadband=base.deadband,
        )

    @model_validator(mode="after")
    def _security(self) -> OpcUaSourceConfig:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy and security_mode go together: both None, or a policy "
                "with Sign or SignAndEncrypt"
            )
        if self.identity == "username" and not (self.username and self.password_env):
            raise ValueError("identity username needs username and password_env")
        if self.identity == "certificate" and not (self.user_certificate and self.user_private_key):
            raise ValueError("identity certificate needs user_certificate and user_private_key")
        if self.identity != "anonymous" and self.security_policy == "None":
            raise ValueError(
                f"identity {self.identity} needs a security_policy other than None "
                "(credentials must not cross an unsecured channel)"
            )
        return self

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError("an OPC UA endpoint starts with opc.tcp://")
        return value
