"""The whole app in process on the fake runtime, and a helper to create sandboxes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.cli.main import main
from cove.core.config import Settings
from cove.runtime.fake import FakeRuntime

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
def client(tmp_path: Path, runtime: FakeRuntime) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, runtime="fake", api_key="test-key", port=3999,
                        preview_domain="preview.test")  # fmt: skip
    with TestClient(create_app(settings, runtime=runtime)) as c:
        yield c


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
