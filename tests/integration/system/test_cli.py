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


def test_export_through_the_cli(tmp_path: Path) -> None:
    """A store with history → `isthmus export` → Hive-partitioned Parquet DuckDB can read."""
    import duckdb
    import numpy as np

    from isthmus.app import full_path
    from isthmus.cli import load_config
    from isthmus.historian.base import TagMeta
    from isthmus.historian.duckdb.store import DuckDBStore
    from isthmus.model.batch import Batch

    plant, sources, _ = load_config(None)
    tag = sources[0].tags[0]
    path = full_path(plant, tag)
    store = DuckDBStore(plant.storage, tmp_path / "d")
    store.open()
    tag_id = store.register_tags([TagMeta(path, tag.data_type.value, tag.unit)])[path]
    now = np.int64(__import__("time").time_ns())
    store.write(Batch.of(np.full(100, tag_id), now - np.arange(100) * 10**9, np.arange(100), 0))
    store.close()

    r = isthmus("export", str(tmp_path / "lake"), "--from", "-1h", "--data-dir",
                str(tmp_path / "d"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "100" in r.stdout
    rows = duckdb.sql(
        f"SELECT count(*), min(site), any_value(tag) FROM read_parquet("
        f"'{tmp_path}/lake/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert rows == [(100, plant.site, path)]
    again = isthmus("export", str(tmp_path / "lake"), "--from", "-1h", "--data-dir",
                    str(tmp_path / "d"))  # fmt: skip
    assert again.returncode == 1 and "--overwrite" in again.stderr
    bad = isthmus("export", str(tmp_path / "x"), "--from", "banana", "--data-dir",
                  str(tmp_path / "d"))  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_query_interpolated_and_extended_from_the_store(tmp_path: Path) -> None:
    """`isthmus query` with --interval and --bucket --extended on a stopped system."""
    import json

    import numpy as np

    from isthmus.app import full_path
    from isthmus.cli import load_config
    from isthmus.historian.base import TagMeta
    from isthmus.historian.duckdb.store import DuckDBStore
    from isthmus.model.batch import Batch

    plant, sources, _ = load_config(None)
    tag = sources[0].tags[0]
    path = full_path(plant, tag)
    store = DuckDBStore(plant.storage, tmp_path / "d")
    store.open()
    tag_id = store.register_tags([TagMeta(path, tag.data_type.value, tag.unit)])[path]
    minute = 60 * 10**9
    # Six minutes ago, on an even minute: 2-minute buckets are aligned on the epoch.
    t0 = (__import__("time").time_ns() // (2 * minute) - 3) * 2 * minute
    store.write(Batch.of(np.full(4, tag_id), t0 + np.arange(4) * minute, [0, 10, 20, 30], 0))
    store.close()
    start = __import__("isthmus.model.durations", fromlist=["x"]).format_ns(t0)

    r = isthmus("query", path, "--since", start, "--interval", "30s", "--method", "linear",
                "--json", "--data-dir", str(tmp_path / "d"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    values = [row["value"] for row in json.loads(r.stdout)][:6]
    assert values == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    r = isthmus("query", path, "--since", start, "--bucket", "2m", "--extended", "--json",
                "--data-dir", str(tmp_path / "d"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)[0]
    assert first["count"] == 2 and first["twa"] == 5.0 and first["stddev"] == 5.0
    r = isthmus("query", path, "--interval", "1m", "--bucket", "1m", "--data-dir",
                str(tmp_path / "d"))  # fmt: skip
    assert r.returncode == 1 and "exclude each other" in r.stderr
