"""Commands across sites: hub → edge orders and edge → hub results over NATS JetStream.

Message-level plumbing only; what a command *is* (the gate, the executors) lives in
``isthmus.security.commands``, which hands this module plain dicts.

::

    hub: gate ─▶ RemoteExecutor ─▶ CommandSender ──publish, Nats-Msg-Id = command id──┐
                       ▲                                                              ▼
                       │                  stream ISTHMUS-CMD-ORDERS, isthmus.cmd.<site>.order
                       │                                                              │
                       │           durable pull consumer isthmus-edge-<site>, 1 in flight
                       │                                                              ▼
                       │           edge: CommandReceiver ─▶ handler (LocalExecutor: expiry,
                       │                 limits, persisted id, write, read back)
                       │                                                              │
                 core subscription + look-ups by subject      publish, Nats-Msg-Id = id
                       │                                                              ▼
                       └──── stream ISTHMUS-CMD-RESULTS, isthmus.cmd.<site>.result.<id> ◀┘
                                               the edge acks the order after this publish

Guarantees, and where they come from:

* **Never executed twice.**  JetStream drops a re-published order with the same
  ``Nats-Msg-Id`` inside the orders stream's ``duplicate_window``; beyond it (or for a
  redelivery: the edge died before acking) the edge's handler finds the persisted command
  id and returns the stored result instead of writing again.
* **In order, one at a time per site.**  The edge's consumer has ``max_ack_pending = 1``:
  a redelivered order is never overtaken by a younger one.
* **Acknowledged only after the result is stored** in the results stream: an edge killed
  between the write and the result's publish gets the order again and returns what it
  persisted.
* **A result can always be looked up by id**: one subject per command
  (``max_msgs_per_subject = 1``), so a hub that restarted, or missed the live message
  while its link was down, asks the stream (:meth:`CommandSender.lookup`).

The hub runs the gate's checks (writability, limits, criticality and approval) against
the configuration of the site's tags, which it has not got: each edge publishes the
command settings of its writable tags (``isthmus.cmd.<site>.tags``, stream
``ISTHMUS-CMD-TAGS``, the last message per site kept) whenever its receiver binds, and
the hub reads them (:meth:`CommandSender.site_tags`).  The edge checks again against
its own configuration before writing: the hub's copy only decides what it forwards.

The wire format is JSON with a version field ``v`` (1).  Orders::

    {"v": 1, "id": "…", "site": "lyon", "tag": "acme/lyon/…/speed_sp", "value": 42.0,
     "requested_by": "alice", "approved_by": null, "expires_at_ns": 17…, "sent_ns": 17…}

results::

    {"v": 1, "id": "…", "site": "lyon", "state": "verified", "read_back": 42.0,
     "detail": "", "written_at_ns": 17…, "finished_at_ns": 17…, "edge": "lyon-4242"}

Unknown fields are ignored (a newer sender may add some); a missing or mistyped field
raises :class:`MalformedCommand`, another version :class:`UnknownCommandVersion`.  An
order the edge cannot decode is counted (``commands.quarantined_orders``), reported once
per burst, answered ``refused`` when its id can be read, and *terminated*: it stays in
the stream (limits retention, ``max_age``) for forensics and is never redelivered.  A
result the hub cannot decode is counted (``commands.quarantined_results``) and ignored:
the command's wait ends in ``uncertain``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from pydantic import ValidationError

from isthmus.model.clock import Clock
from isthmus.model.config import TagConfig, TransportConfig
from isthmus.net.backoff import Backoff
from isthmus.observe.events import EventLog
from isthmus.observe.metrics import BurstLog, Metrics
from isthmus.transport.nats.connect import NATS_ERRORS, NatsUnavailable, connect, site_token
from isthmus.transport.nats.wire import WireError

log = logging.getLogger("isthmus.transport.nats.commands")

VERSION = 1
ORDER_STREAM = "ISTHMUS-CMD-ORDERS"
RESULT_STREAM = "ISTHMUS-CMD-RESULTS"
"""Not ``ISTHMUS_…``: the hub consumer takes every ``ISTHMUS_*`` stream for a site's
samples, and ``-`` never appears in a site stream's name (see ``stream_for``)."""
ORDER_SUBJECTS = "isthmus.cmd.*.order"
RESULT_SUBJECTS = "isthmus.cmd.*.result.*"
TAGS_STREAM = "ISTHMUS-CMD-TAGS"
TAGS_SUBJECTS = "isthmus.cmd.*.tags"
"""Four and five tokens: they never overlap a site's ``isthmus.<site>.batch`` (three),
whatever the site is called."""
RESULT_STATES = frozenset({"verified", "mismatch", "failed", "uncertain", "expired", "refused"})
MAX_ID_CHARS = 200
MAX_MESSAGE_BYTES = 64 * 1024
MAX_TAGS_BYTES = 900 * 1024
"""A site's tag settings in one message, under NATS's default ``max_payload`` (1 MB)."""
TAGS_REPUBLISH_S = 600.0
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Value = float | int | bool | str
TagSettings = list[tuple[str, TagConfig]]
"""(full UNS path, the tag's settings) of a site's writable tags."""
Handler = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]
"""The edge's command handler: a decoded order in, a result (without ``v``/``site``) out.
It must be idempotent per order ``id``: called again for a redelivered order it returns
the first result and writes nothing."""


