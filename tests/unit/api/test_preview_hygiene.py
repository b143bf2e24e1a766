"""The preview proxy passes on no secret: an upstream on loopback (the fake runtime's
sandbox address) echoes what it received, over HTTP and WebSocket, by path and by host
name, with the preview token, the API key and signed URLs."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator

import anyio
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp
from starlette.websockets import WebSocketDisconnect
from websockets.sync.server import ServerConnection, serve

from cove.api.wsauth import bearer_protocol
from cove.core.config import Settings
from tests.unit.api.conftest import AUTH, create_sandbox, previews_by_host

KEY = AUTH["Authorization"].split()[1]
COOKIES = "app=1; cove_session=reserved-cookie-value; theme=dark"
SET_COOKIES = [
    "app=2; Path=/",
    "cove_session=forged; Path=/",
    "wide=1; Domain=preview.test",
    "own=1; Domain={host}",
]
# Headers that act on the whole origin of the page that gets them.
ORIGIN_WIDE = {"Service-Worker-Allowed": "/", "Clear-Site-Data": '"*"',
               "Cross-Origin-Opener-Policy": "same-origin",
               "Strict-Transport-Security": "max-age=31536000; includeSubDomains"}


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers with the path and headers it got; ``/set-cookies`` also sets cookies."""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"path": self.path, "headers": list(self.headers.items())}).encode()
        self.send_response(200)
        if self.path.startswith("/set-cookies"):
            host = self.headers.get("X-Forwarded-Host", "").split(":")[0]
            for cookie in SET_COOKIES:
                self.send_header("Set-Cookie", cookie.format(host=host))
        if self.path.startswith("/sw.js"):
            for name, value in ORIGIN_WIDE.items():
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


