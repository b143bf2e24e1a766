"""The dashboard's pages and the API docs: served from local files, never a CDN."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from cove.api import dashboard
from cove.web import STATIC

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)
BUILT = pytest.mark.skipif(not (STATIC / "index.html").is_file(),
                           reason="web/ is not built (scripts/install builds it)")  # fmt: skip


def _app(static: Path) -> TestClient:
    app = FastAPI(docs_url=None, redoc_url=None)
    dashboard.install(app, static)
    return TestClient(app)


@BUILT
def test_the_dashboard_page_is_served_at_the_root_and_under_dashboard(client: TestClient) -> None:
    for path in ("/", "/dashboard", "/dashboard/sandboxes/some-id"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert '<div id="app">' in r.text
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self';" in csp
        assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert not EXTERNAL.search(r.text)


@BUILT
def test_the_page_loads_its_scripts_from_the_server(client: TestClient) -> None:
    page = client.get("/").text
    assets = re.findall(r'(?:src|href)="(/dashboard/assets/[^"]+)"', page)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        r = client.get(asset)
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert client.get("/dashboard/assets/nothing.js").status_code == 404


@BUILT
@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_docs_reference_no_external_url(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert not re.search(r"https?://", r.text), "an external URL in " + path
    assert "fonts.googleapis" not in r.text
    csp = r.headers["content-security-policy"]
    assert "'unsafe-eval'" not in csp and "'unsafe-inline'" not in csp.split("style-src")[0]
    for asset in re.findall(r"""(?:src|href)=["'](/[^"']+)""", r.text):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/openapi.json").status_code == 200


def test_unbuilt_files_answer_how_to_build_them(tmp_path: Path) -> None:
    client = _app(tmp_path / "nothing")
    for path in ("/", "/dashboard/volumes", "/docs", "/redoc"):
        r = client.get(path)
        assert r.status_code == 503 and "make setup" in r.text, path
    assert client.get("/dashboard/assets/index.js").status_code == 404
    assert client.get("/dashboard/docs/swagger-ui-bundle.js").status_code == 404


def test_the_api_keeps_its_own_routes(client: TestClient) -> None:
    """The page takes / and /dashboard/ only: the API's 404s stay Daytona's envelopes."""
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json()["statusCode"] == 404
    r = client.get("/api/sandbox")
    assert r.status_code == 401
