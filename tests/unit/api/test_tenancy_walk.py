"""Every route the server serves, called with a second organization's key on the first
organization's sandboxes, snapshots, volumes, build logs and previews: always 404, the
very answer a resource that never existed gets, and nothing of the first organization
changes. Routes are read from the app, so a new route naming a resource is walked
without further ado; any other route must be classified below, or the walk fails."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from dataclasses import dataclass

import pytest
from fastapi import FastAPI, routing
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount
from starlette.testclient import TestClient, WebSocketDenialResponse

from tests.unit.api.conftest import AUTH, create_sandbox, wait_built
from tests.unit.scripted import ScriptedRuntime

# Path parameters that name a resource of the caller's organization.
RESOURCE_PARAMS = {"id_or_name", "sandbox_id", "volume_id", "name", "registry_id", "secret_id",
                   "pool_id", "organization_id", "user_id"}  # fmt: skip
# Routes naming no resource: the caller's organization is implied.
PUBLIC = {("GET", "/openapi.json"), ("GET", "/docs"),
          ("GET", "/redoc"), ("GET", "/api/health"), ("GET", "/api/config"),
          ("GET", "/"), ("GET", "/dashboard"), ("GET", "/dashboard/{rest:path}")}  # fmt: skip
# Usage, naming an organization (and a sandbox): another organization's id is not found,
# as one that does not exist; walked in test_quotas_usage_api.
BY_ORGANIZATION = {("GET", "/api/organizations/{organizationId}/usage")} | {
    ("GET", f"/api/analytics/organization/{{organizationId}}/{rest}")
    for rest in ("usage/aggregated", "usage/sandbox", "usage/chart", "sandbox/{sandboxId}/usage",
                 "sandbox/{sandboxId}/telemetry/metrics")}  # fmt: skip
# The operator's, under COVE_METRICS_TOKEN (no API key reaches it): test_metrics_api.
OPERATOR = {("GET", "/metrics")}
LISTS = {("GET", "/api/sandbox"), ("GET", "/api/snapshots"), ("GET", "/api/volumes"),
         ("GET", "/api/docker-registry"), ("GET", "/api/object-storage/push-access"),
         ("GET", "/api/secret/paginated"), ("GET", "/api/warm-pools"), ("GET", "/api/api-keys"),
         ("GET", "/api/api-keys/current"), ("GET", "/api/organizations")}  # fmt: skip
# Names an SSH token, not a resource: another organization's token is "not valid" to the
# caller (tests/unit/agent/test_ssh_gateway.py).
BY_TOKEN = {("GET", "/api/sandbox/ssh-access/validate")}
# Signed with push-access credentials instead of a key: their scoping is proven in
# tests/e2e/test_build_contexts.py (another organization's credentials are refused).
SIGNED = {(m, "/api/object-storage/s3/{bucket}/{key:path}") for m in ("PUT", "POST", "DELETE")}
CREATES = {("POST", "/api/sandbox"), ("POST", "/api/snapshots"), ("POST", "/api/volumes"),
           ("POST", "/api/docker-registry"), ("POST", "/api/secret"),
           ("POST", "/api/warm-pools"), ("POST", "/api/api-keys"),
           ("POST", "/api/organizations")}  # fmt: skip
REGISTRY = {"name": "a-reg", "url": "registry.example.com", "username": "a-user",
            "password": "a-secret-password"}  # fmt: skip
# What makes a request valid, so that only ownership can refuse it.
EXTRA: dict[tuple[str, str], dict] = {
    ("POST", "/api/sandbox/{id_or_name}/fork"): {"json": {"name": "stolen"}},
    ("POST", "/api/sandbox/{id_or_name}/snapshot"): {"json": {"name": "stolen"}},
    ("POST", "/api/sandbox/{id_or_name}/resize"): {"json": {"cpu": 2}},
    ("PUT", "/api/sandbox/{id_or_name}/labels"): {"json": {"labels": {"owner": "b"}}},
    ("POST", "/api/sandbox/{id_or_name}/network-settings"): {"json": {"networkBlockAll": True}},
    ("GET", "/api/sandbox/{id_or_name}/ports/{port}/signed-preview-url"):
        {"params": {"expiresInSeconds": 60}},
    ("POST", "/toolbox/{sandbox_id}/process/execute"): {"json": {"command": "id"}},
    ("GET", "/toolbox/{sandbox_id}/files/download"): {"params": {"path": "/etc/hostname"}},
    ("POST", "/toolbox/{sandbox_id}/files/upload-v2"): {"params": {"path": "/tmp/x"}},
    ("POST", "/toolbox/{sandbox_id}/process/code-run"): {"json": {"code": "1"}},
    ("PATCH", "/api/docker-registry/{registry_id}"): {"json": {**REGISTRY, "username": "b"}},
    ("PATCH", "/api/secret/{secret_id}"): {"json": {"value": "b-value", "hosts": ["b.test"]}},
    ("PUT", "/api/sandbox/{id_or_name}/secrets"): {"json": {"secrets": []}},
    ("PATCH", "/api/warm-pools/{pool_id}"): {"json": {"pool": 1}},
    ("GET", "/api/sandbox/{id_or_name}/telemetry/metrics"):
        {"params": {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}},
}  # fmt: skip
OTHER_PARAMS = {"minutes": "5", "is_public": "true", "session_id": "s1",
                "command_id": "c1", "context_id": "x1", "process_name": "xvfb",
                "recording_id": "r1"}  # fmt: skip
DOCKERFILE = "FROM cove-default\nRUN echo built\n"


@pytest.fixture
def runtime() -> ScriptedRuntime:
    """Sandboxes with an agent, so a toolbox call that got through would reach it."""
    return ScriptedRuntime()


@dataclass
class Owner:
    """Organization A's resources, by id and by name."""

    sandbox: dict
    built: dict
    snapshot: dict
    volume: dict
    registry: dict
    built_snapshot: dict  # built from a Dockerfile (it has build logs)
    signed: str  # a signed preview token of A's sandbox
    port: int  # its port, where nothing listens
    secret: dict  # mounted in A's sandbox
    pool: dict  # a warm pool of A's snapshot, drained (size 0)
    key: dict  # an API key of A's (never used)
    organization: dict  # A's organization