@pytest.fixture
def ws_port() -> Iterator[int]:
    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        ws.send(json.dumps({"path": ws.request.path,
                            "headers": list(ws.request.headers.raw_items())}))  # fmt: skip

    srv = serve(handler, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.socket.getsockname()[1]
    srv.shutdown()


@pytest.fixture(autouse=True)
def by_path(app_settings: Settings) -> Iterator[None]:
    """Previews by path, as a server without COVE_PREVIEW_DOMAIN serves them; the cases
    by host name turn the domain on (with it, the API's host serves no preview)."""
    with previews_by_host(app_settings, None):
        yield


@pytest.fixture
def sandbox(client: TestClient) -> dict:
    return create_sandbox(client)


def _token(client: TestClient, sid: str, port: int) -> str:
    r = client.get(f"/api/sandbox/{sid}/ports/{port}/preview-url", headers=AUTH)
    return str(r.json()["token"])


def _signed(client: TestClient, sid: str, port: int) -> str:
    r = client.get(f"/api/sandbox/{sid}/ports/{port}/signed-preview-url", headers=AUTH)
    return str(r.json()["token"])


def _hostile_headers(token: str) -> dict[str, str]:
    """Everything a browser or SDK may send along with a preview request."""
    return {
        **AUTH, "X-Daytona-Preview-Token": token, "Proxy-Authorization": f"Basic {KEY}",
        "Cookie": COOKIES, "Referer": f"http://127.0.0.1:3999/preview/x/1/?token={token}",
        "X-Forwarded-Host": f"evil-{KEY}", "X-Forwarded-For": "6.6.6.6", "Forwarded": "for=x",
        "X-Custom": "ordinary", "User-Agent": "agent/1.0", "Accept-Language": "fr",
    }  # fmt: skip


def _assert_clean(seen: dict, *secrets: str, cookie: str | None) -> dict[str, str]:
    """No secret arrived, ordinary headers did; returns the headers (lower-case names)."""
    headers = {k.lower(): v for k, v in seen["headers"]}
    for secret in (KEY, "reserved-cookie-value", *secrets):
        assert secret not in json.dumps(seen), f"{secret} reached the sandbox: {seen}"
    for name in ("authorization", "proxy-authorization", "x-daytona-preview-token",
                 "referer", "forwarded"):  # fmt: skip  (this Referer carries a token)
        assert name not in headers
    assert headers.get("cookie") == cookie
    assert headers["x-custom"] == "ordinary" and headers["user-agent"] == "agent/1.0"
    assert headers["accept-language"] == "fr"
    assert headers["x-forwarded-for"] == "testclient"  # the proxy's own, not the client's
    assert headers["x-forwarded-proto"] == "http"
    return headers


def test_path_preview_passes_no_key_token_or_cookie(client: TestClient, sandbox: dict,
                                                    http_port: int) -> None:  # fmt: skip
    sid = sandbox["id"]
    token = _token(client, sid, http_port)
    r = client.get(f"/preview/{sid}/{http_port}/p?x=1&token={token}",
                   headers=_hostile_headers(token))  # fmt: skip
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["path"] == "/p?x=1"
    headers = _assert_clean(seen, token, cookie=None)  # same origin as the API: no cookies
    assert headers["x-forwarded-host"] == "testserver"


def test_host_preview_passes_cookies_but_not_reserved_ones(
    client: TestClient, sandbox: dict, http_port: int, app_settings: Settings
) -> None:
    sid = sandbox["id"]
    token = _token(client, sid, http_port)
    host = f"{http_port}-{sid}.preview.test:3999"
    with previews_by_host(app_settings):
        r = client.get("/h?token=" + token, headers={**_hostile_headers(token), "Host": host})
    seen = r.json()
    assert seen["path"] == "/h"
    headers = _assert_clean(seen, token, cookie="app=1; theme=dark")
    assert headers["x-forwarded-host"] == host


@pytest.mark.parametrize("by_host", [False, True])
def test_signed_preview_passes_no_signed_token(client: TestClient, sandbox: dict,
                                               http_port: int, by_host: bool,
                                               app_settings: Settings) -> None:  # fmt: skip
    signed = _signed(client, sandbox["id"], http_port)
    hostile = {**_hostile_headers("unused-token"),
               "Referer": f"http://{signed}.preview.test/prev"}  # fmt: skip
    if by_host:
        with previews_by_host(app_settings):
            r = client.get("/page", headers={**hostile, "Host": f"{signed}.preview.test"})
    else:
        r = client.get(f"/preview/s/{signed}/page", headers=hostile)
    seen = r.json()
    assert seen["path"] == "/page"
    headers = _assert_clean(seen, signed, cookie="app=1; theme=dark" if by_host else None)
    assert headers.get("x-forwarded-host") == (None if by_host else "testserver")


def test_referer_without_a_secret_is_passed(client: TestClient, sandbox: dict,
                                            http_port: int) -> None:  # fmt: skip
    sid = sandbox["id"]
    referer = f"http://testserver/preview/{sid}/{http_port}/index.html"
    r = client.get(f"/preview/{sid}/{http_port}/", headers={**AUTH, "Referer": referer})
    assert {k.lower(): v for k, v in r.json()["headers"]}["referer"] == referer


@pytest.mark.parametrize("by_host", [False, True])
def test_websocket_preview_passes_no_secret(
    client: TestClient, sandbox: dict, ws_port: int, by_host: bool, app_settings: Settings
) -> None:
    sid = sandbox["id"]
    token = _token(client, sid, ws_port)
    hostile = _hostile_headers(token)
    if by_host:
        url, hostile["Host"] = "/ws?token=" + token, f"{ws_port}-{sid}.preview.test"
    else:
        url = f"/preview/{sid}/{ws_port}/ws?token={token}"
    with previews_by_host(app_settings, "preview.test" if by_host else None), \
            client.websocket_connect(url, headers=hostile) as ws:
        seen = json.loads(ws.receive_text())
    assert seen["path"] == "/ws"
    _assert_clean(seen, token, cookie="app=1; theme=dark" if by_host else None)


def test_websocket_preview_offers_no_secret_as_a_subprotocol(
    client: TestClient, sandbox: dict, ws_port: int
) -> None:
    """A browser can only send what it offers as subprotocols: the dashboard's API key
    (``cove.bearer.<base64url>``) and a token offered that way stay here too."""
    sid = sandbox["id"]
    token = _token(client, sid, ws_port)
    offered = [bearer_protocol(KEY), token, "chat"]
    with client.websocket_connect(f"/preview/{sid}/{ws_port}/ws?token={token}",
                                  subprotocols=offered) as ws:  # fmt: skip
        seen = json.loads(ws.receive_text())
    for secret in (bearer_protocol(KEY), token):
        assert secret not in json.dumps(seen), f"{secret} reached the sandbox: {seen}"
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["sec-websocket-protocol"] == "chat"

def test_websocket_preview_follows_no_redirect_to_another_address(
    client: TestClient, sandbox: dict, ws_port: int
) -> None:
    """A sandbox's server answering the handshake with a redirect does not make the
    server open a WebSocket (or send a request) to another address: a host-only
    service, out of the sandbox's reach (here the echo server on another port)."""
    reached: list[bytes] = []
    srv = socket.create_server(("127.0.0.1", 0))

    def redirect() -> None:
        with contextlib.suppress(OSError):
            conn, _ = srv.accept()
            with conn:
                reached.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:%d/internal\r\n"
                             b"Content-Length: 0\r\n\r\n" % ws_port)  # fmt: skip

    threading.Thread(target=redirect, daemon=True).start()
    port = srv.getsockname()[1]
    try:
        with pytest.raises(WebSocketDisconnect), client.websocket_connect(
            f"/preview/{sandbox['id']}/{port}/ws", headers=AUTH
        ) as ws:
            ws.receive_text()  # the echo server's answer, had the redirect been followed
    finally:
        srv.close()
    assert reached  # the handshake did reach the sandbox's server

