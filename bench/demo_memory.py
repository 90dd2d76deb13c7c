"""Idle memory of the whole demo: RSS of every process (gateway + simulator).

Target (foundation issue): ≤ 300 MB.  Starts `isthmus demo` on free ports in a
temporary data directory, lets it run idle (ingesting the simulated plant, no client)
for --settle seconds, then samples RSS (and USS, memory not shared with others) of the
process tree for --sample seconds and reports the maximum.

    .venv/bin/python bench/demo_memory.py [--settle 20] [--sample 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import start_demo

from bench.common import write_result

TARGET_MB = 300


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--sample", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo = start_demo(Path(tmp) / "data")
        try:
            time.sleep(args.settle)
            peak_rss = peak_uss = 0.0
            per_process: dict[str, float] = {}
            cpu_start = {p.pid: p.cpu_times() for p in tree(demo.proc.pid)}
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.sample:
                procs = tree(demo.proc.pid)
                infos = [(p, p.memory_full_info()) for p in procs]
                rss = sum(i.rss for _, i in infos) / 2**20
                uss = sum(i.uss for _, i in infos) / 2**20
                if rss > peak_rss:
                    peak_rss = rss
                    per_process = {
                        f"{p.pid} {' '.join(p.cmdline()[2:4])}": round(i.rss / 2**20, 1)
                        for p, i in infos
                    }
                peak_uss = max(peak_uss, uss)
                time.sleep(0.5)
            wall = time.monotonic() - t0
            cpu = 0.0
            for p in tree(demo.proc.pid):
                if p.pid in cpu_start:
                    now, before = p.cpu_times(), cpu_start[p.pid]
                    cpu += (now.user + now.system) - (before.user + before.system)
        finally:
            demo.stop(timeout=10)
    result = {
        "target_rss_mb": TARGET_MB,
        "peak_rss_mb": round(peak_rss, 1),
        "peak_uss_mb": round(peak_uss, 1),
        "rss_per_process_mb": per_process,
        "idle_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "met": peak_rss <= TARGET_MB,
    }
    path = write_result("demo_memory", result)
    print(
        f"demo idle memory: peak RSS {peak_rss:.1f} MB (USS {peak_uss:.1f} MB), "
        f"target ≤ {TARGET_MB} MB: {'met' if result['met'] else 'MISSED'}"
    )
    for name, mb in per_process.items():
        print(f"  {mb:7.1f} MB  {name}")
    print(f"  idle CPU: {result['idle_cpu_percent_of_one_core']}% of one core")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