def _served(client: TestClient) -> list[tuple[str, str]]:
    """(method or "WS", path) of every route of the app."""
    app = client.app
    while not isinstance(app, FastAPI):
        app = getattr(app, "app", None) or app.other_asgi_app  # type: ignore[union-attr]
    # Newer FastAPI keeps included routers lazily (iter_route_contexts flattens them);
    # older versions list every route flat.
    flatten = getattr(routing, "iter_route_contexts", lambda routes: routes)
    found = []
    for route in flatten(app.routes):
        mount = getattr(route, "original_route", route)
        if isinstance(mount, Mount) and isinstance(mount.app, StaticFiles):
            continue  # the dashboard's and the docs' built files: the same for everyone
        methods = sorted(set(route.methods or ()) - {"HEAD"}) or ["WS"]
        found += [(method, route.path) for method in methods]
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def owner(client: TestClient, runtime: ScriptedRuntime) -> Owner:
    sandbox = create_sandbox(client, name="a-box", labels={"owner": "a"})
    created = create_sandbox(client, name="a-built", buildInfo={"dockerfileContent": DOCKERFILE})
    built = wait_built(client, created["id"])
    assert built["state"] == "started" and built["snapshot"] != "cove-default"
    r = client.post(f"/api/sandbox/{sandbox['id']}/snapshot", json={"name": "a-snap"},
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 200, r.text
    snapshot = client.get("/api/snapshots/a-snap", headers=AUTH).json()
    volume = client.post("/api/volumes", json={"name": "a-vol"}, headers=AUTH).json()
    registry = client.post("/api/docker-registry", json=REGISTRY, headers=AUTH).json()
    r = client.post("/api/snapshots", json={"name": "a-built-snap",
                    "buildInfo": {"dockerfileContent": DOCKERFILE}}, headers=AUTH)  # fmt: skip
    assert r.status_code == 200 and r.json()["state"] == "building", r.text
    built_snapshot = r.json()
    for _ in range(500):
        if client.get("/api/snapshots/a-built-snap", headers=AUTH).json()["state"] != "building":
            break
        time.sleep(0.01)
    assert client.get("/api/snapshots/a-built-snap", headers=AUTH).json()["state"] == "active"
    port = _free_port()
    signed = client.get(f"/api/sandbox/{sandbox['id']}/ports/{port}/signed-preview-url",
                        params={"expiresInSeconds": 600}, headers=AUTH).json()["token"]  # fmt: skip
    secret = client.post("/api/secret", json={"name": "a-secret", "value": "a-value-123"},
                         headers=AUTH).json()  # fmt: skip
    r = client.put(f"/api/sandbox/{sandbox['id']}/secrets",
                   json={"secrets": [{"A_TOKEN": "a-secret"}]}, headers=AUTH)  # fmt: skip
    assert r.status_code == 200, r.text
    pool = _drained_pool(client, runtime, snapshot["name"])
    r = client.post("/api/api-keys", json={"name": "a-key", "permissions": []}, headers=AUTH)
    assert r.status_code == 201, r.text
    key = client.get("/api/api-keys/a-key", headers=AUTH).json()
    organization = client.get("/api/organizations", headers=AUTH).json()[0]
    return Owner(sandbox, built, snapshot, volume, registry, built_snapshot, signed, port, secret,
                 pool, key, organization)  # fmt: skip


def _drained_pool(client: TestClient, runtime: ScriptedRuntime, snapshot: str) -> dict:
    """A warm pool of A's, filled once then set to 0 and empty (nothing runs for it)."""
    boxes = len(runtime.boxes)
    r = client.post("/api/warm-pools", json={"snapshot": snapshot, "pool": 1}, headers=AUTH)
    assert r.status_code == 201, r.text
    pool_id = r.json()["id"]
    for want in (1, 0):
        if want == 0:
            r = client.patch(f"/api/warm-pools/{pool_id}", json={"pool": 0}, headers=AUTH)
            assert r.status_code == 200, r.text
        for _ in range(1000):
            found = client.get(f"/api/warm-pools/{pool_id}", headers=AUTH).json()
            if found["currentSize"] == want:
                break
            time.sleep(0.01)
        assert found["currentSize"] == want, found
    for _ in range(1000):  # its sandbox destroyed, not only leaving
        if len(runtime.boxes) == boxes:
            break
        time.sleep(0.01)
    assert len(runtime.boxes) == boxes
    return found


def _refs(owner: Owner, method: str, path: str) -> list[tuple[str, str]]:
    """(A's reference, a reference to nothing) pairs for the route's resource."""
    if path.startswith("/api/snapshots/") and path.endswith(("/build-logs", "/build-logs-url")):
        item = owner.built_snapshot
    elif path.startswith("/api/snapshots/"):
        item = owner.snapshot
    elif path.startswith("/api/volumes/"):
        item = owner.volume
    elif path.startswith("/api/docker-registry/"):
        item = owner.registry
    elif path.startswith("/api/secret/"):
        item = owner.secret
    elif path.startswith("/api/warm-pools/"):  # pools have ids only
        return [(owner.pool["id"], str(uuid.uuid4()))]
    elif path.startswith("/api/organizations/"):
        return [(owner.organization["id"], str(uuid.uuid4()))]
    elif path == "/api/api-keys/{user_id}/{name}":  # one value for both: wrong for A too
        return [(owner.key["userId"], str(uuid.uuid4()))]
    elif path.startswith("/api/api-keys/"):
        return [(owner.key["name"], "no-such-key")]
    elif path.endswith(("/build-logs", "/build-logs-url")):
        item = owner.built
    else:
        item = owner.sandbox
    return [(item["id"], str(uuid.uuid4())), (item["name"], f"no-such-{item['name']}")]


def _fill(path: str, ref: str, owner: Owner) -> str:
    values = {**OTHER_PARAMS, "port": str(owner.port), "token": owner.signed}
    return re.sub(r"\{(\w+)\}",
                  lambda m: ref if m[1] in RESOURCE_PARAMS else values[m[1]], path)  # fmt: skip


def _call(client: TestClient, method: str, path: str, headers: dict, **extra: object):
    if method != "WS":
        return client.request(method, path, headers=headers, **extra)  # type: ignore[arg-type]
    try:
        with client.websocket_connect(path, headers=headers):
            pass
    except WebSocketDenialResponse as denial:
        return denial
    raise AssertionError(f"WebSocket {path} was accepted")


def _normalized(response, ref: str) -> tuple[int, object]:  # noqa: ANN001
    try:
        body = response.json()
    except ValueError:
        return response.status_code, response.text.replace(ref, "<ref>")
    if isinstance(body, dict):
        body.pop("timestamp", None)
    return response.status_code, json.loads(json.dumps(body).replace(ref, "<ref>"))


def _state_of_a(client: TestClient, owner: Owner) -> dict:
    """Everything organization A can see of its own things."""
    get = lambda path: client.get(path, headers=AUTH).json()  # noqa: E731
    return {
        "sandboxes": get("/api/sandbox"),
        "snapshots": get("/api/snapshots"),
        "volumes": get("/api/volumes"),
        "registries": get("/api/docker-registry"),
        "secrets": get("/api/secret/paginated"),
        "pools": get("/api/warm-pools"),
        "keys": get("/api/api-keys"),
        "build": client.get(f"/api/sandbox/{owner.built['id']}/build-logs", headers=AUTH).text,
        "signed": client.get("/", headers={"host": f"{owner.signed}.preview.test"}
                             ).status_code,  # 502: valid, no server
    }


def test_every_route_is_classified_and_walked(
    client: TestClient, owner: Owner, other_auth: dict, runtime: ScriptedRuntime
) -> None:
    before = _state_of_a(client, owner)
    assert before["signed"] == 502
    calls, execs = len(runtime.calls), len(runtime.execs)
    walked = []
    for method, path in _served(client):
        if (method, path) in PUBLIC | OPERATOR | LISTS | CREATES | SIGNED | BY_TOKEN | \
                BY_ORGANIZATION:
            continue
        params = set(re.findall(r"\{(\w+)\}", path))
        assert params & RESOURCE_PARAMS, f"{method} {path} is not classified in the walk"
        _owner_reaches(client, owner, method, path)
        for ref, nothing in _refs(owner, method, path):
            extra = EXTRA.get((method, path), {})
            theirs = _call(client, method, _fill(path, ref, owner), other_auth, **extra)
            absent = _call(client, method, _fill(path, nothing, owner), other_auth, **extra)
            assert theirs.status_code == 404, f"{method} {path} as B: {theirs.status_code}"
            assert _normalized(theirs, ref) == _normalized(absent, nothing), f"{method} {path}"
        walked.append((method, path))
    assert len(walked) > 60  # the toolbox's routes too
    assert runtime.calls[calls:] == [] and runtime.execs[execs:] == []
    assert _state_of_a(client, owner) == before


def _owner_reaches(client: TestClient, owner: Owner, method: str, path: str) -> None:
    """The references used are good: A itself reads them (read-only routes outside the
    toolbox, whose scripted agent answers builds only)."""
    if method == "GET" and not path.startswith("/toolbox/"):
        ref = _refs(owner, method, path)[0][0]
        r = client.get(_fill(path, ref, owner), headers=AUTH, **EXTRA.get((method, path), {}))
        assert r.status_code == 200, f"{path} as A: {r.status_code} {r.text}"


def test_creating_with_another_organizations_resources(
    client: TestClient, owner: Owner, other_auth: dict, runtime: ScriptedRuntime
) -> None:
    before = _state_of_a(client, owner)
    snap, vol = owner.snapshot, owner.volume

    def attempts(s: str, v: str) -> list[tuple[str, dict]]:
        mount = {"volumeId": v, "mountPath": "/data"}
        return [
            ("/api/sandbox", {"snapshot": s}),
            ("/api/sandbox", {"buildInfo": {"dockerfileContent": f"FROM {s}\nRUN true\n"}}),
            ("/api/sandbox", {"buildInfo": {"dockerfileContent": f"FROM {s}\n"}}),
            ("/api/sandbox", {"volumes": [mount]}),
            ("/api/snapshots", {"name": "copy", "imageName": s}),
        ]

    for s, v in ((snap["id"], vol["id"]), (snap["name"], vol["name"])):
        for (url, body), (_, none_body) in zip(attempts(s, v), attempts("nothing-x", "nothing-y"),
                                                strict=True):  # fmt: skip
            theirs = client.post(url, json={"env": {}, **body}, headers=other_auth)
            mine = _outcome(client, url, theirs, other_auth, s if s in theirs.text else v)
            absent = client.post(url, json={"env": {}, **none_body}, headers=other_auth)
            none = _outcome(client, url, absent, other_auth,
                            "nothing-x" if "nothing-x" in absent.text else "nothing-y")
            assert mine == none, (url, body)
    assert client.get("/api/sandbox", headers=other_auth).json()["items"] == []
    # Names are per organization: B's own snapshot and volume, A's untouched.
    runtime.images.add("tiny:v1")
    mine = client.post("/api/snapshots", json={"name": "a-snap", "imageName": "tiny:v1"},
                       headers=other_auth).json()  # fmt: skip
    assert mine["id"] != snap["id"]
    assert client.post("/api/volumes", json={"name": "a-vol"},
                       headers=other_auth).json()["id"] != vol["id"]  # fmt: skip
    # The same Dockerfile builds B a snapshot of its own: A's cached one is not reused.
    b_built = create_sandbox_as(client, other_auth, buildInfo={"dockerfileContent": DOCKERFILE})
    b_snapshot = wait_built(client, b_built, other_auth)["snapshot"]
    assert b_snapshot not in (owner.built["snapshot"], "cove-default", None)
    # B cannot expire A's signed URL through a sandbox of its own either.
    b_box = create_sandbox_as(client, other_auth)
    r = client.post(f"/api/sandbox/{b_box}/ports/{owner.port}/signed-preview-url/"
                    f"{owner.signed}/expire", headers=other_auth)  # fmt: skip
    assert r.status_code == 200
    assert _state_of_a(client, owner) == before


def _outcome(client: TestClient, url: str, response, auth: dict, ref: str) -> object:  # noqa: ANN001
    """How a create ended: refused (400/404), or, for a name that is an image of a
    registry (not a snapshot of the caller), the failed pull (the sandbox or the
    snapshot record is then deleted)."""
    if response.status_code in (400, 404):
        return _normalized(response, ref)
    assert response.status_code == 200, response.text
    made = response.json()
    if url == "/api/sandbox":
        end = wait_built(client, made["id"], auth)
        client.delete(f"/api/sandbox/{made['id']}", headers=auth)
    else:
        deadline = time.monotonic() + 10
        while (end := client.get(f"/api/snapshots/{made['id']}", headers=auth).json())[
                "state"] == "pulling" and time.monotonic() < deadline:  # fmt: skip
            time.sleep(0.02)
        client.delete(f"/api/snapshots/{made['id']}", headers=auth)
    return "pulled", end["state"], (end["errorReason"] or "").replace(ref, "<ref>")


def create_sandbox_as(client: TestClient, auth: dict, **body: object) -> str:
    r = client.post("/api/sandbox", json={"env": {}, **body}, headers=auth)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_lists_show_nothing_of_another_organization(
    client: TestClient, owner: Owner, other_auth: dict
) -> None:
    create_sandbox_as(client, other_auth)
    secrets = [owner.sandbox["id"], owner.built["id"], owner.snapshot["id"], owner.volume["id"],
               owner.registry["id"], "a-box", "a-built", "a-snap", "a-vol", "a-reg",
               "a-secret-password", "registry.example.com"]  # fmt: skip
    for method, path in sorted(LISTS | PUBLIC):
        r = client.request(method, path, headers=other_auth)
        assert r.status_code == 200, path
        assert not [s for s in secrets if s in r.text], path
    assert len(client.get("/api/sandbox", headers=other_auth).json()["items"]) == 1
