"""Alarm definitions: validation naming the field, templates expanded at load time."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus.analytics.alarms.model import (
    AlarmConfigError,
    AlarmSettings,
    AlarmType,
    Priority,
    parse_alarms,
)
from isthmus.analytics.alarms.state import BadInputPolicy

from .alarm_support import EQUIPMENT, FLOW1, TAGS, definitions


def issues(alarms: list[dict[str, Any]]) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(AlarmConfigError) as info:
        definitions(alarms)
    print(info.value)
    return info.value.issues


def test_the_interface_contract_entry_loads() -> None:
    (d,) = definitions(
        [
            {
                "name": "pump1_flow_high",
                "tag": FLOW1,
                "type": "high",
                "limit": 120,
                "deadband": 2,
                "on_delay": "0s",
                "off_delay": "0s",
                "priority": "high",
                "message": "Pump 1 flow high",
                "cause": "discharge valve open too far",
                "consequence": "cavitation upstream",
                "corrective_action": "throttle the discharge valve to 80 %",
                "time_to_respond": "10m",
                "bad_input": "bad_input",
            }
        ]
    )
    assert d.name == "pump1_flow_high"
    assert d.tag == FLOW1
    assert d.type is AlarmType.HIGH and d.priority is Priority.HIGH
    assert d.equipment == "utilities/water/pumping/pump1" and d.area == "utilities"
    assert d.config.time_to_respond == 600.0
    assert d.config.corrective_action.startswith("throttle")
    lc = d.lifecycle()
    assert lc.alarm == "pump1_flow_high" and lc.bad_input is BadInputPolicy.RAISE
    assert lc.max_shelve_ns == 4 * 3600 * 10**9  # high: 4 h by default


def test_full_uns_paths_and_relative_references_resolve_below_the_site() -> None:
    (d,) = definitions(
        [
            {
                "name": "dry_run",
                "type": "expression",
                "tag": "acme/lyon/utilities/water/pumping/pump1/flow",
                "expression": "running and flow < 5 and "
                "'acme/lyon/packaging/line1/control/line_plc/line_speed' > 0",
                "suppress_when": "'utilities/water/pumping/pump2/running'",
            }
        ]
    )
    assert d.tag == FLOW1
    assert d.expression is not None
    assert d.expression.refs() == [
        "utilities/water/pumping/pump1/running",
        FLOW1,
        "packaging/line1/control/line_plc/line_speed",
    ]
    assert d.suppression_inputs() == ["utilities/water/pumping/pump2/running"]


def test_a_template_expands_per_equipment_each_instance_addressable() -> None:
    found = definitions(
        [
            {
                "name": "vibration_high",
                "equipment": ["pump*"],
                "tag": "vibration",
                "type": "high",
                "limit": 7.1,
                "suppress_when": "not running",
                "corrective_action": "check the bearings",
            }
        ]
    )
    assert [d.name for d in found] == [
        "vibration_high/utilities/water/pumping/pump1",
        "vibration_high/utilities/water/pumping/pump2",
    ]
    assert [d.tag for d in found] == [
        "utilities/water/pumping/pump1/vibration",
        "utilities/water/pumping/pump2/vibration",
    ]
    assert found[1].suppression_inputs() == ["utilities/water/pumping/pump2/running"]
    assert {d.template for d in found} == {"vibration_high"}
    # full patterns match segment by segment: '*' never spans a '/'
    only = definitions(
        [
            {
                "name": "t",
                "equipment": ["utilities/*/pumping/pump2"],
                "tag": "flow",
                "type": "low",
                "limit": 1,
            }
        ]
    )
    assert [d.name for d in only] == ["t/utilities/water/pumping/pump2"]


@pytest.mark.parametrize(
    ("entry", "field", "fragment"),
    [
        ({"type": "high"}, "limit", "needs a limit"),
        ({"type": "high", "limit": 1, "state": 1}, "state", "takes no state"),
        ({"type": "discrete", "limit": 1}, "limit", "takes no limit"),
        ({"type": "deviation", "limit": 5}, "setpoint", "needs a setpoint"),
        ({"type": "deviation", "limit": 5, "setpoint": "x", "deadband": 5}, "deadband", "never"),
        ({"type": "rate", "limit": 0}, "limit", "positive"),
        ({"type": "stale"}, "duration", "positive duration"),
        ({"type": "stale", "duration": "10s", "deadband": 1}, "deadband", "no deadband"),
        ({"type": "expression"}, "expression", "needs an expression"),
        ({"type": "expression", "expression": "a.b > 1"}, "expression", "column 1"),
        ({"type": "high", "limit": 1, "suppress_when": "f(x)"}, "suppress_when", "calls"),
        ({"type": "high", "limit": 1, "priority": "urgent"}, "priority", "critical"),
        ({"type": "high", "limit": 1, "on_delay": "soon"}, "on_delay", "duration"),
        ({"type": "high", "limit": 1, "deadband": -1}, "deadband", "greater than"),
        ({"type": "high", "limit": 1, "colour": "red"}, "colour", "not permitted"),
        ({"type": "high", "limit": 1, "tag": "a/b"}, "tag", "not a tag path"),
        ({"type": "low", "limit": 1, "equipment": []}, "equipment", "at least one"),
        ({"type": "teleport"}, "type", "high_high"),
    ],
)
def test_validation_errors_name_the_field(entry: dict[str, Any], field: str, fragment: str) -> None:
    raw = {"name": "a1", "tag": FLOW1, **entry}
    found = issues([raw])
    assert any(loc[:3] == ("alarms", 0, field) and fragment in msg for loc, msg in found), found


def test_cross_checks_are_collected_together_and_name_the_entry() -> None:
    found = issues(
        [
            {"name": "ok", "tag": FLOW1, "type": "high", "limit": 1},
            {"name": "ok", "tag": FLOW1, "type": "low", "limit": 1},
            {
                "name": "ghost",
                "tag": "utilities/water/pumping/pump9/flow",
                "type": "high",
                "limit": 1,
            },
            {
                "name": "text",
                "tag": "packaging/line1/filling/filler/recipe",
                "type": "high",
                "limit": 1,
            },
            {
                "name": "flag",
                "tag": "utilities/water/pumping/pump1/running",
                "type": "high",
                "limit": 1,
            },
            {"name": "wide", "tag": FLOW1, "type": "high", "limit": 10, "deadband": 20},
            {"name": "none", "equipment": ["valve*"], "tag": "x", "type": "high", "limit": 1},
            {"name": "rel", "type": "expression", "expression": "flow > 1"},
            {
                "name": "elsewhere",
                "type": "expression",
                "expression": "'acme/paris/utilities/water/pumping/pump1/flow' > 1",
            },
            {"name": "bad", "type": "high"},
        ]
    )
    by_entry = {loc[1]: (loc[2], msg) for loc, msg in found}
    assert by_entry[1][0] == "name" and "duplicate" in by_entry[1][1]
    assert by_entry[2] == ("tag", "unknown tag 'utilities/water/pumping/pump9/flow'")
    assert by_entry[3][0] == "type" and "string tag" in by_entry[3][1]
    assert by_entry[4][0] == "type" and "use type discrete" in by_entry[4][1]
    assert by_entry[5][0] == "deadband" and "never clear" in by_entry[5][1]
    assert by_entry[6][0] == "equipment" and "matches no equipment" in by_entry[6][1]
    assert by_entry[7][0] == "expression" and "relative to an equipment" in by_entry[7][1]
    assert by_entry[8][0] == "expression" and "not a tag of acme/lyon" in by_entry[8][1]
    assert by_entry[9][0] == "limit"
    assert 0 not in by_entry


def test_template_instances_report_their_equipment() -> None:
    found = issues(
        [{"name": "t", "equipment": ["*/*/*/*"], "tag": "vibration", "type": "high", "limit": 1}]
    )
    # only the pumps have a vibration tag: the others are named with their equipment
    assert len(found) == len(EQUIPMENT) - 2
    assert all(loc == ("alarms", 0, "tag") and "(equipment " in msg for loc, msg in found)


def test_unknown_tags_are_not_checked_without_a_tag_table() -> None:
    found = parse_alarms(
        [{"name": "a", "tag": "x/y/z/w/v", "type": "high", "limit": 1}],
        enterprise="acme",
        site="lyon",
        equipment=[],
    )
    assert found[0].tag == "x/y/z/w/v"


def test_shelving_limits_per_priority() -> None:
    settings = AlarmSettings.model_validate({"max_shelve": {"critical": "15m"}})
    assert settings.max_shelve_ns(Priority.CRITICAL) == 15 * 60 * 10**9
    assert settings.max_shelve_ns(Priority.LOW) == 24 * 3600 * 10**9
    assert TAGS  # the plant has tags
