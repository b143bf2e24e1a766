"""API keys with permissions and expiry, and organizations, through Daytona's own
generated client (``daytona_api_client``, which validates every answer) against a
real ``cove serve``; and what another organization's key, a revoked key, an expired
key and a key without the permission get."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import asyncssh
import httpx
import httpx_ws
import pytest
import socketio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from daytona import Daytona, DaytonaConfig, DaytonaError
from daytona_api_client import (
    ApiClient,
    ApiKeysApi,
    Configuration,
    CreateApiKey,
    CreateOrganization,
    OrganizationsApi,
)
from daytona_api_client.exceptions import ApiException

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e
ALL_SANDBOX = ["write:sandboxes", "delete:sandboxes"]


class Caller:
    """The generated client's APIs as one key, and plain HTTP for envelopes."""

    def __init__(self, server: Server, key: str) -> None:
        self.server, self.key = server, key
        self.client = ApiClient(Configuration(host=server.api_url, access_token=key))
        self.keys = ApiKeysApi(self.client)
        self.orgs = OrganizationsApi(self.client)

    def http(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, self.server.api_url + path, timeout=60,
                             headers={"Authorization": f"Bearer {self.key}"},
                             **kwargs)  # type: ignore[arg-type]  # fmt: skip

    def make(self, name: str, permissions: list[str], expires_at: datetime | None = None
             ) -> Caller:  # fmt: skip
        made = self.keys.create_api_key(CreateApiKey(name=name, permissions=permissions,
                                                     expires_at=expires_at))  # fmt: skip
        return Caller(self.server, made.value)


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[Caller]:
    """An operator's key (every permission) of an organization of this module's own."""
    caller = Caller(server, server.org_key("keys-e2e"))
    yield caller
    for key in caller.keys.list_api_keys():
        if key.name != "key":  # the operator's, made by cove keys create
            caller.keys.delete_api_key(key.name)


@pytest.fixture(scope="module")
def other(server: Server) -> Caller:
    return Caller(server, server.org_key("keys-e2e-other"))


