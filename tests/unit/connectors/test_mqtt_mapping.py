"""The pure MQTT mapping: JSON paths, topic templates, payload decoding."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from isthmus.connectors.mqtt.config import MqttSourceConfig
from isthmus.connectors.mqtt.mapping import (
    MISSING,
    FieldMap,
    Index,
    Member,
    PathError,
    TemplateError,
    Where,
    decode_message,
    extract,
    fill,
    parse_path,
    parse_topic,
    plain_number,
    to_number,
    to_quality,
    to_timestamp_ns,
)
from isthmus.model.quality import Quality

DOC = {
    "temperature": 21.5,
    "data": {"values": [1, 2, 3.5]},
    "metrics": [{"name": "Temp", "value": 1}, {"name": "Speed", "value": 120}, {"id": 3}],
    "odd key": 7,
    "flag": True,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", DOC),
        ("$.temperature", 21.5),
        ("$.data.values[2]", 3.5),
        ("$.data.values[-1]", 3.5),
        ("$.metrics[?name=Speed].value", 120),
        ("$.metrics[?id=3].id", 3),
        ('$["odd key"]', 7),
        ("$.flag", True),
    ],
)
def test_extract(path: str, expected: object) -> None:
    assert extract(DOC, parse_path(path)) == expected


@pytest.mark.parametrize(
    "path",
    [
        "$.nope",
        "$.data.values[3]",
        "$.data.values[-4]",
        "$.metrics[?name=Missing].value",
        "$.temperature.x",
        "$.temperature[0]",
        "$.data[?a=b]",
    ],
)
def test_extract_missing(path: str) -> None:
    assert extract(DOC, parse_path(path)) is MISSING


def test_parse_steps() -> None:
    assert parse_path('$.a[1][?k=v]["b c"]').steps == (
        Member("a"),
        Index(1),
        Where("k", "v"),
        Member("b c"),
    )


@pytest.mark.parametrize("bad", ["temperature", "$.", "$..a", "$[x]", "$.a[", "$[?=1]", "$ .a"])
def test_parse_errors(bad: str) -> None:
    with pytest.raises(PathError):
        parse_path(bad)


def test_too_many_steps() -> None:
    with pytest.raises(PathError):
        parse_path("$" + ".a" * 33)


def test_topic_template() -> None:
    t = parse_topic("plant/{line}/{machine}/telemetry")
    assert t.subscription == "plant/+/+/telemetry"
    assert t.variables == ("line", "machine")
    assert t.match("plant/l1/m2/telemetry") == {"line": "l1", "machine": "m2"}
    assert t.match("plant/l1/m2/status") is None
    assert t.match("plant/l1/telemetry") is None
    assert t.match("plant/l1/m2/telemetry/x") is None


def test_topic_wildcards() -> None:
    t = parse_topic("site/+/{machine}/#")
    assert t.subscription == "site/+/+/#"
    assert t.match("site/a/m1/x/y") == {"machine": "m1"}
    assert t.match("site/a/m1") == {"machine": "m1"}  # '#' also matches the parent level
    assert t.match("other/a/m1/x") is None


@pytest.mark.parametrize("bad", ["a/#/b", "a/x{y}", "a/{v}/{v}", "a/b+", ""])
def test_topic_errors(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_topic(bad)


def test_fill() -> None:
    assert fill("a/{line}/c/{m}/t", {"line": "l1", "m": "m1"}) == "a/l1/c/m1/t"
    assert fill("a/{line}/c", {"line": ""}) is None
    assert fill("a/{line}/c", {}) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(1, 1.0), (2.5, 2.5), (True, 1.0), (False, 0.0), ("3.25", 3.25), (" 4 ", 4.0)],
)
def test_to_number(raw: object, expected: float) -> None:
    assert to_number(raw) == expected


@pytest.mark.parametrize("raw", [None, "abc", [1], {"a": 1}, "nan", "inf", 10**400, float("inf")])
def test_to_number_refuses(raw: object) -> None:
    assert to_number(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"21.5", 21.5), (b" -3 ", -3.0), (b"true", 1.0), (b"OFF", 0.0), (b"on", 1.0)],
)
def test_plain_number(raw: bytes, expected: float) -> None:
    assert plain_number(raw) == expected


@pytest.mark.parametrize("raw", [b"", b"21,5", b"\xff", b"nan", b"1" * 100])
def test_plain_number_refuses(raw: bytes) -> None:
    assert plain_number(raw) is None


def test_timestamps() -> None:
    assert to_timestamp_ns(1_700_000_000_123) == 1_700_000_000_123_000_000
    assert to_timestamp_ns("2024-05-01T12:00:00Z") == 1_714_564_800_000_000_000
    assert to_timestamp_ns("2024-05-01T14:00:00+02:00") == 1_714_564_800_000_000_000
    assert to_timestamp_ns("2024-05-01T12:00:00.5") == 1_714_564_800_500_000_000
    for bad in (True, "yesterday", -5, float("nan"), 1e30, None, "0001-01-01T00:00:00Z"):
        assert to_timestamp_ns(bad) is None


def test_qualities() -> None:
    assert to_quality("Good") == Quality.GOOD
    assert to_quality("bad") == Quality.BAD
    assert to_quality("Uncertain") == Quality.UNCERTAIN
    assert to_quality("Bad_SensorFailure") == Quality.BAD_SENSOR_FAILURE
    assert to_quality(0x80050000) == Quality.BAD_COMMUNICATION_ERROR
    assert to_quality(False) == Quality.BAD
    assert to_quality("meh") is None
    assert to_quality(-1) is None


F_TEMP = FieldMap(parse_path("$.t"), 1)
F_SPEED = FieldMap(parse_path("$.s"), 2)
F_UNKNOWN = FieldMap(parse_path("$.x"), None)


def test_decode_json_fields() -> None:
    d = decode_message(b'{"t": 20.5, "s": "12", "x": 1}', (F_TEMP, F_SPEED, F_UNKNOWN), 99)
    assert (d.tag_ids, d.values, d.qualities, d.ts) == ([1, 2], [20.5, 12.0], [0, 0], [99, 99])
    assert d.rejections == []


def test_decode_timestamp_and_quality() -> None:
    d = decode_message(
        b'{"t": 1, "ts": "2024-05-01T12:00:00Z", "q": "Uncertain"}',
        (F_TEMP,),
        99,
        parse_path("$.ts"),
        parse_path("$.q"),
    )
    assert d.ts == [1_714_564_800_000_000_000]
    assert d.qualities == [Quality.UNCERTAIN]


def test_decode_missing_quality_field_means_good() -> None:
    d = decode_message(b'{"t": 1}', (F_TEMP,), 99, None, parse_path("$.q"))
    assert d.qualities == [Quality.GOOD]


def test_decode_bad_timestamp_rejects_message() -> None:
    d = decode_message(b'{"t": 1, "ts": "never"}', (F_TEMP, F_SPEED), 99, parse_path("$.ts"))
    assert d.qualities == [Quality.BAD_DECODING_ERROR] * 2
    assert len(d.rejections) == 1


def test_decode_field_problems_are_per_tag() -> None:
    d = decode_message(b'{"t": "hot"}', (F_TEMP, F_SPEED), 99)
    assert d.qualities == [Quality.BAD_DECODING_ERROR] * 2
    assert all(math.isnan(v) for v in d.values)
    assert len(d.rejections) == 2


def test_decode_plain_payload() -> None:
    root = FieldMap(parse_path("$"), 5)
    assert decode_message(b"21.5", (root,), 1).values == [21.5]
    assert decode_message(b"true", (root,), 1).values == [1.0]
    assert decode_message(b"ON", (root,), 1).values == [1.0]


def test_decode_not_json() -> None:
    d = decode_message(b"{oops", (F_TEMP,), 1)
    assert d.qualities == [Quality.BAD_DECODING_ERROR]
    assert d.rejections == ["not JSON and not a plain number"]
    # Nothing to attribute: counted, no rows.
    d = decode_message(b"{oops", (F_UNKNOWN,), 1)
    assert d.tag_ids == [] and len(d.rejections) == 1


def test_decode_plain_number_for_a_field_path_is_rejected() -> None:
    d = decode_message(b"21.5", (F_TEMP,), 1)  # valid JSON, but no field "t"
    assert d.qualities == [Quality.BAD_DECODING_ERROR]


BASE = {
    "name": "m",
    "type": "mqtt",
    "host": "h",
    "subscriptions": [{"topic": "a/{x}", "values": [{"tag": "ar/l/c/{x}/t"}]}],
}


def test_config_valid() -> None:
    cfg = MqttSourceConfig.model_validate(BASE)
    assert cfg.subscriptions[0].values[0].field == "$"
    assert cfg.port == 1883 and cfg.batch_interval == 0.05


@pytest.mark.parametrize(
    "change",
    [
        {"subscriptions": [{"topic": "a/{x}", "values": [{"tag": "ar/l/c/{y}/t"}]}]},
        {"subscriptions": [{"topic": "a/#/b", "values": [{"tag": "t"}]}]},
        {"subscriptions": [{"topic": "a", "values": [{"field": "t", "tag": "t"}]}]},
        {"subscriptions": [{"topic": "a", "qos": 2, "values": [{"tag": "t"}]}]},
        {"subscriptions": [{"topic": "a", "values": []}]},
        {"subscriptions": []},
        {"password_env": "P"},
        {"password": "secret"},
        {"cert_file": "c.pem"},
        {"ca_file": "ca.pem"},
    ],
)
def test_config_errors(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MqttSourceConfig.model_validate({**BASE, **change})


def test_decode_string_tags() -> None:
    recipe = FieldMap(parse_path("$.recipe"), 7, text=True)
    speed = FieldMap(parse_path("$.speed"), 8)
    d = decode_message(b'{"recipe": "R-1", "speed": 2}', (recipe, speed), 1)
    assert d.tag_ids == [7, 8] and d.texts == [(0, "R-1")]
    assert math.isnan(d.values[0]) and d.values[1] == 2.0
    d = decode_message(b'{"recipe": 12, "speed": "R-2"}', (recipe, speed), 1)
    assert d.texts == [(0, "12")] and d.qualities[1] == Quality.BAD_DECODING_ERROR
    d = decode_message(b'{"recipe": [1], "speed": 1}', (recipe, speed), 1)
    assert d.texts == [] and d.qualities[0] == Quality.BAD_DECODING_ERROR
    assert d.rejections == ["field $.recipe not text (list)"]


def test_decode_plain_text_payload() -> None:
    root_text = FieldMap(parse_path("$"), 5, text=True)
    root_number = FieldMap(parse_path("$"), 6)
    d = decode_message(b" hello world\n", (root_text, root_number), 1)
    assert d.texts == [(0, "hello world")]
    assert d.qualities == [Quality.GOOD, Quality.BAD_DECODING_ERROR]
    d = decode_message(b"\xff", (root_text,), 1)
    assert d.texts == [] and d.qualities == [Quality.BAD_DECODING_ERROR]
    assert decode_message(b'"quoted"', (root_text,), 1).texts == [(0, "quoted")]
