"""The CLI as a user meets it: exit codes and messages, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def isthmus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], capture_output=True, text=True, timeout=60
    )


def test_check_accepts_every_shipped_example() -> None:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples, "examples/ must hold plant configurations"
    for path in examples:
        r = isthmus("check", str(path))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ok" in r.stdout


def test_check_reports_file_line_field_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "enterprise: acme\nsite: lyon\nhierarchy: {a: {l: {c: [e]}}}\nsources:\n"
        "  - name: s\n    type: modbus\n    host: h\n    colour: blue\n"
        "    tags:\n      - {path: a/l/c/e/t, address: 70000}\n"
    )
    r = isthmus("check", str(bad))
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert f"{bad}:8: sources.0.colour: unknown key" in out
    assert f"{bad}:10: sources.0.tags.0.address:" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("enterprise: [unclosed\n", ":2: (yaml): expected ',' or ']'"),
        ("a: 1\n  b: 2\n", ":2: (yaml)"),
        ("", ":1: (file): the file is empty"),
    ],
)
def test_check_malformed_yaml(tmp_path: Path, content: str, expected: str) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(content)
    r = isthmus("check", str(bad))
    assert r.returncode == 1
    assert expected in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_run_with_bad_config_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("enterprise: acme\nsite: lyon\nhierarchy: {}\nstorage: {retention: x}\n")
    r = isthmus("run", str(bad), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1
    assert f"{bad}:4: storage.retention:" in r.stdout + r.stderr
    r = isthmus("check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1
    assert "cannot read" in r.stderr
    assert "Traceback" not in r.stderr


def test_query_errors_are_clear(tmp_path: Path) -> None:
    r = isthmus("query", "packaging/nope/x/y/z", "--data-dir", str(tmp_path))
    assert r.returncode == 1
    assert "unknown tag" in r.stderr or "no history" in r.stderr
    r = isthmus("query", "x", "--since", "banana", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "--since" in r.stderr