def _status(call: Callable[[], object]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30  # far beyond COVE_AUTH_CACHE_SECONDS and the flush
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_create_list_current_get_and_delete(admin: Caller) -> None:
    expires = datetime.now(UTC) + timedelta(days=2)
    made = admin.keys.create_api_key(CreateApiKey(
        name="ci", permissions=["write:sandboxes", "read:volumes"], expires_at=expires))
    assert made.value.startswith("cove_") and made.name == "ci"
    assert made.permissions == ["write:sandboxes", "read:volumes"]
    assert abs((made.expires_at - expires).total_seconds()) < 1

    listed = {k.name: k for k in admin.keys.list_api_keys()}
    ci = listed["ci"]
    assert ci.value == made.value[:5] + "*" * 20 + made.value[-3:]  # masked, never whole
    assert all(made.value not in k.value for k in listed.values())
    assert ci.permissions == made.permissions and ci.last_used_at is None
    assert listed["key"].permissions[-1] == "manage:billing"  # the operator's: all
    assert admin.keys.get_api_key("ci").user_id == ci.user_id

    key = Caller(admin.server, made.value)
    current = key.keys.get_current_api_key()
    assert (current.name, current.user_id, current.permissions) == (
        "ci", ci.user_id, made.permissions)
    _until(lambda: admin.keys.get_api_key("ci").last_used_at is not None,
           "lastUsedAt was never written")  # fmt: skip

    admin.keys.delete_api_key("ci")
    _until(lambda: key.http("GET", "/sandbox").status_code == 401, "the revoked key works")
    assert key.http("GET", "/sandbox").json()["message"] == "Invalid API key"
    assert _status(lambda: admin.keys.get_api_key("ci")) == 404


def test_a_revoked_keys_event_connection_ends(admin: Caller) -> None:
    """A Socket.IO connection (the SDK's, which hears every sandbox of the organization
    with its environment) lasts no longer than the key it was made with."""
    key = admin.make("listener", [])
    ended = threading.Event()
    client = socketio.Client(reconnection=False)
    client.on("disconnect", lambda *args: ended.set())
    client.connect(admin.server.url, socketio_path="/api/socket.io", transports=["websocket"],
                   auth={"token": key.key})  # fmt: skip
    try:
        assert not ended.wait(3)  # (a key that works keeps its connection)
        admin.keys.delete_api_key("listener")
        assert ended.wait(30), "the revoked key's connection still hears the organization"
        with pytest.raises(socketio.exceptions.ConnectionError):
            socketio.Client(reconnection=False).connect(
                admin.server.url, socketio_path="/api/socket.io", transports=["websocket"],
                auth={"token": key.key})  # fmt: skip
    finally:
        client.disconnect()


def test_an_expired_key_is_refused_with_401(admin: Caller) -> None:
    key = admin.make("short", ["write:sandboxes"], datetime.now(UTC) + timedelta(seconds=2))
    assert key.http("GET", "/sandbox").status_code == 200
    _until(lambda: key.http("GET", "/sandbox").status_code == 401, "the expired key works")
    body = key.http("GET", "/sandbox").json()
    assert (body["statusCode"], body["code"], body["message"]) == (
        401, "UNAUTHORIZED", "This API key has expired")
    assert _status(key.keys.get_current_api_key) == 401
    past = CreateApiKey(name="past", permissions=[], expires_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert _status(lambda: admin.keys.create_api_key(past)) == 400


def test_a_missing_permission_is_403_in_daytonas_envelope(admin: Caller) -> None:
    reader = admin.make("reader", ["read:volumes"])
    assert reader.http("GET", "/volumes").status_code == 200
    assert reader.http("GET", "/sandbox").status_code == 200  # reading needs nothing
    for method, path, body in (("POST", "/sandbox", {}), ("POST", "/volumes", {"name": "v"}),
                               ("POST", "/snapshots", {"name": "s", "imageName": "x"}),
                               ("DELETE", "/sandbox/nothing", None),
                               ("POST", "/secret", {"name": "S", "value": "v"})):  # fmt: skip
        r = reader.http(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["code"] == "FORBIDDEN" and r.json()["source"] == "DAYTONA_API"
    r = httpx.post(f"{admin.server.url}/toolbox/any/process/execute",
                   json={"command": "true"}, headers={"Authorization": f"Bearer {reader.key}"})
    assert r.status_code == 403 and "write:sandboxes" in r.json()["message"]
    # without manage:api_keys: only its own key
    assert reader.keys.get_current_api_key().name == "reader"
    assert _status(reader.keys.list_api_keys) == 403
    assert _status(lambda: reader.make("more", ["read:volumes"])) == 403


def test_a_key_cannot_raise_itself(admin: Caller) -> None:
    until = datetime.now(UTC) + timedelta(hours=1)
    manager = admin.make("manager", ["manage:api_keys", "write:sandboxes"], until)
    assert _status(lambda: manager.make("wider", ["write:sandboxes", "delete:sandboxes"],
                                        until)) == 403  # fmt: skip
    assert _status(lambda: manager.make("forever", ["write:sandboxes"])) == 403  # outlives it
    assert _status(lambda: manager.make("later", ["write:sandboxes"],
                                        until + timedelta(days=1))) == 403  # fmt: skip
    narrower = manager.make("narrower", ["write:sandboxes"], until)
    assert narrower.keys.get_current_api_key().permissions == ["write:sandboxes"]
    assert _status(lambda: manager.keys.delete_api_key("key")) == 403  # holds more than it
    manager.keys.delete_api_key("narrower")  # within its own permissions
    assert _status(lambda: admin.make("manager", ALL_SANDBOX)) == 409  # the name is taken
    bogus = CreateApiKey(name="bogus", permissions=["write:everything"])
    assert _status(lambda: admin.keys.create_api_key(bogus)) == 400


def test_organizations_are_the_callers_own(admin: Caller, other: Caller) -> None:
    mine = admin.orgs.list_organizations()
    assert [o.name for o in mine] == ["keys-e2e"] and not mine[0].suspended
    org_id = mine[0].id
    assert admin.orgs.get_organization(org_id).name == "keys-e2e"
    members = admin.orgs.list_organization_members(org_id)
    assert {(m.name, m.role) for m in members} >= {("key", "owner")}
    assert all(m.organization_id == org_id for m in members)
    refused = CreateOrganization(name="new", default_region_id="us")
    assert _status(lambda: admin.orgs.create_organization(refused)) == 403
    # another organization's key learns nothing of it
    assert [o.name for o in other.orgs.list_organizations()] == ["keys-e2e-other"]
    assert _status(lambda: other.orgs.get_organization(org_id)) == 404
    assert _status(lambda: other.orgs.get_organization("no-such-org")) == 404
    assert _status(lambda: other.orgs.list_organization_members(org_id)) == 404


def test_another_organizations_keys_are_out_of_reach(admin: Caller, other: Caller) -> None:
    target = admin.make("target", ["write:sandboxes"])
    user_id = admin.keys.get_api_key("target").user_id
    assert "target" not in {k.name for k in other.keys.list_api_keys()}
    assert _status(lambda: other.keys.get_api_key("target")) == 404
    assert _status(lambda: other.keys.delete_api_key("target")) == 404
    assert _status(lambda: other.keys.delete_api_key_for_user(user_id, "target")) == 404
    assert target.keys.get_current_api_key().name == "target"  # still working
    admin.keys.delete_api_key_for_user(user_id, "target")
    _until(lambda: target.http("GET", "/sandbox").status_code == 401, "the revoked key works")


def test_the_sdk_with_a_key_that_may_write_but_not_delete(admin: Caller) -> None:
    """The official SDK as a ``write:sandboxes`` key: it creates a sandbox and runs a
    command in it; deleting it is refused, and the sandbox stays."""
    writer = admin.make("sdk-writer", ["write:sandboxes"])
    daytona = Daytona(DaytonaConfig(api_key=writer.key, api_url=admin.server.api_url))
    sandbox = daytona.create(timeout=300)
    try:
        assert sandbox.process.exec("echo written").result.strip() == "written"
        with pytest.raises(DaytonaError, match="delete:sandboxes"):
            sandbox.delete()
        assert admin.http("GET", f"/sandbox/{sandbox.id}").json()["state"] == "started"
    finally:
        assert admin.http("DELETE", f"/sandbox/{sandbox.id}").status_code == 200


def test_a_revoked_keys_websocket_is_closed(admin: Caller) -> None:
    """A WebSocket (here the interpreter's, running code that would take two minutes)
    lasts no longer than the key it was opened with: revoked, the server closes it
    with 1008 and ends the route."""
    daytona = Daytona(DaytonaConfig(api_key=admin.key, api_url=admin.server.api_url))
    sandbox = daytona.create(timeout=300)
    key = admin.make("ws-holder", ["write:sandboxes"])
    url = f"{sandbox.toolbox_proxy_url.rstrip('/')}/{sandbox.id}/process/interpreter/execute"
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {key.key}"}, timeout=60) as http, \
                httpx_ws.connect_ws(url.replace("http", "ws", 1), http) as ws:
            ws.send_text(json.dumps({"code": "import time; print('up', flush=True); "
                                             "time.sleep(120)"}))  # fmt: skip
            assert "up" in ws.receive_text()  # (the run is under way: the key works)
            admin.keys.delete_api_key("ws-holder")
            started = time.monotonic()
            with pytest.raises(httpx_ws.WebSocketDisconnect) as closed:
                while True:
                    ws.receive_text(timeout=60)
            assert closed.value.code == 1008
            assert time.monotonic() - started < 60  # (not the run's end)
    finally:
        assert admin.http("DELETE", f"/sandbox/{sandbox.id}").status_code == 200


def test_a_revoked_keys_ssh_token_and_its_connection_end(admin: Caller) -> None:
    """An SSH token lasts no longer than the key that asked for it: once the key is
    revoked, the token opens nothing, validates as invalid, and the connection it
    opened (a shell running in it) is closed."""
    daytona = Daytona(DaytonaConfig(api_key=admin.key, api_url=admin.server.api_url))
    sandbox = daytona.create(timeout=300)
    key = admin.make("ssh-holder", ["write:sandboxes"])
    try:
        made = key.http("POST", f"/sandbox/{sandbox.id}/ssh-access")
        assert made.status_code == 200, made.text
        token = made.json()["token"]

        def connect() -> asyncssh.connect:
            return asyncssh.connect("127.0.0.1", admin.server.ssh_port, username=token,
                                    known_hosts=None, client_keys=None, agent_path=None,
                                    encoding=None, preferred_auth="none")  # fmt: skip

        async def run() -> None:
            async with connect() as conn:
                assert (await conn.run("echo in")).stdout == b"in\n"
                shell = await conn.create_process("sleep 600")
                admin.keys.delete_api_key("ssh-holder")
                await asyncio.wait_for(conn.wait_closed(), 60)
                await asyncio.wait_for(shell.wait_closed(), 10)
            with pytest.raises(asyncssh.PermissionDenied):
                await connect()

        asyncio.run(run())
        valid = admin.http("GET", "/sandbox/ssh-access/validate", params={"token": token})
        assert valid.status_code == 200 and valid.json()["valid"] is False
    finally:
        assert admin.http("DELETE", f"/sandbox/{sandbox.id}").status_code == 200


def _signed_put(grant: dict[str, str], path: str, body: bytes) -> httpx.Response:
    """A PUT to Cove's S3 endpoint signed with push-access ``grant`` (botocore's signer)."""
    url = f"{grant['storageUrl']}/{grant['bucket']}/{path}"
    request = AWSRequest(method="PUT", url=url, data=body)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    creds = Credentials(grant["accessKey"], grant["secret"], grant["sessionToken"])
    SigV4Auth(creds, "s3", grant["region"]).add_auth(request)
    return httpx.put(url, content=body, headers=dict(request.headers.items()), timeout=60)


def test_a_revoked_keys_push_access_ends(admin: Caller) -> None:
    """Build-context upload credentials last no longer than the key that asked for
    them (not their full hour): revoked, the key's credentials are refused at once."""
    key = admin.make("push-holder", ["write:snapshots"])
    grant = key.http("GET", "/object-storage/push-access").json()
    body = b"context bytes"
    path = f"{grant['organizationId']}/{hashlib.md5(body).hexdigest()}/context.tar"
    assert _signed_put(grant, path, body).status_code == 200
    admin.keys.delete_api_key("push-holder")
    refused = _signed_put(grant, path, body)
    assert refused.status_code == 403 and b"revoked" in refused.content
