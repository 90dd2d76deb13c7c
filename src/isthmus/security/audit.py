"""The tamper-evident audit log: who did what, when, and with which outcome.

Files (directories mode 0700, files mode 0600):

* ``DATA_DIR/audit.key`` — 32 random bytes, the HMAC-SHA256 key; created once.
* ``DATA_DIR/audit/audit-YYYYMMDD.jsonl`` — the records, JSON lines, in segments named
  after the UTC day of the first record written into them (a segment never goes back:
  a clock set back keeps writing into the current one).  ``seq`` runs 1, 2, 3... across
  all segments; segments sort by name in ``seq`` order.
* ``DATA_DIR/audit/head.json`` — the anchor: the last ``seq`` and its ``mac``, itself
  HMAC'd, rewritten atomically after every append.  It is what makes removing records
  from the end (truncation) visible.
* ``DATA_DIR/audit/.lock`` — ``flock`` that serialises appends across processes (the
  server and a CLI command may append at the same time).

A record is one line of canonical JSON (fixed key order, no spaces, UTF-8; keys inside
``details`` sorted)::

    {"seq":7,"ts":"2024-05-01T08:00:00.000000000Z","ts_ns":1714550400000000000,
     "action":"auth.login","actor":"alice","outcome":"ok","details":{"client":"10.0.0.5"},
     "prev":"<mac of record 6>","mac":"<hex HMAC-SHA256(key, record without mac)>"}

Editing a field, deleting, inserting or reordering records, truncating the tail,
rewriting the tail with an unkeyed hash, swapping a segment, or flipping any byte of a
segment, the head or the key is detected by :func:`verify`.  Limits (see
``docs/decisions/0010-audit-chain.md``): whoever holds ``audit.key`` can forge a whole
new chain; restoring an older copy of both the segments and ``head.json`` together, or
removing the key and the whole ``audit/`` folder, cannot be told from a younger log
without an anchor kept elsewhere (``isthmus audit verify`` prints the last mac to copy
out).  The log grows without rotation or retention.

Every append writes the record, ``fsync``s it, then rewrites the head (temp file,
``fsync``, rename) under the lock: an append either returns a durable record or raises
:class:`AuditUnavailable` and leaves no record (measured ~1 ms per append on an SSD).
A crash between the record and the head leaves the head one record behind, which is
legal (records after the head must still chain); a crash inside a write leaves an
incomplete last line, which :class:`AuditLog` cuts off at the next start and records as
``audit.repaired``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from isthmus.model.clock import Clock, SystemClock
from isthmus.model.errors import IsthmusError
from isthmus.model.events import Severity
from isthmus.security.identity import write_private

if TYPE_CHECKING:
    from isthmus.observe.events import EventLog

log = logging.getLogger("isthmus.audit")

AUDIT_DIR = "audit"
KEY_FILE = "audit.key"
HEAD_FILE = "head.json"
LOCK_FILE = ".lock"
SEGMENT_RE = re.compile(r"^audit-(\d{8})\.jsonl$")
GENESIS = "0" * 64
"""The ``prev`` of record 1 and the ``mac`` of an empty log's head."""
FIELDS = ("seq", "ts", "ts_ns", "action", "actor", "outcome", "details", "prev", "mac")
HEAD_FIELDS = ("v", "seq", "mac", "ts_ns", "hmac")
MAX_STRING = 2048
"""Longer strings in a record are clipped (a hostile username must not bloat the log)."""
MAX_DEPTH = 8
MAX_ITEMS = 1000
"""Deeper structures are recorded as text; longer lists and mappings are cut."""
ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_RECORD_DOMAIN = b"isthmus-audit-record-v1\n"
_HEAD_DOMAIN = b"isthmus-audit-head-v1\n"
_EVENT_REPEAT_S = 60.0

