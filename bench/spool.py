"""The spool benchmark: append and replay throughput, and RSS under a large backlog.

In one run, on the same disk (a temporary directory next to the repository unless
``--dir``), for batches of ``--batch`` samples (1000: one poll of 1000 tags):

* append throughput per fsync mode (always / batch / never), in samples/s and MB/s,
  against a raw reference loop writing the *same pre-encoded record bytes* with
  ``os.write`` (+ ``os.fsync`` after each record for "always", every 0.2 s for "batch",
  never for "never"): ratio = spool / raw;
* the same for ``compress=True`` (zlib level 1) in "batch" mode, with the size ratio;
* read/replay throughput (``read(after, 1000)`` + ``ack`` over the whole backlog);
* RSS sampled while a backlog of ``--bytes`` (1 GiB) accumulates with fsync="batch" and
  no consumer: start / max / end (``--bytes 2147483648`` for 2 GiB: ~+30 s).

    .venv/bin/python bench/spool.py                    # ~40 s
    .venv/bin/python bench/spool.py --bytes 500000000 --seconds 1

Results: printed, and ``bench/results/spool.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result
from isthmus.model.batch import Batch
from isthmus.transport.spool import Spool
from isthmus.transport.spool.format import encode

ROUNDS = 3


def batches(n_tags: int, count: int, seed: int = 1) -> list[Batch]:
    """Realistic-ish polls: fixed tag ids, 1 s apart, random-walk values, Good quality."""
    rng = np.random.default_rng(seed)
    out = []
    values = rng.normal(50, 10, n_tags)
    t0 = 1_700_000_000_000_000_000
    for i in range(count):
        values = values + rng.normal(0, 0.1, n_tags)
        out.append(Batch.of(np.arange(n_tags), t0 + i * 1_000_000_000, values.round(3), 0))
    return out


def timed(seconds: float, step: Callable[[int], int]) -> tuple[int, int, float]:
    """Call ``step(i)`` until ``seconds`` elapse; returns (calls, bytes, elapsed)."""
    start = time.perf_counter()
    i = nbytes = 0
    while True:
        nbytes += step(i)
        i += 1
        if i % 8 == 0 and time.perf_counter() - start >= seconds:
            break
    return i, nbytes, time.perf_counter() - start


def raw_loop(path: Path, records: list[bytes], mode: str, seconds: float) -> dict[str, float]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    last = time.monotonic()

    def step(i: int) -> int:
        nonlocal last
        rec = records[i % len(records)]
        os.write(fd, rec)
        if mode == "always" or (mode == "batch" and time.monotonic() - last >= 0.2):
            os.fsync(fd)
            last = time.monotonic()
        return len(rec)

    try:
        calls, nbytes, elapsed = timed(seconds, step)
    finally:
        os.close(fd)
    return {"records_per_s": calls / elapsed, "mb_per_s": nbytes / elapsed / 1e6}


def spool_loop(
    directory: Path, data: list[Batch], mode: str, seconds: float, compress: bool = False
) -> dict[str, float]:
    s = Spool(
        directory,
        max_bytes=1 << 40,
        fsync=mode,  # type: ignore[arg-type]
        compress=compress,
        segment_bytes=64 << 20,
    )

    def step(i: int) -> int:
        s.append(data[i % len(data)])
        return 0

    try:
        calls, _, elapsed = timed(seconds, step)
        s.sync()
        nbytes = s.stats().bytes
    finally:
        s.close()
    n = len(data[0])
    return {
        "records_per_s": calls / elapsed,
        "samples_per_s": calls * n / elapsed,
        "mb_per_s": nbytes / elapsed / 1e6,
        "bytes_per_sample": nbytes / (calls * n),
    }


def replay(directory: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    s = Spool(directory, max_bytes=1 << 40, fsync="batch")  # verifies every record
    open_s = time.perf_counter() - t0
    start = time.perf_counter()
    after = s.acked_seq
    samples = records = 0
    while True:
        got = s.read(after, 1000)
        if not got:
            break
        records += len(got)
        samples += sum(len(b) for _, b in got)
        after = got[-1][0]
        s.ack(after)
    elapsed = time.perf_counter() - start
    s.close()
    return {
        "records": records,
        "samples_per_s": samples / elapsed,
        "records_per_s": records / elapsed,
        "seconds": elapsed,
        "open_verify_seconds": open_s,
    }


def rss_backlog(directory: Path, data: list[Batch], target: int) -> dict[str, Any]:
    proc = psutil.Process()
    s = Spool(directory, max_bytes=target * 2, fsync="batch", segment_bytes=64 << 20)
    samples: list[tuple[int, int]] = []
    start = time.perf_counter()
    i = 0
    try:
        while s.stats().bytes < target:
            s.append(data[i % len(data)])
            i += 1
            if i % 200 == 0:
                samples.append((s.stats().bytes, proc.memory_info().rss))
        s.sync()
        st = s.stats()
    finally:
        s.close()
    elapsed = time.perf_counter() - start
    rss = [r for _, r in samples]
    return {
        "backlog_bytes": st.bytes,
        "records": st.records,
        "segments": st.segments,
        "seconds": elapsed,
        "mb_per_s": st.bytes / elapsed / 1e6,
        "rss_start_mb": rss[0] / 2**20,
        "rss_max_mb": max(rss) / 2**20,
        "rss_end_mb": rss[-1] / 2**20,
        "rss_growth_mb": (rss[-1] - rss[0]) / 2**20,
        "rss_samples": [
            (b, round(r / 2**20, 1)) for b, r in samples[:: max(1, len(samples) // 20)]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="samples per batch")
    parser.add_argument("--seconds", type=float, default=3.0, help="per append measurement")
    parser.add_argument("--bytes", type=int, default=1 << 30, help="backlog for the RSS run")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a disk)")
    args = parser.parse_args()

    data = batches(args.batch, 64)
    records = [b"".join(encode(b, i + 1, 0)[0]) for i, b in enumerate(data)]
    base = Path(tempfile.mkdtemp(prefix="isthmus-spool-bench-", dir=args.dir))
    report: dict[str, Any] = {"batch_samples": args.batch, "seconds_per_mode": args.seconds}
    try:
        appends: dict[str, Any] = {}
        for mode in ("always", "batch", "never"):
            # Interleaved rounds, best of each, each after os.sync(): the disk of a VM is
            # noisy and write-back of an earlier run must not slow the next one.
            raws, sps = [], []
            for r in range(ROUNDS):
                os.sync()
                raws.append(raw_loop(base / f"raw-{mode}", records, mode, args.seconds / ROUNDS))
                os.sync()
                sps.append(
                    spool_loop(base / f"spool-{mode}-{r}", data, mode, args.seconds / ROUNDS)
                )
            raw = max(raws, key=lambda x: x["records_per_s"])
            sp = max(sps, key=lambda x: x["records_per_s"])
            sp["ratio_vs_raw"] = sp["records_per_s"] / raw["records_per_s"]
            appends[mode] = {"spool": sp, "raw_os_write": raw}
            print(
                f"append fsync={mode:6s}: spool {sp['samples_per_s'] / 1e6:7.2f} M samples/s "
                f"{sp['mb_per_s']:7.1f} MB/s | raw {raw['mb_per_s']:7.1f} MB/s | "
                f"ratio {sp['ratio_vs_raw']:.2f}"
            )
        os.sync()
        zl = spool_loop(base / "spool-zlib", data, "batch", args.seconds, compress=True)
        zl["size_ratio_vs_raw_columns"] = zl["bytes_per_sample"] / 24
        appends["batch_zlib"] = {"spool": zl}
        print(
            f"append fsync=batch zlib: {zl['samples_per_s'] / 1e6:.2f} M samples/s, "
            f"{zl['bytes_per_sample']:.1f} bytes/sample (uncompressed 24 + header)"
        )
        report["append"] = appends
        for path in base.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.sync()

        back = rss_backlog(base / "backlog", data, args.bytes)
        report["rss_backlog"] = back
        print(
            f"backlog {back['backlog_bytes'] / 1e9:.2f} GB in {back['seconds']:.1f} s "
            f"({back['mb_per_s']:.0f} MB/s, {back['segments']} segments): RSS start "
            f"{back['rss_start_mb']:.1f} MB, max {back['rss_max_mb']:.1f} MB, end "
            f"{back['rss_end_mb']:.1f} MB (growth {back['rss_growth_mb']:+.1f} MB)"
        )
        rep = replay(base / "backlog")
        report["replay"] = rep
        print(
            f"replay {rep['records']} records: {rep['samples_per_s'] / 1e6:.2f} M samples/s "
            f"in {rep['seconds']:.1f} s (read + ack, verified CRCs); open + verify of the "
            f"backlog {rep['open_verify_seconds']:.1f} s"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"written {write_result('spool', report)}")


if __name__ == "__main__":
    main()
