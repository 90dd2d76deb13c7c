"""OPC UA source configuration (pure)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

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
    tags: list[OpcUaTagConfig] = Field(default_factory=list)  # type: ignore[assignment]

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
