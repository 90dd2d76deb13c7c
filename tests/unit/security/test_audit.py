"""The audit log: append, query, export, verify, and tampering (every kind detected)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.model.clock import ManualClock
from isthmus.security.audit import (
    AUDIT_DIR,
    GENESIS,
    HEAD_FILE,
    KEY_FILE,
    AuditCorrupt,
    AuditLog,
    verify,
)

DAY = 86_400.0
START_NS = 1_699_920_000 * 10**9 + 7  # 2023-11-14T00:00:00.000000007Z


def _log(data_dir: Path, clock: ManualClock | None = None, **kw: object) -> AuditLog:
    return AuditLog(data_dir, clock=clock or ManualClock(START_NS), **kw)  # type: ignore[arg-type]


def _fill(data_dir: Path, n: int, *, days: int = 1) -> list[dict[str, object]]:
    """``n`` records spread over ``days`` UTC days (so over ``days`` segments)."""
    clock = ManualClock(START_NS)
    audit = _log(data_dir, clock)
    step = days * DAY / n
    out = []
    for i in range(n):
        actor = ["alice", "bob", None][i % 3]
        outcome = "denied" if i % 4 == 3 else "ok"
        out.append(audit.append("auth.login", actor=actor, outcome=outcome, client=f"10.0.0.{i}"))
        clock.advance(step)
    audit.close()
    return out


def _segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / AUDIT_DIR).glob("audit-*.jsonl"))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# --------------------------------------------------------------------------- basics


def test_append_chains_records_and_verifies(tmp_path: Path) -> None:
    clock = ManualClock(START_NS)
    audit = _log(tmp_path, clock)
    a = audit.append("auth.login", actor="alice", client="10.0.0.5")
    clock.advance(1.5)
    b = audit.append("rbac.denied", actor="token:7", outcome="denied", route="/api/audit")
    assert (a["seq"], b["seq"]) == (1, 2)
    assert a["prev"] == GENESIS and b["prev"] == a["mac"]
    assert a["ts"] == "2023-11-14T00:00:00.000000007Z" and a["ts_ns"] == START_NS
    assert b["details"] == {"route": "/api/audit"} and b["actor"] == "token:7"
    assert len(a["mac"]) == 64

    result = verify(tmp_path)
    assert result.ok, result
    assert result.records == 2 and result.last_seq == 2 and result.last_mac == b["mac"]
    assert "intact: 2 record(s)" in result.describe()
    # the stored line is the returned record, in canonical form
    (seg,) = _segments(tmp_path)
    assert json.loads(_lines(seg)[1]) == b


def test_files_are_private(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert len((tmp_path / KEY_FILE).read_bytes()) == 32
    assert (tmp_path / AUDIT_DIR).stat().st_mode & 0o777 == 0o700
    for path in [*_segments(tmp_path), tmp_path / AUDIT_DIR / HEAD_FILE]:
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_reopening_continues_the_chain_and_segments_follow_utc_days(tmp_path: Path) -> None:
    records = _fill(tmp_path, 30, days=3)
    assert [p.name for p in _segments(tmp_path)] == [
        "audit-20231114.jsonl",
        "audit-20231115.jsonl",
        "audit-20231116.jsonl",
    ]
    clock = ManualClock(START_NS + int(4 * DAY * 1e9))
    audit = _log(tmp_path, clock)
    rec = audit.append("config.loaded", actor=None, file="plant.yaml")
    assert rec["seq"] == 31 and rec["prev"] == records[-1]["mac"]
    assert verify(tmp_path).records == 31


def test_a_clock_set_back_never_returns_to_an_older_segment(tmp_path: Path) -> None:
    clock = ManualClock(START_NS)
    audit = _log(tmp_path, clock)
    clock.advance(DAY)
    audit.append("auth.login", actor="a")
    clock.advance(-2 * DAY)
    audit.append("auth.login", actor="a")
    assert [p.name for p in _segments(tmp_path)] == ["audit-20231115.jsonl"]
    assert verify(tmp_path).ok


def test_details_are_plain_json_that_verifies(tmp_path: Path) -> None:
    audit = _log(tmp_path)
    rec = audit.append(
        "command.requested",
        actor="é" * 5000,
        value=float("nan"),
        big=2**100,
        raw=b"\x01\x02",
        nested={"z": 1, "a": [1, 2.5, None, {"k": float("inf")}]},
        tags={"b", "a"},
    )
    assert rec["details"]["value"] == "nan" and rec["details"]["big"].startswith("<integer")
    assert rec["details"]["raw"] == "0102" and rec["details"]["tags"] == ["a", "b"]
    assert list(rec["details"]["nested"]) == ["a", "z"]
    assert len(rec["actor"]) < 2100
    assert verify(tmp_path).ok


def test_bad_action_names_are_programming_errors(tmp_path: Path) -> None:
    audit = _log(tmp_path)
    for bad in ("", "Auth.Login", "auth..login", "auth login", "x" * 65):
        with pytest.raises(ValueError):
            audit.append(bad, actor=None)
    assert audit.last_seq == 0


def test_appends_from_many_threads_form_one_chain(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    n_threads, each = 8, 50

    def work(t: int) -> None:
        for i in range(each):
            audit.append("command.gate", actor=f"u{t}", step=i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    started = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - started
    result = verify(tmp_path)
    assert result.ok and result.records == n_threads * each
    print(
        f"\naudit appends (fsync record + anchor each): {n_threads * each} from {n_threads} "
        f"threads in {elapsed:.2f} s = {elapsed / (n_threads * each) * 1e3:.2f} ms each"
    )


_CHILD = """
import sys
from pathlib import Path
from isthmus.security.audit import AuditLog
audit = AuditLog(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    audit.append("user.added", actor=sys.argv[3], i=i)
"""


def test_two_processes_append_to_one_chain(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), "200", "cli"])
    for i in range(200):
        audit.append("auth.login", actor="server", i=i)
    assert child.wait(60) == 0
    rec = audit.append("auth.logout", actor="server")
    assert rec["seq"] == 401
    result = verify(tmp_path)
    assert result.ok and result.records == 401, result


# --------------------------------------------------------------------------- query, export


def test_query_filters(tmp_path: Path) -> None:
    records = _fill(tmp_path, 40, days=2)
    audit = _log(tmp_path)
    assert len(audit.query()) == 40
    assert [r["seq"] for r in audit.query(actor="alice")] == list(range(1, 41, 3))
    assert all(r["outcome"] == "denied" for r in audit.query(outcome="denied"))
    assert len(audit.query(outcome="denied")) == 10
    assert len(audit.query(action="auth")) == 40  # a prefix matches the actions below it
    assert audit.query(action="auth.log") == []  # ...segment-wise
    assert audit.query(action="rbac.denied") == []
    since, until = records[10]["ts_ns"], records[19]["ts_ns"]
    assert isinstance(since, int) and isinstance(until, int)
    window = audit.query(since_ns=since, until_ns=until)
    assert [r["seq"] for r in window] == list(range(11, 21))
    assert [r["seq"] for r in audit.query(limit=5)] == [1, 2, 3, 4, 5]
    assert [r["seq"] for r in audit.query(limit=3, newest_first=True)] == [40, 39, 38]
    assert [r["seq"] for r in audit.query(after_seq=37)] == [38, 39, 40]
    assert audit.query(limit=0) == []


def test_export_jsonl_and_csv(tmp_path: Path) -> None:
    records = _fill(tmp_path, 12)
    audit = _log(tmp_path)
    audit.append("user.added", actor="=HYPERLINK(evil)", username="carol")
    buf = io.StringIO()
    assert audit.export(None, None, "jsonl", buf) == 13
    lines = buf.getvalue().splitlines()
    assert [json.loads(x) for x in lines[:12]] == records
    # exported lines are the stored bytes (they keep their macs)
    stored = b"".join(p.read_bytes() for p in _segments(tmp_path))
    assert buf.getvalue().encode() == stored

    out = io.StringIO()
    t0, t1 = records[2]["ts_ns"], records[5]["ts_ns"]
    assert isinstance(t0, int) and isinstance(t1, int)
    assert audit.export(t0, t1, "csv", out) == 4
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [int(r["seq"]) for r in rows] == [3, 4, 5, 6]
    assert json.loads(rows[0]["details"]) == {"client": "10.0.0.2"}
    out = io.StringIO()
    audit.export(None, None, "csv", out)
    last = list(csv.DictReader(io.StringIO(out.getvalue())))[-1]
    assert last["actor"] == "'=HYPERLINK(evil)"  # no formula when a spreadsheet opens it
    with pytest.raises(ValueError):
        audit.export(None, None, "xml", io.StringIO())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- unavailable

_FULL_DISK_CHILD = """
import json, resource, signal, sys
from pathlib import Path
from isthmus.observe.events import EventLog
from isthmus.security.audit import AuditLog, AuditUnavailable, _segments
data = Path(sys.argv[1])
events = EventLog()
audit = AuditLog(data, events=events)
audit.append("auth.login", actor="a")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG
size = _segments(data / "audit")[0].stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))
errors = []
for _ in range(3):
    try:
        audit.append("command.requested", actor="a", tag="x")
    except AuditUnavailable as exc:
        errors.append(str(exc))
