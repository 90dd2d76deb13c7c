"""kill -9 of a process appending to the spool: every append that returned (and was
printed) under fsync="always" survives; no duplicates; at most a torn tail."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isthmus.transport.spool import Spool

pytestmark = pytest.mark.integration

CHILD = r"""
import sys
import numpy as np
from isthmus.model.batch import Batch
from isthmus.transport.spool import Spool

s = Spool(sys.argv[1], fsync="always", segment_bytes=32_768)
print("ready", flush=True)
while True:
    q = s.next_seq
    n = q % 50 + 1
    b = Batch.of(np.arange(n) + q, np.arange(n, dtype=np.int64) + q * 1000, q * 0.5, 0)
    assert s.append(b) == q
    print(q, flush=True)
"""


def run_child(directory: Path, rng: random.Random) -> list[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3] / "src")},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.05, 0.3))
    proc.send_signal(signal.SIGKILL)
    out = proc.stdout.read()
    proc.wait()
    return [int(line) for line in out.split("\n") if line.strip().isdigit()]


def test_sigkill_during_append_loses_no_durable_record(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("SPOOL_CRASH_SEED", "4")))
    printed: list[int] = []
    for _round in range(3):
        printed += run_child(tmp_path, rng)
        with Spool(tmp_path) as s:
            st = s.stats()
            assert st.quarantined_regions == 0  # nothing beyond a torn tail
            got = s.read(s.acked_seq, 1_000_000)
            seqs = [q for q, _ in got]
            assert seqs == sorted(set(seqs))  # in order, no duplicates
            assert seqs == list(range(s.acked_seq + 1, s.next_seq))  # no holes
            for q, b in got:
                n = q % 50 + 1
                assert len(b) == n and b.ts[0] == q * 1000 and b.value[0] == q * 0.5
            missing = {q for q in printed if q > s.acked_seq} - set(seqs)
            assert not missing, f"durable appends lost: {sorted(missing)[:10]}"
            if seqs:
                s.ack(seqs[rng.randrange(len(seqs))])
    assert len(printed) >= 4
