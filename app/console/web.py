"""Routes of the pages: / (links), /console (the static console), /docs (Swagger UI from the package).

Swagger UI's files come from the swagger-ui-bundle-v2 package; /redoc, whose viewer only exists on a
CDN, sends browsers to /docs.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

STATIC = Path(__file__).parent / "static"
DOCS_ASSETS = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """/docs and its OAuth2 redirect page with Swagger UI's files served by this app; /redoc -> /docs.

    Call on an app made with ``docs_url=None, redoc_url=None``."""
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=oauth2_redirect,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> RedirectResponse:
        return RedirectResponse("/docs")

    app.mount(DOCS_ASSETS, StaticFiles(directory=Path(str(swagger_ui_path))), name="swagger-ui")
    # open without a key unless DEEPREC_OPEN_DOCS=false (the request guard reads this)
    app.state.docs_pages = ({"/docs", oauth2_redirect, "/redoc"}, (f"{DOCS_ASSETS}/",))


def install_console(app: FastAPI) -> None:
    """The landing page at / and the console's files under /console/."""

    @app.get("/", include_in_schema=False)
    async def home() -> FileResponse:
        return FileResponse(STATIC / "home.html")

    @app.get("/console", include_in_schema=False)
    async def console() -> RedirectResponse:
        return RedirectResponse("/console/")  # the page's relative asset paths need the slash

    app.mount("/console", StaticFiles(directory=STATIC, html=True), name="console")
    # pages and assets only, open without a key: the console sends the key with each API call it makes
    app.state.console_pages = ({"/", "/console"}, ("/console/",))
