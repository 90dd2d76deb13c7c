"""What string samples (``Batch.text``) cost the all-numeric hot path.

Times the numeric-only code of the commit before string samples (the reference, loaded
from git) against the current code, in the same run, on all-numeric batches:
``Batch.concat``, ``Batch.select``, ``Qualifier.apply`` and the Modbus block decoder.
Ratios near 1.0 mean no cost.

    .venv/bin/python -m bench.text_overhead          # ~30 s
    .venv/bin/python -m bench.text_overhead --quick

Results: ``bench/results/text_overhead.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import timeit
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_result
from isthmus.connectors.modbus import decode as new_decode
from isthmus.connectors.modbus.config import RegisterKind
from isthmus.model import batch as new_batch
from isthmus.model.catalog import CatalogEntry
from isthmus.model.config import DataType, TagConfig
from isthmus.pipeline import qualify as new_qualify

REFERENCE = "18f4335"
"""The last commit before string samples."""
ROOT = Path(__file__).resolve().parents[1]


def load_reference(path: str, name: str, replace: dict[str, str]) -> types.ModuleType:
    """A module from the reference commit's source of ``path``."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{REFERENCE}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for old, new in replace.items():
        source = source.replace(old, new)
    module = types.ModuleType(name)
    module.__file__ = f"<{REFERENCE}:{path}>"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def best(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Best time of one call, in microseconds."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = 3 if args.quick else 15

    ref_batch = load_reference("src/isthmus/model/batch.py", "_ref_batch", {})
    swap = {"from isthmus.model.batch import Batch": "from _ref_batch import Batch"}
    ref_qualify = load_reference("src/isthmus/pipeline/qualify.py", "_ref_qualify", swap)
    ref_decode = load_reference("src/isthmus/connectors/modbus/decode.py", "_ref_decode", {})

    rng = np.random.default_rng(7)
    n_tags, rows = 1000, 1000
    entries = [
        CatalogEntry(i, f"e/s/a/l/c/q/t{i}", "s", TagConfig(path=f"a/l/c/q/t{i}", deadband=0.1))
        for i in range(n_tags)
    ]
    tag = rng.permutation(n_tags)[:rows].astype(np.int32)
    ts = np.full(rows, 10**18, dtype=np.int64)
    value = rng.normal(size=rows)
    quality = np.zeros(rows, dtype=np.uint32)
    results: dict[str, dict[str, float]] = {}

    def compare(name: str, ref: Callable[[], Any], new: Callable[[], Any], number: int) -> None:
        # Interleave reference and current runs so drift hits both alike.
        ref_times: list[float] = []
        new_times: list[float] = []
        for _ in range(repeat):
            ref_times.append(best(ref, number, 1))
            new_times.append(best(new, number, 1))
        r, c = min(ref_times), min(new_times)
        results[name] = {"reference_us": round(r, 2), "current_us": round(c, 2),
                         "ratio": round(c / r, 3)}  # fmt: skip

    parts_ref = [ref_batch.Batch.of(tag[:125], ts[:125], value[:125], 0) for _ in range(64)]
    parts_new = [new_batch.Batch.of(tag[:125], ts[:125], value[:125], 0) for _ in range(64)]
    compare(
        "concat 64 x 125 rows",
        lambda: ref_batch.Batch.concat(parts_ref),
        lambda: new_batch.Batch.concat(parts_new),
        2000,
    )
    mask = rng.random(rows) < 0.5
    big_ref = ref_batch.Batch.of(tag, ts, value, quality)
    big_new = new_batch.Batch.of(tag, ts, value, quality)
    compare(
        "select half of 1000 rows",
        lambda: big_ref.select(mask),
        lambda: big_new.select(mask),
        5000,
    )

    q_ref = ref_qualify.Qualifier(entries)
    q_new = new_qualify.Qualifier(entries)
    counter = iter(range(10**9))

    def step(q: Any, make: Any) -> Any:
        k = next(counter)
        return q.apply(make(tag, ts + k, value + (k % 3) * 0.2, quality))

    compare(
        "qualify 1000 rows (1000 tags, deadband)",
        lambda: step(q_ref, ref_batch.Batch.of),
        lambda: step(q_new, new_batch.Batch.of),
        300,
    )

    plan_tags_ref = [
        ref_decode.PlanTag(i, RegisterKind.HOLDING, 2 * i, DataType.FLOAT32) for i in range(62)
    ]
    plan_tags_new = [
        new_decode.PlanTag(i, RegisterKind.HOLDING, 2 * i, DataType.FLOAT32) for i in range(62)
    ]
    block_ref = ref_decode.build_plan(plan_tags_ref).blocks[0]
    block_new = new_decode.build_plan(plan_tags_new).blocks[0]
    payload = rng.integers(0, 2**16, 124, dtype=np.uint16).astype(">u2").tobytes()
    out_v = np.empty(62)
    out_q = np.empty(62, dtype=np.uint32)
    compare(
        "modbus decode 62 float32 (124 registers)",
        lambda: block_ref.decode_into(payload, out_v, out_q),
        lambda: block_new.decode_into(payload, out_v, out_q),
        5000,
    )

    width = max(len(k) for k in results)
    print(f"{'operation':<{width}}  reference µs  current µs  ratio")
    for name, r in results.items():
        print(
            f"{name:<{width}}  {r['reference_us']:>12.2f}  {r['current_us']:>10.2f}"
            f"  {r['ratio']:>5.3f}"
        )
    path = write_result("text_overhead", {"reference_commit": REFERENCE, "results": results})
    print(f"written {path}")


if __name__ == "__main__":
    main()
