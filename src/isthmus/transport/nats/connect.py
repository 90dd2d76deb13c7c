"""Connecting to NATS and declaring a site's stream: names, options, credentials.

Credentials never come from the YAML: ``password_env``, ``token_env`` and ``creds_env``
name environment variables.  nats-py's own errors are translated at this boundary into
:class:`NatsUnavailable`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from isthmus.model.config import TransportConfig
from isthmus.model.errors import IsthmusError
from isthmus.observe.metrics import BurstLog

log = logging.getLogger("isthmus.transport.nats")

NATS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    OSError,
    TimeoutError,
)
"""What a lost or refused NATS connection raises; callers retry with backoff."""


class NatsUnavailable(IsthmusError):
    """NATS could not be reached or refused a request."""


def site_token(site: str) -> str:
    """A site name as one subject token ('.' would split it)."""
    return site.replace(".", "_")


def subject_for(site: str) -> str:
    return f"isthmus.{site_token(site)}.batch"


def stream_for(site: str) -> str:
    return "ISTHMUS_" + site_token(site).upper().replace("-", "_")


def msg_id(site: str, seq: int) -> str:
    return f"{site}:{seq}"


def connect_options(cfg: TransportConfig, name: str) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "servers": list(cfg.servers),
        "name": name,
        "connect_timeout": 2,
        "reconnect_time_wait": 0.5,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
        "ping_interval": 5,
        "max_outstanding_pings": 2,
    }
    if cfg.user is not None:
        opts["user"] = cfg.user
        if cfg.password_env is not None:
            opts["password"] = _env(cfg.password_env)
    if cfg.token_env is not None:
        opts["token"] = _env(cfg.token_env)
    if cfg.creds_env is not None:
        opts["user_credentials"] = _env(cfg.creds_env)
    return opts


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise IsthmusError(f"transport: the environment variable {name} is not set")
    return value


async def connect(cfg: TransportConfig, name: str, burst: BurstLog) -> Client:
    """One connection that reconnects by itself once established; the first attempt
    fails fast (the caller retries with backoff)."""

    async def on_error(exc: Exception) -> None:
        burst.warning("nats-error", "NATS: %s", exc)

    held: list[Client] = []

    async def on_disconnect() -> None:
        if held and held[0].is_closed:
            return  # closed on purpose (stop, or a new session), not lost
        burst.warning("nats-disconnect", "NATS connection lost; reconnecting")

    async def on_reconnect() -> None:
        log.info("NATS reconnected")

    try:
        nc: Client = await nats.connect(
            **connect_options(cfg, name),
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
    except NATS_ERRORS as exc:
        raise NatsUnavailable(f"cannot connect to NATS {', '.join(cfg.servers)}: {exc}") from exc
    held.append(nc)
    return nc


async def ensure_stream(js: JetStreamContext, cfg: TransportConfig, site: str) -> None:
    """Create the site's stream, or update it to the configured settings (idempotent)."""
    config = StreamConfig(
        name=stream_for(site),
        subjects=[subject_for(site)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=cfg.stream.replicas,
        max_age=cfg.stream.max_age,
        max_bytes=cfg.stream.max_bytes,
        duplicate_window=cfg.stream.duplicate_window,
        discard=DiscardPolicy.OLD,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # Exists with other settings: bring it to the configured ones.
        await js.update_stream(config)
