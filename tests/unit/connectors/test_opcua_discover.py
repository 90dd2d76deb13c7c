"""The pure half of `isthmus discover`: naming rule, type mapping, the YAML it writes."""

from __future__ import annotations

import pytest
import yaml
from asyncua import ua

from isthmus.connectors.opcua.config import OpcUaSourceConfig
from isthmus.connectors.opcua.discover import (
    Discovery,
    Variable,
    data_type_of,
    default_source_name,
    place,
    render_yaml,
    sanitise,
)
from isthmus.model.config import DataType
from isthmus.model.loader import load_plant_config


def test_sanitise_makes_valid_segments() -> None:
    assert sanitise("Line 1") == "Line_1"
    assert sanitise("Motor#2/temp") == "Motor_2_temp"
    assert sanitise("_hidden") == "hidden"
    assert sanitise("") == "x"
    assert sanitise("°C") == "C"
    assert sanitise("ok.name-1") == "ok.name-1"


@pytest.mark.parametrize(
    ("containers", "expected"),
    [
        ((), ("main", "main", "main", "main")),
        (("Boiler",), ("main", "main", "main", "Boiler")),
        (("Line1", "Filler"), ("Line1", "main", "main", "Filler")),
        (("Plant", "Line1", "Filler"), ("Plant", "Line1", "main", "Filler")),
        (("A", "L", "C", "E"), ("A", "L", "C", "E")),
        (("A", "L", "C1", "C2", "E"), ("A", "L", "C1.C2", "E")),
        (("My Area", "L", "E"), ("My_Area", "L", "main", "E")),
    ],
)
def test_place_rule(containers: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert place(containers) == expected


def nid(i: int, ns: int = 0) -> ua.NodeId:
    return ua.NodeId(i, ns)


@pytest.mark.parametrize(
    ("ident", "expected"),
    [
        (1, DataType.BOOL),
        (2, DataType.INT16),
        (3, DataType.UINT16),
        (4, DataType.INT16),
        (5, DataType.UINT16),
        (6, DataType.INT32),
        (7, DataType.UINT32),
        (8, DataType.INT64),
        (9, DataType.UINT64),
        (10, DataType.FLOAT32),
        (11, DataType.FLOAT64),
        (290, DataType.FLOAT64),
        (12, DataType.STRING),
        (21, DataType.STRING),
    ],
)
def test_builtin_types_map(ident: int, expected: DataType) -> None:
    assert data_type_of(nid(ident), -1) == (expected, "")


def test_other_types_and_arrays_are_skipped_with_a_reason() -> None:
    dtype, why = data_type_of(nid(15), -1)
    assert dtype is None and "ByteString is binary" in why
    dtype, why = data_type_of(nid(12), 1)
    assert dtype is None and "array of String" in why
    dtype, why = data_type_of(nid(13), -1)
    assert dtype is None and "DateTime" in why
    dtype, why = data_type_of(nid(11), 2)
    assert dtype is None and "multi-dimensional array" in why
    assert data_type_of(nid(11), 1) == (DataType.FLOAT64, "")  # elements of a 1-D array
    dtype, why = data_type_of(nid(3001, 2), -1)
    assert dtype is None and "ns=2;i=3001" in why


def discovery() -> Discovery:
    return Discovery(
        endpoint="opc.tcp://plc:4840/",
        namespaces=["http://opcfoundation.org/UA/", "urn:server", "urn:plant"],
        variables=[
            Variable(
                "ns=2;s=Line1.Filler.Speed",
                ("Line1", "Filler"),
                "Speed",
                DataType.FLOAT64,
                unit="bottles/min",
                range=(0, 720),
                description='actual "speed"',
            ),
            Variable(
                "ns=2;s=Line1.Setpoints.LineSpeed",
                ("Line1", "Setpoints"),
                "LineSpeed",
                DataType.FLOAT64,
                writable=True,
                unit="°C",
            ),
            Variable("ns=2;i=7", ("Line1", "Filler"), "Speed", DataType.INT32),
            Variable("ns=2;s=Stamp", ("Line1", "Filler"), "Stamp", None, "type DateTime is not"),
            Variable("ns=2;s=Label", ("Line1", "Filler"), "Label", DataType.STRING),
            Variable("ns=2;i=9", (), "Loose Var", DataType.BOOL),
        ],
    )


def test_render_yaml_is_a_valid_plant_file() -> None:
    text = render_yaml(discovery(), source_name="plc1")
    plant, sources = load_plant_config(text, "discovered.yaml", {"opcua": OpcUaSourceConfig})
    assert plant.hierarchy["Line1"]["main"]["main"] == ["Filler", "Setpoints"]
    assert plant.hierarchy["main"]["main"]["main"] == ["main"]
    (source,) = sources
    assert isinstance(source, OpcUaSourceConfig)
    assert source.name == "plc1" and source.endpoint == "opc.tcp://plc:4840/"
    by_path = {t.path: t for t in source.tags}
    assert set(by_path) == {
        "Line1/main/main/Filler/Speed",
        "Line1/main/main/Filler/Speed_2",  # duplicate browse name
        "Line1/main/main/Setpoints/LineSpeed",
        "Line1/main/main/Filler/Label",
        "main/main/main/main/Loose_Var",
    }
    assert by_path["Line1/main/main/Filler/Label"].data_type is DataType.STRING
    speed = by_path["Line1/main/main/Filler/Speed"]
    assert speed.unit == "bottles/min" and speed.range == (0, 720)
    assert speed.description == 'actual "speed"'
    assert not speed.writable
    assert by_path["Line1/main/main/Setpoints/LineSpeed"].writable
    assert by_path["Line1/main/main/Setpoints/LineSpeed"].unit == "°C"
    assert by_path["Line1/main/main/Filler/Speed_2"].data_type is DataType.INT32
    assert "#   ns=2;s=Stamp (Line1/main/main/Filler/Stamp): type DateTime is not" in text
    assert "#   ns=2: urn:plant" in text


def test_render_yaml_without_variables_is_still_valid() -> None:
    empty = Discovery("opc.tcp://plc:4840/", ["http://opcfoundation.org/UA/"], [])
    text = render_yaml(empty, source_name="plc1")
    data = yaml.safe_load(text)
    assert data["sources"][0]["tags"] == []
    load_plant_config(text, "x.yaml", {"opcua": OpcUaSourceConfig})


def test_default_source_name() -> None:
    assert default_source_name("opc.tcp://192.168.10.5:4840/") == "opcua-192.168.10.5"
    assert default_source_name("opc.tcp://plc-a:4840") == "opcua-plc-a"


def test_render_yaml_writes_arrays_and_enumerations() -> None:
    found = Discovery(
        "opc.tcp://plc:4840/",
        ["http://opcfoundation.org/UA/"],
        [
            Variable("ns=2;s=T", ("L", "Oven"), "Temps", DataType.FLOAT32, array_length=4),
            Variable(
                "ns=2;s=S",
                ("L", "Oven"),
                "State",
                DataType.INT32,
                enum={0: "Stopped", 1: 'Running "auto"'},
                writable=True,
            ),
        ],
    )
    text = render_yaml(found, source_name="plc1")
    assert "array_length: 4  # tags Temps.0 ... Temps.3" in text
    _, sources = load_plant_config(text, "d.yaml", {"opcua": OpcUaSourceConfig})
    (source,) = sources
    assert isinstance(source, OpcUaSourceConfig)
    by_path = {t.path: t for t in source.tags}
    assert [p for p in by_path if "Temps" in p] == [f"L/main/main/Oven/Temps.{i}" for i in range(4)]
    assert by_path["L/main/main/Oven/Temps.2"].index == 2
    state = by_path["L/main/main/Oven/State"]
    assert state.enum == {0: "Stopped", 1: 'Running "auto"'} and state.writable
