"""Security headers on every HTTP response of the API and the UI (pure ASGI).

* ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer`` everywhere;
* a ``Content-Security-Policy`` on every response that does not set its own: no inline
  script, ``frame-ancestors 'none'`` (pages set their own, see ``PAGE_CSP``; the
  Swagger page needs its one inline bootstrap script, which a hash allows);
* ``Strict-Transport-Security`` on requests that came over TLS (``scope["scheme"]`` is
  ``https`` when uvicorn serves TLS); never over plain HTTP, where it means nothing.

A header the application already set is left alone (no duplicates).
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = "max-age=31536000"
"""One year; no ``includeSubDomains``: other services may share the host name's domain."""

DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
"""For JSON, problems and static files: nothing may run, nothing may frame it."""

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def inline_script_csp(html: str) -> str:
    """A page CSP that lets exactly the inline scripts of ``html`` run (by their SHA-256)
    and nothing else inline: for generated pages such as Swagger UI's bootstrap."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    )


_ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, csp: str = DEFAULT_CSP) -> None:
        self.app = app
        self.plain: tuple[tuple[bytes, bytes], ...] = (
            *_ALWAYS,
            (b"content-security-policy", csp.encode("latin-1")),
        )
        self.tls = (*self.plain, (b"strict-transport-security", HSTS.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.tls if scope.get("scheme") == "https" else self.plain

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(name).lower() for name, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
