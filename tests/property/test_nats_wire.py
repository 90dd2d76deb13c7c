"""The edge → hub wire format: any batch round-trips; random bytes never crash decode."""

from __future__ import annotations

import contextlib
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.model.batch import Batch
from isthmus.transport.nats import wire

tag_tables = st.lists(
    st.builds(
        wire.WireTag,
        st.text(min_size=1, max_size=40),
        st.sampled_from(["float64", "bool", "int32", "string"]),
        st.text(max_size=8),
    ),
    min_size=1,
    max_size=20,
)


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, int, int, list[wire.WireTag], Batch]:
    tags = draw(tag_tables)
    n = draw(st.integers(0, 60))
    tag_id = draw(st.lists(st.integers(0, len(tags) - 1), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n))
    value = draw(st.lists(st.floats(allow_nan=False), min_size=n, max_size=n))
    quality = draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n))
    text = draw(st.none() | st.lists(st.none() | st.text(max_size=20), min_size=n, max_size=n))
    batch = Batch.of(tag_id, ts, value, quality, draw(st.booleans()), text)
    site = draw(st.text(min_size=1, max_size=20))
    return (
        site,
        draw(st.integers(0, 2**64 - 1)),
        draw(st.integers(-(2**63), 2**63 - 1)),
        tags,
        batch,
    )


@given(messages())
@settings(max_examples=200, deadline=None)
def test_roundtrip(msg: tuple[str, int, int, list[wire.WireTag], Batch]) -> None:
    site, seq, sent_ns, tags, batch = msg
    out = wire.decode(wire.encode(site, seq, sent_ns, tags, batch))
    assert (out.site, out.seq, out.sent_ns, list(out.tags)) == (site, seq, sent_ns, tags)
    assert out.historical == batch.historical
    np.testing.assert_array_equal(out.batch.tag_id, batch.tag_id)
    np.testing.assert_array_equal(out.batch.ts, batch.ts)
    np.testing.assert_array_equal(out.batch.value, batch.value)  # NaN == NaN here
    np.testing.assert_array_equal(out.batch.quality, batch.quality)
    if batch.text is None:
        assert out.batch.text is None
    else:
        assert out.batch.text is not None
        assert out.batch.text.tolist() == batch.text.tolist()


@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(wire.WireError):
        wire.decode(data)


@given(messages(), st.data())
@settings(max_examples=200, deadline=None)
def test_flipped_or_truncated_messages_are_rejected(
    msg: tuple[str, int, int, list[wire.WireTag], Batch], data: st.DataObject
) -> None:
    payload = bytearray(wire.encode(*msg))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(payload) - 1))
        payload = payload[:cut]
    else:
        pos = data.draw(st.integers(0, len(payload) - 1))
        payload[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(wire.WireError):
        wire.decode(bytes(payload))


def _forged(body: bytes) -> bytes:
    """A payload with a valid CRC: only the structural checks can reject it."""
    return body + struct.pack("<I", zlib.crc32(body))


@given(st.binary(max_size=300), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
@settings(max_examples=500, deadline=None)
def test_forged_headers_with_valid_crc_raise_only_wire_errors(
    tail: bytes, n: int, table_len: int
) -> None:
    head = struct.pack("<4sBBHQqIIII", wire.MAGIC, 1, 0, 0, 1, 0, n, table_len, 0, 0)
    with contextlib.suppress(wire.WireError):
        wire.decode(_forged(head + tail))


def test_unknown_version_is_its_own_error() -> None:
    payload = bytearray(wire.encode("s", 1, 0, [wire.WireTag("a", "float64", "")], Batch.empty()))
    payload[4] = 9
    with pytest.raises(wire.UnknownVersion) as info:
        wire.decode(bytes(payload))
    assert info.value.version == 9
    assert wire.peek_version(bytes(payload)) == 9


def test_tag_index_outside_the_table_is_malformed() -> None:
    batch = Batch.of([1], [5], [1.0], [0])
    body = bytearray(
        wire.encode("s", 1, 0, [wire.WireTag("a", "f", ""), wire.WireTag("b", "f", "")], batch)
    )
    # Re-encode with a one-entry table but keep index 1 and a valid CRC.
    good = wire.encode("s", 1, 0, [wire.WireTag("a", "f", "")], Batch.of([0], [5], [1.0], [0]))
    head = bytearray(good[: wire.HEADER_SIZE])
    rest = bytearray(good[wire.HEADER_SIZE : -4])
    idx = len(rest) - 24
    rest[idx : idx + 4] = struct.pack("<I", 1)
    with pytest.raises(wire.MalformedMessage, match="outside the tag table"):
        wire.decode(_forged(bytes(head + rest)))
    assert wire.decode(bytes(body)).batch.tag_id.tolist() == [1]
