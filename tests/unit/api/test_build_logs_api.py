"""``buildInfo`` with steps: pending_build at once, then the build log over HTTP."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.unit.api.conftest import AUTH, create_sandbox, wait_built
from tests.unit.scripted import ScriptedRuntime

DOCKERFILE = "FROM cove-default\nRUN echo hello\n"


@pytest.fixture
def runtime() -> ScriptedRuntime:
    return ScriptedRuntime()


def test_build_logs_url_streams_the_log(client: TestClient) -> None:
    sb = create_sandbox(client, buildInfo={"dockerfileContent": DOCKERFILE})
    assert sb["state"] == "pending_build"
    r = client.get(f"/api/sandbox/{sb['id']}/build-logs-url", headers=AUTH)
    assert r.status_code == 200
    url = r.json()["url"]
    assert url.endswith(f"/api/sandbox/{sb['id']}/build-logs")
    with client.stream("GET", url, params={"follow": "true"}, headers=AUTH) as stream:
        assert stream.headers["content-type"].startswith("text/plain")
        text = "".join(stream.iter_text())
    assert "Step 1/1 : RUN echo hello" in text
    assert wait_built(client, sb["id"])["state"] == "started"
    assert client.get(url, headers={}).status_code == 401


def test_no_build_logs_without_a_build(client: TestClient) -> None:
    sb = create_sandbox(client)
    r = client.get(f"/api/sandbox/{sb['id']}/build-logs-url", headers=AUTH)
    assert r.status_code == 404


def test_copy_without_an_uploaded_context_is_a_400(client: TestClient) -> None:
    body = {"buildInfo": {"dockerfileContent": "FROM cove-default\nCOPY a /b\n"}}
    r = client.post("/api/sandbox", json=body, headers=AUTH)
    assert r.status_code == 400 and "uploaded build context" in r.json()["message"]
    body["buildInfo"]["contextHashes"] = ["0" * 32]  # never uploaded (by this organization)
    r = client.post("/api/sandbox", json=body, headers=AUTH)
    assert r.status_code == 400 and "was not uploaded" in r.json()["message"]
    assert client.get("/api/sandbox", headers=AUTH).json()["items"] == []
