"""GET /api/last for 10,000 tags, with and without access control, in the same run.

Target (access and commands issue): with access control ≤ 1.1x the time without.

Three apps over one plant (a real DuckDB store with one sample per tag):

* ``no access control``: the same app with every route's permission dependency replaced
  by one that returns an unscoped admin (no token parsed, no matrix, no scope filter);
* ``access control, unscoped``: an admin's bearer token (JWT verified, session checked,
  matrix consulted);
* ``access control, scoped``: a user scoped to the site (all 10,000 tags visible, so the
  answer is the same size, but every path is checked against the scope), and a user
  scoped to one area (a tenth of the tags; reported, not in the ratio).

Requests go through httpx's in-process ASGI transport (no sockets: the comparison is of
the server's work), interleaved round by round in a rotating order; medians over ``--rounds``.

    .venv/bin/python bench/api_reads.py [--tags 10000] [--rounds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.api.plant import PREFIX, build_plant

from bench.common import write_result
from isthmus.api import create_app
from isthmus.api.deps import PERMISSION_ATTR
from isthmus.model.batch import Batch
from isthmus.model.clock import ManualClock
from isthmus.model.config import TagConfig
from isthmus.security.rbac import Principal, Role

TARGET_RATIO = 1.1
PASSWORD = "Bench-Reads-Secret-4711"


def plant_tags(n: int) -> list[tuple[str, TagConfig]]:
    """``n`` tags spread over 10 areas (area/line/cell/equipment/tag)."""
    tags = []
    for k in range(n):
        area, line, cell, eq = k % 10, (k // 10) % 10, (k // 100) % 10, k // 1000
        path = f"area{area}/line{line}/cell{cell}/eq{eq}/t{k}"
        tags.append(("plc", TagConfig(path=path, unit="bar")))
    return tags


def permission_dependencies(app: Any) -> set[Any]:
    """Every route's permission dependency (what ``require`` returned)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI >= 0.160
    routes = app.routes if iterate is None else iterate(app.routes)
    found: set[Any] = set()
    stack = [getattr(route, "dependant", None) for route in routes]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        if hasattr(dependant.call, PERMISSION_ATTR):
            found.add(dependant.call)
        stack.extend(dependant.dependencies)
    return found


async def login(client: httpx.AsyncClient, user: str) -> str:
    r = await client.post("/api/auth/login", json={"username": user, "password": PASSWORD})
    r.raise_for_status()
    return str(r.json()["access_token"])


async def timed(client: httpx.AsyncClient, token: str | None, expect: int) -> float:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    start = time.perf_counter()
    r = await client.get("/api/last", headers=headers)
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    got = len(r.json()["values"])
    if got != expect:
        raise SystemExit(f"expected {expect} values, got {got}")
    return elapsed


async def run(n_tags: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        clock = ManualClock(start_ns=1_700_000_000 * 10**9)
        plant = build_plant(Path(tmp), clock, tags=plant_tags(n_tags))
        ids = np.array(sorted(plant.ids.values()), dtype=np.int32)
        plant.store.write(
            Batch(
                ids,
                np.full(len(ids), clock.now_ns(), dtype=np.int64),
                np.arange(len(ids), dtype=np.float64),
                np.zeros(len(ids), dtype=np.uint32),
            )
        )
        users = plant.ctx.identity.users
        users.add("boss", PASSWORD, Role.ADMIN)
        users.add("site", PASSWORD, Role.VIEWER, (PREFIX,))
        users.add("area", PASSWORD, Role.VIEWER, (f"{PREFIX}/area3",))

        guarded = create_app(plant.ctx)
        open_app = create_app(plant.ctx)
        admin = Principal("boss", Role.ADMIN)

        async def anyone() -> Principal:
            return admin

        overrides = permission_dependencies(open_app)
        for dep in overrides:
            open_app.dependency_overrides[dep] = anyone

        base = "http://bench"
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url=base) as g,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=open_app), base_url=base) as o,
        ):
            tokens = {u: await login(g, u) for u in ("boss", "site", "area")}
            cases = {
                "no access control": (o, None, n_tags),
                "access control, unscoped": (g, tokens["boss"], n_tags),
                "access control, scoped to the site": (g, tokens["site"], n_tags),
                "access control, scoped to one area": (g, tokens["area"], n_tags // 10),
            }
            for name, (client, token, expect) in cases.items():  # warm up
                try:
                    await timed(client, token, expect)
                except httpx.HTTPStatusError as exc:
                    raise SystemExit(f"{name}: {exc.response.text}") from None
            times: dict[str, list[float]] = {name: [] for name in cases}
            names = list(cases)
            for k in range(rounds):  # the order rotates each round: no case always first
                for name in names[k % len(names) :] + names[: k % len(names)]:
                    client, token, expect = cases[name]
                    times[name].append(await timed(client, token, expect))
        plant.store.close()
    medians = {name: statistics.median(t) for name, t in times.items()}
    ref = medians["no access control"]
    worst = max(medians["access control, unscoped"], medians["access control, scoped to the site"])
    return {
        "tags": n_tags,
        "rounds": rounds,
        "dependencies_overridden": len(overrides),
        "median_ms": {k: round(v * 1000, 2) for k, v in medians.items()},
        "p90_ms": {k: round(float(np.percentile(t, 90)) * 1000, 2) for k, t in times.items()},
        "ratio": {k: round(v / ref, 3) for k, v in medians.items()},
        "ratio_worst_full_answer": round(worst / ref, 3),
        "target_ratio": TARGET_RATIO,
        "met": worst / ref <= TARGET_RATIO,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    result = asyncio.run(run(args.tags, args.rounds))
    print(f"GET /api/last, {result['tags']:,} tags, median of {result['rounds']} rounds")
    print(f"{'case':40} {'median ms':>10} {'p90 ms':>9} {'ratio':>7}")
    for name, ms in result["median_ms"].items():
        print(f"{name:40} {ms:10.2f} {result['p90_ms'][name]:9.2f} {result['ratio'][name]:7.3f}")
    verdict = "met" if result["met"] else "MISSED"
    print(
        f"with access control / without: {result['ratio_worst_full_answer']:.3f} "
        f"(target ≤ {TARGET_RATIO}: {verdict})"
    )
    print(f"wrote {write_result('api_reads', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
