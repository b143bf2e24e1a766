"""Volumes, snapshots, pause and fork over REST, in process, on the fake runtime."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.testclient import TestClient

from tests.unit.api.conftest import AUTH, create_sandbox

VOLUME = {"id", "name", "organizationId", "state", "createdAt", "updatedAt"}
SNAPSHOT = {"id", "general", "name", "state", "cpu", "gpu", "mem", "disk", "createdAt",
            "updatedAt"}  # fmt: skip




def test_volume_crud_and_mount(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/api/volumes", json={"name": "v"}, headers=AUTH)
    vol = r.json()
    assert r.status_code == 200 and VOLUME <= vol.keys() and vol["state"] == "ready"
    assert not (tmp_path / "volumes" / vol["id"]).exists()  # made at its first mount
    assert client.get("/api/volumes/by-name/v", headers=AUTH).json()["id"] == vol["id"]
    assert client.get(f"/api/volumes/{vol['id']}", headers=AUTH).json()["name"] == "v"
    assert [v["id"] for v in client.get("/api/volumes", headers=AUTH).json()] == [vol["id"]]
    assert client.post("/api/volumes", json={"name": "v"}, headers=AUTH).status_code == 409
    sb = create_sandbox(client, volumes=[{"volumeId": "v", "mountPath": "/data", "subpath": "a/b"}])
    assert sb["volumes"] == [{"volumeId": vol["id"], "mountPath": "/data", "subpath": "a/b"}]
    for bad in ({"volumeId": "v", "mountPath": "/"}, {"volumeId": "v", "mountPath": "x"},
                {"volumeId": "v", "mountPath": "/d", "subpath": "../x"}):  # fmt: skip
        r = client.post("/api/sandbox", json={"volumes": [bad]}, headers=AUTH)
        assert r.status_code == 400, r.text
    r = client.post("/api/sandbox", json={"volumes": [{"volumeId": "nope", "mountPath": "/d"}]},
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 404
    assert client.delete(f"/api/volumes/{vol['id']}", headers=AUTH).status_code == 409
    (tmp_path / "volumes" / vol["id"] / "a").mkdir(parents=True)  # as the real mount made it
    client.delete(f"/api/sandbox/{sb['id']}", headers=AUTH)
    assert client.delete(f"/api/volumes/{vol['id']}", headers=AUTH).status_code == 200
    assert client.get("/api/volumes/by-name/v", headers=AUTH).status_code == 404
    assert not (tmp_path / "volumes" / vol["id"]).exists()


def test_snapshots_endpoints(client: TestClient) -> None:
    page = client.get("/api/snapshots?page=1&limit=10", headers=AUTH).json()
    assert page["total"] == 1 and page["page"] == 1 and page["totalPages"] == 1
    default = page["items"][0]
    assert SNAPSHOT <= default.keys() and default["general"] and default["state"] == "active"
    sb = create_sandbox(client)
    r = client.post(f"/api/sandbox/{sb['id']}/snapshot", json={"name": "s1"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "started"
    snap = client.get("/api/snapshots/s1", headers=AUTH).json()
    assert snap["sourceSandboxId"] == sb["id"]
    assert client.post(f"/api/snapshots/{snap['id']}/activate", headers=AUTH).json()["name"] == "s1"
    child = create_sandbox(client, snapshot="s1")
    assert child["snapshot"] == snap["id"]
    assert client.delete(f"/api/snapshots/{snap['id']}", headers=AUTH).status_code == 409
    client.delete(f"/api/sandbox/{child['id']}", headers=AUTH)
    assert client.delete("/api/snapshots/s1", headers=AUTH).status_code == 200
    assert client.delete("/api/snapshots/cove-default", headers=AUTH).status_code == 400
    r = client.post("/api/snapshots", json={"name": "x", "imageName": "Not/Valid"}, headers=AUTH)
    assert r.status_code == 400 and "not a valid image reference" in r.json()["message"]
    # A registry image is pulled in the background; this one is in no registry.
    r = client.post("/api/snapshots", json={"name": "x", "imageName": "python:3.12"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "pulling", r.text
    while (snap := client.get("/api/snapshots/x", headers=AUTH).json())["state"] == "pulling":
        time.sleep(0.01)
    assert snap["state"] == "error" and "docker.io/library/python:3.12" in snap["errorReason"]
    assert client.delete("/api/snapshots/x", headers=AUTH).status_code == 200
    r = client.post("/api/snapshots", json={"name": "x", "buildInfo": {}}, headers=AUTH)
    assert r.status_code == 400


def test_pause_and_fork(client: TestClient) -> None:
    sb = create_sandbox(client, labels={"a": "b"})
    r = client.post(f"/api/sandbox/{sb['id']}/pause", headers=AUTH)
    assert r.json()["state"] == "paused" and r.json()["desiredState"] == "paused"
    assert client.post(f"/api/sandbox/{sb['id']}/start", headers=AUTH).json()["state"] == "started"
    fork = client.post(f"/api/sandbox/{sb['id']}/fork", json={"name": "f"}, headers=AUTH).json()
    assert fork["id"] != sb["id"] and fork["name"] == "f" and fork["state"] == "started"
    assert fork["labels"] == sb["labels"]
    r = client.post(f"/api/sandbox/{sb['id']}/fork", headers=AUTH)  # no body
    assert r.status_code == 200 and r.json()["name"] == r.json()["id"]
    r = client.post(f"/api/sandbox/{sb['id']}/fork", json={"name": "bad name"}, headers=AUTH)
    assert r.status_code in (400, 422)
