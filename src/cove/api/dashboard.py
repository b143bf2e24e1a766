"""The web dashboard and the API docs, served from local files only.

``/`` and ``/dashboard/...`` answer the dashboard's page (a single-page app: its
router reads the path), ``/dashboard/assets/`` its scripts and styles, ``/docs`` and
``/redoc`` the API documentation with Swagger UI and ReDoc from ``/dashboard/docs/``.
Nothing is fetched from the Internet: the pages carry a Content-Security-Policy that
allows this origin only (and, on the docs' pages, their inline script by its hash).
When the files are not built, each page says how to build them (with a 503).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, HTMLResponse, Response

from cove.web import STATIC

# Inline styles: xterm.js and Preact set some (style-src); scripts come from files only.
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                 "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
                 "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
                 "frame-ancestors 'none'; form-action 'self'")  # fmt: skip
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
DOCS = "/dashboard/docs"
MISSING = """<!doctype html><meta charset="utf-8"><title>Cove: dashboard not built</title>
<h1>The dashboard is not built</h1>
<p>This server's web files are missing. Run <code>make setup</code> (or
<code>npm ci &amp;&amp; npm run build</code> in the checkout's <code>web/</code>), then reload.
The API itself works: <code>/api</code>.</p>"""


def install(app: FastAPI, static: Path = STATIC) -> None:
    """Serve the dashboard and the docs from ``static`` (the built ``web/``)."""
    index = static / "index.html"

    def page() -> Response:
        if not index.is_file():
            return _missing()
        return FileResponse(index, headers=_headers(DASHBOARD_CSP, cache="no-cache"))

    def docs() -> Response:
        if not (static / "docs").is_dir():
            return _missing()
        html = get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} - API docs",
            swagger_js_url=f"{DOCS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS}/swagger-ui.css", swagger_favicon_url=f"{DOCS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None})  # fmt: skip
        return _with(html)

    def redoc() -> Response:
        if not (static / "docs").is_dir():
            return _missing()
        html = get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - API reference",
                              redoc_js_url=f"{DOCS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS}/favicon.png", with_google_fonts=False)
        return _with(html)

    # The files first: routes match in order, and the page takes any other /dashboard/ path.
    app.mount("/dashboard/assets", _Files(static / "assets"), name="dashboard-assets")
    app.mount(DOCS, _Files(static / "docs"), name="docs-assets")
    for path in ("/", "/dashboard", "/dashboard/{rest:path}"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


class _Files(StaticFiles):
    """Built files, hashed names for the app's (cached for a year), the docs' revalidated."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, check_dir=False)

    async def check_config(self) -> None:
        """Not built yet: every file is a 404 (not a 500)."""
        if Path(str(self.directory)).is_dir():
            await super().check_config()

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        immutable = "/assets" in str(self.directory)
        response.headers["Cache-Control"] = ("public, max-age=31536000, immutable" if immutable
                                             else "no-cache")  # fmt: skip
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _headers(csp: str, *, cache: str) -> dict[str, str]:
    """A page's headers. A sandbox's page at ``/preview/...`` shares this origin: it may
    neither frame the page (``frame-ancestors``, ``X-Frame-Options``) nor keep a handle
    on it across windows (the opener policy puts the page in a browsing context group
    of its own, away from any preview that opened it or that it opens), through which
    it would read the page or wrap its ``fetch`` and so take the key."""
    return {"Content-Security-Policy": csp, "Cache-Control": cache,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin"}  # fmt: skip


def _with(response: HTMLResponse) -> Response:
    """FastAPI's docs page, whose inline script (starting Swagger UI) is allowed by its
    hash: no other inline script may run."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in INLINE_SCRIPT.findall(bytes(response.body).decode()))
    csp = DASHBOARD_CSP.replace("script-src 'self'", f"script-src 'self' {hashes}".rstrip())
    response.headers.update(_headers(csp, cache="no-cache"))
    return response


def _missing() -> Response:
    return HTMLResponse(MISSING, status_code=503, headers=_headers(DASHBOARD_CSP, cache="no-store"))
