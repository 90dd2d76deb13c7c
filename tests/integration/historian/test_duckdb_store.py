"""DuckDB specifics: the anti-join path, settings, and the one-process file lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from isthmus.historian.common import StoreBusyError
from isthmus.historian.duckdb.store import DuckDBStore
from isthmus.model.batch import Batch
from isthmus.model.config import StorageConfig

S = 1_000_000_000


def test_idempotent_without_the_append_fast_path(tmp_path: Path) -> None:
    store = DuckDBStore(StorageConfig(path="h.duckdb"), tmp_path, append_fast_path=False)
    with store:
        ts = np.arange(100, dtype=np.int64) * S
        b = Batch.of(np.ones(100), ts, np.arange(100.0), 0)
        assert store.write(b) == 100
        assert store.write(b) == 0
        later = Batch.of(np.ones(100), ts + 50 * S, -np.arange(100.0), 0)
        assert store.write(later) == 50
        assert store.count() == 150
        assert store.raw(1, 0, 10**12).value[:100].tolist() == list(np.arange(100.0))
        assert store.last([1]).value.tolist() == [-99.0]


def test_settings_are_applied(tmp_path: Path) -> None:
    store = DuckDBStore(StorageConfig(path=":memory:", memory_limit="100MB"), tmp_path, threads=1)
    with store:
        cur = store._reader()
        rows = cur.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('threads', 'memory_limit')"
        ).fetchall()
        got = dict(rows)
        assert got["threads"] == "1"
        assert got["memory_limit"].startswith(("95", "100"))


def test_second_process_gets_store_busy(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, duckdb
                con = duckdb.connect({str(path)!r})
                print("ready", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        store = DuckDBStore(StorageConfig(path="h.duckdb"), tmp_path)
        with pytest.raises(StoreBusyError, match="through its API"):
            store.open()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
