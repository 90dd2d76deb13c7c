"""The OPC UA frame guard's header walk (pure)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.connectors.opcua.guard import FrameGuard


def frame(kind: bytes, chunk: bytes, body: bytes) -> bytes:
    return kind + chunk + (8 + len(body)).to_bytes(4, "little") + body


STREAM = (
    frame(b"ACK", b"F", b"\x00" * 20)
    + frame(b"OPN", b"F", b"x" * 100)
    + frame(b"MSG", b"C", b"y" * 1000)
    + frame(b"MSG", b"F", b"z" * 10)
    + frame(b"ERR", b"F", b"e" * 8)
)


def test_a_valid_stream_passes_in_one_piece() -> None:
    assert FrameGuard().feed(STREAM) is None


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=12))
@settings(max_examples=300)
def test_a_valid_stream_passes_however_it_is_split(cuts: list[int]) -> None:
    guard = FrameGuard()
    points = [0, *sorted(set(cuts)), len(STREAM)]
    for a, b in itertools.pairwise(points):
        assert guard.feed(STREAM[a:b]) is None


def test_garbage_is_rejected_even_split_inside_the_header() -> None:
    guard = FrameGuard()
    assert guard.feed(b"SSH") is None
    verdict = guard.feed(b"-2.0-OpenSSH\r\n")
    assert verdict is not None and verdict[0] == "garbage"
    assert "not an OPC UA message" in verdict[1]


def test_a_header_announcing_a_huge_chunk_is_rejected_before_its_body() -> None:
    verdict = FrameGuard(max_chunk=65536).feed(b"ACKF" + (2**31 - 1).to_bytes(4, "little"))
    assert verdict == (
        "oversized",
        "a 2147483647-byte ACK chunk, above the 65536-byte limit",
    )


def test_too_many_intermediate_chunks_are_rejected() -> None:
    guard = FrameGuard(max_chunk=1024, max_message=4000)
    chunk = frame(b"MSG", b"C", b"q" * 992)  # 1000 bytes
    assert guard.feed(chunk * 4) is None
    verdict = guard.feed(chunk)
    assert verdict is not None and verdict[0] == "oversized"
    # a final chunk ends the message: the count starts again
    guard = FrameGuard(max_chunk=1024, max_message=4000)
    assert guard.feed((chunk * 3 + frame(b"MSG", b"F", b"")) * 5) is None


def test_client_message_types_and_tiny_sizes_are_garbage() -> None:
    assert FrameGuard().feed(b"HELF" + (32).to_bytes(4, "little")) is not None
    assert FrameGuard().feed(b"MSGF" + (3).to_bytes(4, "little")) is not None
    assert FrameGuard().feed(b"MSGX" + (16).to_bytes(4, "little")) is not None


@given(st.binary(min_size=8, max_size=64))
@settings(max_examples=300)
def test_any_bytes_either_pass_as_frames_or_are_rejected(data: bytes) -> None:
    verdict = FrameGuard(max_chunk=4096).feed(data)
    if verdict is None:  # then the first 8 bytes were a plausible header
        assert data[:3] in (b"ACK", b"ERR", b"OPN", b"MSG", b"CLO")
        assert 8 <= int.from_bytes(data[4:8], "little") <= 4096