def test_path_preview_sets_no_cookie(client: TestClient, sandbox: dict, http_port: int) -> None:
    sid = sandbox["id"]
    r = client.get(f"/preview/{sid}/{http_port}/set-cookies", headers=AUTH)
    assert r.status_code == 200 and "set-cookie" not in r.headers


def test_path_preview_acts_on_nothing_of_the_apis_origin(
    client: TestClient, sandbox: dict, http_port: int, app_settings: Settings
) -> None:
    """A path-based preview is served on the API's (and the dashboard's) origin: a
    sandbox answering ``Service-Worker-Allowed: /`` would let a service worker it
    registers from its preview control every page of that origin (the dashboard of
    any organization's user, its API calls and their keys, other sandboxes' previews);
    ``Clear-Site-Data`` would reload and empty every tab of it; the dashboard's opener
    policy (``same-origin``), claimed by a preview, would let the two pages share a
    browsing context group, and the preview script a dashboard it opens."""
    sid = sandbox["id"]
    r = client.get(f"/preview/{sid}/{http_port}/sw.js", headers=AUTH)
    assert r.status_code == 200
    assert not {name.lower() for name in ORIGIN_WIDE} & set(r.headers)
    # A host-based preview is its own origin: there they act on nothing else.
    host = f"{http_port}-{sid}.preview.test"
    with previews_by_host(app_settings):
        r = client.get("/sw.js", headers={**AUTH, "Host": host})
    assert {k: r.headers.get(k) for k in ORIGIN_WIDE} == ORIGIN_WIDE


def test_host_preview_sets_only_its_own_cookies(
    client: TestClient, sandbox: dict, http_port: int, app_settings: Settings
) -> None:
    host = f"{http_port}-{sandbox['id']}.preview.test"
    with previews_by_host(app_settings):
        r = client.get("/set-cookies", headers={**AUTH, "Host": f"{host}:3999"})
    assert r.status_code == 200
    assert r.headers.get_list("set-cookie") == ["app=2; Path=/", f"own=1; Domain={host}"]


