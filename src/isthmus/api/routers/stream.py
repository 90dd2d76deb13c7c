"""``WS /api/stream``: live samples for the control tower.

Protocol (JSON text frames):

1. The client's first message authenticates: ``{"token": "<bearer token>"}``, optionally
   with ``"subscribe": ["uns/path/prefix", ...]`` (browsers cannot set headers on a
   WebSocket; tokens in URLs end up in logs, so neither is accepted).  A missing, late
   or bad token closes the socket with code 4401, a role without the ``live`` read
   permission with 4403 (``isthmus.api.deps.require_ws``).  The token is checked again
   before every message and at least every second: its expiry, its revocation, or its
   user being disabled closes the socket with 4401; a changed role or scopes apply at
   once.
2. Later ``{"subscribe": [...]}`` messages replace the filter (an empty list or no
   subscribe at all means every tag).  Whatever the filter, the caller only ever
   receives the tags inside its scopes.
3. The server pushes ``{"samples": [{"path", "value", "quality", "timestamp"}, ...]}``:
   one message per transport batch, or several batches merged so that a client gets
   at most ~10 messages per second.  A slow client loses the oldest batches (counted
   in ``transport.<name>.dropped_batches``), never slows the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect

from isthmus.api.context import ApiContext
from isthmus.api.deps import WS_FORBIDDEN, WS_UNAUTHORIZED, Ctx, WsCaller, authenticate, require_ws
from isthmus.api.paths import id_mask
from isthmus.api.scopes import scope_mask
from isthmus.model.batch import Batch
from isthmus.model.durations import format_ns
from isthmus.model.quality import quality_name
from isthmus.model.values import typed_value
from isthmus.security.identity import InvalidToken
from isthmus.security.rbac import Action, Principal, Resource
from isthmus.transport.local import Subscription

log = logging.getLogger(__name__)

router = APIRouter(tags=["stream"])

MIN_INTERVAL_S = 0.1
REAUTH_INTERVAL_S = 1.0
"""An idle stream checks its token at least this often (revocation within ~1 s)."""
QUEUE_BATCHES = 64
MAX_PREFIXES = 256
CLOSE_UNAUTHORIZED = WS_UNAUTHORIZED
CLOSE_UNSUPPORTED = 1003
_ids = itertools.count(1)


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _prefixes(message: dict[str, Any]) -> list[str] | None:
    """The subscribe list of a message; None means every tag."""
    raw = message.get("subscribe")
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_PREFIXES
        or not all(isinstance(p, str) for p in raw)
    ):
        raise _Refused(CLOSE_UNSUPPORTED, "subscribe must be a list of path prefixes")
    return raw or None


def _parse(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        raise _Refused(CLOSE_UNSUPPORTED, "messages must be JSON objects") from None
    if not isinstance(message, dict):
        raise _Refused(CLOSE_UNSUPPORTED, "messages must be JSON objects")
    return message


class _Filter:
    """The tags a connection receives: those under its subscribed prefixes and inside
    its principal's scopes (both masks rebuilt when the catalog grows)."""

    def __init__(self, ctx: ApiContext, principal: Principal, prefixes: list[str] | None) -> None:
        self.ctx = ctx
        self.principal = principal
        self.prefixes = prefixes
        self._build()

    def _build(self) -> None:
        catalog = self.ctx.catalog
        self.size = len(catalog)
        mask = id_mask(catalog, self.prefixes)
        if self.principal.scopes:
            mask &= scope_mask(catalog, self.principal.scopes)
        self.mask: npt.NDArray[np.bool_] = mask

    def set(self, prefixes: list[str] | None) -> None:
        self.prefixes = prefixes
        self._build()

    def set_principal(self, principal: Principal) -> None:
        if principal.scopes != self.principal.scopes:
            self.principal = principal
            self._build()
        else:
            self.principal = principal

    def payload(self, batch: Batch) -> list[dict[str, Any]]:
        if len(self.ctx.catalog) != self.size:
            self._build()
        ids = batch.tag_id
        known = (ids >= 0) & (ids < len(self.mask))
        keep = np.zeros(len(ids), dtype=np.bool_)
        keep[known] = self.mask[ids[known]]
        picked = batch.select(keep)
        catalog = self.ctx.catalog
        out: list[dict[str, Any]] = []
        for tag_id, ts, value, quality, text in zip(
            picked.tag_id.tolist(),
            picked.ts.tolist(),
            picked.value.tolist(),
            picked.quality.tolist(),
            picked.texts(),
            strict=True,
        ):
            entry = catalog.by_id(tag_id)
            if entry is None:
                continue
            out.append(
                {
                    "path": entry.path,
                    "value": typed_value(value, entry.config.value_type, text),
                    "quality": quality_name(quality),
                    "timestamp": format_ns(ts),
                }
            )
        return out


