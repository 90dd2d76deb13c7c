"""Building an aiomqtt client from config fields, shared by the source and the UNS publisher."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from typing import Any, Protocol

import aiomqtt

from isthmus.net.link import LinkLost


class Connection(Protocol):
    """The connection fields both MQTT config models have."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def keepalive(self) -> float: ...
    @property
    def tls(self) -> bool: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def cert_file(self) -> str | None: ...
    @property
    def key_file(self) -> str | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password_env(self) -> str | None: ...
    @property
    def timeout(self) -> float: ...
    @property
    def max_packet_size(self) -> int: ...


class SetupError(LinkLost):
    """A local problem (missing password variable, unreadable certificate)."""


def password(cfg: Connection) -> str | None:
    if cfg.password_env is None:
        return None
    value = os.environ.get(cfg.password_env)
    if value is None:
        raise SetupError(f"environment variable {cfg.password_env} (password_env) is not set")
    return value


def tls_context(cfg: Connection) -> ssl.SSLContext | None:
    if not cfg.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=cfg.ca_file)
        if cfg.cert_file is not None:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise SetupError(f"TLS files: {exc}") from None
    return context


def bounded_queue(on_drop: Callable[[], None]) -> type[asyncio.Queue[Any]]:
    """A queue class for aiomqtt's incoming messages that drops the oldest when full
    (counted by ``on_drop``) instead of logging a line per discarded message."""

    class DropOldest(asyncio.Queue[Any]):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize=maxsize)

        def put_nowait(self, item: Any) -> None:
            while self.full():
                super().get_nowait()
                on_drop()
            super().put_nowait(item)

    return DropOldest


def make_client(
    cfg: Connection,
    client_id: str,
    *,
    clean_session: bool = True,
    max_queued_incoming: int | None = None,
    on_drop: Callable[[], None] | None = None,
    max_inflight: int | None = None,
    will: aiomqtt.Will | None = None,
) -> aiomqtt.Client:
    queue_type = None
    if max_queued_incoming is not None:
        queue_type = bounded_queue(on_drop or (lambda: None))
    client = aiomqtt.Client(
        cfg.host,
        cfg.port,
        identifier=client_id,
        username=cfg.username,
        password=password(cfg),
        keepalive=max(1, int(cfg.keepalive)),
        timeout=cfg.timeout,
        clean_session=clean_session,
        will=will,
        tls_context=tls_context(cfg),
        queue_type=queue_type,
        max_queued_incoming_messages=max_queued_incoming,
        max_inflight_messages=max_inflight,
    )
    bound_receive(client, cfg.max_packet_size)
    return client


RECV_CHUNK = 64 * 1024


def bound_receive(client: aiomqtt.Client, max_packet_size: int) -> None:
    """Make paho's reads safe against a hostile or broken broker.

    paho reads a packet's announced length (up to 256 MB in MQTT) with one
    ``recv(length)``, which allocates the whole buffer up front, and accumulates packets
    of any announced size: random bytes from a non-broker cost hundreds of MB.  Here each
    read is at most 64 KiB, and a packet announced above ``max_packet_size`` ends the
    connection (paho reports it lost; the source reconnects with backoff).  Relies on
    paho 2.x's ``_sock_recv`` and ``_in_packet``; checked by the hostile-peer tests.
    """
    paho: Any = client._client
    receive = paho._sock_recv

    def bounded(bufsize: int) -> bytes:
        announced = int(paho._in_packet.get("remaining_length", 0))
        if paho._in_packet.get("have_remaining") and announced > max_packet_size:
            raise OSError(
                f"the broker announced a packet of {announced} bytes "
                f"(max_packet_size {max_packet_size})"
            )
        data: bytes = receive(min(bufsize, RECV_CHUNK))
        return data

    paho._sock_recv = bounded
