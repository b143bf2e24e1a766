"""/api/warm-pools as the SDK sends and reads it; bad input, other organizations."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from tests.unit.api.conftest import AUTH, create_sandbox


def _ready(client: TestClient, pool_id: str, want: int) -> dict:
    for _ in range(1000):
        found = client.get(f"/api/warm-pools/{pool_id}", headers=AUTH).json()
        if found["currentSize"] == want:
            return found
        time.sleep(0.01)
    raise AssertionError(f"pool never had {want} ready: {found}")


def test_create_list_update_delete(client: TestClient) -> None:
    r = client.post("/api/warm-pools", json={"snapshot": "cove-default", "pool": 2}, headers=AUTH)
    assert r.status_code == 201, r.text
    pool = r.json()
    assert {k: pool[k] for k in ("snapshot", "target", "pool", "cpu", "mem", "disk", "osUser",
                                 "env", "errorReason")} == {  # fmt: skip
        "snapshot": "cove-default", "target": "local", "pool": 2, "cpu": 1, "mem": 1, "disk": 3,
        "osUser": "daytona", "env": {}, "errorReason": None}
    _ready(client, pool["id"], 2)
    assert [p["id"] for p in client.get("/api/warm-pools", headers=AUTH).json()] == [pool["id"]]
    assert client.get("/api/sandbox", headers=AUTH).json()["items"] == []  # none visible
    made = create_sandbox(client, name="from-pool", env={"A": "1"})
    assert made.get("warmPoolId") is None and made["name"] == "from-pool"
    _ready(client, pool["id"], 2)  # refilled
    r = client.patch(f"/api/warm-pools/{pool['id']}", json={"pool": 0}, headers=AUTH)
    assert r.status_code == 200 and r.json()["pool"] == 0
    _ready(client, pool["id"], 0)
    assert client.delete(f"/api/warm-pools/{pool['id']}", headers=AUTH).status_code == 204
    assert client.get("/api/warm-pools", headers=AUTH).json() == []
    assert client.get(f"/api/warm-pools/{pool['id']}", headers=AUTH).status_code == 404
    assert [s["name"] for s in client.get("/api/sandbox", headers=AUTH).json()["items"]] == [
        "from-pool"]


@pytest.mark.parametrize("body", [
    {}, {"pool": 1}, {"snapshot": "cove-default"}, {"snapshot": "cove-default", "pool": 0},
    {"snapshot": "cove-default", "pool": 1.5}, {"snapshot": "cove-default", "pool": "1"},
    {"snapshot": "nope", "pool": 1}, {"snapshot": "cove-default", "pool": 11},
    {"snapshot": "", "pool": 1}, {"snapshot": "cove-default", "pool": 1, "target": ""},
])  # fmt: skip
def test_bad_input_is_a_400_and_creates_nothing(client: TestClient, body: dict) -> None:
    r = client.post("/api/warm-pools", json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["statusCode"] == 400 and r.json()["message"]
    assert client.get("/api/warm-pools", headers=AUTH).json() == []


def test_duplicates_and_other_organizations(client: TestClient, other_auth: dict) -> None:
    body = {"snapshot": "cove-default", "pool": 1}
    pool = client.post("/api/warm-pools", json=body, headers=AUTH).json()
    assert client.post("/api/warm-pools", json=body, headers=AUTH).status_code == 409
    for bad in ({"pool": -1}, {"pool": 11}, {}):
        assert client.patch(f"/api/warm-pools/{pool['id']}", json=bad,
                            headers=AUTH).status_code == 400  # fmt: skip
    assert client.get("/api/warm-pools", headers=other_auth).json() == []
    for method in ("GET", "DELETE"):
        r = client.request(method, f"/api/warm-pools/{pool['id']}", headers=other_auth)
        assert r.status_code == 404, (method, r.text)
    r = client.patch(f"/api/warm-pools/{pool['id']}", json={"pool": 3}, headers=other_auth)
    assert r.status_code == 404
    _ready(client, pool["id"], 1)
    theirs = client.post("/api/sandbox", json={"env": {}, "name": "b"}, headers=other_auth).json()
    assert theirs["state"] == "started"
    _ready(client, pool["id"], 1)  # B's create did not take A's
    assert client.patch(f"/api/warm-pools/{pool['id']}", json={"pool": 0},
                        headers=AUTH).status_code == 200  # fmt: skip
    _ready(client, pool["id"], 0)
