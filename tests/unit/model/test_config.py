"""Config validation: every error names file, line and field; valid configs load."""

from __future__ import annotations

import pytest

from isthmus.connectors.registry import default_connectors, source_models
from isthmus.model.errors import ConfigError
from isthmus.model.loader import load_plant_config

MODELS = source_models(default_connectors())

VALID = """\
version: 1
enterprise: acme
site: lyon
hierarchy:
  packaging:
    line1:
      filling: [filler]
sources:
  - name: plc1
    type: modbus
    host: 127.0.0.1
    port: 5020
    tags:
      - path: packaging/line1/filling/filler/speed
        address: 0
        data_type: float32
        unit: bpm
        range: [0, 600]
  - name: ua1
    type: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    tags:
      - path: packaging/line1/filling/filler/temp
        node: ns=2;s=Filler.Temp
        stale_after: 5s
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_plant_config(text, "plant.yaml", MODELS)
    return [str(i) for i in info.value.issues]


def test_valid_config_loads() -> None:
    plant, sources = load_plant_config(VALID, "plant.yaml", MODELS)
    assert plant.uns_prefix() == "acme/lyon"
    assert [s.name for s in sources] == ["plc1", "ua1"]
    assert sources[1].tags[0].stale_after == 5.0
    assert sources[0].tags[0].range == (0.0, 600.0)


def test_unknown_key_names_line_and_field() -> None:
    text = VALID.replace("    port: 5020\n", "    port: 5020\n    prot: 1\n")
    assert errors(text) == [
        "plant.yaml:13: sources.0.prot: unknown key (check the spelling; "
        "see the configuration reference)"
    ]


def test_wrong_type_names_line_and_field() -> None:
    text = VALID.replace("address: 0", "address: zero")
    (err,) = errors(text)
    assert err.startswith("plant.yaml:15: sources.0.tags.0.address: ")
    assert "integer" in err


def test_every_error_is_reported_at_once() -> None:
    text = VALID.replace("address: 0", "address: -1").replace("stale_after: 5s", "stale_after: x")
    text = text.replace("site: lyon", "site: lyon\nstorage: {retention: soon}")
    found = errors(text)
    assert len(found) == 3
    assert any("storage.retention" in e and "not a duration" in e for e in found)
    assert any("sources.0.tags.0.address" in e for e in found)
    assert any("sources.1.tags.0.stale_after" in e for e in found)


def test_unknown_source_type_lists_known_ones() -> None:
    (err,) = errors(VALID.replace("type: modbus", "type: profibus"))
    assert err == (
        "plant.yaml:10: sources.0.type: unknown source type 'profibus'; "
        "known types: modbus, mqtt, opcua, s7, sparkplug, synthetic"
    )


def test_tag_on_undeclared_equipment() -> None:
    (err,) = errors(VALID.replace("filling/filler/temp", "filling/capper/temp"))
    assert err.startswith("plant.yaml:23: sources.1.tags.0.path: equipment")
    assert "packaging/line1/filling/capper" in err


def test_duplicate_tag_path_and_source_name() -> None:
    text = VALID.replace("filling/filler/temp", "filling/filler/speed").replace(
        "name: ua1", "name: plc1"
    )
    found = errors(text)
    assert any("duplicate source name 'plc1'" in e and ":19:" in e for e in found)
    assert any("already mapped by source 'plc1'" in e for e in found)


def test_missing_required_field_points_at_parent() -> None:
    text = VALID.replace("    host: 127.0.0.1\n", "")
    (err,) = errors(text)
    assert err == "plant.yaml:9: sources.0.host: Field required"


def test_malformed_yaml_names_line() -> None:
    (err,) = errors("enterprise: acme\nsite: [lyon\nhierarchy: {}\n")
    assert err.startswith("plant.yaml:")
    assert "(yaml)" in err


def test_empty_and_non_mapping_files() -> None:
    assert errors("") == ["plant.yaml:1: (file): the file is empty"]
    assert errors("- a\n- b\n") == ["plant.yaml:1: (root): the top level must be a mapping"]


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("data_type: float32", "data_type: float128", "sources.0.tags.0.data_type"),
        ("range: [0, 600]", "range: [600, 0]", "sources.0.tags.0.range"),
        ("path: packaging/line1/filling/filler/speed", "path: speed", "sources.0.tags.0.path"),
        ("endpoint: opc.tcp://127.0.0.1:4840", "endpoint: http://x", "sources.1.endpoint"),
        ("node: ns=2;s=Filler.Temp", "node: Filler.Temp", "sources.1.tags.0.node"),
        ("enterprise: acme", "enterprise: 'a b'", "enterprise"),
        ("site: lyon", "site: lyon\nstorage: {type: postgres, layout: column}", "storage.layout"),
    ],
)
def test_field_rules(old: str, new: str, field: str) -> None:
    found = errors(VALID.replace(old, new))
    assert any(f": {field}: " in e for e in found), found


def test_modbus_bool_needs_bit_kind() -> None:
    text = VALID.replace("data_type: float32", "data_type: bool")
    (err,) = errors(text)
    assert "sources.0.tags.0" in err
    assert "coil or discrete" in err


def test_value_type_is_float_when_scaled() -> None:
    from isthmus.model.config import DataType, TagConfig

    def vt(**kw: object) -> DataType:
        return TagConfig.model_validate({"path": "a/l/c/e/t", **kw}).value_type

    assert vt(data_type="int16") is DataType.INT16
    assert vt(data_type="int16", scale=0.1) is DataType.FLOAT64
    assert vt(data_type="uint32", offset=-40) is DataType.FLOAT64
    assert vt(data_type="bool", scale=2) is DataType.BOOL


def test_uns_broker_settings_are_checked_like_the_mqtt_source() -> None:
    text = VALID + "uns: {host: broker, cert_file: c.pem, key_file: k.pem}\n"
    (err,) = errors(text)
    assert ": uns: " in err and "need tls: true" in err


MQTT = """\
version: 1
enterprise: acme
site: lyon
hierarchy:
  packaging:
    line1:
      filling: [filler1, filler2]
sources:
  - name: broker
    type: mqtt
    host: 127.0.0.1
    subscriptions:
      - topic: plant/{line}/{machine}/telemetry
        values:
          - field: $.temperature
            tag: packaging/{line}/filling/{machine}/temperature
          - field: $.pressure
            tag: packaging/{line}/filling/{machine}/pressure
    tags:
      - path: packaging/line1/filling/filler1/temperature
"""


def test_mqtt_value_map_to_no_declared_tag_is_an_error() -> None:
    """A value map whose target tag is declared nowhere would silently map nothing."""
    found = errors(MQTT)
    assert len(found) == 1
    assert found[0].startswith("plant.yaml:18:")
    assert "sources.0.subscriptions.0.values.1.tag" in found[0]
    assert "pressure" in found[0] and "matches none of the tags" in found[0]


def test_mqtt_value_map_matching_a_declared_tag_loads() -> None:
    text = MQTT.replace("$.pressure", "$.temp2").replace(
        "{machine}/pressure", "{machine}/temperature"
    )
    _plant, sources = load_plant_config(text, "plant.yaml", MODELS)
    assert sources[0].name == "broker"
