"""The spool record format, pure: encode a batch into a record, parse and verify one.

See :mod:`isthmus.transport.spool` for the layout.  No I/O here: functions take and
return bytes-like objects, so the format is tested without files.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from isthmus.model.batch import Batch

MAGIC = b"ISPL"
VERSION = 1
HEADER = struct.Struct("<4sBBHIIQqII")
"""magic, version, flags, reserved, n_samples, payload_len, seq, written_ns,
payload_crc, header_crc (the CRC-32 of the 36 bytes before it)."""
HEADER_SIZE = HEADER.size  # 40
_CRC_COVERED = HEADER_SIZE - 4
SAMPLE_BYTES = 4 + 8 + 8 + 4  # tag_id int32, ts int64, value float64, quality uint32
MAX_SAMPLES = (1 << 30) // SAMPLE_BYTES  # a record never exceeds 1 GiB uncompressed

FLAG_HISTORICAL = 0x01
"""The batch was already historical when it was spooled."""
FLAG_ZLIB = 0x02
"""The payload is zlib-compressed (level 1)."""
FLAG_TEXT = 0x04
"""A text section follows the columns: m (u32), row u32[m], UTF-8 JSON list of m strings
(the string samples of ``Batch.text``)."""

SEGMENT_RE = re.compile(r"^spool-(\d{12})\.seg$")


def segment_name(first_seq: int) -> str:
    return f"spool-{first_seq:012d}.seg"


@dataclass(frozen=True, slots=True)
class Header:
    flags: int
    n_samples: int
    payload_len: int
    seq: int
    written_ns: int
    payload_crc: int

    @property
    def record_len(self) -> int:
        return HEADER_SIZE + self.payload_len


class Check(Enum):
    OK = "ok"
    TRUNCATED = "truncated"  # not enough bytes: a crash mid-write
    BAD = "bad"  # bytes present but wrong: corruption


def _columns(batch: Batch) -> list[npt.NDArray[np.generic]]:
    return [
        np.ascontiguousarray(batch.tag_id, dtype="<i4"),
        np.ascontiguousarray(batch.ts, dtype="<i8"),
        np.ascontiguousarray(batch.value, dtype="<f8"),
        np.ascontiguousarray(batch.quality, dtype="<u4"),
    ]


def encode(
    batch: Batch, seq: int, written_ns: int, compress: bool = False
) -> tuple[list[bytes | memoryview], int]:
    """The buffers of one record (header first) and its total length, ready for writev."""
    n = len(batch)
    if n > MAX_SAMPLES:
        raise ValueError(f"batch of {n} samples exceeds the spool record limit {MAX_SAMPLES}")
    cols: list[bytes | memoryview] = [c.data.cast("B") for c in _columns(batch)]
    flags = FLAG_HISTORICAL if batch.historical else 0
    text = _encode_text(batch)
    if text:
        flags |= FLAG_TEXT
        cols.append(text)
    payload: list[bytes | memoryview]
    if compress:
        flags |= FLAG_ZLIB
        packed = zlib.compress(b"".join(cols), 1)
        payload = [packed]
        crc = zlib.crc32(packed)
        length = len(packed)
    else:
        payload = list(cols)
        crc = 0
        for c in cols:
            crc = zlib.crc32(c, crc)
        length = n * SAMPLE_BYTES + len(text)
    head = HEADER.pack(MAGIC, VERSION, flags, 0, n, length, seq, written_ns, crc, 0)
    head = head[:_CRC_COVERED] + struct.pack("<I", zlib.crc32(head[:_CRC_COVERED]))
    return [head, *payload], HEADER_SIZE + length


def parse_header(raw: bytes | bytearray | memoryview) -> Header | None:
    """The header in ``raw[:40]`` if its magic, version, CRC and sizes are valid."""
    if len(raw) < HEADER_SIZE:
        return None
    magic, version, flags, _res, n, length, seq, written_ns, pcrc, hcrc = HEADER.unpack_from(raw)
    if magic != MAGIC or version != VERSION:
        return None
    if zlib.crc32(memoryview(raw)[:_CRC_COVERED]) != hcrc:
        return None
    if n > MAX_SAMPLES or (
        not flags & FLAG_ZLIB
        and (length < n * SAMPLE_BYTES if flags & FLAG_TEXT else length != n * SAMPLE_BYTES)
    ):
        return None
    return Header(flags, n, length, seq, written_ns, pcrc)


def check_payload(header: Header, payload: bytes | bytearray | memoryview) -> bool:
    return len(payload) == header.payload_len and zlib.crc32(payload) == header.payload_crc


def decode(header: Header, payload: bytearray, historical: bool = True) -> Batch:
    """The batch in a verified payload.  ``historical`` marks replayed data (default)."""
    n = header.n_samples
    buf: bytearray = payload
    if header.flags & FLAG_ZLIB:
        buf = bytearray(zlib.decompress(payload))
        if len(buf) < n * SAMPLE_BYTES or (
            len(buf) != n * SAMPLE_BYTES and not header.flags & FLAG_TEXT
        ):
            raise ValueError("decompressed payload has the wrong size")
    tag = np.frombuffer(buf, dtype="<i4", count=n, offset=0).astype(np.int32, copy=False)
    ts = np.frombuffer(buf, dtype="<i8", count=n, offset=4 * n).astype(np.int64, copy=False)
    val = np.frombuffer(buf, dtype="<f8", count=n, offset=12 * n).astype(np.float64, copy=False)
    q = np.frombuffer(buf, dtype="<u4", count=n, offset=20 * n).astype(np.uint32, copy=False)
    text = None
    if header.flags & FLAG_TEXT:
        text = _decode_text(memoryview(buf)[n * SAMPLE_BYTES :], n)
    return Batch(tag, ts, val, q, historical or bool(header.flags & FLAG_HISTORICAL), text)


def _encode_text(batch: Batch) -> bytes:
    if batch.text is None:
        return b""
    rows = np.flatnonzero(batch.text != None).astype("<u4")  # noqa: E711
    if not len(rows):
        return b""
    strings = json.dumps([str(s) for s in batch.text[rows]], ensure_ascii=False).encode()
    return struct.pack("<I", len(rows)) + rows.tobytes() + strings


def _decode_text(raw: memoryview, n: int) -> npt.NDArray[np.object_]:
    (m,) = struct.unpack_from("<I", raw)
    rows = np.frombuffer(raw, dtype="<u4", count=m, offset=4)
    strings = json.loads(bytes(raw[4 + 4 * m :]).decode())
    if not isinstance(strings, list) or len(strings) != m or (m and int(rows.max()) >= n):
        raise ValueError("bad text section")
    text = np.full(n, None, dtype=object)
    for row, value in zip(rows.tolist(), strings, strict=True):
        text[row] = str(value)
    return text