class CommandWireError(WireError):
    """An order or a result that cannot be used; never retried."""


class MalformedCommand(CommandWireError):
    """Not JSON, not an object, too big, a field missing or of the wrong type."""


class UnknownCommandVersion(CommandWireError):
    def __init__(self, version: object) -> None:
        super().__init__(f"unknown command message version {version!r} (this reads {VERSION})")
        self.version = version


# -- names ---------------------------------------------------------------------------------


def id_token(command_id: str) -> str:
    """A command id as one subject token: itself when it is short and plain, else
    ``=`` and a SHA-256 prefix (``=`` never appears in a plain id)."""
    if _SAFE_ID.match(command_id):
        return command_id
    return "=" + hashlib.sha256(command_id.encode()).hexdigest()[:40]


def order_subject(site: str) -> str:
    return f"isthmus.cmd.{site_token(site)}.order"


def result_subject(site: str, command_id: str) -> str:
    return f"isthmus.cmd.{site_token(site)}.result.{id_token(command_id)}"


def tags_subject(site: str) -> str:
    return f"isthmus.cmd.{site_token(site)}.tags"


def edge_consumer(site: str) -> str:
    """The durable consumer of a site's orders (one per site, shared by its edge's
    successive processes)."""
    return f"isthmus-edge-{site_token(site)}"


# -- wire format (pure) -------------------------------------------------------------------


