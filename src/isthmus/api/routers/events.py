"""``GET /api/events``: what the system reported (rejected frames, outages, overflows).

A caller limited to scopes sees only the events that concern something inside them
(see :func:`isthmus.api.scopes.event_visible`); system events that concern no tag
(historian, spool, audit...) are for unscoped callers only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from isthmus.api.deps import Ctx, guarded, require
from isthmus.api.problems import NS_MAX
from isthmus.api.schemas import EventOut, EventPage
from isthmus.api.scopes import event_visible
from isthmus.security.rbac import Action, Principal, Resource

router = APIRouter(prefix="/api", tags=["events"])

EventsReader = Annotated[Principal, Depends(require(Resource.EVENTS, Action.READ))]
_SCAN_PAGE = 1000


@router.get(
    "/events",
    summary="Events after a cursor, oldest first (those the caller may see)",
    responses=guarded(Resource.EVENTS, Action.READ, 422),
)
async def events(
    ctx: Ctx,
    principal: EventsReader,
    after: Annotated[int, Query(ge=0, le=NS_MAX, description="return events with a larger id")] = 0,
    kind: Annotated[
        str | None, Query(max_length=200, description="a kind or its prefix: frame, link.lost")
    ] = None,
    source: Annotated[str | None, Query(max_length=200, description="who raised it")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> EventPage:
    if not principal.scopes:
        found = ctx.events.recent(after=after, kind=kind, source=source, limit=limit)
        items = [EventOut(**e.to_dict()) for e in found]
        return EventPage(events=items, next_after=items[-1].id if items else after)
    # Scoped: filter page by page until `limit` visible events or the end of the log.
    items = []
    cursor = after
    while len(items) < limit:
        page = ctx.events.recent(after=cursor, kind=kind, source=source, limit=_SCAN_PAGE)
        for event in page:
            cursor = event.id
            if event_visible(event, principal, ctx.catalog):
                items.append(EventOut(**event.to_dict()))
                if len(items) >= limit:
                    break
        if len(page) < _SCAN_PAGE:
            break
    # The cursor passes what was skipped, so the next call does not scan it again.
    return EventPage(events=items, next_after=items[-1].id if len(items) >= limit else cursor)
