"""Bad input is refused at the edge with a 400 in Daytona's envelope, before anything is
created or any request reaches a sandbox's agent (the classes of input schemathesis found)."""

from __future__ import annotations

import socket

import pytest
from starlette.testclient import TestClient

from cove.schemas.limits import MAX_BODY, MAX_ENV_BYTES, MAX_LABELS
from tests.unit.api.conftest import AUTH, create_sandbox
from tests.unit.scripted import AnsweringRuntime


class CountingRuntime(AnsweringRuntime):
    """Sandboxes whose agent counts the requests it gets (and answers none)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def answer(self, sock: socket.socket) -> None:
        self.requests += 1


@pytest.fixture
def runtime() -> CountingRuntime:
    return CountingRuntime()


def _bad(r, *words: str) -> None:  # noqa: ANN001 - an httpx response
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["statusCode"] == 400 and body["code"] == "BAD_REQUEST", body
    for word in words:
        assert word in body["message"], body


CREATES = {
    "env name with '='": ({"env": {"A=B": "x"}}, "env"),
    "env name with NUL": ({"env": {"A\0": "x"}}, "env"),
    "empty env name": ({"env": {"": "x"}}, "env"),
    "env value with NUL": ({"env": {"A": "x\0y"}}, "env"),
    "env above its size": ({"env": {f"V{i}": "x" * 30_000 for i in range(5)}}, "bytes"),
    "too many labels": ({"labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1)}}, "labels"),
    "label value of 1 MB": ({"labels": {"k": "v" * 1_000_000}}, "labels"),
    "label key with NUL": ({"labels": {"k\0": "v"}}, "labels"),
    "user with a newline": ({"user": "root\nx"}, "user"),
    "user with a slash": ({"user": "../root"}, "user"),
    "autoStopInterval 2**63": ({"autoStopInterval": 2**63}, "autoStopInterval"),
    "autoArchiveInterval -1": ({"autoArchiveInterval": -1}, "autoArchiveInterval"),
    "autoDeleteInterval -2": ({"autoDeleteInterval": -2}, "autoDeleteInterval"),
    "name with a slash": ({"name": "a/b"}, "name"),
    "a JSON 0 for a boolean": ({"public": 0}, "public"),
    "a volume at /etc": ({"volumes": [{"volumeId": "v", "mountPath": "/etc"}]}, "system"),
    "a volume at /usr/": ({"volumes": [{"volumeId": "v", "mountPath": "/usr/"}]}, "system"),
    "a volume under /proc": ({"volumes": [{"volumeId": "v", "mountPath": "/proc/x"}]}, "proc"),
    "a relative mount path": ({"volumes": [{"volumeId": "v", "mountPath": "data"}]}, "mountPath"),
}


@pytest.mark.parametrize("body,word", CREATES.values(), ids=CREATES.keys())
def test_bad_create_is_a_400_and_creates_nothing(client: TestClient, body: dict,
                                                 word: str) -> None:  # fmt: skip
    client.post("/api/volumes", json={"name": "v"}, headers=AUTH)
    _bad(client.post("/api/sandbox", json=body, headers=AUTH), word)
    assert client.get("/api/sandbox", headers=AUTH).json()["items"] == []


def test_limits_that_fit_are_accepted(client: TestClient) -> None:
    env = {f"V{i}": "x" * 1000 for i in range(MAX_ENV_BYTES // 1100)}
    labels = {f"k{i}": "v" * 1024 for i in range(MAX_LABELS)}
    sb = create_sandbox(client, env=env, labels=labels, user="root", autoDeleteInterval=-1,
                        autoStopInterval=2**31 - 1)  # fmt: skip
    assert sb["env"] == env and sb["autoStopInterval"] == 2**31 - 1
    r = client.put(f"/api/sandbox/{sb['id']}/labels", json={"labels": labels}, headers=AUTH)
    assert r.status_code == 200 and labels.items() <= r.json()["labels"].items()


def test_labels_update_and_interval_limits(client: TestClient) -> None:
    sid = create_sandbox(client)["id"]
    many = {f"k{i}": "v" for i in range(MAX_LABELS + 1)}
    _bad(client.put(f"/api/sandbox/{sid}/labels", json={"labels": many}, headers=AUTH), "labels")
    _bad(client.post(f"/api/sandbox/{sid}/autostop/{2**63}", headers=AUTH), "minutes")
    _bad(client.post(f"/api/sandbox/{sid}/autoarchive/-1", headers=AUTH), "at least 0")
    _bad(client.post(f"/api/sandbox/{sid}/ttl/-1", headers=AUTH), "at least 0")
    _bad(client.post(f"/api/sandbox/{sid}/autopause/-1", headers=AUTH), "at least 0")
    assert client.post(f"/api/sandbox/{sid}/nonsense/1", headers=AUTH).status_code == 404
    # another method on a three-part path is no interval: 405, naming what it allows
    r = client.post(f"/api/sandbox/{sid}/telemetry/metrics", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert client.post(f"/api/sandbox/{sid}/autodelete/-1", headers=AUTH).status_code == 200


@pytest.mark.parametrize("labels", ["[" * 4000 + "]" * 4000, '{"a":' * 1300 + "1" + "}" * 1300,
                                    '{"a": {"b": "c"}}', '{"a\\u0000": "b"}'])  # fmt: skip
def test_list_labels_filter_must_be_a_flat_object(client: TestClient, labels: str) -> None:
    _bad(client.get("/api/sandbox", params={"labels": labels}, headers=AUTH), "labels")


def test_names_of_volumes_and_snapshots(client: TestClient) -> None:
    for name in ("a/b", "a\0", "", "x" * 256):
        _bad(client.post("/api/volumes", json={"name": name}, headers=AUTH), "name")
        _bad(client.post("/api/snapshots", json={"name": name, "imageName": "x"}, headers=AUTH),
             "name")


TOOLBOX = {
    "exec with NUL": ("post", "/process/execute", {"json": {"command": "echo a\0b"}}),
    "exec env name with '='": ("post", "/process/execute",
                               {"json": {"command": "true", "envs": {"A=B": "1"}}}),
    "exec cwd with NUL": ("post", "/process/execute", {"json": {"command": "true", "cwd": "/\0"}}),
    "exec timeout 2**63": ("post", "/process/execute", {"json": {"command": "true",
                                                                 "timeout": 2**63}}),
    "list files with NUL": ("get", "/files", {"params": {"path": "/tmp\0x"}}),
    "list files path of 5000": ("get", "/files", {"params": {"path": "/" + "a" * 5000}}),
    "list files depth 10**6": ("get", "/files", {"params": {"path": "/", "depth": 10**6}}),
    "file info empty path": ("get", "/files/info", {"params": {"path": ""}}),
    "move to NUL": ("post", "/files/move", {"params": {"source": "/a", "destination": "/b\0"}}),
    "chmod to a word": ("post", "/files/permissions", {"params": {"path": "/a", "mode": "rwx"}}),
    "chown to NUL": ("post", "/files/permissions", {"params": {"path": "/a", "owner": "r\0"}}),
    "git status with NUL": ("get", "/git/status", {"params": {"path": "/r\0"}}),
    "git add with NUL": ("post", "/git/add", {"json": {"path": "/r", "files": ["a\0"]}}),
    "git branch with a space": ("post", "/git/branches", {"json": {"path": "/r", "name": "a b"}}),
    "git clone with NUL": ("post", "/git/clone", {"json": {"path": "/r", "url": "http://x\0"}}),
    "session id with NUL": ("post", "/process/session", {"json": {"sessionId": "s\0"}}),
    "session command with NUL": ("post", "/process/session/s/exec", {"json": {"command": "a\0"}}),
    "pty cwd with NUL": ("post", "/process/pty", {"json": {"id": "p", "cwd": "/\0"}}),
    "pty env with NUL": ("post", "/process/pty", {"json": {"id": "p", "envs": {"A": "\0"}}}),
    "interpreter cwd with NUL": ("post", "/process/interpreter/context", {"json": {"cwd": "\0"}}),
    "bulk download of a NUL path": ("post", "/files/bulk-download", {"json": {"paths": ["/\0"]}}),
}


@pytest.mark.parametrize("method,path,kwargs", TOOLBOX.values(), ids=TOOLBOX.keys())
def test_bad_toolbox_input_never_reaches_the_agent(client: TestClient, runtime: CountingRuntime,
                                                   method: str, path: str, kwargs: dict) -> None:
    sid = create_sandbox(client)["id"]
    before = runtime.requests  # (the warm-up ping each create sends once answered)
    _bad(client.request(method, f"/toolbox/{sid}{path}", headers=AUTH, **kwargs))
    assert runtime.requests == before


def test_bodies_above_the_limit_are_a_413(client: TestClient) -> None:
    sid = create_sandbox(client)["id"]
    big = b'{"command": "' + b"x" * MAX_BODY + b'"}'
    for body in (big, iter([big[:1000], big[1000:]])):  # announced, then chunked
        r = client.post(f"/toolbox/{sid}/process/execute", content=body,
                        headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "PAYLOAD_TOO_LARGE" and r.json()["statusCode"] == 413
    r = client.post("/api/sandbox", content=b"{" + b" " * MAX_BODY + b"}", headers=AUTH)
    assert r.status_code == 413
    assert client.get("/api/sandbox", headers=AUTH).json()["items"][0]["id"] == sid


def test_a_405_names_every_method_of_the_path(client: TestClient) -> None:
    r = client.request("TRACE", "/api/sandbox", headers=AUTH)
    assert r.status_code == 405 and r.json()["statusCode"] == 405
    assert set(r.headers["allow"].split(", ")) >= {"GET", "POST"}


def test_the_served_schema_documents_errors_and_limits(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    create = doc["paths"]["/api/sandbox"]["post"]
    assert {"200", "400", "401", "413"} <= create["responses"].keys()
    assert "422" not in create["responses"]
    assert create["security"] == [{"bearer": []}]
    env = doc["components"]["schemas"]["SandboxCreate"]["properties"]["env"]
    assert env["maxProperties"] == 512 and "=" in env["propertyNames"]["pattern"]
    exec_ = doc["paths"]["/toolbox/{sandbox_id}/process/execute"]["post"]["responses"]
    assert {"4XX", "502", "503", "504"} <= exec_.keys()
    deleted = doc["paths"]["/api/volumes/{volume_id}"]["delete"]["responses"]["200"]
    assert "content" not in deleted


def test_a_single_valued_query_parameter_given_twice_is_a_400(client: TestClient) -> None:
    _bad(client.get("/api/sandbox?labels=%7B%7D&labels=%7B%7D", headers=AUTH), "labels")
    r = client.get("/api/sandbox?states=started&states=stopped", headers=AUTH)
    assert r.status_code == 200, r.text


def test_a_signed_urls_expiry_of_other_digits_is_a_401(client: TestClient) -> None:
    """``expires`` is a Unix time in ASCII digits: "²" is a digit to ``str.isdigit``
    but no number to ``int``, and (the sandbox having a signing key) anyone without a
    key made the check fail with a 500 instead of the signed URL's 401."""
    sid = create_sandbox(client)["id"]
    assert client.get(f"/api/sandbox/{sid}/signing-key", headers=AUTH).status_code == 200
    for method, path in (("GET", "download"), ("POST", "upload-v2")):
        r = client.request(method, f"/toolbox/{sid}/files/{path}",
                           params={"path": "/a", "expires": "1²", "signature": "v1_x"})
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED", r.text


