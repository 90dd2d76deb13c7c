"""``GET /health``: liveness and a few numbers, without a token."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from isthmus.api.deps import Ctx, public
from isthmus.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    summary="Liveness, version and source status (no token)",
    dependencies=[Depends(public("liveness probes and load balancers carry no token"))],
)
async def health(ctx: Ctx) -> Health:
    return Health(
        status="ok",
        version=ctx.version,
        uptime_s=round((ctx.clock.now_ns() - ctx.started_ns) / 1e9, 3),
        sources=ctx.source_status(),
        samples_written=int(ctx.metrics.counters.get(ctx.samples_written_metric, 0)),
    )
