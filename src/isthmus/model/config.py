"""The plant configuration schema: one YAML file describes a plant.

Sections: the ISA-95 hierarchy (enterprise, site, area → line → cell → equipment),
``sources`` (connector instances with their tag maps; each ``type:`` is validated by
the model that connector registers), ``storage``, ``api``, ``pipeline`` and, for demos,
``simulator``.  Secrets never live here: they come from the environment or a file.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from isthmus.model.durations import Duration, TimeOfDay, parse_duration_s

SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TAG_PATH_DEPTH = 5  # area/line/cell/equipment/tag, below enterprise/site


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    """Text (a Modbus fixed-length string, an OPC UA String): stored as text, shown as
    text; no scale, range or aggregates."""


class Criticality(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


def check_segment(name: str) -> str:
    if not SEGMENT.match(name):
        raise ValueError(
            f"{name!r} is not a valid name: use letters, digits, '_', '-', '.' "
            "and start with a letter or digit"
        )
    return name


class TagConfig(Strict):
    """What every tag has, whatever protocol reads it.  Connectors extend it with
    their addressing fields (a Modbus register, an OPC UA node id...)."""

    path: str = Field(description="area/line/cell/equipment/tag, below the site")
    data_type: DataType = Field(default=DataType.FLOAT64, description="type at the source")
    unit: str = Field(default="", description="engineering unit shown with values (°C, m3/h)")
    description: str = Field(default="", description="free text for people")
    range: tuple[float, float] | None = Field(
        default=None, description="engineering range [low, high]; outside → Uncertain"
    )
    deadband: float = Field(default=0.0, ge=0, description="absolute change to record")
    scale: float = Field(default=1.0, description="engineering value = raw * scale + offset")
    offset: float = Field(default=0.0, description="see scale")
    writable: bool = Field(default=False, description="may receive commands (setpoints)")
    criticality: Criticality = Field(
        default=Criticality.LOW, description="how much a wrong value or command costs"
    )
    stale_after: Duration | None = Field(
        default=None, description="no update for this long → Uncertain_LastUsableValue"
    )
    retention_class: str | None = Field(
        default=None,
        description="a class of storage.retention.classes (how long its history is kept); "
        "null: the default",
    )
    enum: dict[int, str] | None = Field(
        default=None, description="labels of an enumeration's values: {0: Stopped, 1: Running}"
    )
    write_limits: tuple[float, float] | None = Field(
        default=None,
        description="commands only inside [low, high] (engineering units; inside range)",
    )
    max_step: float | None = Field(
        default=None, gt=0, description="largest change of the value one command may make"
    )
    min_interval: Duration | None = Field(
        default=None, description="shortest time between two commands to this tag"
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parts = value.split("/")
        if len(parts) != TAG_PATH_DEPTH:
            raise ValueError(
                f"{value!r} must have {TAG_PATH_DEPTH} segments: area/line/cell/equipment/tag"
            )
        for part in parts:
            check_segment(part)
        return value

    @property
    def value_type(self) -> DataType:
        """The type of the engineering value: the source type, unless scale or offset
        turn an integer register into a real number."""
        if self.data_type in (DataType.BOOL, DataType.STRING) or (
            self.scale == 1 and self.offset == 0
        ):
            return self.data_type
        return DataType.FLOAT64

    @field_validator("range")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] >= value[1]:
            raise ValueError("range low must be below range high")
        return value

    @model_validator(mode="after")
    def _string_tag(self) -> TagConfig:
        if self.data_type is DataType.STRING:
            if self.range is not None or self.scale != 1 or self.offset != 0:
                raise ValueError("a string tag takes no range, scale or offset")
            if self.deadband:
                raise ValueError("a string tag takes no deadband (every change is recorded)")
            if self.write_limits is not None or self.max_step is not None:
                raise ValueError("a string tag takes no write_limits or max_step")
        return self

    @model_validator(mode="after")
    def _write_limits(self) -> TagConfig:
        limits = self.write_limits
        if limits is None:
            return self
        if not limits[0] <= limits[1]:
            raise ValueError("write_limits low must not be above write_limits high")
        rng = self.range
        if rng is not None and not (rng[0] <= limits[0] and limits[1] <= rng[1]):
            raise ValueError(f"write_limits {list(limits)} must lie inside range {list(rng)}")
        return self


class SourceConfig(Strict):
    """The common part of every connector instance.  ``type`` selects the connector."""

    name: str = Field(description="unique source name (letters, digits, _ - .)")
    type: str = Field(description="the connector: see the sections below")
    zone: str | None = Field(default=None, description="security zone (later: conduits)")
    enabled: bool = Field(default=True, description="false: validated but not started")
    tags: list[TagConfig] = Field(default_factory=list, description="the tag map")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_segment(value)

    can_command: ClassVar[bool] = False
    """Whether this connector's source writes (a ``Commander``); connectors that do set
    it.  On one that does not, a ``writable: true`` tag is a configuration error."""

    def reference_issues(self) -> list[tuple[tuple[str | int, ...], str]]:
        """References inside this source that point nowhere (or promise what the
        connector cannot do), as (location below the source, message): the loader reports
        them with file, line and field.  A connector whose config refers to its own tags
        (MQTT value maps) extends this."""
        if type(self).can_command:
            return []
        return [
            (
                ("tags", t, "writable"),
                f"source type {self.type!r} cannot write to its device: "
                "remove writable: true (no command could reach this tag)",
            )
            for t, tag in enumerate(self.tags)
            if tag.writable
        ]


DAY_S = 86400.0
DEFAULT_RETENTION_CLASS = "default"


class RetentionPolicy(Strict):
    """How long each tier of a tag's history is kept: raw samples, then the 1-minute and
    1-hour rollups (avg/min/max/count/first/last) computed from them.  ``null``: forever."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    raw: Duration | None = Field(default=30 * DAY_S, description="raw samples kept")
    minute: Duration | None = Field(
        default=365 * DAY_S, alias="1m", description="1-minute rollups kept (key `1m`)"
    )
    hour: Duration | None = Field(
        default=3650 * DAY_S, alias="1h", description="1-hour rollups kept (key `1h`)"
    )

    @model_validator(mode="before")
    @classmethod
    def _stretch_unset(cls, value: object) -> object:
        """A tier left out is kept at least as long as the finer one given."""
        if not isinstance(value, dict):
            return value
        out = dict(value)
        finer: float | None = 0.0
        tiers = (("raw", "raw", 30 * DAY_S), ("1m", "minute", 365 * DAY_S))
        for key, name, default in (*tiers, ("1h", "hour", 3650 * DAY_S)):
            given = out.get(key, out.get(name, ...))
            if given is ...:
                stretched = None if finer is None else max(finer, default)
                out[key] = stretched
                finer = stretched
                continue
            try:
                finer = None if given is None else parse_duration_s(given)
            except (TypeError, ValueError):
                return value  # the field's own validation reports it
        return out

    @model_validator(mode="after")
    def _coarser_lives_longer(self) -> RetentionPolicy:
        forever = float("inf")
        raw, minute, hour = (
            forever if v is None else v for v in (self.raw, self.minute, self.hour)
        )
        if not raw <= minute <= hour:
            raise ValueError("keep each tier at least as long as the finer one (raw <= 1m <= 1h)")
        return self

    def seconds(self) -> dict[str, float | None]:
        """Retention per tier name (``raw``, ``1m``, ``1h``)."""
        return {"raw": self.raw, "1m": self.minute, "1h": self.hour}