# The actions Isthmus records (later issues add theirs; the format does not restrict them).
AUTH_LOGIN = "auth.login"
AUTH_LOGIN_FAILED = "auth.login_failed"
AUTH_LOCKOUT = "auth.lockout"
AUTH_LOGOUT = "auth.logout"
RBAC_DENIED = "rbac.denied"
MFA_ENROLLED = "mfa.enrolled"
MFA_RESET = "mfa.reset"
USER_ADDED = "user.added"
USER_CHANGED = "user.changed"
TOKEN_CREATED = "token.created"
TOKEN_REVOKED = "token.revoked"
CONFIG_LOADED = "config.loaded"
COMMAND_REQUESTED = "command.requested"
COMMAND_GATE = "command.gate"
COMMAND_APPROVED = "command.approved"
COMMAND_REJECTED = "command.rejected"
COMMAND_RESULT = "command.result"
AUDIT_REPAIRED = "audit.repaired"

ExportFormat = Literal["jsonl", "csv"]


class AuditError(IsthmusError):
    """Base of the audit log's errors."""


class AuditCorrupt(AuditError):
    """The audit log fails verification: names the file, line, seq and reason."""

    def __init__(self, file: str, line: int | None, seq: int | None, reason: str) -> None:
        self.file = file
        self.line = line
        self.seq = seq
        self.reason = reason
        where = f"{file}:{line}" if line is not None else file
        what = f"record {seq}: " if seq is not None else ""
        super().__init__(f"audit log {where}: {what}{reason}")


class AuditUnavailable(AuditError):
    """The audit log cannot be written (disk full, permissions, tampered underneath).
    Whoever needs the record to exist (the command gate) must refuse the operation."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int
    """Records that verified (all of them when ``ok``)."""
    first_bad: int | None = None
    """``seq`` of the first bad record, when it is known."""
    file: str | None = None
    line: int | None = None
    reason: str = ""
    last_seq: int = 0
    last_mac: str = GENESIS
    """The chain's last mac: copy it out of the machine to anchor the log externally."""

    def describe(self) -> str:
        if self.ok:
            return f"intact: {self.records} record(s), last mac {self.last_mac}"
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        seq = f" (record {self.first_bad})" if self.first_bad is not None else ""
        return f"{where}{seq}: {self.reason}"


# --------------------------------------------------------------------------- format


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _hmac(key: bytes, domain: bytes, body: Mapping[str, Any]) -> str:
    return hmac.new(key, domain + _dumps(body), hashlib.sha256).hexdigest()


