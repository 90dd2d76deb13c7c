"""The edge → hub message: one spool record as a versioned, self-describing binary blob.

Pure: no I/O.  One message carries one spool record of one site, so the hub can write it
without asking anyone: the tag table travels with the samples (edge tag ids mean nothing
on the hub).  Layout, little-endian::

    off size field
      0   4  magic b"ISTW"
      4   1  version (1)
      5   1  flags: 0x01 historical (replayed after an outage), 0x02 a text section follows
      6   2  site length in bytes (u16)
      8   8  seq: the edge spool's record number (u64); with the site, the message id
     16   8  sent_ns: edge clock when the record was encoded (i64), for latency figures
     24   4  n: samples (u32)
     28   4  tag table length in bytes (u32)
     32   4  text section length in bytes (u32, 0 without 0x02)
     36   4  reserved (0)
     40      site (UTF-8)
             tag table: UTF-8 JSON ``[[path, data_type, unit], ...]`` (the distinct tags)
             text section: m (u32), row u32[m], UTF-8 JSON list of m strings
             columns: tag u32[n] (index into the tag table) | ts i64[n] | value f64[n]
                      | quality u32[n]
    end-4   4  CRC-32 of every byte before it

Decoding never trusts a length: a payload that is short, long, has a bad CRC, bad JSON
or a tag index outside the table raises :class:`MalformedMessage`; a good magic with a
version this code does not know raises :class:`UnknownVersion`.  Both are
:class:`WireError`, so a hub can count, quarantine and go on.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from isthmus.model.batch import Batch
from isthmus.model.errors import IsthmusError

MAGIC = b"ISTW"
VERSION = 1
HISTORICAL = 0x01
HAS_TEXT = 0x02
_KNOWN_FLAGS = HISTORICAL | HAS_TEXT
_HEAD = struct.Struct("<4sBBHQqIIII")
HEADER_SIZE = _HEAD.size  # 40
_CRC = struct.Struct("<I")
_U32 = struct.Struct("<I")
SAMPLE_BYTES = 4 + 8 + 8 + 4
MAX_SAMPLES = 1 << 24


class WireError(IsthmusError):
    """A message the hub cannot use; it is quarantined, never retried."""


class MalformedMessage(WireError):
    """Truncated, corrupted or inconsistent."""


class UnknownVersion(WireError):
    """A well-formed header from a newer (or older) edge than this code knows."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unknown wire version {version} (this hub reads {VERSION})")
        self.version = version


@dataclass(frozen=True, slots=True)
class WireTag:
    path: str
    data_type: str
    unit: str


@dataclass(frozen=True, slots=True)
class Message:
    site: str
    seq: int
    sent_ns: int
    tags: tuple[WireTag, ...]
    batch: Batch
    """``tag_id`` holds indices into :attr:`tags`, not ids of any store."""

    @property
    def historical(self) -> bool:
        return self.batch.historical


