"""Run every benchmark in turn (each prints a table and writes bench/results/NAME.json).

.venv/bin/python bench/run_all.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHES = [
    ("historian engines (SQLite vs DuckDB)", ["historian_engines.py"], ["--samples", "500000"]),
    ("historian, 10M samples", ["historian.py"], []),
    ("ingest: connectors + pipeline vs raw libraries", ["ingest.py"], ["--quick"]),
    ("connectors: Modbus and OPC UA vs raw libraries and Node-RED", ["connectors.py"], ["--quick"]),
    ("demo idle memory", ["demo_memory.py"], ["--settle", "10", "--sample", "5"]),
    ("commands: API -> written -> read back vs raw write + read", ["commands.py"], ["--quick"]),
    (
        "GET /api/last for 10,000 tags with and without access control",
        ["api_reads.py"],
        ["--rounds", "10"],
    ),
    ("OPC UA fast decode path", ["opcua_fastpath.py"], ["--quick"]),
    ("string samples on the numeric hot path", ["text_overhead.py"], ["--quick"]),
    ("spool: append, fsync, replay, RSS", ["spool.py"], ["--seconds", "1", "--bytes", "268435456"]),
    ("PostgreSQL historian: layouts vs raw COPY", ["historian_pg.py"], ["--samples", "500000"]),
    ("downsampling tiers", ["historian_tiers.py"], ["--days", "30"]),
    ("data lake export", ["export.py"], ["--samples", "1000000"]),
    (
        "edge -> hub -> PostgreSQL",
        ["edge_hub.py"],
        ["--samples", "1000000", "--latency-s", "5", "--rss-s", "5"],
    ),
    # the full figure is one hour: bench/spool_rss.py with its defaults
    (
        "edge memory while a backlog accumulates",
        ["spool_rss.py", "--seconds", "600"],
        ["--seconds", "60"],
    ),
]


def main() -> int:
    quick = "--quick" in sys.argv
    failed = []
    for title, script, quick_args in BENCHES:
        print(f"\n=== {title} ===", flush=True)
        start = time.monotonic()
        args = [
            sys.executable,
            str(HERE / script[0]),
            *script[1:],
            *(quick_args if quick else []),
        ]
        if subprocess.run(args, cwd=HERE.parent).returncode != 0:
            failed.append(title)
        print(f"({time.monotonic() - start:.0f} s)")
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