size_after = _segments(data / "audit")[0].stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
rec = audit.append("command.requested", actor="a", tag="x")
print(json.dumps({
    "errors": errors, "size": size, "size_after": size_after, "seq": rec["seq"],
    "events": [e.kind for e in events.recent()], "failures": audit.failures,
}))
"""


def test_a_full_disk_raises_audit_unavailable_and_an_event(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    assert len(report["errors"]) == 3
    assert all("cannot be written" in e for e in report["errors"])
    assert report["size_after"] == report["size"]  # the partial record was taken back
    assert report["seq"] == 2  # the chain continued where it was
    assert report["failures"] == 3
    # one event when it fails (not one per failure), one when it recovers
    assert report["events"] == ["audit.unavailable", "audit.restored"]
    assert verify(tmp_path).ok


# --------------------------------------------------------------------------- corruption at start


def test_opening_a_corrupt_log_names_file_and_line(tmp_path: Path) -> None:
    _fill(tmp_path, 10)
    (seg,) = _segments(tmp_path)
    lines = _lines(seg)
    lines[6] = lines[6].replace(b'"outcome":"ok"', b'"outcome":"OK"')
    seg.write_bytes(b"".join(lines))
    with pytest.raises(AuditCorrupt) as info:
        _log(tmp_path)
    assert info.value.file == str(seg) and info.value.line == 7 and info.value.seq == 7
    assert f"{seg}:7" in str(info.value) and "mac" in str(info.value)


def test_a_missing_key_or_head_refuses_to_start(tmp_path: Path) -> None:
    _fill(tmp_path, 3)
    (tmp_path / AUDIT_DIR / HEAD_FILE).unlink()
    with pytest.raises(AuditCorrupt, match=r"head\.json"):
        _log(tmp_path)
    other = tmp_path / "other"
    _fill(other, 3)
    (other / KEY_FILE).unlink()
    with pytest.raises(AuditCorrupt, match="key is missing"):
        _log(other)
    assert not verify(other).ok


def test_a_crash_inside_an_append_is_cut_off_and_recorded(tmp_path: Path) -> None:
    records = _fill(tmp_path, 5)
    (seg,) = _segments(tmp_path)
    torn = b'{"seq":6,"ts":"2023-11-14T2'
    with seg.open("ab") as fh:
        fh.write(torn)
    result = verify(tmp_path)
    assert not result.ok and result.line == 6 and "incomplete last line" in result.reason
    audit = _log(tmp_path)
    repaired = audit.query(action="audit.repaired")
    assert len(repaired) == 1 and repaired[0]["seq"] == 6
    assert repaired[0]["prev"] == records[-1]["mac"]
    assert repaired[0]["details"]["sha256"] == hashlib.sha256(torn).hexdigest()
    assert verify(tmp_path).ok


def test_a_crash_between_record_and_anchor_is_legal(tmp_path: Path) -> None:
    _fill(tmp_path, 4)
    head = tmp_path / AUDIT_DIR / HEAD_FILE
    old_head = head.read_bytes()
    audit = _log(tmp_path)
    audit.append("auth.login", actor="x")
    audit.close()
    head.write_bytes(old_head)  # the anchor one record behind, as after a crash
    assert verify(tmp_path).ok
    assert _log(tmp_path).append("auth.login", actor="x")["seq"] == 6
    assert verify(tmp_path).ok


# --------------------------------------------------------------------------- tampering

Tamper = Callable[[Path], None]


def _modify_field(d: Path) -> None:
    seg = _segments(d)[0]
    lines = _lines(seg)
    lines[3] = lines[3].replace(b'"actor":"alice"', b'"actor":"mallory"')
    seg.write_bytes(b"".join(lines))


def _delete_record(d: Path) -> None:
    seg = _segments(d)[1]
    lines = _lines(seg)
    del lines[2]
    seg.write_bytes(b"".join(lines))


def _reorder(d: Path) -> None:
    seg = _segments(d)[0]
    lines = _lines(seg)
    lines[2], lines[3] = lines[3], lines[2]
    seg.write_bytes(b"".join(lines))


def _truncate_tail(d: Path) -> None:
    seg = _segments(d)[-1]
    seg.write_bytes(b"".join(_lines(seg)[:-3]))


def _rewrite_tail_unkeyed(d: Path) -> None:
    """Rewrite the last 3 records and the anchor with a recomputed SHA-256 chain: all
    an attacker can do without the key."""
    seg = _segments(d)[-1]
    lines = _lines(seg)
    prev = json.loads(lines[-4])["mac"]
    for i in range(len(lines) - 3, len(lines)):
        rec = json.loads(lines[i])
        rec["outcome"] = "ok"
        rec["details"] = {"client": "nothing to see"}
        rec["prev"] = prev
        body = {k: v for k, v in rec.items() if k != "mac"}
        canon = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        rec["mac"] = prev = hashlib.sha256(canon).hexdigest()
        lines[i] = json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    seg.write_bytes(b"".join(lines))
    head = d / AUDIT_DIR / HEAD_FILE
    doc = json.loads(head.read_bytes())
    doc["mac"] = prev
    doc["hmac"] = hashlib.sha256(json.dumps(doc).encode()).hexdigest()
    head.write_bytes(json.dumps(doc, separators=(",", ":")).encode() + b"\n")


def _swap_files(d: Path) -> None:
    a, b = _segments(d)[:2]
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _flip_byte(d: Path) -> None:
    seg = _segments(d)[1]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))


def _rollback_head(d: Path) -> None:
    """Truncate the tail AND put back an anchor copied earlier... from another log."""
    _truncate_tail(d)
    other = d.parent / f"{d.name}-other"
    _fill(other, 3)
    shutil.copy(other / AUDIT_DIR / HEAD_FILE, d / AUDIT_DIR / HEAD_FILE)


def _replace_key(d: Path) -> None:
    (d / KEY_FILE).write_bytes(os.urandom(32))


TAMPERINGS: dict[str, Tamper] = {
    "modify a field": _modify_field,
    "delete a record": _delete_record,
    "reorder two records": _reorder,
    "truncate the tail": _truncate_tail,
    "rewrite the tail with an unkeyed SHA-256": _rewrite_tail_unkeyed,
    "swap two segment files": _swap_files,
    "flip a byte": _flip_byte,
    "truncate + foreign anchor": _rollback_head,
    "replace the key": _replace_key,
}


def test_every_kind_of_tampering_is_detected(tmp_path: Path) -> None:
    detected = 0
    for i, (name, tamper) in enumerate(TAMPERINGS.items()):
        d = tmp_path / f"log{i}"
        _fill(d, 30, days=3)
        assert verify(d).ok
        tamper(d)
        result = verify(d)
        print(f"  {name}: {'detected' if not result.ok else 'MISSED'}: {result.describe()}")
        if not result.ok:
            detected += 1
            assert result.file is not None and result.reason
            with pytest.raises(AuditCorrupt):
                _log(d)  # the server does not start on it
    n = len(TAMPERINGS)
    print(f"audit tampering detected: {detected}/{n} = {detected / n:.0%}")
    assert detected == n


def test_the_first_bad_record_is_named(tmp_path: Path) -> None:
    _fill(tmp_path, 30, days=3)
    _delete_record(tmp_path)
    result = verify(tmp_path)
    second = _segments(tmp_path)[1]
    assert (result.file, result.line, result.first_bad) == (str(second), 3, 13)
    assert "sequence 14 where 13 was expected" in result.reason
    assert result.records == 12


# --------------------------------------------------------------------------- property


@st.composite
def _mutations(draw: st.DrawFn) -> tuple[int, str, int, int]:
    n = draw(st.integers(1, 25))
    kind = draw(
        st.sampled_from(
            ["flip", "delete_line", "swap_lines", "truncate", "duplicate", "insert", "head"]
        )
    )
    return n, kind, draw(st.integers(0, 10**9)), draw(st.integers(0, 10**9))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(_mutations())
def test_any_single_mutation_is_detected(
    tmp_path: Path, mutation: tuple[int, str, int, int]
) -> None:
    n, kind, a, b = mutation
    d = tmp_path / f"p{os.urandom(4).hex()}"
    _fill(d, n, days=2)
    head = d / AUDIT_DIR / HEAD_FILE
    files = _segments(d)
    all_lines = [(f, i) for f in files for i in range(len(_lines(f)))]
    if kind == "head":
        data = bytearray(head.read_bytes())
        data[a % len(data)] ^= 1 << (b % 8)
        head.write_bytes(bytes(data))
    elif kind == "flip":
        f = files[a % len(files)]
        data = bytearray(f.read_bytes())
        data[b % len(data)] ^= 1 << (a % 8)
        f.write_bytes(bytes(data))
    elif kind == "truncate":
        f = files[-1]
        whole = f.read_bytes()
        f.write_bytes(whole[: b % len(whole)])
    else:
        f, i = all_lines[a % len(all_lines)]
        lines = _lines(f)
        if kind == "delete_line":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "insert":
            other = all_lines[b % len(all_lines)]
            lines.insert(i, _lines(other[0])[other[1]])
        else:  # swap_lines
            if len(all_lines) < 2:
                lines.insert(i, lines[i])
            else:
                f2, j = all_lines[b % len(all_lines)]
                if (f2, j) == (f, i):
                    f2, j = all_lines[(b + 1) % len(all_lines)]
                if f2 == f:
                    lines[i], lines[j] = lines[j], lines[i]
                else:
                    other_lines = _lines(f2)
                    lines[i], other_lines[j] = other_lines[j], lines[i]
                    f2.write_bytes(b"".join(other_lines))
        f.write_bytes(b"".join(lines))
    result = verify(d)
    assert not result.ok, (kind, a, b, result)