def test_path_preview_widens_no_service_workers_scope(
    client: TestClient, sandbox: dict, http_port: int, app_settings: Settings
) -> None:
    """A path-based preview shares the API's origin: a service worker it registers may
    control its own path only, not "/" (the dashboard, whose requests carry the API
    key) nor "/preview/" (every other sandbox's previews and their tokens). The
    sandbox answers only at a literal /preview/{id}/{port}/ (not at one spelled with
    %2F, nor %70review), and gets the rest of the path as it was sent."""
    sid = sandbox["id"]
    r = client.get(f"/preview/{sid}/{http_port}/sw.js", headers=AUTH)
    assert r.status_code == 200 and "service-worker-allowed" not in r.headers
    port = http_port
    for path in (f"/preview%2F{sid}%2F{port}%2Fsw.js", f"/preview/{sid}%2F{port}/sw.js",
                 f"/%2Fpreview%2F{sid}%2F{port}%2Fsw.js", f"/%70review/{sid}/{port}/sw.js"):
        r = client.get(path, headers=AUTH)
        assert r.status_code == 404 and "headers" not in r.text, path
    # the rest of the path reaches the sandbox as it was sent (%3F is not a query)
    r = client.get(f"/preview/{sid}/{http_port}/a%3Fb%2Fc?x=1", headers=AUTH)
    assert r.json()["path"] == "/a%3Fb%2Fc?x=1"
    host = f"{http_port}-{sandbox['id']}.preview.test"  # its own origin: allowed
    with previews_by_host(app_settings):
        r = client.get("/sw.js", headers={**AUTH, "Host": host})
    assert r.headers["service-worker-allowed"] == "/"

def test_a_signed_preview_serves_no_service_worker_for_every_signed_preview(
    client: TestClient, sandbox: dict, http_port: int
) -> None:
    """The bare URL of a signed preview (``/preview/s/{token}``, as the API hands it out)
    lies in ``/preview/s/``: a service worker script served there could control every
    signed preview (other organizations' too) and read their tokens in their URLs. A
    browser asks for a worker's script with ``Service-Worker: script``: that request is
    refused unless it lies under the preview's own ``/preview/.../`` prefix."""
    signed, sid = _signed(client, sandbox["id"], http_port), sandbox["id"]
    worker = {"Service-Worker": "script", **AUTH}
    for bare in (f"/preview/s/{signed}", f"/preview/{sid}/{http_port}"):
        r = client.get(bare, headers=worker)
        assert r.status_code == 404 and "headers" not in r.text, bare
        assert client.get(bare, headers=AUTH).status_code == 200  # a page: served
        assert client.get(bare + "/sw.js", headers=worker).status_code == 200  # its own

def test_another_organizations_key_opens_no_preview(
    client: TestClient, sandbox: dict, http_port: int, other_auth: dict, app_settings: Settings
) -> None:
    r = client.get(f"/preview/{sandbox['id']}/{http_port}/", headers=other_auth)
    assert r.status_code == 401 and "path" not in r.text
    host = {"Host": f"{http_port}-{sandbox['id']}.preview.test"}
    with previews_by_host(app_settings):
        assert client.get("/", headers={**other_auth, **host}).status_code == 401


