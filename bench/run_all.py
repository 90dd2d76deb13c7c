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
]


def main() -> int:
    quick = "--quick" in sys.argv
    failed = []
    for title, script, quick_args in BENCHES:
        print(f"\n=== {title} ===", flush=True)
        start = time.monotonic()
        args = [sys.executable, str(HERE / script[0]), *(quick_args if quick else [])]
        if subprocess.run(args, cwd=HERE.parent).returncode != 0:
            failed.append(title)
        print(f"({time.monotonic() - start:.0f} s)")
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
