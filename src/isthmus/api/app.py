"""``create_app``: the FastAPI application over an :class:`ApiContext`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from isthmus.api.context import ApiContext
from isthmus.api.problems import GuardMiddleware, install_problem_handlers
from isthmus.api.routers import auth, health, stream, tags
from isthmus.web import STATIC_DIR

# The page loads only its own script and style and talks only to its own origin.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Isthmus",
        version=ctx.version,
        summary="IT/OT convergence platform: tags, history and live data of a plant",
        description=(
            "Every route except `/health`, `/api/auth/login` and the web page needs "
            "`Authorization: Bearer <token>`. Errors are RFC 9457 problems "
            "(`application/problem+json`)."
        ),
    )
    app.state.ctx = ctx
    install_problem_handlers(app)
    app.add_middleware(GuardMiddleware)
    for module in (health, auth, tags, stream):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