async def _read(ws: WebSocket, flt: _Filter) -> None:
    while True:
        message = _parse(await ws.receive_text())
        if "subscribe" not in message:
            raise _Refused(CLOSE_UNSUPPORTED, 'expected {"subscribe": [...]}')
        flt.set(_prefixes(message))


def _recheck(ctx: ApiContext, token: str, flt: _Filter) -> None:
    """The token again: still valid, still allowed; new scopes apply at once."""
    try:
        principal = authenticate(ctx, token)
    except InvalidToken as exc:
        raise _Refused(CLOSE_UNAUTHORIZED, str(exc)[:100]) from None
    if not principal.can(Resource.LIVE, Action.READ):
        raise _Refused(WS_FORBIDDEN, "the live stream is no longer allowed")
    flt.set_principal(principal)


async def _write(
    ws: WebSocket, ctx: ApiContext, sub: Subscription, flt: _Filter, token: str
) -> None:
    while True:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the queue get, leaving this loop running after a disconnect.
            async with asyncio.timeout(REAUTH_INTERVAL_S):
                first = await sub.get()
        except TimeoutError:
            _recheck(ctx, token, flt)
            continue
        _recheck(ctx, token, flt)
        batches = [first]
        while (more := sub.get_nowait()) is not None:
            batches.append(more)
        samples = flt.payload(Batch.concat(batches))
        if samples:
            await ws.send_text(json.dumps({"samples": samples}, separators=(",", ":")))
            await asyncio.sleep(MIN_INTERVAL_S)


LiveCaller = Annotated[WsCaller, Depends(require_ws(Resource.LIVE, Action.READ))]


@router.websocket("/api/stream")
async def stream(ws: WebSocket, ctx: Ctx, caller: LiveCaller) -> None:
    """Live samples of the tags the caller may see, as JSON frames (token first)."""
    # require_ws accepted the socket and checked the first message's token.
    sub: Subscription | None = None
    try:
        flt = _Filter(ctx, caller.principal, _prefixes(caller.first))
        sub = ctx.transport.subscribe(
            f"api.stream.{next(_ids)}", maxsize=QUEUE_BATCHES, policy="drop_oldest"
        )
        reader = asyncio.create_task(_read(ws, flt))
        writer = asyncio.create_task(_write(ws, ctx, sub, flt, caller.token))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Whatever ends the stream (a side finishing, or this handler being cancelled),
            # both tasks are stopped and their outcome collected: nothing left dangling.
            for task in (reader, writer):
                task.cancel()
            await asyncio.wait({reader, writer}, timeout=1.0)
            for task in (reader, writer):
                if task.done() and not task.cancelled():
                    task.exception()  # mark retrieved; re-raised below when it matters
        for task in done:
            task.result()  # re-raise _Refused / disconnects
    except _Refused as refused:
        await _close(ws, refused.code, refused.reason)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("live stream failed")
        await _close(ws, 1011, "internal error")
    finally:
        if sub is not None:
            sub.close()


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # closed by the peer
        await ws.close(code=code, reason=reason)
