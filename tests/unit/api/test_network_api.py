"""Network settings and preview URLs, in process, on the fake runtime."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from cove.core.ports import NetworkPolicy
from cove.runtime.fake import FakeRuntime
from tests.unit.api.conftest import AUTH, create_sandbox


@pytest.fixture
def upstream() -> Iterator[int]:
    """An HTTP server on loopback (the fake runtime's sandbox address)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = f"up {self.path} {self.headers.get('X-Daytona-Preview-Token')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()



def _net(client: TestClient, sid: str, **body: object):  # noqa: ANN202
    return client.post(f"/api/sandbox/{sid}/network-settings", json=body, headers=AUTH)


def test_network_settings_apply_live_and_store(client: TestClient, runtime: FakeRuntime) -> None:
    sid = create_sandbox(client, networkBlockAll=True)["id"]
    r = _net(client, sid, networkAllowList="10.0.0.0/8, 192.168.1.7", domainAllowList="*.a.com")
    assert r.status_code == 200
    body = r.json()
    assert body["networkBlockAll"] is False
    assert body["networkAllowList"] == "10.0.0.0/8, 192.168.1.7"
    assert runtime.networks[sid] == NetworkPolicy(
        allow_cidrs=("10.0.0.0/8", "192.168.1.7/32"), allow_domains=("*.a.com",)
    )
    body = _net(client, sid, networkBlockAll=False).json()  # clears the lists
    assert body["networkAllowList"] is None and body["domainAllowList"] is None
    assert runtime.networks[sid] == NetworkPolicy()


@pytest.mark.parametrize("body", [
    {"networkAllowList": "10.0.0.0/33"},
    {"networkAllowList": ",".join(f"10.{i}.0.0/16" for i in range(11))},
    {"networkAllowList": "::1/128"},
    {"domainAllowList": "bad_name.com"},
    {"domainAllowList": "*.-x.com"},
])  # fmt: skip
def test_invalid_network_settings_change_nothing(client: TestClient, runtime: FakeRuntime,
                                                 body: dict) -> None:  # fmt: skip
    sb = create_sandbox(client, networkAllowList="10.1.0.0/16")
    runtime.networks.clear()
    r = _net(client, sb["id"], **body)
    assert r.status_code == 400 and r.json()["code"] == "BAD_REQUEST"
    assert client.get(f"/api/sandbox/{sb['id']}", headers=AUTH).json()["networkAllowList"] == (
        "10.1.0.0/16"
    )
    assert runtime.networks == {}


def test_invalid_network_fields_atcreate_sandbox(client: TestClient) -> None:
    r = client.post("/api/sandbox", json={"env": {}, "volumes": [], "domainAllowList": "a b"},
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 400


def test_preview_by_host_name_and_tokens(client: TestClient, upstream: int) -> None:
    sid = create_sandbox(client)["id"]
    link = client.get(f"/api/sandbox/{sid}/ports/{upstream}/preview-url", headers=AUTH).json()
    assert link["sandboxId"] == sid
    assert link["url"] == f"http://{upstream}-{sid}.preview.test:3999"
    host = {"host": f"{upstream}-{sid}.preview.test:3999"}
    assert client.get("/x", headers=host).status_code == 401
    r = client.get("/x?a=1", headers={**host, "X-Daytona-Preview-Token": link["token"]})
    assert r.text == "up /x?a=1 None"  # the token is not passed on
    assert client.get("/y", headers={**host, **AUTH}).text == "up /y None"  # the API key works

    signed = client.get(f"/api/sandbox/{sid}/ports/{upstream}/signed-preview-url",
                        params={"expiresInSeconds": 30}, headers=AUTH).json()  # fmt: skip
    assert signed["port"] == upstream
    assert signed["url"].startswith(f"http://{signed['token']}.")
    signed_host = {"host": f"{signed['token']}.preview.test"}
    assert client.get("/s", headers=signed_host).text == "up /s None"
    r = client.post(f"/api/sandbox/{sid}/ports/{upstream}/signed-preview-url/"
                    f"{signed['token']}/expire", headers=AUTH)  # fmt: skip
    assert r.status_code == 200
    assert client.get("/s", headers=signed_host).status_code == 404


def test_preview_port_and_expiry_are_checked(client: TestClient) -> None:
    sid = create_sandbox(client)["id"]
    assert client.get(f"/api/sandbox/{sid}/ports/0/preview-url", headers=AUTH).status_code == 400
    r = client.get(f"/api/sandbox/{sid}/ports/80/signed-preview-url",
                   params={"expiresInSeconds": 0}, headers=AUTH)  # fmt: skip
    assert r.status_code == 400
