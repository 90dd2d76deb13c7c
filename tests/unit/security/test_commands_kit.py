"""Shared kit of the command gate tests (no tests here): a small plant's catalog, the
principals of each role, an in-memory device that counts the writes it applied, and a
gate over a real store and a real audit log in a temporary directory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isthmus.model.catalog import CatalogEntry, TagCatalog
from isthmus.model.clock import ManualClock
from isthmus.model.config import CommandsConfig, TagConfig
from isthmus.model.errors import IsthmusError
from isthmus.observe.events import EventLog
from isthmus.security.audit import AuditLog, AuditUnavailable, iter_records
from isthmus.security.commands import (
    CommandGate,
    CommandStore,
    LocalExecutor,
    Value,
)
from isthmus.security.rbac import Principal, Role

PREFIX = "acme/lyon"
SPEED = f"{PREFIX}/utilities/water/pumping/pump1/speed_sp"
FILL = f"{PREFIX}/packaging/line1/filling/filler/fill_volume_sp"
ENABLE = f"{PREFIX}/utilities/water/pumping/pump1/enable"
STATE = f"{PREFIX}/utilities/water/pumping/pump1/state"
COUNT = f"{PREFIX}/utilities/water/pumping/pump1/batch_count"
LABEL = f"{PREFIX}/utilities/water/pumping/pump1/label"
TEMP = f"{PREFIX}/utilities/water/pumping/pump1/temp_sp"
STEPPED = f"{PREFIX}/utilities/water/pumping/pump1/stepped_sp"
LINE_SPEED = f"{PREFIX}/packaging/line1/control/line_plc/line_speed_sp"

TAGS: list[dict[str, Any]] = [
    {"path": SPEED, "range": [0, 100], "write_limits": [5, 95], "writable": True,
     "criticality": "medium", "data_type": "float32"},
    {"path": FILL, "range": [250, 1000], "writable": True, "criticality": "critical"},
    {"path": ENABLE, "data_type": "bool", "writable": True, "criticality": "high"},
    {"path": STATE, "data_type": "int16", "range": [0, 4]},
    {"path": COUNT, "data_type": "int16", "writable": True},
    {"path": LABEL, "data_type": "string", "writable": True},
    {"path": TEMP, "data_type": "int16", "scale": 0.1, "writable": True, "range": [-5000, 5000]},
    {"path": STEPPED, "range": [0, 100], "writable": True, "max_step": 10, "min_interval": 5},
    {"path": LINE_SPEED, "range": [0, 600], "writable": True, "criticality": "high"},
]  # fmt: skip


def catalog(tags: list[dict[str, Any]] | None = None, source: str = "plc") -> TagCatalog:
    entries = []
    for i, raw in enumerate(tags or TAGS):
        cfg = TagConfig.model_validate({**raw, "path": raw["path"].split("/", 2)[2]})
        entries.append(CatalogEntry(i + 1, raw["path"], source, cfg))
    return TagCatalog(entries)


def who(role: Role | str, name: str | None = None, scopes: tuple[str, ...] = ()) -> Principal:
    role = Role(role)
    return Principal(name or str(role), role, scopes)


ADMIN = who(Role.ADMIN, "alice")
SUPERVISOR = who(Role.SUPERVISOR, "sam")
SUPERVISOR2 = who(Role.SUPERVISOR, "sue")
OPERATOR = who(Role.OPERATOR, "otto")
ENGINEER = who(Role.ENGINEER, "erin")
VIEWER = who(Role.VIEWER, "vic")
SECADMIN = who(Role.SECURITY_ADMIN, "sec")
UTILITIES_OP = who(Role.OPERATOR, "ute", (f"{PREFIX}/utilities",))
PACKAGING_ADMIN = who(Role.ADMIN, "pat", (f"{PREFIX}/packaging",))


class DeviceError(IsthmusError):
    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


MODES = ("ok", "refuse", "lost_before", "lost_after", "hang", "no_read", "clamp")
"""How the next write goes: applied and read back; refused by the device (failed);
connection lost before the device got it (uncertain, not applied); lost after the device
applied it (uncertain, applied); no answer (timeout, applied); applied but the read back
fails; applied, clamped by the device to 1.0 (mismatch)."""


@dataclass
class Device:
    """A Commander over an in-memory register map that counts what it applied."""

    name: str = "plc"
    values: dict[str, Value] = field(default_factory=dict)
    applied: list[tuple[str, Value]] = field(default_factory=list)
    mode: str = "ok"
    modes: Iterator[str] | None = None
    """If set, the mode of each write in turn (then ``mode`` is ignored)."""

    def _next(self) -> str:
        return next(self.modes, "ok") if self.modes is not None else self.mode

    async def write(self, tag: str | int, value: Value) -> None:
        mode = self._next()
        key = str(tag)
        self._read_fails = mode == "no_read"
        if mode == "refuse":
            raise DeviceError("exception 3: illegal data value", "failed")
        if mode == "lost_before":
            raise DeviceError("connection lost while sending", "uncertain")
        self.values[key] = 1.0 if mode == "clamp" else value
        self.applied.append((key, value))
        if mode == "lost_after":
            raise DeviceError("connection lost waiting for the answer", "uncertain")
        if mode == "hang":
            await asyncio.sleep(3600)

    async def read_back(self, tag: str | int, timeout: float) -> Value | None:  # noqa: ASYNC109
        if getattr(self, "_read_fails", False):
            return None
        return self.values.get(str(tag))


class BreakableAudit:
    """The real audit log, which a test can make unwritable."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.broken = False

    def append(self, action: str, *, actor: str | None, outcome: str = "ok", **details: Any) -> Any:
        if self.broken:
            raise AuditUnavailable("the audit log cannot be written: disk full (test)")
        return self.log.append(action, actor=actor, outcome=outcome, **details)


@dataclass
class Rig:
    gate: CommandGate
    device: Device
    clock: ManualClock
    audit: BreakableAudit
    store: CommandStore
    data_dir: Path
    events: EventLog
    current: dict[str, tuple[Value, int]]

    def records(self, action: str | None = None) -> list[dict[str, Any]]:
        out = list(iter_records(self.data_dir))
        return [r for r in out if action is None or r["action"] == action]

    def actions(self) -> list[str]:
        return [r["action"] for r in self.records()]


def rig(
    data_dir: Path,
    *,
    device: Device | None = None,
    clock: ManualClock | None = None,
    tags: list[dict[str, Any]] | None = None,
    config: CommandsConfig | None = None,
    audit: AuditLog | None = None,
) -> Rig:
    clock = clock or ManualClock()
    device = device or Device()
    cat = catalog(tags)
    store = CommandStore.open(data_dir)
    config = config or CommandsConfig(write_timeout=0.2, readback_timeout=0.2)
    executor = LocalExecutor(
        cat,
        lambda name: device if name == device.name else None,
        store,
        clock,
        write_timeout=config.write_timeout,
        readback_timeout=config.readback_timeout,
    )
    events = EventLog()
    breakable = BreakableAudit(audit or AuditLog(data_dir, clock=clock, events=events))
    current: dict[str, tuple[Value, int]] = {}
    gate = CommandGate(
        cat,
        store,
        executor,
        breakable,
        clock,
        config,
        current=lambda entry: current.get(entry.path),
        events=events,
    )
    executor.on_written = gate.record_written
    executor.on_result = gate.record_result
    return Rig(gate, device, clock, breakable, store, data_dir, events, current)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
