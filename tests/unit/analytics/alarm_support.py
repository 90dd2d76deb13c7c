"""A small plant for the alarm tests: its equipment, tags and tag ids, and helpers that
feed samples to an evaluator at times given in seconds after T0."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from isthmus.analytics.alarms.evaluator import AlarmEvaluator
from isthmus.analytics.alarms.model import AlarmDefinition, AlarmSettings, parse_alarms
from isthmus.analytics.alarms.state import JournalEntry
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.config import DataType, TagConfig
from isthmus.model.quality import Quality

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000

EQUIPMENT = [
    "utilities/water/pumping/pump1",
    "utilities/water/pumping/pump2",
    "utilities/water/metering/energy_meter",
    "packaging/line1/filling/filler",
    "packaging/line1/control/line_plc",
]
_TAGS: dict[str, DataType] = {
    "utilities/water/pumping/pump1/flow": DataType.FLOAT64,
    "utilities/water/pumping/pump1/vibration": DataType.FLOAT64,
    "utilities/water/pumping/pump1/running": DataType.BOOL,
    "utilities/water/pumping/pump2/flow": DataType.FLOAT64,
    "utilities/water/pumping/pump2/vibration": DataType.FLOAT64,
    "utilities/water/pumping/pump2/running": DataType.BOOL,
    "utilities/water/metering/energy_meter/power": DataType.FLOAT64,
    "packaging/line1/filling/filler/fill_volume": DataType.FLOAT64,
    "packaging/line1/filling/filler/fill_volume_sp": DataType.FLOAT64,
    "packaging/line1/filling/filler/state": DataType.INT16,
    "packaging/line1/filling/filler/recipe": DataType.STRING,
    "packaging/line1/control/line_plc/line_speed": DataType.FLOAT64,
}
TAGS: dict[str, TagConfig] = {
    path: TagConfig(
        path=path,
        data_type=kind,
        range=(0.0, 200.0) if kind is DataType.FLOAT64 else None,
    )
    for path, kind in _TAGS.items()
}
TAG_IDS: dict[str, int] = {path: i for i, path in enumerate(sorted(TAGS))}

FLOW1 = "utilities/water/pumping/pump1/flow"
VIB1 = "utilities/water/pumping/pump1/vibration"
RUN1 = "utilities/water/pumping/pump1/running"
VIB2 = "utilities/water/pumping/pump2/vibration"
RUN2 = "utilities/water/pumping/pump2/running"
FILL = "packaging/line1/filling/filler/fill_volume"
FILL_SP = "packaging/line1/filling/filler/fill_volume_sp"
STATE = "packaging/line1/filling/filler/state"
SPEED = "packaging/line1/control/line_plc/line_speed"


def definitions(alarms: Sequence[Mapping[str, Any]]) -> list[AlarmDefinition]:
    return parse_alarms(alarms, enterprise="acme", site="lyon", equipment=EQUIPMENT, tags=TAGS)


def evaluator(
    alarms: Sequence[Mapping[str, Any]],
    clock: ManualClock | None = None,
    settings: AlarmSettings | None = None,
    lateness: float = 0.0,
) -> AlarmEvaluator:
    return AlarmEvaluator(
        definitions(alarms),
        TAG_IDS,
        clock or ManualClock(T0),
        settings=settings,
        lateness=lateness,
        start_ns=T0,
    )


def at(seconds: float) -> int:
    return T0 + round(seconds * S)


def batch(rows: Sequence[tuple[str, float, float] | tuple[str, float, float, int]]) -> Batch:
    """Rows of (path, seconds after T0, value[, quality])."""
    return Batch.of(
        [TAG_IDS[r[0]] for r in rows],
        [at(r[1]) for r in rows],
        [r[2] for r in rows],
        [r[3] if len(r) > 3 else Quality.GOOD for r in rows],  # type: ignore[misc]
    )


def feed(
    ev: AlarmEvaluator, path: str, seconds: float, value: float, quality: int = Quality.GOOD
) -> list[JournalEntry]:
    return ev.process(batch([(path, seconds, value, quality)]))


def events(entries: Sequence[JournalEntry]) -> list[tuple[str, str, str]]:
    """(event, from, to) of each entry, for compact assertions."""
    return [(e.event.value, e.from_state.value, e.to_state.value) for e in entries]
