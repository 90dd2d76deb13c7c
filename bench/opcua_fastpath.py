"""OPC UA fast publish decoding: our source with ``fast_decode`` on vs off vs raw asyncua.

Run: ``.venv/bin/python bench/opcua_fastpath.py [--seconds 8] [--items 10000 2000]
[--quick]``.  Writes ``bench/results/opcua_fastpath.json`` and prints a table.

Against the fast fixture ``bench/fixtures/opcua_server.py`` (every item changes every
100 ms publishing interval: 10,000 items = 100,000 changes/s offered, 2,000 items =
20,000/s), one after the other in the same run, per load:

* ``raw`` — an asyncua subscription whose handler counts ``datachange_notification``s;
* ``connector_slow`` / ``connector_fast`` — ``OpcUaSource`` into a counter, with
  ``fast_decode: false`` (asyncua decodes every publish response) / ``true``;
* ``pipeline_slow`` / ``pipeline_fast`` — the same into the historian chain
  (``Ingest`` → local transport → ``HistorianWriter`` → ``DuckDBStore``).

Plus decoding one 10,000-item publish response alone: asyncua's ``struct_from_binary``
vs :func:`isthmus.connectors.opcua.fastpublish.decode` (one record view; and the
grouped path for mixed layouts).  CPU per change = ``process_time()`` of this process / changes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write_result
from bench.connectors import (
    fixture,
    measure_ours,
    measure_raw_asyncua,
    opcua_source_config,
    started,
)
from isthmus.connectors.base import BoundTag
from isthmus.connectors.opcua.config import OpcUaTagConfig
from isthmus.connectors.opcua.source import OpcUaSource

MODES = ("raw", "connector_slow", "connector_fast", "pipeline_slow", "pipeline_fast")


async def bench_load(args: argparse.Namespace, n_items: int) -> dict[str, Any]:
    node_ids = [f"ns=2;s=V{i}" for i in range(n_items)]
    argv, port = fixture("opcua_server.py")
    endpoint = f"opc.tcp://127.0.0.1:{port}/"
    warmup = max(args.warmup, 1.5)
    rows: dict[str, Any] = {}
    async with started(argv, port, b"LISTENING") as server:
        if "raw" in args.modes:
            rows["raw"] = await measure_raw_asyncua(
                endpoint, node_ids, args.seconds, server, warmup
            )

        for kind in ("connector", "pipeline"):
            for fast in (False, True):
                mode = f"{kind}_{'fast' if fast else 'slow'}"
                if mode not in args.modes:
                    continue
                cfg = opcua_source_config(endpoint, node_ids, fast_decode=fast)
                bound: list[BoundTag[OpcUaTagConfig]] = [
                    BoundTag(i, t.path, t) for i, t in enumerate(cfg.tags)
                ]
                rows[mode] = await measure_ours(
                    mode,
                    "opcua.fast",
                    functools.partial(OpcUaSource, cfg, bound),
                    [(b.tag_id, b.uns_path, b.config) for b in bound],
                    kind == "pipeline",
                    args,
                    server,
                    warmup,
                    count_fast_decoded=True,
                )
    rows["setup"] = {"items": n_items, "offered_changes_per_s": n_items * 10}
    return rows


def decode_costs(n_items: int) -> dict[str, Any]:
    """One publish response of ``n_items`` Double changes (the fixture's encoder):
    asyncua vs the fast decoder; and its grouped path for mixed layouts (one item of
    another layout in the middle defeats the single record view)."""
    from asyncua import ua
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary

    from bench.fixtures.opcua_server import ITEM, encode_publish, opc_now
    from isthmus.connectors.opcua import fastpublish

    items = np.zeros(n_items, dtype=ITEM)
    items["handle"] = np.arange(n_items)
    items["mask"], items["vtype"], items["ts"] = 0x05, 11, opc_now()
    items["value"] = np.arange(n_items) * 0.5
    raw = encode_publish(1, 1, 1, items, 0)
    # the same message with item n/2 carrying a status (mask 0x07): mixed layouts
    at = len(raw) - 12 - ITEM.itemsize * (n_items - n_items // 2)
    mixed = bytearray(raw)
    mixed[at + 4] = 0x07
    mixed[at + 14 : at + 14] = b"\x00\x00\x00\x40"  # Uncertain, before the timestamp
    length_at = raw.index(b"\x01\x00\x2b\x03\x01") + 5  # the DataChangeNotification body
    body_len = int.from_bytes(raw[length_at : length_at + 4], "little") + 4
    mixed[length_at : length_at + 4] = body_len.to_bytes(4, "little")
    mixed_bytes = bytes(mixed)
    slow = struct_from_binary(ua.PublishResponse, Buffer(mixed_bytes))
    decoded = fastpublish.decode(mixed_bytes)
    assert decoded is not None and len(decoded.changes) == n_items
    item = slow.Parameters.NotificationMessage.NotificationData[0].MonitoredItems[n_items // 2]
    assert decoded.changes.status[n_items // 2] == item.Value.StatusCode.value == 0x40000000

    def best(fn: Callable[[], Any], repeat: int) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return min(times) / n_items * 1e6

    def asyncua_decode() -> None:
        response = struct_from_binary(ua.PublishResponse, Buffer(raw))
        assert len(response.Parameters.NotificationMessage.NotificationData[0].MonitoredItems)

    def fast_decode() -> None:
        assert fastpublish.decode(raw) is not None

    def fast_mixed() -> None:
        assert fastpublish.decode(mixed_bytes) is not None

    return {
        "items_per_response": n_items,
        "asyncua_us_per_item": round(best(asyncua_decode, 3), 3),
        "fast_record_view_us_per_item": round(best(fast_decode, 20), 4),
        "fast_mixed_us_per_item": round(best(fast_mixed, 3), 3),
    }


def print_table(results: dict[str, Any]) -> None:
    print(f"{'items':>6} {'mode':15} {'changes/s':>10} {'µs CPU/change':>14} {'per CPU-s':>10}")
    for key, section in results.items():
        if not key.startswith("items_"):
            continue
        for mode in MODES:
            row = section.get(mode)
            if row:
                print(
                    f"{section['setup']['items']:>6} {mode:15} {row['values_per_s']:>10,} "
                    f"{row['cpu_us_per_value']:>14.2f} {row['values_per_cpu_s'] or 0:>10,}"
                    f"  reconnects {row.get('reconnects', 0)}"
                )
        for name, r in section.get("ratio", {}).items():
            print(f"{'':6} {name}: CPU/change x{r['cpu']}, changes/s x{r['rate']}")
    d = results["decode"]
    print(
        f"decode one {d['items_per_response']}-item response: asyncua "
        f"{d['asyncua_us_per_item']} µs/item, fast {d['fast_record_view_us_per_item']} "
        f"(record view), {d['fast_mixed_us_per_item']} (mixed layouts, grouped)"
    )


def ratios(section: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fast, slow in (("connector_fast", "connector_slow"), ("pipeline_fast", "pipeline_slow"),
                       ("pipeline_fast", "raw")):  # fmt: skip
        a, b = section.get(fast), section.get(slow)
        if a and b and a["values"] and b["values"]:
            out[f"{fast}_vs_{slow}"] = {
                "cpu": round(a["cpu_us_per_value"] / b["cpu_us_per_value"], 3),
                "rate": round(a["values_per_s"] / b["values_per_s"], 3),
            }
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for n in args.items:
        section = await bench_load(args, n)
        section["ratio"] = ratios(section)
        results[f"items_{n}"] = section
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per mode")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 2_000])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--quick", action="store_true", help="2 s per mode, 10,000 items only")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.items = 2.0, 0.5, [10_000]
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    started_at = time.monotonic()
    results = asyncio.run(main_async(args))
    results["decode"] = decode_costs(10_000)
    results["meta"] = {
        "seconds_per_mode": args.seconds,
        "warmup_s": args.warmup,
        "total_s": round(time.monotonic() - started_at, 1),
        "note": "client CPU = process_time() of this process; server in its own process",
    }
    print_table(results)
    path = write_result("opcua_fastpath", results)
    print(f"wrote {path} in {results['meta']['total_s']} s")


if __name__ == "__main__":
    main()
