"""OPC UA subscription groups, arrays and enumerations in the config (pure)."""

from __future__ import annotations

import pytest

from isthmus.connectors.opcua.config import OpcUaSourceConfig
from isthmus.connectors.opcua.items import Item, plan_items
from isthmus.model.errors import ConfigError
from isthmus.model.loader import load_plant_config

PLANT = """\
version: 1
enterprise: acme
site: lyon
hierarchy:
  a:
    l:
      c: [e]
sources:
  - name: ua
    type: opcua
    endpoint: opc.tcp://127.0.0.1:4840/
    groups:
      - name: fast
        publishing_interval: 100ms
        sampling_interval: 50ms
        queue_size: 5
        deadband: {{type: absolute, value: 0.5}}
      - name: slow
        publishing_interval: 5s
{extra_group}
    tags:
      - path: a/l/c/e/speed
        node: ns=2;s=Speed
        group: fast
      - path: a/l/c/e/temps
        node: ns=2;s=Temps
        array_length: 3
        group: {group}
      - path: a/l/c/e/state
        node: ns=2;s=State
        enum: {{0: Stopped, 1: Running}}
      - path: a/l/c/e/temps.1
        node: ns=2;s=Other
"""


def load(text: str) -> OpcUaSourceConfig:
    _, sources = load_plant_config(text, "plant.yaml", {"opcua": OpcUaSourceConfig})
    (source,) = sources
    assert isinstance(source, OpcUaSourceConfig)
    return source


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return [str(i) for i in info.value.issues]


def test_groups_resolve_to_the_source_settings() -> None:
    source = load(PLANT.format(extra_group="", group="slow").replace("temps.1", "other"))
    fast = source.group("fast")
    assert (fast.publishing_interval, fast.sampling_interval, fast.queue_size) == (0.1, 0.05, 5)
    assert fast.deadband is not None and fast.deadband.type == "absolute"
    slow = source.group("slow")
    assert (slow.publishing_interval, slow.sampling_interval, slow.queue_size) == (5.0, 0.1, 10)
    default = source.group(None)
    assert default.name == "default" and default.deadband is None
    assert default.publishing_interval == source.publishing_interval


def test_array_expands_in_place_and_at_the_end() -> None:
    source = load(PLANT.format(extra_group="", group="slow").replace("temps.1", "other"))
    paths = [(t.path, t.index, t.group) for t in source.tags]
    assert paths == [
        ("a/l/c/e/speed", None, "fast"),
        ("a/l/c/e/temps.0", 0, "slow"),
        ("a/l/c/e/state", None, None),
        ("a/l/c/e/other", None, None),
        ("a/l/c/e/temps.1", 1, "slow"),
        ("a/l/c/e/temps.2", 2, "slow"),
    ]
    assert source.tags[2].enum == {0: "Stopped", 1: "Running"}
    # validating the expanded config again changes nothing (no second expansion)
    again = OpcUaSourceConfig.model_validate(source.model_dump())
    assert [t.path for t in again.tags] == [t.path for t in source.tags]


def test_unknown_group_names_the_tag_field_and_line() -> None:
    found = issues(PLANT.format(extra_group="", group="fats").replace("temps.1", "other"))
    assert found == [
        "plant.yaml:28: sources.0.tags.1.group: group 'fats' is not declared in groups "
        "(declared: fast, slow)"
    ]


def test_duplicate_group_and_bad_deadband_are_located() -> None:
    extra = "      - name: fast\n        deadband: {type: percent, value: 150}"
    found = issues(PLANT.format(extra_group=extra, group="slow").replace("temps.1", "other"))
    assert found == [
        "plant.yaml:21: sources.0.groups.2.deadband: a percent deadband is at most 100"
    ]
    extra = "      - name: fast"
    found = issues(PLANT.format(extra_group=extra, group="slow").replace("temps.1", "other"))
    assert found == ["plant.yaml:20: sources.0.groups.2.name: group 'fast' is declared twice"]


def test_an_element_name_colliding_with_a_tag_is_reported() -> None:
    found = issues(PLANT.format(extra_group="", group="slow"))
    assert any("'a/l/c/e/temps.1' is already mapped" in f for f in found), found


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ({"index": 1, "array_length": 2}, "exclude each other"),
        ({"array_length": 0}, "greater than or equal to 1"),
        ({"index": -1}, "greater than or equal to 0"),
        ({"index": 1, "writable": True}, "read-only"),
        ({"deadband": -1}, "greater than or equal to 0"),
    ],
)
def test_bad_array_fields(tag: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OpcUaSourceConfig.model_validate(
            {
                "name": "ua",
                "endpoint": "opc.tcp://h:4840",
                "tags": [{"path": "a/l/c/e/t", "node": "ns=2;s=T", **tag}],
            }
        )


def test_items_share_one_array_node_per_group() -> None:
    source = OpcUaSourceConfig.model_validate(
        {
            "name": "ua",
            "endpoint": "opc.tcp://h:4840",
            "groups": [{"name": "g"}],
            "tags": [
                {"path": "a/l/c/e/arr", "node": "ns=2;s=A", "array_length": 2},
                {"path": "a/l/c/e/x", "node": "ns=2;s=X"},
                {"path": "a/l/c/e/fifth", "node": "ns=2;s=A", "index": 5},
                {"path": "a/l/c/e/other", "node": "ns=2;s=A", "index": 0, "group": "g"},
                {"path": "a/l/c/e/x2", "node": "ns=2;s=X"},
            ],
        }
    )
    # tags: arr.0, x, fifth, other, x2, arr.1
    assert plan_items(source.tags) == [
        Item("ns=2;s=A", None, (0, 2, 5), (0, 5, 1)),
        Item("ns=2;s=X", None, (1,)),
        Item("ns=2;s=A", "g", (3,), (0,)),
        Item("ns=2;s=X", None, (4,)),
    ]


def test_enum_labels_are_served_with_the_tag() -> None:
    from isthmus.api.routers.tags import tag_out
    from isthmus.model.catalog import CatalogEntry

    source = load(PLANT.format(extra_group="", group="slow").replace("temps.1", "other"))
    state = next(t for t in source.tags if t.path.endswith("/state"))
    out = tag_out(CatalogEntry(7, f"acme/lyon/{state.path}", "ua", state))
    assert out.enum == {0: "Stopped", 1: "Running"}
    assert out.model_dump(mode="json")["enum"] == {"0": "Stopped", "1": "Running"}