class RetentionConfig(Strict):
    """Retention per tag class.  A bare duration (``retention: 90d``) is the raw
    retention of the default class, with the default rollup retention."""

    default: RetentionPolicy = Field(
        default=RetentionPolicy(), description="tags without retention_class"
    )
    classes: dict[str, RetentionPolicy] = Field(
        default_factory=dict, description="named classes a tag selects with retention_class"
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_duration(cls, value: object) -> object:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            # rollups are kept at least as long (RetentionPolicy stretches them)
            return {"default": {"raw": parse_duration_s(value)}}
        return value

    @field_validator("classes")
    @classmethod
    def _class_names(cls, value: dict[str, RetentionPolicy]) -> dict[str, RetentionPolicy]:
        for name in value:
            check_segment(name)
            if name == DEFAULT_RETENTION_CLASS:
                raise ValueError("'default' is set with retention.default, not in classes")
        return value

    def policy(self, name: str | None) -> RetentionPolicy:
        """The policy of a class (``None`` or ``default``: the default policy)."""
        if name is None or name == DEFAULT_RETENTION_CLASS:
            return self.default
        return self.classes[name]

    def names(self) -> set[str]:
        return {DEFAULT_RETENTION_CLASS, *self.classes}


class StorageConfig(Strict):
    type: str = Field(default="duckdb", description="historian backend: duckdb, sqlite or postgres")
    path: str = Field(default="historian.duckdb", description="relative to the data dir")
    retention: RetentionConfig = Field(
        default=RetentionConfig(),
        description="per tag class: how long raw samples and 1m/1h rollups are kept "
        "(a bare duration: raw retention of the default class)",
    )
    memory_limit: str = Field(default="256MB", description="engine cache cap")
    dsn_env: str = Field(
        default="ISTHMUS_PG_DSN",
        description="postgres: the environment variable holding the connection string",
    )
    layout: Literal["windows", "rows"] = Field(
        default="windows",
        description="postgres: windows (one row per tag and minute per write, arrays; "
        "the hub's fast layout) or rows (one row per sample)",
    )


class ApiTls(Strict):
    """HTTPS for the API and the UI: your certificate and key, or ``self_signed: true``
    (generated once in ``DATA_DIR/tls/``).  A key's password comes from the environment
    variable named by ``key_password_env``, never from this file."""

    cert: str | None = Field(
        default=None, description="PEM certificate (with its chain); relative: to the working dir"
    )
    key: str | None = Field(default=None, description="PEM private key of the certificate")
    key_password_env: str | None = Field(
        default=None, description="environment variable holding the key's password, if any"
    )
    self_signed: bool = Field(
        default=False, description="generate and reuse a self-signed certificate instead"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ApiTls:
        if self.self_signed:
            if self.cert is not None or self.key is not None:
                raise ValueError("give either cert and key, or self_signed: true, not both")
        elif self.cert is None or self.key is None:
            raise ValueError("give cert and key (PEM files), or self_signed: true")
        if self.self_signed and self.key_password_env is not None:
            raise ValueError("key_password_env is for your own key, not a self-signed one")
        return self


UserRole = Literal["viewer", "operator", "engineer", "supervisor", "security_admin", "admin"]
"""The six roles of ``isthmus.security.rbac.Role`` (OPC UA Part 3 mapping in the docs)."""


class LockoutConfig(Strict):
    """After ``attempts`` failed logins (each within ``minutes`` of the previous one) a
    username is locked for ``minutes``."""

    attempts: int = Field(default=5, ge=1, le=1000, description="failed logins before a lockout")
    minutes: float = Field(default=15.0, gt=0, le=7 * 24 * 60, description="lockout length")


class ApiConfig(Strict):
    host: str = Field(default="127.0.0.1", description="listen address (0.0.0.0: all)")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port of API and UI")
    token_ttl: Duration = Field(
        default=15 * 60.0, description="lifetime of an access token (refresh for a new one)"
    )
    idle_timeout: Duration = Field(
        default=30 * 60.0, description="a login session without requests for this long ends"
    )
    session_lifetime: Duration = Field(
        default=12 * 3600.0, description="a login session ends this long after the login"
    )
    lockout: LockoutConfig = Field(
        default=LockoutConfig(), description="lockout after failed logins: {attempts, minutes}"
    )
    mfa_required_roles: list[UserRole] = Field(
        default_factory=list, description="roles whose users must use a second factor (TOTP)"
    )
    tls: ApiTls | None = Field(
        default=None, description="HTTPS (with HSTS): {cert, key} or {self_signed: true}"
    )


class PipelineConfig(Strict):
    queue_batches: int = Field(default=256, ge=1, description="bound of each queue")
    stale_check_interval: Duration = Field(
        default=1.0, description="how often stale_after is checked"
    )
    flush_interval: Duration = Field(default=0.25, description="historian write cadence")


class SimulatorConfig(Strict):
    seed: int = Field(default=42, description="same seed, same plant behaviour")
    host: str = Field(default="127.0.0.1", description="listen address of both servers")
    opcua_port: int = Field(default=4840, ge=0, le=65535, description="OPC UA server port")
    modbus_port: int = Field(default=5020, ge=0, le=65535, description="Modbus TCP server port")
    tick: Duration = Field(default=0.1, description="model step")


class MqttBroker(Strict):
    """How to reach an MQTT broker: shared by the MQTT source and the UNS publisher.
    Passwords come from the environment variable named by ``password_env``."""

    host: str = Field(description="broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="broker port (TLS: often 8883)")
    keepalive: Duration = Field(default=30.0, description="MQTT keepalive")
    tls: bool = Field(default=False, description="connect with TLS (the broker is verified)")
    ca_file: str | None = Field(
        default=None, description="CA bundle that signs the broker (default: system CAs)"
    )
    cert_file: str | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: str | None = Field(default=None, description="client private key (mutual TLS)")
    username: str | None = Field(default=None, description="user name for the broker")
    password_env: str | None = Field(
        default=None, description="name of the environment variable holding the password"
    )
    timeout: Duration = Field(default=5.0, description="connect, subscribe and publish timeout")
    reconnect_max: Duration = Field(default=30.0, description="longest pause between attempts")
    max_packet_size: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=268_435_455,
        description="largest MQTT packet accepted from the broker (bytes); a larger one "
        "drops the connection",
    )

    @model_validator(mode="after")
    def _broker_auth(self) -> MqttBroker:
        if self.password_env is not None and self.username is None:
            raise ValueError("password_env needs a username")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise ValueError("ca_file/cert_file/key_file need tls: true")
        return self


class UnsConfig(MqttBroker):
    """Publishing the Unified Namespace: every tag's latest value and quality, retained,
    under its ISA-95 topic ``[prefix/]enterprise/site/area/line/cell/equipment/tag``."""

    type: Literal["mqtt"] = Field(default="mqtt", description="UNS transport: mqtt")
    client_id: str = Field(
        default="", description="MQTT client id; empty: isthmus-uns-<enterprise>-<site>"
    )
    qos: Literal[0, 1] = Field(default=1, description="publish QoS (0 or 1)")
    retain: bool = Field(
        default=True, description="retained: a new subscriber gets every tag's last value at once"
    )
    min_interval: Duration = Field(
        default=1.0,
        description="at most one publish per tag per interval; changes in between are "
        "coalesced to the newest",
    )
    prefix: str = Field(default="", description="topic prefix before enterprise, e.g. uns/v1")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if any(c in value for c in "+#\x00") or "//" in value:
            raise ValueError("prefix: no wildcards (+ #), NUL or empty levels")
        return value

    @model_validator(mode="after")
    def _auth(self) -> UnsConfig:
        if self.password_env is not None and self.username is None:
            raise ValueError("password_env needs a username")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise ValueError("ca_file/cert_file/key_file need tls: true")
        return self


class NatsStreamConfig(Strict):
    """The site's JetStream stream ``ISTHMUS_<SITE>`` (subject ``isthmus.<site>.batch``)."""

    replicas: Literal[1, 3] = Field(default=1, description="copies in the NATS cluster (1 or 3)")
    max_age: Duration = Field(default=7 * 86400.0, description="messages kept at most this long")
    max_bytes: int = Field(default=-1, ge=-1, description="stream size cap (-1: no cap)")
    duplicate_window: Duration = Field(
        default=120.0, description="how long message ids are remembered for de-duplication"
    )


class SpoolConfig(Strict):
    """The edge's durable spool: a sample is acknowledged once it is appended here."""

    dir: str = Field(default="spool", description="spool directory, relative to the data dir")
    max_bytes: int = Field(default=1 << 30, gt=0, description="byte cap (oldest data dropped)")
    max_age: Duration = Field(default=7 * 86400.0, description="age cap (oldest data dropped)")
    fsync: Literal["always", "batch", "never"] = Field(
        default="always", description="always: fdatasync before a batch counts as accepted"
    )


class TransportConfig(Strict):
    """Edge → hub over NATS JetStream.  Credentials come from environment variables."""

    type: Literal["nats"] = Field(default="nats", description="hub transport: nats")
    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"], description="NATS server URLs"
    )
    user: str | None = Field(default=None, description="NATS user name")
    password_env: str | None = Field(
        default=None, description="environment variable holding the NATS password"
    )
    token_env: str | None = Field(
        default=None, description="environment variable holding a NATS token"
    )
    creds_env: str | None = Field(
        default=None, description="environment variable holding the path of a .creds file"
    )
    stream: NatsStreamConfig = Field(default=NatsStreamConfig(), description="the site stream")
    spool: SpoolConfig = Field(default=SpoolConfig(), description="the edge spool")
    batch_samples: int = Field(
        default=20_000, ge=1, le=40_000, description="samples per message at most"
    )
    flush_interval: Duration = Field(
        default=0.1, description="edge: how long outbound batches are merged before spooling"
    )
    publish_window: int = Field(
        default=32, ge=1, le=4096, description="edge: publishes awaiting their ack at once"
    )
    ack_timeout: Duration = Field(
        default=5.0, description="edge: a publish not acknowledged by then is retried"
    )
    hub_consumer: str = Field(
        default="isthmus-hub", description="hub: durable consumer shared by all hubs"
    )
    sites: list[str] = Field(
        default_factory=list, description="hub: sites to consume (empty: every ISTHMUS_ stream)"
    )
    fetch_batch: int = Field(default=16, ge=1, le=1024, description="hub: messages per fetch")
    ack_wait: Duration = Field(
        default=30.0, description="hub: redelivered if not acknowledged within this"
    )

    @model_validator(mode="after")
    def _auth(self) -> TransportConfig:
        if self.password_env is not None and self.user is None:
            raise ValueError("password_env needs a user")
        if not self.servers:
            raise ValueError("servers: at least one NATS URL")
        return self


Hierarchy = dict[str, dict[str, dict[str, list[str]]]]
"""area → line → cell → [equipment]"""


_SPARKPLUG_ID = re.compile(r"^[^/+#\s]+$")


class SparkplugEdgeConfig(MqttBroker):
    """Publishing our own tags as a Sparkplug B edge node: one device per equipment
    (device id ``area:line:cell:equipment``), one metric per tag (name = the tag name)."""

    group: str = Field(description="Sparkplug group id")
    edge_node: str = Field(description="Sparkplug edge node id")
    client_id: str = Field(default="", description="MQTT client id; empty: isthmus-edge-<node>")
    qos: Literal[0, 1] = Field(default=0, description="QoS of NDATA/DDATA (births use 0 too)")
    queue_batches: int = Field(default=256, ge=1, description="local transport queue bound")
    data_datatype: bool = Field(
        default=True,
        description="include each metric's datatype in DDATA (Sparkplug 3.0 says it should "
        "not; decoders such as Eclipse Tahu JS need it); false: aliases and values only",
    )

    @field_validator("group", "edge_node")
    @classmethod
    def _ids(cls, value: str) -> str:
        if not _SPARKPLUG_ID.match(value):
            raise ValueError(f"id {value!r}: no '/', '+', '#' or spaces")
        return value


class ExportConfig(Strict):
    """The scheduled export to the data lake (the same files as ``isthmus export``)."""

    dest: str = Field(description="destination directory (relative: below the data dir)")
    format: Literal["parquet", "csv"] = Field(default="parquet", description="file format")
    tags: str | None = Field(
        default=None, description="glob over UNS paths (null: every tag), as --tags"
    )
    at: TimeOfDay = Field(
        default="00:30",
        validate_default=True,
        description='UTC time of day of the daily run, "HH:MM"',
    )
    days: int = Field(
        default=2,
        ge=1,
        le=366,
        description="whole UTC days before today (re)written by each run (late data, "
        "catch-up after downtime)",
    )


class CommandsConfig(Strict):
    """The command gate (see docs/commands.md)."""

    approval_timeout: Duration = Field(
        default=15 * 60.0, gt=0, description="a critical command not approved by then expires"
    )
    readback_timeout: Duration = Field(
        default=5.0, gt=0, description="longest wait for the value read back after a write"
    )
    write_timeout: Duration = Field(
        default=5.0, gt=0, description="longest wait for the device to confirm a write"
    )
    deliver_within: Duration = Field(
        default=30.0,
        gt=0,
        description="an accepted (or approved) command that has not reached its machine by "
        "then is refused as expired, never executed late (a cut-off edge site)",
    )


class PlantConfig(Strict):
    version: Literal[1] = Field(default=1, description="configuration format version")
    enterprise: str = Field(description="ISA-95 enterprise: first segment of every UNS path")
    site: str = Field(description="ISA-95 site: second segment of every UNS path")
    hierarchy: Hierarchy = Field(description="area → line → cell → [equipment]")
    sources: list[dict[str, Any]] = Field(
        default_factory=list, description="connector instances, each with its tag map"
    )
    storage: StorageConfig = Field(default=StorageConfig(), description="the historian")
    api: ApiConfig = Field(default=ApiConfig(), description="REST API and control tower")
    pipeline: PipelineConfig = Field(default=PipelineConfig(), description="queues, cadence")
    simulator: SimulatorConfig | None = Field(
        default=None, description="the plant simulator used by `isthmus demo` and `sim`"
    )
    uns: UnsConfig | None = Field(
        default=None, description="publish the Unified Namespace to an MQTT broker"
    )
    sparkplug_edge: SparkplugEdgeConfig | None = Field(
        default=None,
        description="publish every tag as a Sparkplug B edge node (one device per equipment)",
    )
    export: ExportConfig | None = Field(
        default=None, description="scheduled daily export to the data lake (Parquet/CSV)"
    )
    transport: TransportConfig | None = Field(
        default=None, description="edge → hub over NATS JetStream (roles edge and hub)"
    )
    commands: CommandsConfig = Field(
        default=CommandsConfig(), description="the command gate: approvals and timeouts"
    )

    @field_validator("enterprise", "site")
    @classmethod
    def _names(cls, value: str) -> str:
        return check_segment(value)

    @model_validator(mode="after")
    def _hierarchy_names(self) -> PlantConfig:
        for area, lines in self.hierarchy.items():
            check_segment(area)
            for line, cells in lines.items():
                check_segment(line)
                for cell, equipment in cells.items():
                    check_segment(cell)
                    for name in equipment:
                        check_segment(name)
        return self

    def equipment_paths(self) -> set[str]:
        """Every ``area/line/cell/equipment`` the hierarchy declares."""
        return {
            f"{area}/{line}/{cell}/{eq}"
            for area, lines in self.hierarchy.items()
            for line, cells in lines.items()
            for cell, equipment in cells.items()
            for eq in equipment
        }

    def uns_prefix(self) -> str:
        return f"{self.enterprise}/{self.site}"