def test_preview_credentials_of_other_than_ascii_characters_are_refused(
    client: TestClient, sandbox: dict, http_port: int
) -> None:
    """A token or key no one issued is a 401, whatever its characters (not a 500)."""
    url = f"/preview/{sandbox['id']}/{http_port}/"
    for kwargs in ({"params": {"token": "t\u00e9"}},
                   {"headers": {"X-Daytona-Preview-Token": b"t\xe9"}},
                   {"headers": {"Authorization": b"Bearer t\xe9st-key"}}):  # fmt: skip
        r = client.get(url, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 401 and "path" not in r.text, kwargs


@pytest.mark.parametrize("port", ["0", "65536", "99999999999"])
def test_a_preview_of_no_port_is_refused(client: TestClient, sandbox: dict, port: str,
                                         app_settings: Settings) -> None:  # fmt: skip
    r = client.get(f"/preview/{sandbox['id']}/{port}/", headers=AUTH)
    assert r.status_code == 400 and "port" in r.text
    host = {"Host": f"{port}-{sandbox['id']}.preview.test", **AUTH}
    with previews_by_host(app_settings):
        assert client.get("/", headers=host).status_code == 400

class Stalling:
    """A sandbox's server that sends a response's headers and first chunk, then nothing
    more, and keeps its connections open; counts those the proxy has closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.opened = self.closed = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with self._lock:
            self.opened += 1
        with conn, contextlib.suppress(OSError):  # (a reset: closed too)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            while conn.recv(65536):  # until the proxy closes it
                pass
        with self._lock:
            self.closed += 1


@pytest.fixture
def stalling() -> Iterator[Stalling]:
    upstream = Stalling()
    yield upstream
    upstream.sock.close()


def _scope(path: str, auth: dict[str, str]) -> dict:
    headers = [(b"host", b"testserver"),
               *((k.lower().encode(), v.encode()) for k, v in auth.items())]  # fmt: skip
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": headers, "client": ("10.9.9.9", 1234),
            "server": ("testserver", 80)}  # fmt: skip


async def _preview(app: ASGIApp, path: str, auth: dict[str, str],
                   leave: anyio.Event | None = None) -> list[dict]:  # fmt: skip
    """Send a GET to ``app`` as uvicorn would; the client hangs up once ``leave`` is set
    (never without one). Returns the messages sent to the client."""
    sent: list[dict] = []
    asked = False
    hang_up = leave or anyio.Event()

    async def receive() -> dict:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(_scope(path, auth), receive, send)
    return sent


async def _until(check: Callable[[], bool], seconds: float = 10) -> None:
    with anyio.fail_after(seconds):
        while not check():
            await anyio.sleep(0.02)


def test_preview_stops_reading_its_upstream_when_the_client_leaves(
    client: TestClient, sandbox: dict, stalling: Stalling
) -> None:
    """A sandbox whose answer never ends keeps no request of the server going (nor its
    connection to the sandbox) once the client has hung up."""

    async def attack() -> None:
        leave = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_preview, client.app, f"/preview/{sandbox['id']}/{stalling.port}/",
                             AUTH, leave)  # fmt: skip
            await _until(lambda: stalling.opened == 1)
            leave.set()
            await _until(lambda: stalling.closed == 1, seconds=5)

    client.portal.call(attack)  # type: ignore[union-attr]


def test_stalled_previews_of_one_sandbox_block_no_other(
    client: TestClient, sandbox: dict, stalling: Stalling, http_port: int, other_auth: dict
) -> None:
    """However many requests a sandbox's server leaves hanging, another organization's
    preview is answered at once."""
    other = client.post("/api/sandbox", json={"env": {}, "volumes": []}, headers=other_auth)
    assert other.status_code == 200, other.text

    async def attack() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(120):
                tasks.start_soon(_preview, client.app,
                                 f"/preview/{sandbox['id']}/{stalling.port}/", AUTH)  # fmt: skip
            await _until(lambda: stalling.opened >= 100)
            with anyio.fail_after(5):
                sent = await _preview(
                    client.app, f"/preview/{other.json()['id']}/{http_port}/", other_auth
                )
            assert sent[0]["status"] == 200
            tasks.cancel_scope.cancel()

    client.portal.call(attack)  # type: ignore[union-attr]


def test_the_apis_answers_stay_in_no_browser_cache(client: TestClient, sandbox: dict) -> None:
    """A page of a path-based preview shares the API's origin: what the dashboard
    fetched with its key, kept in the browser's cache, it would read there with
    ``fetch(url, {cache: "force-cache"})`` (tests/e2e/test_dashboard.py shows it)."""
    sid = sandbox["id"]
    for path in ("/api/sandbox?limit=200", "/api/api-keys", f"/api/sandbox/{sid}",
                 f"/toolbox/{sid}/files?path=/", "/api/no-such-route"):  # fmt: skip
        r = client.get(path, headers=AUTH)
        assert r.headers["cache-control"] == "no-store", path
    assert client.get("/api/volumes").headers["cache-control"] == "no-store"  # a 401
    # the dashboard's own files keep theirs
    assert client.get("/dashboard/").headers.get("cache-control") in ("no-cache", "no-store")
