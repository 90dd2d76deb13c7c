"""Edge memory while a long backlog accumulates on disk (NATS unreachable), one run.

``isthmus run --role edge`` with a synthetic source of ``--rate`` samples/s (100 tags),
its local DuckDB historian and a spool with fsync always, and no reachable NATS: every
sample goes to the spool on disk and stays there.  The edge's RSS and the spool's size are
sampled every second for ``--seconds`` (default one hour).  Reported: RSS after the
warm-up (60 s), at the end and its maximum, the RSS trend (least-squares slope after the
warm-up, MB per hour) and, as the reference measured in the same run, the backlog on
disk: RSS growth per MB spooled.

    .venv/bin/python bench/spool_rss.py                       # 1 hour
    .venv/bin/python bench/spool_rss.py --seconds 300         # 5 minutes

Results: printed (a line a minute), and ``bench/results/spool_rss_<storage>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result
from bench.edge_hub import edge_rss

WARM_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--rate", type=int, default=50_000, help="samples/s of the edge's source")
    ap.add_argument(
        "--storage", default="duckdb", help="the edge's local historian (duckdb, sqlite)"
    )
    ap.add_argument("--spool-max-gib", type=float, default=32.0, help="spool cap (not reached)")
    args = ap.parse_args()

    def progress(t: float, rss: float, spool: float) -> None:
        print(f"{t:7.0f} s  RSS {rss:7.1f} MB  spool {spool:9.1f} MB on disk", flush=True)

    with tempfile.TemporaryDirectory(prefix="isthmus-spool-rss-") as tmp:
        rss = edge_rss(
            Path(tmp),
            args.rate,
            args.seconds,
            int(args.spool_max_gib * 2**30),
            progress,
            storage=args.storage,
        )
    series = np.array(rss.pop("series"), dtype=np.float64)
    warm = series[series[:, 0] >= min(WARM_S, args.seconds / 2)]
    slope_mb_s = float(np.polyfit(warm[:, 0], warm[:, 1], 1)[0]) if len(warm) > 2 else 0.0
    rss_growth = float(warm[-1, 1] - warm[0, 1])
    spooled = float(warm[-1, 2] - warm[0, 2])
    result = {
        **rss,
        "rss_mb_after_warmup": round(float(warm[0, 1]), 1),
        "rss_slope_mb_per_hour": round(slope_mb_s * 3600, 1),
        "spooled_mb_after_warmup": round(spooled, 1),
        "rss_growth_per_spooled_mb": round(rss_growth / spooled, 4) if spooled else None,
        "series_every_10s": [[float(t), float(r), float(s)] for t, r, s in series[::10]],
    }
    print(
        f"\nedge at {args.rate:,} samples/s, NATS unreachable, {args.seconds:.0f} s: "
        f"RSS {result['rss_mb_after_warmup']} MB after {WARM_S:.0f} s -> "
        f"{result['rss_mb_end']} MB at the end (max {result['rss_mb_max']}), "
        f"trend {result['rss_slope_mb_per_hour']} MB/h, while {spooled:,.0f} MB were "
        f"spooled to disk (RSS growth per spooled MB: {result['rss_growth_per_spooled_mb']})"
    )
    path = write_result(f"spool_rss_{args.storage}", result)
    print(f"written {path}")


if __name__ == "__main__":
    main()
