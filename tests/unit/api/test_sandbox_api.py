"""The Daytona-compatible REST surface, in process, on the fake runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.core.config import Settings
from cove.runner.fake import FakeRuntime
from tests.unit.api.conftest import AUTH, create_sandbox

REQUIRED = {
    "id": str, "organizationId": str, "name": str, "user": str, "target": str, "env": dict,
    "labels": dict, "public": bool, "networkBlockAll": bool, "kvm": bool, "cpu": int,
    "gpu": int, "memory": int, "disk": int, "toolboxProxyUrl": str, "state": str,
}




def _assert_envelope(r, status: int, code: str, message: str) -> None:
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["statusCode"] == status and body["code"] == code
    assert body["source"] == "DAYTONA_API" and isinstance(body["timestamp"], str)
    assert message in body["message"]


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
def test_wrong_key_is_401_envelope(client: TestClient, headers: dict) -> None:
    _assert_envelope(client.get("/api/sandbox", headers=headers), 401, "UNAUTHORIZED", "API key")


def test_create_returns_strict_dto(client: TestClient) -> None:
    body = create_sandbox(client, labels={"code-toolbox-language": "python"}, env={"X": "1"})
    for field, kind in REQUIRED.items():
        assert type(body[field]) is kind, field
    assert body["state"] == "started" and body["desiredState"] == "started"
    assert (body["cpu"], body["memory"], body["disk"], body["gpu"]) == (1, 1, 3, 0)
    assert body["toolboxProxyUrl"] == "http://127.0.0.1:3999/toolbox"
    assert body["env"] == {"X": "1"}
    assert body["autoDeleteInterval"] == -1 and body["autoArchiveInterval"] == 10080


def test_get_by_id_and_by_name(client: TestClient) -> None:
    body = create_sandbox(client, name="named-box")
    assert client.get(f"/api/sandbox/{body['id']}", headers=AUTH).json()["name"] == "named-box"
    assert client.get("/api/sandbox/named-box", headers=AUTH).json()["id"] == body["id"]


def test_unknown_sandbox_is_404_envelope(client: TestClient) -> None:
    r = client.get("/api/sandbox/does-not-exist", headers=AUTH)
    _assert_envelope(r, 404, "NOT_FOUND", "does-not-exist not found")
    r = client.post("/api/sandbox/does-not-exist/start", headers=AUTH)
    _assert_envelope(r, 404, "NOT_FOUND", "not found")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"cpu": 8}, "cpu 8 exceeds the per-sandbox limit of 4"),
        ({"memory": 16}, "memory 16 exceeds"),
        ({"disk": 50}, "disk 50 exceeds"),
        ({"cpu": 1.5}, "cpu"),
        ({"autoStopInterval": -3}, "autoStopInterval"),
        ({"name": "bad name!"}, "name"),
        ({"buildInfo": {"dockerfileContent": "FROM Ubuntu:22\n"}}, "not a valid image reference"),
        ({"buildInfo": {"dockerfileContent": "FROM ../../etc\n"}}, "not a valid image reference"),
    ],
)
def test_bad_create_is_400_and_creates_nothing(
    client: TestClient, body: dict, message: str
) -> None:
    r = client.post("/api/sandbox", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert client.get("/api/sandbox", headers=AUTH).json()["items"] == []


def test_list_filters_labels_and_pages_with_cursor(client: TestClient) -> None:
    ids = [create_sandbox(client, labels={"agent_id": "a1", "i": str(i)})["id"] for i in range(3)]
    create_sandbox(client, labels={"agent_id": "a2"})
    query = json.dumps({"agent_id": "a1"})
    r = client.get("/api/sandbox", params={"labels": query, "limit": 2}, headers=AUTH).json()
    assert [i["id"] for i in r["items"]] == ids[:2] and r["nextCursor"]
    r2 = client.get(
        "/api/sandbox", params={"labels": query, "limit": 2, "cursor": r["nextCursor"]},
        headers=AUTH,
    ).json()
    assert [i["id"] for i in r2["items"]] == ids[2:] and r2["nextCursor"] is None
    bad = client.get("/api/sandbox", params={"labels": "{nope"}, headers=AUTH)
    assert bad.status_code == 400


def test_list_states_filter(client: TestClient) -> None:
    a, b = create_sandbox(client)["id"], create_sandbox(client)["id"]
    client.post(f"/api/sandbox/{a}/stop", params={"force": "false"}, headers=AUTH)
    r = client.get("/api/sandbox?states=stopped", headers=AUTH).json()
    assert [i["id"] for i in r["items"]] == [a]
    r = client.get("/api/sandbox?states=stopped&states=started", headers=AUTH).json()
    assert {i["id"] for i in r["items"]} == {a, b}


def test_lifecycle_endpoints(client: TestClient) -> None:
    sid = create_sandbox(client)["id"]
    stop = client.post(f"/api/sandbox/{sid}/stop?force=true", headers=AUTH).json()
    assert stop["state"] == "stopped"
    assert client.post(f"/api/sandbox/{sid}/start", headers=AUTH).json()["state"] == "started"
    assert client.post(f"/api/sandbox/{sid}/archive", headers=AUTH).json()["state"] == "archived"
    assert client.post(f"/api/sandbox/{sid}/recover", headers=AUTH).json()["state"] == "started"
    resized = client.post(f"/api/sandbox/{sid}/resize", json={"cpu": 2, "memory": 4},
                          headers=AUTH).json()
    assert (resized["cpu"], resized["memory"], resized["state"]) == (2, 4, "started")
    r = client.post(f"/api/sandbox/{sid}/resize", json={"disk": 6}, headers=AUTH)
    _assert_envelope(r, 400, "BAD_REQUEST", "Disk can only be resized while the sandbox is stopped")
    assert client.delete(f"/api/sandbox/{sid}", headers=AUTH).status_code == 200
    assert client.get(f"/api/sandbox/{sid}", headers=AUTH).status_code == 404


def test_settings_endpoints(client: TestClient) -> None:
    sid = create_sandbox(client, labels={"a": "1"})["id"]
    r = client.put(f"/api/sandbox/{sid}/labels", json={"labels": {"b": "2"}}, headers=AUTH)
    assert r.json() == {"labels": {"b": "2"}}
    for path, field, value in [
        ("autostop/0", "autoStopInterval", 0),
        ("autoarchive/60", "autoArchiveInterval", 60),
        ("autodelete/-1", "autoDeleteInterval", -1),
        ("public/true", "public", True),
    ]:
        assert client.post(f"/api/sandbox/{sid}/{path}", headers=AUTH).json()[field] == value
    assert client.post(f"/api/sandbox/{sid}/autostop/-5", headers=AUTH).status_code == 400
    r = client.post(f"/api/sandbox/{sid}/last-activity", headers=AUTH)
    assert r.status_code == 201
    r = client.get(f"/api/sandbox/{sid}/toolbox-proxy-url", headers=AUTH)
    assert r.json() == {"url": "http://127.0.0.1:3999/toolbox"}


def test_double_slashes_are_collapsed(client: TestClient) -> None:
    sid = create_sandbox(client)["id"]
    assert client.get(f"/api//sandbox/{sid}", headers=AUTH).status_code == 200


def test_state_survives_app_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, runtime="fake", api_key="test-key")
    runtime = FakeRuntime()
    with TestClient(create_app(settings, runtime=runtime)) as c:
        sid = create_sandbox(c, name="keep")["id"]
        c.post(f"/api/sandbox/{sid}/stop", headers=AUTH)
    with TestClient(create_app(settings, runtime=runtime)) as c:
        assert c.get("/api/sandbox/keep", headers=AUTH).json()["state"] == "stopped"


def test_first_start_prints_a_key_once_and_stores_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path, runtime="fake", api_key=None)
    with TestClient(create_app(settings, runtime=FakeRuntime())) as c:
        key = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
        assert key.startswith("cove_")
        assert c.get("/api/sandbox", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert key.encode() not in (tmp_path / "cove.db").read_bytes()
    with TestClient(create_app(settings, runtime=FakeRuntime())):
        assert "API key" not in capsys.readouterr().out


def test_auto_archive_zero_reads_back_as_daytonas_maximum(client: TestClient) -> None:
    """``autoArchiveInterval: 0`` means the maximum (30 days): it is shown as 43200."""
    sid = create_sandbox(client, autoArchiveInterval=0)["id"]
    assert client.get(f"/api/sandbox/{sid}", headers=AUTH).json()["autoArchiveInterval"] == 43200
    client.post(f"/api/sandbox/{sid}/autoarchive/60", headers=AUTH)
    r = client.post(f"/api/sandbox/{sid}/autoarchive/0", headers=AUTH)
    assert r.json()["autoArchiveInterval"] == 43200
    assert client.get(f"/api/sandbox/{sid}", headers=AUTH).json()["autoArchiveInterval"] == 43200