def encode(
    site: str,
    seq: int,
    sent_ns: int,
    tags: tuple[WireTag, ...] | list[WireTag],
    batch: Batch,
) -> bytes:
    """Encode a batch whose ``tag_id`` column indexes ``tags`` (see :func:`localise`)."""
    n = len(batch)
    if n and (int(batch.tag_id.min()) < 0 or int(batch.tag_id.max()) >= len(tags)):
        raise ValueError("batch tag_id must index the tag table")
    site_b = site.encode()
    table = json.dumps([[t.path, t.data_type, t.unit] for t in tags], ensure_ascii=False)
    table_b = table.encode()
    text_b = b""
    flags = HISTORICAL if batch.historical else 0
    if batch.text is not None:
        rows = np.flatnonzero(batch.text != None).astype("<u4")  # noqa: E711
        if len(rows):
            flags |= HAS_TEXT
            strings = json.dumps([str(s) for s in batch.text[rows]], ensure_ascii=False)
            text_b = _U32.pack(len(rows)) + rows.tobytes() + strings.encode()
    head = _HEAD.pack(
        MAGIC, VERSION, flags, len(site_b), seq, sent_ns, n, len(table_b), len(text_b), 0
    )
    body = b"".join(
        (
            head,
            site_b,
            table_b,
            text_b,
            batch.tag_id.astype("<u4").tobytes(),
            batch.ts.astype("<i8").tobytes(),
            batch.value.astype("<f8").tobytes(),
            batch.quality.astype("<u4").tobytes(),
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def localise(batch: Batch) -> tuple[npt.NDArray[np.int32], Batch]:
    """The distinct tag ids of ``batch`` (sorted) and the batch with ``tag_id`` replaced
    by each row's index into them: build the tag table from the first."""
    uniq, inverse = np.unique(batch.tag_id, return_inverse=True)
    local = Batch(
        inverse.astype(np.int32).reshape(-1),
        batch.ts,
        batch.value,
        batch.quality,
        batch.historical,
        batch.text,
    )
    return uniq.astype(np.int32), local


def peek_version(payload: bytes) -> int | None:
    """The version byte if the payload starts with the magic, else None."""
    if len(payload) >= 5 and payload[:4] == MAGIC:
        return payload[4]
    return None


def decode(payload: bytes | bytearray | memoryview) -> Message:
    data = memoryview(payload)
    if len(data) < 5 or bytes(data[:4]) != MAGIC:
        raise MalformedMessage("not an isthmus batch message (bad magic)")
    if data[4] != VERSION:
        raise UnknownVersion(data[4])
    if len(data) < HEADER_SIZE + _CRC.size:
        raise MalformedMessage(f"message of {len(data)} bytes is shorter than its header")
    body = data[: len(data) - _CRC.size]
    (crc,) = _CRC.unpack(data[len(data) - _CRC.size :])
    if zlib.crc32(body) != crc:
        raise MalformedMessage("CRC mismatch: the message is corrupted")
    _, _, flags, site_len, seq, sent_ns, n, table_len, text_len, reserved = _HEAD.unpack(
        body[:HEADER_SIZE]
    )
    if flags & ~_KNOWN_FLAGS or reserved:
        raise MalformedMessage(f"unknown flags 0x{flags:02x} or reserved bits set")
    if n > MAX_SAMPLES:
        raise MalformedMessage(f"{n} samples is more than a message may hold")
    if not flags & HAS_TEXT and text_len:
        raise MalformedMessage("a text section without the text flag")
    expected = HEADER_SIZE + site_len + table_len + text_len + n * SAMPLE_BYTES
    if expected != len(body):
        raise MalformedMessage(f"length {len(body)} does not match the header ({expected})")
    off = HEADER_SIZE
    try:
        site = bytes(body[off : off + site_len]).decode()
        off += site_len
        tags = _tags(bytes(body[off : off + table_len]))
        off += table_len
        text = _text(body[off : off + text_len], n) if flags & HAS_TEXT else None
        off += text_len
    except (UnicodeDecodeError, ValueError, TypeError) as exc:
        raise MalformedMessage(f"bad site, tag table or text section: {exc}") from exc
    tag = np.frombuffer(body, "<u4", n, off)
    off += 4 * n
    ts = np.frombuffer(body, "<i8", n, off).astype(np.int64)
    off += 8 * n
    value = np.frombuffer(body, "<f8", n, off).astype(np.float64)
    off += 8 * n
    quality = np.frombuffer(body, "<u4", n, off).astype(np.uint32)
    if n and int(tag.max()) >= len(tags):
        raise MalformedMessage("a sample refers to a tag outside the tag table")
    batch = Batch(tag.astype(np.int32), ts, value, quality, bool(flags & HISTORICAL), text)
    return Message(site, seq, sent_ns, tags, batch)


def _tags(raw: bytes) -> tuple[WireTag, ...]:
    table = json.loads(raw.decode())
    if not isinstance(table, list):
        raise ValueError("tag table is not a list")
    out = []
    for item in table:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not all(isinstance(x, str) for x in item)
            or not item[0]
        ):
            raise ValueError("tag table entry is not [path, data_type, unit]")
        out.append(WireTag(item[0], item[1], item[2]))
    return tuple(out)


def _text(raw: memoryview, n: int) -> npt.NDArray[np.object_]:
    if len(raw) < 4:
        raise ValueError("text section too short")
    (m,) = _U32.unpack(raw[:4])
    if m == 0 or m > n or len(raw) < 4 + 4 * m:
        raise ValueError("text section row count out of range")
    rows = np.frombuffer(raw, "<u4", m, 4)
    if int(rows.max()) >= n or (m > 1 and bool(np.any(np.diff(rows.astype(np.int64)) <= 0))):
        raise ValueError("text rows out of range or not increasing")
    strings = json.loads(bytes(raw[4 + 4 * m :]).decode())
    if (
        not isinstance(strings, list)
        or len(strings) != m
        or not all(isinstance(s, str) for s in strings)
    ):
        raise ValueError("text strings are not a list of m strings")
    text = np.full(n, None, dtype=object)
    for row, s in zip(rows.tolist(), strings, strict=True):
        text[row] = s
    return text
