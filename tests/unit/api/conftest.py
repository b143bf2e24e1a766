"""The whole app in process on the fake runtime, and a helper to create sandboxes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.cli.main import main
from cove.core.config import Settings
from cove.runner.fake import FakeRuntime

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
def app_settings(tmp_path: Path) -> Settings:
    """The settings the app of ``client`` runs with (previews by host name only)."""
    return Settings(data_dir=tmp_path, runtime="fake", api_key="test-key", port=3999,
                    preview_domain="preview.test")  # fmt: skip


@pytest.fixture
def client(app_settings: Settings, runtime: FakeRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings, runtime=runtime)) as c:
        yield c


@contextmanager
def previews_by_host(settings: Settings, domain: str | None = "preview.test") -> Iterator[None]:
    """The running app as a server with the preview ``domain`` (previews by host name
    only), or without one (``None``: by path on the API's host), for the block."""
    was, settings.preview_domain = settings.preview_domain, domain
    try:
        yield
    finally:
        settings.preview_domain = was


@pytest.fixture
def other_auth(client: TestClient, tmp_path: Path) -> dict[str, str]:
    """The Authorization header of a second organization's key, made the way an operator
    makes it (``cove keys create --org other``)."""
    result = CliRunner().invoke(
        main, ["keys", "create", "--org", "other", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    return {"Authorization": f"Bearer {result.output.strip()}"}


def create_sandbox(client: TestClient, **body: object) -> dict:
    """POST /api/sandbox as the SDK sends it; it must succeed. Returns the DTO."""
    r = client.post("/api/sandbox", json={"env": {}, "volumes": [], **body}, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def wait_built(client: TestClient, sandbox_id: str, auth: dict[str, str] = AUTH) -> dict:
    """The sandbox once its Dockerfile build (in the background) has ended."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body = client.get(f"/api/sandbox/{sandbox_id}", headers=auth).json()
        if body["state"] not in ("pending_build", "pulling_snapshot", "building_snapshot",
                                 "starting"):
            return body
        time.sleep(0.05)
    raise AssertionError("the build did not end")
