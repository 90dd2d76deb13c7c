"""``GET /api/events``: what the system reported (rejected frames, outages, overflows)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from isthmus.api.deps import Ctx, require_user
from isthmus.api.problems import Problem
from isthmus.api.schemas import EventOut, EventPage

router = APIRouter(prefix="/api", tags=["events"], dependencies=[Depends(require_user)])


@router.get(
    "/events",
    summary="Events after a cursor, oldest first",
    responses={422: {"model": Problem, "description": "invalid parameter"}},
)
async def events(
    ctx: Ctx,
    after: Annotated[int, Query(ge=0, description="return events with a larger id")] = 0,
    kind: Annotated[
        str | None, Query(max_length=200, description="a kind or its prefix: frame, link.lost")
    ] = None,
    source: Annotated[str | None, Query(max_length=200, description="who raised it")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> EventPage:
    found = ctx.events.recent(after=after, kind=kind, source=source, limit=limit)
    items = [EventOut(**e.to_dict()) for e in found]
    return EventPage(events=items, next_after=items[-1].id if items else after)