def iso_ns(ts_ns: int) -> str:
    """UTC ISO 8601 with nanoseconds: ``2024-05-01T08:00:00.000000001Z``."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(s, UTC):%Y-%m-%dT%H:%M:%S}.{ns:09d}Z"


def segment_name(ts_ns: int) -> str:
    return f"audit-{datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC):%Y%m%d}.jsonl"


def _clip(text: str) -> str:
    text = str.__str__(text)  # a StrEnum member becomes its plain value
    if len(text) <= MAX_STRING:
        return text
    return f"{text[:MAX_STRING]}…[{len(text) - MAX_STRING} more characters]"


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON that survives a round trip unchanged (so it verifies)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if value.bit_length() <= 64 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, Enum):
        return _plain(value.value, depth)
    if depth >= MAX_DEPTH:
        return _clip(repr(value))
    if isinstance(value, Mapping):
        items = sorted(((_clip(str(k)), v) for k, v in value.items()), key=lambda kv: kv[0])
        return {k: _plain(v, depth + 1) for k, v in items[:MAX_ITEMS]}
    if isinstance(value, list | tuple | set | frozenset):
        seq = sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
        return [_plain(v, depth + 1) for v in seq[:MAX_ITEMS]]
    if isinstance(value, bytes):
        return value.hex()
    return _clip(str(value))


class _Bad(Exception):
    def __init__(self, file: Path, line: int | None, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.file = file
        self.line = line
        self.seq = seq
        self.reason = reason


_MAC_PREFIX = b',"mac":"'
_MAC_SUFFIX_LEN = len(_MAC_PREFIX) + 64 + 2  # ,"mac":"<64 hex>"}
_HEX = frozenset(b"0123456789abcdef")


def _check_record(key: bytes, raw: bytes, seq: int, prev: str) -> dict[str, Any]:
    """The record on ``raw`` (one line without its newline) if it is record ``seq``
    following a record whose mac is ``prev``; else ValueError with the reason.

    The writer encodes the record without ``mac`` canonically, MACs those bytes, and
    splices ``,"mac":"<hex>"`` before the closing brace: so the MAC is checked over the
    stored bytes themselves (no re-encoding), and no byte of a line can change unseen."""
    suffix = raw[-_MAC_SUFFIX_LEN:]
    if (
        len(raw) <= _MAC_SUFFIX_LEN
        or not suffix.startswith(_MAC_PREFIX)
        or not suffix.endswith(b'"}')
        or not _HEX.issuperset(suffix[len(_MAC_PREFIX) : -2])
    ):
        raise ValueError("not an audit record: it does not end with its mac (damaged)")
    mac = suffix[len(_MAC_PREFIX) : -2].decode("ascii")
    body = raw[:-_MAC_SUFFIX_LEN] + b"}"
    expected = hmac.new(key, _RECORD_DOMAIN + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, expected):
        raise ValueError("the mac does not match: the record was edited or not written by us")
    try:
        rec = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("not a JSON record, yet its mac matches: the key leaked?") from None
    if not isinstance(rec, dict) or tuple(rec) != FIELDS or rec["mac"] != mac:
        raise ValueError(f"not an audit record: the fields must be {', '.join(FIELDS)}")
    if type(rec["seq"]) is not int or not isinstance(rec["prev"], str):
        raise ValueError("a field has the wrong type")
    if rec["seq"] != seq:
        raise ValueError(
            f"sequence {rec['seq']} where {seq} was expected: "
            "records were deleted, inserted or reordered"
        )
    if rec["prev"] != prev:
        raise ValueError("does not chain to the record before it: records were removed")
    return rec


def _segments(audit_dir: Path) -> list[Path]:
    try:
        names = os.listdir(audit_dir)
    except FileNotFoundError:
        return []
    return [audit_dir / n for n in sorted(names) if SEGMENT_RE.match(n)]


@dataclass(frozen=True, slots=True)
class _Tail:
    """Where the chain ends: the last record and the end of the last complete line."""

    seq: int = 0
    mac: str = GENESIS
    segment: Path | None = None
    offset: int = 0
    lines: int = 0


@dataclass(frozen=True, slots=True)
class _Torn:
    """An incomplete final line (no newline): a crash inside a write, or tampering."""

    segment: Path
    offset: int
    line: int
    data: bytes


def _scan(
    key: bytes, audit_dir: Path, start: _Tail, want_seq: int = 0
) -> tuple[_Tail, _Torn | None, str | None]:
    """Verify the chain from ``start`` to the end.  Returns the new tail, an incomplete
    final line if any, and the mac of record ``want_seq`` if it was seen; raises _Bad."""
    segments = _segments(audit_dir)
    if start.segment is not None:
        if start.segment not in segments:
            raise _Bad(start.segment, None, None, "the segment disappeared")
        segments = segments[segments.index(start.segment) :]
    tail = start
    want_mac: str | None = None
    for i, seg in enumerate(segments):
        resume = seg == start.segment
        offset = start.offset if resume else 0
        line_no = start.lines if resume else 0
        try:
            fh = seg.open("rb")
        except OSError as exc:
            raise _Bad(seg, None, None, f"cannot read: {exc.strerror}") from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if size < offset:
                raise _Bad(seg, line_no, None, "the file shrank: records were removed")
            fh.seek(offset)
            for raw in fh:
                line_no += 1
                if not raw.endswith(b"\n"):
                    if i != len(segments) - 1:
                        raise _Bad(seg, line_no, None, "incomplete line inside the log")
                    complete = _Tail(tail.seq, tail.mac, seg, offset, line_no - 1)
                    return complete, _Torn(seg, offset, line_no, raw), want_mac
                try:
                    rec = _check_record(key, raw[:-1], tail.seq + 1, tail.mac)
                except ValueError as exc:
                    raise _Bad(seg, line_no, tail.seq + 1, str(exc)) from None
                offset += len(raw)
                tail = _Tail(rec["seq"], rec["mac"], seg, offset, line_no)
                if rec["seq"] == want_seq:
                    want_mac = rec["mac"]
        tail = _Tail(tail.seq, tail.mac, seg, offset, line_no)
    return tail, None, want_mac


def _read_head(key: bytes, path: Path) -> tuple[int, str, int]:
    """(seq, mac, ts_ns) of the anchor; raises _Bad."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _Bad(path, None, None, "missing: the log was removed or replaced") from None
    except OSError as exc:
        raise _Bad(path, None, None, f"cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
        if not isinstance(doc, dict) or tuple(doc) != HEAD_FIELDS:
            raise ValueError
        if _dumps(doc) + b"\n" != raw:
            raise ValueError
        seq, mac, ts_ns = doc["seq"], doc["mac"], doc["ts_ns"]
        if type(seq) is not int or type(ts_ns) is not int or not isinstance(mac, str):
            raise ValueError
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Bad(path, 1, None, "damaged (not the anchor Isthmus writes)") from None
    body = {k: doc[k] for k in HEAD_FIELDS[:-1]}
    if not isinstance(doc["hmac"], str) or not hmac.compare_digest(
        doc["hmac"], _hmac(key, _HEAD_DOMAIN, body)
    ):
        raise _Bad(path, 1, None, "the anchor's hmac does not match: it was edited")
    return seq, mac, ts_ns


def _write_head(key: bytes, path: Path, seq: int, mac: str, ts_ns: int) -> None:
    body: dict[str, Any] = {"v": 1, "seq": seq, "mac": mac, "ts_ns": ts_ns}
    body["hmac"] = _hmac(key, _HEAD_DOMAIN, body)
    write_private(path, _dumps(body) + b"\n")


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < 32:
        raise AuditCorrupt(str(path), None, None, f"holds {len(key)} bytes; the key has 32")
    return key


@contextlib.contextmanager
def _flock(audit_dir: Path, *, exclusive: bool, required: bool) -> Iterator[None]:
    try:
        fd = os.open(audit_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        if required:
            raise
        yield  # a read-only copy of a log: nobody appends to it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _check_dir(key: bytes, audit_dir: Path) -> tuple[VerifyResult, _Tail, _Torn | None]:
    """Verify everything under ``audit_dir``; the caller holds the lock."""
    head_path = audit_dir / HEAD_FILE
    tail = _Tail()
    head_bad: _Bad | None = None
    head_seq, head_mac = 0, GENESIS
    try:
        head_seq, head_mac, _ = _read_head(key, head_path)
    except _Bad as bad:
        head_bad = bad  # reported after the records: a bad record is the better clue
    try:
        tail, torn, mac_at_head = _scan(key, audit_dir, _Tail(), head_seq)
        if head_bad is not None:
            raise head_bad
    except _Bad as bad:
        result = VerifyResult(
            False,
            bad.seq - 1 if bad.seq else tail.seq,
            bad.seq,
            str(bad.file),
            bad.line,
            bad.reason,
        )
        return result, tail, None
    last_file = str(tail.segment or head_path)
    if tail.seq < head_seq:
        reason = (
            f"the log ends at record {tail.seq} but {HEAD_FILE} anchors record {head_seq}: "
            "records were removed from the end"
        )
        return (
            VerifyResult(False, tail.seq, tail.seq + 1, last_file, tail.lines + 1, reason),
            tail,
            None,
        )
    if head_seq > 0 and mac_at_head != head_mac:
        reason = f"record {head_seq} is not the one {HEAD_FILE} anchors: the log was rewritten"
        return VerifyResult(False, head_seq - 1, head_seq, last_file, None, reason), tail, None
    if torn is not None:
        reason = (
            f"incomplete last line after record {tail.seq}: a crash during an append "
            "(cut off when the server starts) or tampering"
        )
        result = VerifyResult(
            False, tail.seq, tail.seq + 1, str(torn.segment), torn.line, reason, tail.seq, tail.mac
        )
        return result, tail, torn
    return VerifyResult(True, tail.seq, last_seq=tail.seq, last_mac=tail.mac), tail, None


def verify(data_dir: Path) -> VerifyResult:
    """Check the whole audit log of ``data_dir``: every record's mac, the chain, the
    sequence, and the anchor.  Read-only; safe while a server appends."""
    data_dir = Path(data_dir)
    audit_dir = data_dir / AUDIT_DIR
    key_path = data_dir / KEY_FILE
    if not key_path.exists():
        if _segments(audit_dir) or (audit_dir / HEAD_FILE).exists():
            return VerifyResult(False, 0, None, str(key_path), None, "the audit key is missing")
        return VerifyResult(True, 0, reason="no audit log")
    try:
        key = _read_key(key_path)
    except AuditCorrupt as exc:
        return VerifyResult(False, 0, None, exc.file, None, exc.reason)
    except OSError as exc:
        return VerifyResult(False, 0, None, str(key_path), None, f"cannot read: {exc.strerror}")
    with _flock(audit_dir, exclusive=False, required=False):
        return _check_dir(key, audit_dir)[0]


# --------------------------------------------------------------------------- reading


def iter_records(data_dir: Path) -> Iterator[dict[str, Any]]:
    """Every complete record, oldest first, as stored (not verified: see :func:`verify`).
    A line that does not parse is skipped with a warning."""
    for seg in _segments(Path(data_dir) / AUDIT_DIR):
        try:
            fh = seg.open("rb")
        except FileNotFoundError:
            continue
        with fh:
            for n, raw in enumerate(fh, 1):
                if not raw.endswith(b"\n"):
                    break  # being written
                try:
                    rec = json.loads(raw)
                except ValueError:
                    log.warning("%s:%d is not a record; run `isthmus audit verify`", seg, n)
                    continue
                if isinstance(rec, dict):
                    yield rec


def _matches(
    rec: Mapping[str, Any],
    since_ns: int | None,
    until_ns: int | None,
    action: str | None,
    actor: str | None,
    outcome: str | None,
) -> bool:
    ts = rec.get("ts_ns")
    if not isinstance(ts, int):
        return False
    if since_ns is not None and ts < since_ns:
        return False
    if until_ns is not None and ts > until_ns:
        return False
    if action is not None:
        act = str(rec.get("action"))
        if act != action and not act.startswith(action + "."):
            return False
    if actor is not None and rec.get("actor") != actor:
        return False
    return outcome is None or rec.get("outcome") == outcome


def query_records(
    data_dir: Path,
    since_ns: int | None = None,
    until_ns: int | None = None,
    action: str | None = None,
    actor: str | None = None,
    outcome: str | None = None,
    limit: int = 1000,
    *,
    after_seq: int = 0,
    newest_first: bool = False,
    where: Callable[[Mapping[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Records with ``since_ns <= ts_ns <= until_ns`` (both inclusive) and ``seq >
    after_seq``; ``action`` matches that action or any below it (``auth`` matches
    ``auth.login``); ``where`` filters further (a caller's scopes).  Oldest first, at
    most ``limit`` (the newest ``limit``, newest first, with ``newest_first``).  Reads
    the whole log: O(records)."""
    if limit <= 0:
        return []
    out: list[dict[str, Any]] = []
    for rec in iter_records(data_dir):
        seq = rec.get("seq")
        if not isinstance(seq, int) or seq <= after_seq:
            continue
        if not _matches(rec, since_ns, until_ns, action, actor, outcome):
            continue
        if where is not None and not where(rec):
            continue
        out.append(rec)
        if newest_first:
            if len(out) > 2 * limit:
                del out[:-limit]
        elif len(out) >= limit:
            break
    if newest_first:
        return out[-limit:][::-1]
    return out


_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    if isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, str) and value.startswith(_CSV_FORMULA):
        return "'" + value  # no formula injection when a spreadsheet opens the export
    return "" if value is None else value


def export_records(
    data_dir: Path,
    from_ns: int | None,
    to_ns: int | None,
    fmt: ExportFormat,
    out: IO[str],
) -> int:
    """Write the records with ``from_ns <= ts_ns <= to_ns`` to ``out``; returns how many.

    ``jsonl`` writes the lines exactly as stored (they keep their macs, so an exported
    range can be checked against the log); ``csv`` has one column per field, ``details``
    as JSON, and cells that a spreadsheet would run as a formula prefixed with ``'``."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown export format {fmt!r}: jsonl or csv")
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(FIELDS)
    count = 0
    for rec in iter_records(data_dir):
        if not _matches(rec, from_ns, to_ns, None, None, None):
            continue
        if writer is None:
            out.write(_dumps(rec).decode() + "\n")
        else:
            writer.writerow([_csv_cell(rec.get(f)) for f in FIELDS])
        count += 1
    return count


# --------------------------------------------------------------------------- the log


class AuditLog:
    """The append side of the audit log of one data directory.

    Opening verifies the whole log and raises :class:`AuditCorrupt` (file, line, reason)
    if it fails: a server must not start half-secured.  ``append`` is thread-safe and
    safe across processes."""

    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Clock | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.audit_dir = self.data_dir / AUDIT_DIR
        self.key_path = self.data_dir / KEY_FILE
        self.clock: Clock = clock or SystemClock()
        self.events = events
        self.appended = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._fd_path: Path | None = None
        self._failing = False
        self._last_event = -math.inf
        self.audit_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        torn: _Torn | None = None
        with _flock(self.audit_dir, exclusive=True, required=True):
            self._key = self._load_or_create_key()
            result, tail, torn = _check_dir(self._key, self.audit_dir)
            if torn is not None:
                # Only ever past the anchor: an append that a crash interrupted.
                with torn.segment.open("r+b") as fh:
                    fh.truncate(torn.offset)
                    os.fsync(fh.fileno())
                log.warning(
                    "cut off an incomplete audit record (%d bytes) at %s:%d",
                    len(torn.data),
                    torn.segment,
                    torn.line,
                )
            elif not result.ok:
                raise AuditCorrupt(str(result.file), result.line, result.first_bad, result.reason)
            self._tail = tail
            head_seq = _read_head(self._key, self.audit_dir / HEAD_FILE)[0]
            if head_seq < tail.seq:  # a crash between a record and its anchor
                now = self.clock.now_ns()
                _write_head(self._key, self.audit_dir / HEAD_FILE, tail.seq, tail.mac, now)
        if torn is not None:
            self.append(
                AUDIT_REPAIRED,
                actor=None,
                file=torn.segment.name,
                line=torn.line,
                bytes=len(torn.data),
                sha256=hashlib.sha256(torn.data).hexdigest(),
            )

    @classmethod
    def open(
        cls, data_dir: Path, *, clock: Clock | None = None, events: EventLog | None = None
    ) -> AuditLog:
        return cls(data_dir, clock=clock, events=events)

    def _load_or_create_key(self) -> bytes:
        if self.key_path.exists():
            if self.key_path.stat().st_mode & 0o077:
                log.warning("%s is readable by others: chmod 600 it", self.key_path)
            return _read_key(self.key_path)
        if _segments(self.audit_dir) or (self.audit_dir / HEAD_FILE).exists():
            raise AuditCorrupt(
                str(self.key_path), None, None, "the audit key is missing but the log exists"
            )
        key = secrets.token_bytes(32)
        write_private(self.key_path, key)
        _write_head(key, self.audit_dir / HEAD_FILE, 0, GENESIS, self.clock.now_ns())
        return key

    @property
    def last_seq(self) -> int:
        return self._tail.seq

    # ------------------------------------------------------------------ append

    def append(
        self, action: str, *, actor: str | None, outcome: str = "ok", **details: Any
    ) -> dict[str, Any]:
        """Write one record durably and return it; :class:`AuditUnavailable` if it could
        not be written (then nothing was written)."""
        if not ACTION_RE.match(action) or len(action) > 64:
            raise ValueError(f"{action!r} is not a dotted lower-case action name")
        if not outcome or len(outcome) > 64:
            raise ValueError("an outcome is a short word such as ok, denied or failed")
        error: str | None = None
        with self._lock:
            try:
                with _flock(self.audit_dir, exclusive=True, required=True):
                    self._catch_up()
                    record = self._write(action, actor, outcome, details)
            except AuditCorrupt as exc:
                error = f"the log changed underneath: {exc}"
            except OSError as exc:
                error = f"cannot write {exc.filename or self.audit_dir}: {exc.strerror or exc}"
            if error is None:
                self.appended += 1
                restored, self._failing = self._failing, False
            else:
                self.failures += 1
                self._close_fd()
        if error is not None:
            self._report_failure(error)
            raise AuditUnavailable(f"the audit log cannot be written: {error}")
        if restored and self.events is not None:
            self.events.raise_event(
                "audit.restored", "audit", "the audit log is written again", severity=Severity.INFO
            )
        return record

    async def aappend(
        self, action: str, *, actor: str | None, outcome: str = "ok", **details: Any
    ) -> dict[str, Any]:
        """:meth:`append` from async code (it blocks on fsync: run it in a thread)."""
        return await asyncio.to_thread(
            lambda: self.append(action, actor=actor, outcome=outcome, **details)
        )

    def _report_failure(self, error: str) -> None:
        log.error("audit log unavailable: %s", error)
        now = self.clock.monotonic()
        if self.events is None:
            return
        with self._lock:
            due = not self._failing or now - self._last_event >= _EVENT_REPEAT_S
            self._failing = True
            if due:
                self._last_event = now
        if due:
            self.events.raise_event(
                "audit.unavailable",
                "audit",
                f"the audit log cannot be written; commands are refused: {error}",
                severity=Severity.CRITICAL,
                failures=self.failures,
            )

    def _catch_up(self) -> None:
        """Follow records another process appended since our last append (under the
        lock); cut off an incomplete line that a crashed writer left."""
        segments = _segments(self.audit_dir)
        tail = self._tail
        if tail.segment is None:
            unchanged = not segments
        else:
            try:
                size = tail.segment.stat().st_size
            except FileNotFoundError:
                raise AuditCorrupt(str(tail.segment), None, None, "the segment vanished") from None
            unchanged = bool(segments) and segments[-1] == tail.segment and size == tail.offset
        if unchanged:
            return
        try:
            new_tail, torn, _ = _scan(self._key, self.audit_dir, tail)
        except _Bad as bad:
            raise AuditCorrupt(str(bad.file), bad.line, bad.seq, bad.reason) from None
        if torn is not None:
            with torn.segment.open("r+b") as fh:
                fh.truncate(torn.offset)
                os.fsync(fh.fileno())
        self._tail = new_tail

    def _segment_fd(self, path: Path) -> int:
        if self._fd is not None and self._fd_path == path:
            return self._fd
        self._close_fd()
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if created:
            dir_fd = os.open(self.audit_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._fd, self._fd_path = fd, path
        return fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = self._fd_path = None

    def _write(
        self, action: str, actor: str | None, outcome: str, details: Mapping[str, Any]
    ) -> dict[str, Any]:
        tail = self._tail
        ts_ns = self.clock.now_ns()
        segment = self.audit_dir / segment_name(ts_ns)
        if tail.segment is not None and segment.name <= tail.segment.name:
            segment = tail.segment  # never back to an older segment (clock set back)
        record: dict[str, Any] = {
            "seq": tail.seq + 1,
            "ts": iso_ns(ts_ns),
            "ts_ns": ts_ns,
            "action": action,
            "actor": None if actor is None else _clip(actor),
            "outcome": _clip(outcome),
            "details": _plain(details),
            "prev": tail.mac,
        }
        body = _dumps(record)
        record["mac"] = hmac.new(self._key, _RECORD_DOMAIN + body, hashlib.sha256).hexdigest()
        line = body[:-1] + _MAC_PREFIX + record["mac"].encode() + b'"}\n'
        start = tail.offset if segment == tail.segment else 0
        lines = tail.lines if segment == tail.segment else 0
        fd = self._segment_fd(segment)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            _write_head(self._key, self.audit_dir / HEAD_FILE, record["seq"], record["mac"], ts_ns)
        except OSError:
            # All or nothing: take the record back so the chain stays where it was.
            try:
                os.ftruncate(fd, start)
                os.fsync(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    log.error("cannot take back a partial audit record in %s", segment)
            raise
        self._tail = _Tail(record["seq"], record["mac"], segment, start + len(line), lines + 1)
        return record

    # ------------------------------------------------------------------ reading

    def query(
        self,
        since_ns: int | None = None,
        until_ns: int | None = None,
        action: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        limit: int = 1000,
        *,
        after_seq: int = 0,
        newest_first: bool = False,
        where: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """See :func:`query_records`."""
        return query_records(
            self.data_dir,
            since_ns,
            until_ns,
            action,
            actor,
            outcome,
            limit,
            after_seq=after_seq,
            newest_first=newest_first,
            where=where,
        )

    def export(
        self, from_ns: int | None, to_ns: int | None, fmt: ExportFormat, out: IO[str]
    ) -> int:
        """See :func:`export_records`."""
        return export_records(self.data_dir, from_ns, to_ns, fmt, out)

    def verify(self) -> VerifyResult:
        return verify(self.data_dir)

    def close(self) -> None:
        with self._lock:
            self._close_fd()
