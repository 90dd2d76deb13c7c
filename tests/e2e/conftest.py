"""Reusable browser fixtures: the system Chromium driven by Playwright, and a live server.

Never downloads a browser: ``/usr/bin/chromium`` (override with ``ISTHMUS_CHROMIUM``) is
used; missing, the tests are skipped, except with ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from tests.support import require_binary

CHROMIUM = os.environ.get("ISTHMUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = os.environ.get("ISTHMUS_SCREENSHOT") == "1"

# Counts the pixels of the trend line colour on a canvas (not the background or grid).
BLUE_PIXELS = """(testid) => {
  const c = document.querySelector(`[data-testid="${testid}"]`);
  const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let line = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 200 && b > 200 && r < 90 && g > 110 && g < 180) line++;
  }
  return line;
}"""


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium from the system install (a Playwright ``Browser``)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped on purpose: Playwright's sync API keeps an event loop running in the
    main thread while it lives, which would break every asyncio test collected after it."""
    require_binary(CHROMIUM, "the end-to-end tests drive a real headless Chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


def _checked_page(browser: Any) -> Iterator[Any]:
    """A page in a fresh browser context; fails the test on any JavaScript error."""
    context = browser.new_context(viewport={"width": 1400, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from _checked_page(browser)


@pytest.fixture
def second_page(browser: Any) -> Iterator[Any]:
    """Another browser context: another person at another desk."""
    yield from _checked_page(browser)


def enter_password(page: Any, username: str, password: str) -> None:
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()


def sign_in(page: Any, url: str, username: str, password: str) -> None:
    """Open the UI and sign in (a user without a second factor)."""
    page.goto(url)
    enter_password(page, username, password)
    page.get_by_test_id("current-user").filter(has_text=username).wait_for()


def wait_js(page: Any, expression: str, arg: Any = None, timeout: float = 10.0) -> Any:
    """Poll a JavaScript function until it returns a truthy value; returns that value.

    Unlike ``page.wait_for_function``, which evaluates strings inside the page and so
    trips the page's ``script-src 'self'`` CSP (no ``unsafe-eval``), ``page.evaluate``
    calls go through the DevTools protocol, so the tests keep the real CSP on.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {expression}")
        time.sleep(0.05)


Background = Callable[[], Coroutine[Any, Any, None]]


class LiveServer:
    """A real uvicorn server on a free 127.0.0.1 port, in a thread with its own event
    loop; ``background`` coroutines (e.g. a publisher) run in that loop while it serves."""

    def __init__(self, app: FastAPI, background: list[Background] | None = None) -> None:
        self.app = app
        self.background = background or []
        self.url = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        self._server = server
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        tasks = [asyncio.create_task(make()) for make in self.background]
        self._ready.set()
        try:
            await serving
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the live server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(10)