def _check_id(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise MalformedCommand(f"id: a string of 1..{MAX_ID_CHARS} characters, got {value!r:.80}")
    if _CONTROL.search(value):
        raise MalformedCommand("id: control characters")
    return value


def _check_value(name: str, value: object, *, optional: bool = False) -> Value | None:
    if value is None and optional:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MalformedCommand(f"{name}: not a finite number")
        return value
    raise MalformedCommand(f"{name}: a number, boolean or string, got {type(value).__name__}")


def _check_str(name: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise MalformedCommand(f"{name}: a string, got {type(value).__name__}")
    return value


def _check_int(name: str, value: object, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedCommand(f"{name}: an integer, got {type(value).__name__}")
    return value


def _load(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedCommand(f"{len(raw)} bytes (at most {MAX_MESSAGE_BYTES})")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedCommand(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedCommand("not a JSON object")
    if "v" not in obj:
        raise MalformedCommand("no version field v")
    if obj["v"] != VERSION or isinstance(obj["v"], bool):
        raise UnknownCommandVersion(obj["v"])
    return obj


def _dump(obj: Mapping[str, Any]) -> bytes:
    try:
        raw = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise MalformedCommand(f"cannot encode: {exc}") from None
    data = raw.encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedCommand(f"{len(data)} bytes (at most {MAX_MESSAGE_BYTES})")
    return data


def _order_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {
            "id": _check_id(obj["id"]),
            "site": _check_str("site", obj["site"]),
            "tag": _check_str("tag", obj["tag"]),
            "value": _check_value("value", obj["value"]),
            "requested_by": _check_str("requested_by", obj["requested_by"]),
            "approved_by": _check_str("approved_by", obj.get("approved_by"), optional=True),
            "expires_at_ns": _check_int("expires_at_ns", obj["expires_at_ns"]),
            "sent_ns": _check_int("sent_ns", obj.get("sent_ns"), optional=True),
        }
    except KeyError as exc:
        raise MalformedCommand(f"order without {exc.args[0]}") from None


def _result_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    try:
        state = obj["state"]
        if state not in RESULT_STATES:
            raise MalformedCommand(f"state: one of {sorted(RESULT_STATES)}, got {state!r:.40}")
        return {
            "id": _check_id(obj["id"]),
            "site": _check_str("site", obj["site"]),
            "state": state,
            "read_back": _check_value("read_back", obj.get("read_back"), optional=True),
            "detail": _check_str("detail", obj.get("detail", "")),
            "written_at_ns": _check_int("written_at_ns", obj.get("written_at_ns"), optional=True),
            "finished_at_ns": _check_int(
                "finished_at_ns", obj.get("finished_at_ns"), optional=True
            ),
            "edge": _check_str("edge", obj.get("edge"), optional=True),
            "refusal": _check_str("refusal", obj.get("refusal"), optional=True),
        }
    except KeyError as exc:
        raise MalformedCommand(f"result without {exc.args[0]}") from None


def encode_order(order: Mapping[str, Any]) -> bytes:
    """``order`` needs id, site, tag, value, requested_by, expires_at_ns; approved_by
    and sent_ns are optional.  Raises :class:`MalformedCommand` for a bad field."""
    return _dump({"v": VERSION, **_order_fields(order)})


def decode_order(raw: bytes) -> dict[str, Any]:
    return _order_fields(_load(raw))


def encode_result(result: Mapping[str, Any]) -> bytes:
    """``result`` needs id, site, state; read_back, detail, written_at_ns,
    finished_at_ns, edge and refusal (which executor check said no) are optional."""
    return _dump({"v": VERSION, **_result_fields(result)})


def decode_result(raw: bytes) -> dict[str, Any]:
    return _result_fields(_load(raw))


def peek_id(raw: bytes) -> str | None:
    """The id of a message that may be malformed otherwise (to answer it), or None."""
    with contextlib.suppress(Exception):
        obj = json.loads(raw[:MAX_MESSAGE_BYTES])
        if isinstance(obj, dict):
            return _check_id(obj.get("id"))
    return None


_TAG_FIELDS = frozenset(TagConfig.model_fields)


def encode_tags(site: str, sent_ns: int, tags: Iterable[tuple[str, TagConfig]]) -> bytes:
    """A site's writable tags: full path and the plain :class:`TagConfig` settings
    (connector fields such as addresses stay on the edge)."""
    body = {
        "v": VERSION,
        "site": site,
        "sent_ns": sent_ns,
        "tags": [
            {"path": path, "config": cfg.model_dump(mode="json", include=set(_TAG_FIELDS))}
            for path, cfg in tags
        ],
    }
    data = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    if len(data) > MAX_TAGS_BYTES:
        raise MalformedCommand(
            f"the tag settings take {len(data)} bytes (at most {MAX_TAGS_BYTES})"
        )
    return data


def decode_tags(raw: bytes) -> tuple[str, TagSettings]:
    """(site, [(full path, settings)]); settings fields this version does not know are
    ignored (an edge newer than the hub)."""
    if len(raw) > MAX_TAGS_BYTES:
        raise MalformedCommand(f"{len(raw)} bytes (at most {MAX_TAGS_BYTES})")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedCommand(f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or "v" not in obj:
        raise MalformedCommand("not a versioned JSON object")
    if obj["v"] != VERSION or isinstance(obj["v"], bool):
        raise UnknownCommandVersion(obj["v"])
    site = _check_str("site", obj.get("site"))
    items = obj.get("tags")
    if not isinstance(items, list):
        raise MalformedCommand("tags: a list")
    out: TagSettings = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("config"), dict):
            raise MalformedCommand("tags: objects with path and config")
        path = _check_str("path", item.get("path"))
        known = {k: v for k, v in item["config"].items() if k in _TAG_FIELDS}
        try:
            out.append((str(path), TagConfig.model_validate(known)))
        except ValidationError as exc:
            raise MalformedCommand(f"tag {path!r}: {exc.errors()[0]['msg']}") from None
    assert site is not None
    return site, out


# -- streams -------------------------------------------------------------------------------


def stream_configs(cfg: TransportConfig, duplicate_window: float) -> list[StreamConfig]:
    """The command streams: file storage, ``replicas`` copies, ``max_age`` kept;
    results one per subject (= per command), tag settings one per site."""
    window = min(max(duplicate_window, cfg.stream.duplicate_window), cfg.stream.max_age)
    common: dict[str, Any] = {
        "retention": RetentionPolicy.LIMITS,
        "storage": StorageType.FILE,
        "num_replicas": cfg.stream.replicas,
        "max_age": cfg.stream.max_age,
        "duplicate_window": window,
        "discard": DiscardPolicy.OLD,
    }
    return [
        StreamConfig(name=ORDER_STREAM, subjects=[ORDER_SUBJECTS], **common),
        StreamConfig(
            name=RESULT_STREAM, subjects=[RESULT_SUBJECTS], max_msgs_per_subject=1, **common
        ),
        StreamConfig(name=TAGS_STREAM, subjects=[TAGS_SUBJECTS], max_msgs_per_subject=1, **common),
    ]


async def ensure_command_streams(
    js: JetStreamContext, cfg: TransportConfig, duplicate_window: float, *, update: bool
) -> None:
    """Create the command streams; with ``update`` (the hub) bring existing ones to these
    settings, without (an edge) leave them as they are."""
    for config in stream_configs(cfg, duplicate_window):
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            if update:
                await js.update_stream(config)
            else:
                assert config.name is not None
                await js.stream_info(config.name)  # exists (other settings): use it


# -- hub side ------------------------------------------------------------------------------


class CommandSender:
    """Publishes orders and awaits their results, across reconnects.

    :meth:`run` keeps one connection (nats-py reconnects it by itself), the streams
    declared and a core subscription to every site's results.  :meth:`send` may be called
    concurrently; calling it again for the same order (a retry, a restarted hub) is safe:
    the order is re-published with the same message id and the stored result, if there is
    one, is found by :meth:`lookup`.
    """

    def __init__(
        self,
        cfg: TransportConfig,
        metrics: Metrics,
        clock: Clock,
        *,
        name: str = "hub",
        duplicate_window: float = 0.0,
        events: EventLog | None = None,
        publish_timeout: float = 2.0,
        lookup_interval: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self.name = name
        self.duplicate_window = duplicate_window
        self.publish_timeout = publish_timeout
        self.lookup_interval = lookup_interval
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._waiters: dict[tuple[str, str], list[asyncio.Future[dict[str, Any]]]] = {}
        self._burst = BurstLog(log, events=events, source="commands", prefix="commands")

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and self._nc is not None and self._nc.is_connected

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            nc = None
            try:
                nc = await connect(self.cfg, f"isthmus-commands-{self.name}", self._burst)
                js = nc.jetstream(timeout=5.0)
                await ensure_command_streams(js, self.cfg, self.duplicate_window, update=True)
                await nc.subscribe(RESULT_SUBJECTS, cb=self._on_result)
                self._nc, self._js = nc, js
                self._ready.set()
                backoff.reset()
                log.info("command sender %s connected", self.name)
                # nats-py reconnects by itself from here on; it closes only if it gives up.
                while not nc.is_closed:  # noqa: ASYNC110 (no close hook in connect())
                    await asyncio.sleep(0.5)
            except (*NATS_ERRORS, NatsUnavailable) as exc:  # type: ignore[misc]
                self.metrics.inc("commands.sender_session_failures")
                self._burst.warning("session", "command sender: NATS session ended: %s", exc)
            finally:
                self._ready.clear()
                self._nc = self._js = None
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(nc.close(), 2.0)
            await asyncio.sleep(backoff.next_delay())

    async def _on_result(self, msg: Msg) -> None:
        try:
            result = decode_result(msg.data)
        except CommandWireError as exc:
            self.metrics.inc("commands.quarantined_results")
            self._burst.warning("bad-result", "a command result could not be decoded: %s", exc)
            return
        self._resolve(result)

    def _resolve(self, result: dict[str, Any]) -> None:
        for fut in self._waiters.get((result["site"], result["id"]), []):
            if not fut.done():
                fut.set_result(result)

    async def lookup(self, site: str, command_id: str) -> dict[str, Any] | None:
        """The stored result of a command, None when there is none (yet).  Raises
        :class:`NatsUnavailable` when NATS cannot be asked."""
        js = self._js
        if js is None or not self.connected:
            raise NatsUnavailable("command sender not connected")
        try:
            raw = await js.get_last_msg(RESULT_STREAM, result_subject(site, command_id))
        except nats.js.errors.NotFoundError:
            return None
        except NATS_ERRORS as exc:
            raise NatsUnavailable(f"result look-up failed: {exc}") from exc
        try:
            result = decode_result(raw.data or b"")
        except CommandWireError as exc:
            self.metrics.inc("commands.quarantined_results")
            self._burst.warning("bad-result", "a stored command result is malformed: %s", exc)
            return None
        if result["id"] != command_id or result["site"] != site:
            return None
        return result

    async def site_tags(self) -> dict[str, TagSettings]:
        """The writable tags each site published (see the module docstring); a site whose
        message cannot be decoded is left out, counted and reported.  Raises
        :class:`NatsUnavailable` when NATS cannot be asked."""
        js = self._js
        if js is None or not self.connected:
            raise NatsUnavailable("command sender not connected")
        out: dict[str, TagSettings] = {}
        try:
            info = await js.stream_info(TAGS_STREAM, subjects_filter=TAGS_SUBJECTS)
            for subject in sorted(info.state.subjects or {}):
                raw = await js.get_last_msg(TAGS_STREAM, subject)
                try:
                    site, tags = decode_tags(raw.data or b"")
                except CommandWireError as exc:
                    self.metrics.inc("commands.quarantined_tag_settings")
                    self._burst.warning(
                        "bad-tags", "tag settings on %s could not be decoded: %s", subject, exc
                    )
                    continue
                if tags_subject(site) == subject:
                    out[site] = tags
        except nats.js.errors.NotFoundError:
            return out
        except NATS_ERRORS as exc:
            raise NatsUnavailable(f"reading the sites' tag settings failed: {exc}") from exc
        return out

    async def send(
        self, site: str, order: Mapping[str, Any], deadline_ns: int
    ) -> dict[str, Any] | None:
        """Publish ``order`` (id, tag, value, requested_by, approved_by, expires_at_ns) to
        ``site`` and wait for its result until ``deadline_ns`` (this clock's time).
        Returns the result, or None when none arrived in time (the outcome is unknown:
        the edge may execute it, or refuse it once expired).  A publish that fails is
        retried with the same message id until it is acknowledged or the deadline."""
        command_id = str(order["id"])
        payload = encode_order({**order, "site": site, "sent_ns": self.clock.now_ns()})
        key = (site, command_id)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiters.setdefault(key, []).append(fut)
        self.metrics.inc("commands.sent")
        published = False
        backoff = Backoff(initial=0.1, cap=2.0)
        next_lookup = 0.0
        try:
            while True:
                remaining = (deadline_ns - self.clock.now_ns()) / 1e9
                if fut.done() or remaining <= 0:
                    break
                if not self.connected:  # no session yet, or nats-py reconnecting
                    ready = None if self._ready.is_set() else self._ready.wait()
                    await self._wait_any(fut, ready, min(remaining, 0.25))
                    continue
                js = self._js
                assert js is not None
                if not published:
                    try:
                        ack = await js.publish(
                            order_subject(site),
                            payload,
                            timeout=min(self.publish_timeout, max(0.05, remaining)),
                            headers={"Nats-Msg-Id": command_id},
                        )
                    except NATS_ERRORS as exc:
                        self.metrics.inc("commands.publish_retries")
                        self._burst.warning(
                            "publish", "command %s: publish failed, retrying: %s", command_id, exc
                        )
                        if isinstance(exc, nats.js.errors.NoStreamResponseError):
                            with contextlib.suppress(*NATS_ERRORS):
                                await ensure_command_streams(
                                    js, self.cfg, self.duplicate_window, update=True
                                )
                        await self._wait_any(fut, None, min(remaining, backoff.next_delay()))
                        continue
                    published = True
                    self.metrics.inc("commands.published")
                    if ack.duplicate:
                        # Sent before (a retry, a restarted hub): it may be answered already.
                        self.metrics.inc("commands.duplicates_dropped_by_stream")
                    else:
                        next_lookup = time.monotonic() + self.lookup_interval
                if time.monotonic() >= next_lookup:
                    # The live message may have been missed (link down, hub restarted).
                    with contextlib.suppress(NatsUnavailable):
                        found = await self.lookup(site, command_id)
                        if found is not None:
                            return found
                    next_lookup = time.monotonic() + self.lookup_interval
                wait = min(remaining, max(0.0, next_lookup - time.monotonic()))
                await self._wait_any(fut, None, wait)
            if fut.done():
                return fut.result()
            with contextlib.suppress(NatsUnavailable):  # a last look before giving up
                return await self.lookup(site, command_id)
            return None
        finally:
            futs = self._waiters.get(key, [])
            if fut in futs:
                futs.remove(fut)
            if not futs:
                self._waiters.pop(key, None)
            if not fut.done():
                fut.cancel()

    @staticmethod
    async def _wait_any(
        fut: asyncio.Future[Any], other: Awaitable[Any] | None, within: float
    ) -> None:
        waits: set[asyncio.Future[Any]] = {fut}
        extra = asyncio.ensure_future(other) if other is not None else None
        if extra is not None:
            waits.add(extra)
        try:
            await asyncio.wait(waits, timeout=max(0.0, within), return_when="FIRST_COMPLETED")
        finally:
            if extra is not None:
                extra.cancel()


# -- edge side -----------------------------------------------------------------------------


class CommandReceiver:
    """Receives a site's orders, one at a time, and publishes their results.

    For each order: decode (malformed: counted, answered ``refused`` if it has an id,
    terminated), check it is for this site, call the handler (``in_progress`` is sent
    every ``ack_wait / 3`` meanwhile), publish the result with ``Nats-Msg-Id`` = the id,
    and only then ack.  A failed publish ends the session without acking: the order is
    redelivered after ``ack_wait`` and the handler returns its stored result.  A handler
    that raises gets the order again after a delay (``nak``).

    ``tags`` gives the site's writable tags: published when the receiver binds and every
    ``TAGS_REPUBLISH_S`` after (the hub reads them for its checks).
    """

    def __init__(
        self,
        cfg: TransportConfig,
        site: str,
        handler: Handler,
        metrics: Metrics,
        clock: Clock,
        *,
        name: str | None = None,
        duplicate_window: float = 0.0,
        events: EventLog | None = None,
        tags: Callable[[], TagSettings] | None = None,
    ) -> None:
        self.cfg = cfg
        self.site = site
        self.handler = handler
        self.tags = tags
        self.metrics = metrics
        self.clock = clock
        self.name = name or site
        self.duplicate_window = duplicate_window
        self._nc: Client | None = None
        self._bound = False
        self._retry = Backoff(initial=0.5, cap=10.0)
        self._burst = BurstLog(log, events=events, source="commands", prefix="commands")

    @property
    def connected(self) -> bool:
        return self._bound and self._nc is not None and self._nc.is_connected

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            nc = None
            try:
                nc = await connect(self.cfg, f"isthmus-edge-commands-{self.site}", self._burst)
                js = nc.jetstream(timeout=5.0)
                self._nc = nc
                await ensure_command_streams(js, self.cfg, self.duplicate_window, update=False)
                psub = await self._bind(js)
                await self._publish_tags(js)
                self._bound = True
                backoff.reset()
                log.info("command receiver of site %s bound", self.site)
                published = time.monotonic()
                while True:
                    if time.monotonic() - published > TAGS_REPUBLISH_S:
                        await self._publish_tags(js)
                        published = time.monotonic()
                    try:
                        msgs = await psub.fetch(1, timeout=1.0)
                    except TimeoutError:
                        continue
                    for msg in msgs:
                        await self._process(js, msg)
            except (*NATS_ERRORS, NatsUnavailable) as exc:  # type: ignore[misc]
                self.metrics.inc("commands.receiver_session_failures")
                self._burst.warning("session", "command receiver: NATS session ended: %s", exc)
            finally:
                self._bound = False
                self._nc = None
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(nc.close(), 2.0)
            await asyncio.sleep(backoff.next_delay())

    async def _bind(self, js: JetStreamContext) -> Any:
        durable = edge_consumer(self.site)
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=order_subject(self.site),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.cfg.ack_wait,
            max_ack_pending=1,  # in order: a redelivery is never overtaken
            max_deliver=-1,
            max_waiting=64,
        )
        try:
            await js.add_consumer(ORDER_STREAM, config)
        except nats.js.errors.BadRequestError as exc:  # exists with other settings
            log.debug("command consumer %s kept as it is: %s", durable, exc)
        return await js.pull_subscribe_bind(durable=durable, stream=ORDER_STREAM)

    async def _publish_tags(self, js: JetStreamContext) -> None:
        if self.tags is None:
            return
        try:
            payload = encode_tags(self.site, self.clock.now_ns(), self.tags())
        except MalformedCommand as exc:
            self._burst.warning("tags", "site %s: tag settings not published: %s", self.site, exc)
            return
        await js.publish(tags_subject(self.site), payload, timeout=self.cfg.ack_timeout)
        self.metrics.inc("commands.tag_settings_published")

    async def _process(self, js: JetStreamContext, msg: Msg) -> None:
        try:
            order = decode_order(msg.data)
        except CommandWireError as exc:
            await self._quarantine(js, msg, exc)
            return
        if order["site"] != self.site:
            self.metrics.inc("commands.refused_wrong_site")
            result: dict[str, Any] = {
                "id": order["id"],
                "state": "refused",
                "detail": f"order for site {order['site']!r} reached site {self.site!r}",
            }
        else:
            beat = asyncio.create_task(self._heartbeat(msg))
            try:
                result = dict(await self.handler(order))
                result["id"] = order["id"]
            except Exception as exc:  # a handler bug or its store away: try again later
                self.metrics.inc("commands.handler_errors")
                self._burst.warning(
                    "handler", "command %s: the handler failed, retried: %s", order["id"], exc
                )
                with contextlib.suppress(*NATS_ERRORS):
                    await msg.nak(delay=self._retry.next_delay())
                return
            finally:
                beat.cancel()
            self._retry.reset()
        await self._publish_result(js, result)
        await msg.ack()
        self.metrics.inc("commands.answered")
        self.metrics.inc(f"commands.state.{result['state']}")

    async def _quarantine(self, js: JetStreamContext, msg: Msg, exc: Exception) -> None:
        self.metrics.inc("commands.quarantined_orders")
        self._burst.warning(
            "bad-order", "site %s: an order could not be decoded and is refused: %s", self.site, exc
        )
        command_id = peek_id(msg.data)
        if command_id is not None:
            await self._publish_result(
                js, {"id": command_id, "state": "refused", "detail": f"malformed order: {exc}"}
            )
        await msg.term()

    async def _publish_result(self, js: JetStreamContext, result: Mapping[str, Any]) -> None:
        full = {
            "finished_at_ns": self.clock.now_ns(),
            **result,
            "site": self.site,
            "edge": self.name,
        }
        try:
            payload = encode_result(full)
        except MalformedCommand as exc:  # the handler returned nonsense: say so, honestly
            self.metrics.inc("commands.handler_errors")
            payload = encode_result(
                {
                    "id": full["id"],
                    "site": self.site,
                    "edge": self.name,
                    "state": "uncertain",
                    "detail": f"the edge produced an unusable result: {exc}",
                    "finished_at_ns": self.clock.now_ns(),
                }
            )
        await js.publish(
            result_subject(self.site, str(full["id"])),
            payload,
            timeout=self.cfg.ack_timeout,
            headers={"Nats-Msg-Id": str(full["id"])},
        )

    async def _heartbeat(self, msg: Msg) -> None:
        period = max(0.2, self.cfg.ack_wait / 3)
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(*NATS_ERRORS):
                await msg.in_progress()
