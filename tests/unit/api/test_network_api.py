"""Network settings and preview URLs, in process, on the fake runtime."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.core.config import Settings
from cove.core.ports import NetworkPolicy
from cove.core.previews import PreviewTokens
from cove.core.validation import blocked_ranges, network_policy
from cove.errors import BadRequest
from cove.runner.fake import FakeRuntime
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
    r = _net(client, sid, networkAllowList="203.0.113.0/24, 198.51.100.7",
             domainAllowList="*.a.com")  # fmt: skip
    assert r.status_code == 200
    body = r.json()
    assert body["networkBlockAll"] is False
    assert body["networkAllowList"] == "203.0.113.0/24, 198.51.100.7"
    assert runtime.networks[sid] == NetworkPolicy(
        allow_cidrs=("203.0.113.0/24", "198.51.100.7/32"), allow_domains=("*.a.com",)
    )
    body = _net(client, sid, networkBlockAll=False).json()  # clears the lists
    assert body["networkAllowList"] is None and body["domainAllowList"] is None
    assert runtime.networks[sid] == NetworkPolicy()


@pytest.mark.parametrize("body", [
    {"networkAllowList": "10.0.0.0/33"},
    {"networkAllowList": ",".join(f"203.0.{i}.0/24" for i in range(11))},
    {"networkAllowList": "::1/128"},
    {"networkAllowList": "169.254.169.254"},  # cloud metadata: blocked for every sandbox
    {"networkAllowList": "203.0.113.0/24, 10.0.0.0/8"},
    {"networkAllowList": "224.0.0.0/3"},  # wholly inside two blocked ranges
    {"domainAllowList": "bad_name.com"},
    {"domainAllowList": "*.-x.com"},
])  # fmt: skip
def test_invalid_network_settings_change_nothing(client: TestClient, runtime: FakeRuntime,
                                                 body: dict) -> None:  # fmt: skip
    sb = create_sandbox(client, networkAllowList="198.51.100.0/24")
    runtime.networks.clear()
    r = _net(client, sb["id"], **body)
    assert r.status_code == 400 and r.json()["code"] == "BAD_REQUEST"
    assert client.get(f"/api/sandbox/{sb['id']}", headers=AUTH).json()["networkAllowList"] == (
        "198.51.100.0/24"
    )
    assert runtime.networks == {}


@pytest.mark.parametrize("body", [
    {"domainAllowList": "a b"},
    {"networkAllowList": "192.168.1.0/24"},
])  # fmt: skip
def test_invalid_network_fields_at_create(client: TestClient, runtime: FakeRuntime,
                                          body: dict) -> None:  # fmt: skip
    r = client.post("/api/sandbox", json={"env": {}, "volumes": [], **body}, headers=AUTH)
    assert r.status_code == 400 and r.json()["code"] == "BAD_REQUEST"
    assert client.get("/api/sandbox", headers=AUTH).json()["items"] == []
    assert runtime.calls == []


def test_blocked_range_message_and_partial_overlap(client: TestClient,
                                                   runtime: FakeRuntime) -> None:  # fmt: skip
    sid = create_sandbox(client)["id"]
    r = _net(client, sid, networkAllowList="169.254.169.254/32")
    assert r.json()["message"] == (
        "networkAllowList: 169.254.169.254/32 lies in 169.254.0.0/16, which this server "
        "blocks for every sandbox"
    )
    # a range that only overlaps the blocked ones is taken (the firewall keeps them closed)
    assert _net(client, sid, networkAllowList="0.0.0.0/0, 8.0.0.0/7").status_code == 200
    assert runtime.networks[sid] == NetworkPolicy(allow_cidrs=("0.0.0.0/0", "8.0.0.0/7"))


def test_operator_exemptions_and_blocks(tmp_path) -> None:  # noqa: ANN001
    settings = Settings(data_dir=tmp_path, egress_allow="10.1.0.0/16, 169.254.169.254",
                        egress_block="203.0.113.0/24")  # fmt: skip
    blocked = [str(n) for n in blocked_ranges(settings)]
    assert "203.0.113.0/24" in blocked and "172.16.0.0/12" in blocked
    assert not any(ip_network(n).overlaps(ip_network("10.1.0.0/16")) for n in blocked)
    assert "169.254.169.0/25" in blocked and "169.254.169.255/32" in blocked
    policy = network_policy(False, "10.1.2.0/24,169.254.169.254", None, settings)
    assert policy.allow_cidrs == ("10.1.2.0/24", "169.254.169.254/32")
    with pytest.raises(BadRequest, match="203.0.113.9/32 lies in 203.0.113.0/24"):
        network_policy(False, "203.0.113.9", None, settings)
    with pytest.raises(BadRequest, match="10.2.0.0/16 lies in 10.0.0.0/8"):
        network_policy(False, "10.2.0.0/16", None, settings)
    # a stored sandbox's list is not judged again (the firewall still blocks)
    assert network_policy(False, "10.2.0.0/16", None).allow_cidrs == ("10.2.0.0/16",)


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


def test_with_a_preview_domain_no_preview_is_served_on_the_apis_origin(
    client: TestClient, upstream: int
) -> None:
    """COVE_PREVIEW_DOMAIN gives previews origins of their own: a sandbox's page at
    ``/preview/...`` of the API's (and the dashboard's) host would let its tenant hand
    out a link that draws a look-alike dashboard on the dashboard's origin (and put
    its sign-in path in the address bar) to take the key typed there."""
    sid = create_sandbox(client, public=True)["id"]
    signed = client.get(f"/api/sandbox/{sid}/ports/{upstream}/signed-preview-url",
                        headers=AUTH).json()["token"]  # fmt: skip
    for path in (f"/preview/{sid}/{upstream}/", f"/preview/s/{signed}/"):
        r = client.get(path)
        assert r.status_code == 404 and "up " not in r.text, path
        assert "preview.test" in r.text  # where previews are
    host = {"host": f"{upstream}-{sid}.preview.test"}
    assert client.get("/", headers=host).text == "up / None"  # its own origin
    template = client.get("/api/config").json()["proxyTemplateUrl"]
    assert template == "http://{{PORT}}-{{sandboxId}}.preview.test:3999"


def test_a_signed_preview_url_expired_early_stays_expired_after_a_restart(
    client: TestClient, upstream: int, runtime: FakeRuntime, tmp_path: Path
) -> None:
    """An early expiry is kept with the server's data, as its secret is: a restart
    (the same preview.key) must not make a link its owner expired work again."""
    sid = create_sandbox(client)["id"]
    signed = client.get(f"/api/sandbox/{sid}/ports/{upstream}/signed-preview-url",
                        params={"expiresInSeconds": 3600}, headers=AUTH).json()  # fmt: skip
    host = {"host": f"{signed['token']}.preview.test"}
    assert client.get("/s", headers=host).text == "up /s None"
    r = client.post(f"/api/sandbox/{sid}/ports/{upstream}/signed-preview-url/"
                    f"{signed['token']}/expire", headers=AUTH)  # fmt: skip
    assert r.status_code == 200 and client.get("/s", headers=host).status_code == 404
    client.__exit__(None, None, None)  # the server stops; it starts again on its data
    settings = Settings(data_dir=tmp_path, runtime="fake", api_key="test-key", port=3999,
                        preview_domain="preview.test")  # fmt: skip
    with TestClient(create_app(settings, runtime=runtime)) as again:
        assert again.get(f"/api/sandbox/{sid}", headers=AUTH).json()["state"] == "started"
        assert again.get("/s", headers=host).status_code == 404


def test_a_signed_preview_url_expired_early_opens_nothing_spelled_otherwise(
    client: TestClient, upstream: int
) -> None:
    """A signed token is base32: its last letter carries two bits no byte holds, and
    a host name's letters are any case. Every other spelling of an expired token (the
    holder of a leaked link needs only try three letters) is refused as it is."""
    sid = create_sandbox(client)["id"]
    token = client.get(f"/api/sandbox/{sid}/ports/{upstream}/signed-preview-url",
                       params={"expiresInSeconds": 3600}, headers=AUTH).json()["token"]  # fmt: skip
    r = client.post(f"/api/sandbox/{sid}/ports/{upstream}/signed-preview-url/{token}/expire",
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 200
    letters = "abcdefghijklmnopqrstuvwxyz234567"
    last = letters.index(token[-1]) & ~3
    spellings = {token[:-1] + letters[last + n] for n in range(4)} | {token.upper()}
    for spelling in spellings:
        assert client.get("/s", headers={"host": f"{spelling}.preview.test"}).status_code == 404


def test_expiring_a_signed_preview_url_costs_no_more_for_those_expired_before() -> None:
    """Any key of an organization signs URLs (a distinct one for each port and expiry)
    and expires them early: each expiry walked every token expired before, on the
    event loop, so a tenant made the server's every request wait longer and longer."""
    tokens = PreviewTokens(b"k" * 32)
    sid = str(uuid.uuid4())
    signed = [(port, tokens.sign(sid, port, 3600)) for port in range(1, 10_001)]
    took = []
    for start in range(0, len(signed), 1000):
        began = time.monotonic()
        for port, token in signed[start : start + 1000]:
            tokens.expire(sid, port, token)
        took.append(time.monotonic() - began)
    assert took[-1] < 3 * took[0], took  # (before: 17 times as long as the first)
    assert all(tokens.verify(token) is None for _, token in signed[::500])


def test_preview_port_and_expiry_are_checked(client: TestClient) -> None:
    sid = create_sandbox(client)["id"]
    assert client.get(f"/api/sandbox/{sid}/ports/0/preview-url", headers=AUTH).status_code == 400
    r = client.get(f"/api/sandbox/{sid}/ports/80/signed-preview-url",
                   params={"expiresInSeconds": 0}, headers=AUTH)  # fmt: skip
    assert r.status_code == 400
