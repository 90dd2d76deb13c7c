"""``create_app``: the FastAPI application over an :class:`ApiContext`."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from isthmus.api.context import ApiContext
from isthmus.api.deps import public
from isthmus.api.headers import SecurityHeadersMiddleware, inline_script_csp
from isthmus.api.problems import GuardMiddleware, install_problem_handlers
from isthmus.api.routers import (
    audit,
    auth,
    commands,
    events,
    health,
    stream,
    tags,
    tokens,
    users,
)
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
        docs_url=None,  # served below from packaged assets: plant networks are offline
        redoc_url=None,
    )
    app.state.ctx = ctx
    install_problem_handlers(app)
    app.add_middleware(GuardMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: 500s get the headers too
    for module in (health, auth, tags, events, stream, audit, commands, users, tokens):
        app.include_router(module.router)

    public_page = [Depends(public("the sign-in page and the API docs: no data"))]

    @app.get("/", include_in_schema=False, dependencies=public_page)
    async def index() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    @app.get("/docs", include_in_schema=False, dependencies=public_page)
    async def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Isthmus API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )
        page.headers["Content-Security-Policy"] = inline_script_csp(bytes(page.body).decode())
        return page

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    return app
