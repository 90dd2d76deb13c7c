"""The command messages between hub and edge: names, JSON round trips, every kind of bad
message raising only :class:`CommandWireError`."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.model.config import Criticality, DataType, TagConfig, TransportConfig
from isthmus.transport.nats.commands import (
    ORDER_STREAM,
    RESULT_STREAM,
    CommandWireError,
    MalformedCommand,
    UnknownCommandVersion,
    decode_order,
    decode_result,
    decode_tags,
    edge_consumer,
    encode_order,
    encode_result,
    encode_tags,
    id_token,
    order_subject,
    peek_id,
    result_subject,
    stream_configs,
    tags_subject,
)
from isthmus.transport.nats.connect import stream_for
from isthmus.transport.nats.wire import WireError

ORDER: dict[str, Any] = {
    "id": "c-1",
    "site": "lyon",
    "tag": "acme/lyon/utilities/line1/cell1/pump1/speed_sp",
    "value": 42.5,
    "requested_by": "alice",
    "approved_by": "bob",
    "expires_at_ns": 1_700_000_060_000_000_000,
    "sent_ns": 1_700_000_000_000_000_000,
}
RESULT: dict[str, Any] = {
    "id": "c-1",
    "site": "lyon",
    "state": "verified",
    "read_back": 42.5,
    "detail": "",
    "written_at_ns": 1_700_000_000_100_000_000,
    "finished_at_ns": 1_700_000_000_120_000_000,
    "edge": "lyon-4242",
    "refusal": None,
}


def test_names() -> None:
    assert order_subject("lyon") == "isthmus.cmd.lyon.order"
    assert order_subject("plant.2") == "isthmus.cmd.plant_2.order"
    assert result_subject("lyon", "c-1") == "isthmus.cmd.lyon.result.c-1"
    assert edge_consumer("plant.2") == "isthmus-edge-plant_2"
    assert tags_subject("lyon") == "isthmus.cmd.lyon.tags"
    # Ids that are no plain subject token are hashed, with a marker no plain id has.
    for odd in ("a.b", "a b", "x*", ">", "é", "a" * 65):
        token = id_token(odd)
        assert token.startswith("=") and len(token) == 41
        assert "." not in token and " " not in token
    assert id_token("a.b") != id_token("a_b")
    # No site stream is named like a command stream, and no site subject overlaps.
    for site in ("cmd", "commands", "cmd-orders", "CMD_RESULTS"):
        assert stream_for(site) not in (ORDER_STREAM, RESULT_STREAM)
        assert not stream_for(site).startswith("ISTHMUS-")
    assert not ORDER_STREAM.startswith("ISTHMUS_") and not RESULT_STREAM.startswith("ISTHMUS_")


def test_round_trips_keep_every_type() -> None:
    for value in (42.5, 7, True, False, "recipe-B", 0, -1.0e300):
        order = {**ORDER, "value": value}
        back = decode_order(encode_order(order))
        assert back == order
        assert type(back["value"]) is type(value)
    assert decode_order(encode_order({**ORDER, "approved_by": None}))["approved_by"] is None
    minimal = {k: ORDER[k] for k in ("id", "site", "tag", "value", "requested_by")}
    back = decode_order(encode_order({**minimal, "expires_at_ns": 5}))
    assert back["approved_by"] is None and back["sent_ns"] is None
    assert decode_result(encode_result(RESULT)) == RESULT
    for state in ("mismatch", "failed", "uncertain", "expired", "refused"):
        r = decode_result(encode_result({"id": "x", "site": "s", "state": state}))
        assert r == {
            "id": "x",
            "site": "s",
            "state": state,
            "read_back": None,
            "detail": "",
            "written_at_ns": None,
            "finished_at_ns": None,
            "edge": None,
            "refusal": None,
        }
    refused = {**RESULT, "state": "refused", "refusal": "limits"}
    assert decode_result(encode_result(refused))["refusal"] == "limits"


def test_unknown_fields_are_ignored_missing_ones_refused() -> None:
    raw = json.dumps({"v": 1, **ORDER, "priority": "high"}).encode()
    assert decode_order(raw) == ORDER
    for field in ("id", "site", "tag", "value", "requested_by", "expires_at_ns"):
        broken = {k: v for k, v in ORDER.items() if k != field}
        with pytest.raises(MalformedCommand, match=field):
            decode_order(json.dumps({"v": 1, **broken}).encode())
    with pytest.raises(MalformedCommand, match="state"):
        decode_result(json.dumps({"v": 1, **RESULT, "state": "done"}).encode())


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", MalformedCommand),
        (b"\xff\xfe", MalformedCommand),
        (b"[1, 2]", MalformedCommand),
        (b'{"id": "x"}', MalformedCommand),  # no version
        (json.dumps({**ORDER, "v": 2}).encode(), UnknownCommandVersion),
        (json.dumps({**ORDER, "v": True}).encode(), UnknownCommandVersion),
        (json.dumps({**ORDER, "v": 1, "value": [1]}).encode(), MalformedCommand),
        (json.dumps({**ORDER, "v": 1, "value": None}).encode(), MalformedCommand),
        (json.dumps({**ORDER, "v": 1, "expires_at_ns": 1.5}).encode(), MalformedCommand),
        (json.dumps({**ORDER, "v": 1, "expires_at_ns": True}).encode(), MalformedCommand),
        (json.dumps({**ORDER, "v": 1, "id": ""}).encode(), MalformedCommand),
        (json.dumps({**ORDER, "v": 1, "id": "a\nb"}).encode(), MalformedCommand),
        (json.dumps({**ORDER, "v": 1, "id": "x" * 201}).encode(), MalformedCommand),
        (b'{"v": 1, "value": NaN}', MalformedCommand),
        (json.dumps({**ORDER, "v": 1, "tag": "x" * 70_000}).encode(), MalformedCommand),
    ],
)
def test_bad_orders(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_order(raw)


def test_encoding_refuses_what_decoding_would() -> None:
    with pytest.raises(MalformedCommand, match="finite"):
        encode_order({**ORDER, "value": float("nan")})
    with pytest.raises(MalformedCommand):
        encode_order({**ORDER, "value": [1, 2]})
    with pytest.raises(MalformedCommand, match="id"):
        encode_result({**RESULT, "id": 7})
    assert issubclass(CommandWireError, WireError)


def test_peek_id_answers_what_it_can() -> None:
    assert peek_id(json.dumps({"v": 9, "id": "c-9"}).encode()) == "c-9"
    assert peek_id(b'{"id": "c-1", "value": [') is None
    assert peek_id(b'{"id": 5}') is None
    assert peek_id(b"\x00\x01") is None


def test_tag_settings_round_trip_without_connector_fields() -> None:
    from isthmus.connectors.modbus.config import ModbusTagConfig

    modbus = ModbusTagConfig.model_validate(
        {
            "path": "a/l/c/pump/speed_sp",
            "data_type": "float32",
            "address": 12,
            "writable": True,
            "criticality": "critical",
            "range": [0, 100],
            "write_limits": [10, 90],
            "max_step": 5,
            "min_interval": "2s",
            "unit": "%",
        }
    )
    plain = TagConfig(path="a/l/c/valve/open", data_type=DataType.BOOL, writable=True)
    raw = encode_tags("lyon", 5, [("acme/lyon/a/l/c/pump/speed_sp", modbus), ("p2", plain)])
    site, tags = decode_tags(raw)
    assert site == "lyon"
    (path, cfg), (_, back) = tags
    assert path == "acme/lyon/a/l/c/pump/speed_sp"
    assert type(cfg) is TagConfig and not hasattr(cfg, "address")
    assert cfg.criticality is Criticality.CRITICAL and cfg.write_limits == (10.0, 90.0)
    assert (cfg.max_step, cfg.min_interval, cfg.range, cfg.unit) == (5.0, 2.0, (0.0, 100.0), "%")
    assert back == plain
    # A newer edge's extra setting is ignored; a broken one makes the message malformed.
    obj = json.loads(raw)
    obj["tags"][1]["config"]["future_setting"] = 1
    assert decode_tags(json.dumps(obj).encode())[1][1][1] == plain
    obj["tags"][1]["config"]["write_limits"] = [9, 1]
    with pytest.raises(MalformedCommand, match="p2"):
        decode_tags(json.dumps(obj).encode())
    for bad in (b"{}", b'{"v": 1, "site": "x", "tags": 3}', b'{"v": 1, "site": "x", "tags": [1]}'):
        with pytest.raises(MalformedCommand):
            decode_tags(bad)
    with pytest.raises(UnknownCommandVersion):
        decode_tags(b'{"v": 2}')


def test_stream_settings() -> None:
    cfg = TransportConfig()
    orders, results, tags = stream_configs(cfg, duplicate_window=900.0)
    assert tags.subjects == ["isthmus.cmd.*.tags"] and tags.max_msgs_per_subject == 1
    assert orders.subjects == ["isthmus.cmd.*.order"]
    assert results.subjects == ["isthmus.cmd.*.result.*"]
    assert results.max_msgs_per_subject == 1
    # The duplicate window covers the approval timeout, never beyond what is kept.
    assert orders.duplicate_window == 900.0
    short = TransportConfig(stream={"max_age": 60.0})  # type: ignore[arg-type]
    assert stream_configs(short, 900.0)[0].duplicate_window == 60.0
    assert stream_configs(cfg, 0.0)[0].duplicate_window == cfg.stream.duplicate_window


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_wire_errors(raw: bytes) -> None:
    for decode in (decode_order, decode_result):
        with contextlib.suppress(CommandWireError):
            decode(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*ORDER, *RESULT, "v"]), json_values, max_size=10))
def test_forged_objects_raise_only_wire_errors(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj).encode()
    for decode in (decode_order, decode_result):
        try:
            decoded = decode(raw)
        except CommandWireError:
            continue
        assert decoded["id"] == obj["id"]  # whatever passes is what was sent