def test_an_organization_holds_a_bounded_number_of_keys_and_registries(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each create stores a row the organization keeps until it deletes it, and the
    lists answer every one at once: one tenant must not grow the database (and those
    answers) without end."""
    monkeypatch.setattr("cove.core.api_keys.MAX_API_KEYS", 3)
    monkeypatch.setattr("cove.core.registries.MAX_REGISTRIES", 2)
    for i in range(3):
        r = client.post("/api/api-keys", json={"name": f"k{i}", "permissions": []}, headers=AUTH)
        assert r.status_code == 201, r.text
    r = client.post("/api/api-keys", json={"name": "k3", "permissions": []}, headers=AUTH)
    assert r.status_code == 400 and r.json()["code"] == "QUOTA_EXCEEDED", r.text
    assert "at most 3 API keys" in r.json()["message"]
    assert len(client.get("/api/api-keys", headers=AUTH).json()) == 3
    assert client.delete("/api/api-keys/k0", headers=AUTH).status_code == 204
    r = client.post("/api/api-keys", json={"name": "k3", "permissions": []}, headers=AUTH)
    assert r.status_code == 201, r.text  # room again once one is deleted

    registry = {"url": "registry.example.com", "username": "u", "password": "p"}
    for i in range(2):
        r = client.post("/api/docker-registry", json={**registry, "name": f"r{i}"}, headers=AUTH)
        assert r.status_code in (200, 201), r.text
    r = client.post("/api/docker-registry", json={**registry, "name": "r2"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["code"] == "QUOTA_EXCEEDED", r.text
    assert "at most 2 registries" in r.json()["message"]
    assert len(client.get("/api/docker-registry", headers=AUTH).json()) == 2
