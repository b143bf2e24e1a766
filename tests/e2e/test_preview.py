"""Preview URLs through the official SDK: Cove's proxy reaches an HTTP server and a
WebSocket server inside the sandbox (at its veth address), with and without the
preview token, public and private, signed URLs and their expiry, by path and by
host name."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from daytona import Daytona
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e
PORT = 3000

# HTTP (GET echoes the path, or the request headers under /headers; POST the body's
# size and last bytes) and a WebSocket echo on one port; stdlib only.
APP = r"""
import base64, hashlib, http.server, json, socketserver, struct
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.ws()
        if self.path.startswith("/headers"):
            return self.reply(json.dumps(dict(self.headers.items())).encode())
        self.reply(f"path={self.path}".encode())
    def do_POST(self):
        n = int(self.headers["Content-Length"]); data = self.rfile.read(n)
        self.reply(f"got={len(data)} tail={data[-4:].decode()}".encode())
    def ws(self):
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101); self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept",
                         base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
        self.end_headers(); self.wfile.flush()
        while True:
            b1, b2 = self.rfile.read(2)
            n = b2 & 127
            if n == 126: n = struct.unpack("!H", self.rfile.read(2))[0]
            elif n == 127: n = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4)
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(self.rfile.read(n)))
            if b1 & 15 == 8:
                self.close_connection = True
                return
            out = b"echo:" + data
            if len(out) >= 65536:
                head = bytes([0x81, 127]) + struct.pack("!Q", len(out))
            elif len(out) >= 126:
                head = bytes([0x81, 126]) + struct.pack("!H", len(out))
            else:
                head = bytes([0x81, len(out)])
            self.wfile.write(head + out); self.wfile.flush()
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 3000), H).serve_forever()
"""


def serve_app(sb) -> None:  # noqa: ANN001
    encoded = base64.b64encode(APP.encode()).decode()
    sb.process.exec(f"echo {encoded} | base64 -d > /tmp/app.py")
    sb.process.exec("nohup python3 /tmp/app.py >/tmp/app.log 2>&1 &")
    for _ in range(50):
        if sb.process.exec("curl -s localhost:3000/ready").result.startswith("path="):
            return
        time.sleep(0.1)
    raise AssertionError(sb.process.exec("cat /tmp/app.log").result)


def test_private_and_public_preview(daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    serve_app(sb)
    link = sb.get_preview_link(PORT)
    assert link.url.endswith(f"/preview/{sb.id}/{PORT}") and link.token

    assert httpx.get(f"{link.url}/a/b?x=1").status_code == 401
    ok = httpx.get(f"{link.url}/a/b?x=1", headers={"X-Daytona-Preview-Token": link.token})
    assert ok.status_code == 200 and ok.text == "path=/a/b?x=1"
    assert httpx.get(f"{link.url}/q?token={link.token}").text == "path=/q"
    bad = httpx.get(f"{link.url}/q", headers={"X-Daytona-Preview-Token": "nope"})
    assert bad.status_code == 401

    big = b"x" * (3 * 1024 * 1024) + b"tail"
    up = httpx.post(f"{link.url}/up", content=iter([big[:1000], big[1000:]]),
                    headers={"X-Daytona-Preview-Token": link.token,
                             "Content-Length": str(len(big))}, timeout=30)  # fmt: skip
    assert up.text == f"got={len(big)} tail=tail"

    ws_url = link.url.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus):
        connect(ws_url, open_timeout=5).close()
    with connect(ws_url, additional_headers={"X-Daytona-Preview-Token": link.token}) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "echo:hi"

    sb.set_public(True)
    assert httpx.get(f"{link.url}/open").text == "path=/open"
    with connect(ws_url) as ws:
        ws.send("public")
        assert ws.recv(timeout=5) == "echo:public"

    # A message is at most 1 MiB, either way: the client's 1 MiB comes back as the
    # sandbox's 1 MiB + 5 bytes (its "echo:"), which ends the connection; one byte more
    # from the client is refused by the server itself (1009), never sent on.
    limit = 2**20
    with connect(ws_url, max_size=None) as ws:
        ws.send("a" * (limit - 5))
        assert len(ws.recv(timeout=10)) == limit
        ws.send("b" * limit)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    with connect(ws_url, max_size=None) as ws:
        ws.send("c" * (limit + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_preview_passes_no_key_token_or_cookie_to_the_sandbox(
    daytona: Daytona, sandboxes: list
) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    serve_app(sb)
    link = sb.get_preview_link(PORT)
    r = httpx.get(f"{link.url}/headers?token={link.token}", headers={
        "Authorization": f"Bearer {KEY}", "X-Daytona-Preview-Token": link.token,
        "Cookie": "app=1; cove_s=x", "X-Forwarded-Host": KEY, "X-Custom": "kept"})  # fmt: skip
    assert r.status_code == 200, r.text
    seen = {k.lower(): v for k, v in r.json().items()}
    assert KEY not in r.text and link.token not in r.text
    assert "cookie" not in seen and "authorization" not in seen
    assert seen["x-custom"] == "kept" and seen["x-forwarded-for"] == "127.0.0.1"


def test_signed_preview_url(daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    serve_app(sb)
    signed = sb.create_signed_preview_url(PORT, expires_in_seconds=120)
    assert signed.port == PORT and signed.token in signed.url
    assert httpx.get(f"{signed.url}/s").text == "path=/s"
    sb.expire_signed_preview_url(PORT, signed.token)
    assert httpx.get(f"{signed.url}/s").status_code == 404
    short = sb.create_signed_preview_url(PORT, expires_in_seconds=1)
    time.sleep(1.5)
    assert httpx.get(short.url).status_code == 404


def test_preview_by_host_name(server: Server, daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    serve_app(sb)
    token = sb.get_preview_link(PORT).token
    # The e2e server has no preview domain; the proxy then routes by path only.
    r = httpx.get(f"{server.url}/h", headers={"Host": f"{PORT}-{sb.id}.preview.test",
                                              "X-Daytona-Preview-Token": token})  # fmt: skip
    assert r.status_code == 404


# A hostile sandbox's server: a page that registers a service worker over as much of
# the server's origin as it can (and says in its title how that went); whatever a
# browser fetches as a worker's script, a script that may control all of "/".
WORKER_APP = r'''
import http.server
PAGE = b"""<!doctype html><title>waiting</title><script>
const [script, scope] = JSON.parse(decodeURIComponent(location.hash.slice(1)));
navigator.serviceWorker.register(script, {scope}).then(
  r => { document.title = "scope " + r.scope; },
  e => { document.title = "refused " + e.name; });
</script>"""
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        worker = self.headers.get("Service-Worker") == "script"
        body = b"self.onfetch = () => {};" if worker else PAGE
        self.send_response(200)
        self.send_header("Content-Type", "text/javascript" if worker else "text/html")
        if worker:
            self.send_header("Service-Worker-Allowed", "/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 3000), H).serve_forever()
'''


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="chromium is not installed")
def test_a_preview_cannot_register_a_service_worker_over_the_servers_origin(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    """In a browser (127.0.0.1 is a secure context, as an HTTPS server is): a sandbox's
    page served at /preview/... cannot make a service worker of its own control "/"
    (the dashboard, whose requests carry the API key) nor "/preview/s/" (every signed
    preview and its token); one over its own preview's path still works."""
    sync_api = pytest.importorskip("playwright.sync_api")
    sb = daytona.create()
    sandboxes.append(sb)
    encoded = base64.b64encode(WORKER_APP.encode()).decode()
    sb.process.exec(f"echo {encoded} | base64 -d > /tmp/worker_app.py")
    sb.process.exec("(setsid python3 /tmp/worker_app.py >/dev/null 2>&1 </dev/null &)")
    sb.process.exec("for i in $(seq 100); do curl -sf localhost:3000/ >/dev/null && break; "
                    "sleep 0.1; done")  # fmt: skip
    link = sb.get_preview_link(PORT)
    signed = sb.create_signed_preview_url(PORT, expires_in_seconds=300)
    q = f"?token={link.token}"
    own = f"/preview/{sb.id}/{PORT}/"
    tries = {  # the script's URL, the scope asked for: the scope granted (None: refused)
        "the whole origin": (f"{own}sw.js{q}", "/", None),
        "every signed preview": (f"/preview/s/{signed.token}", "/preview/s/", None),
        "its own path": (f"{own}sw.js{q}", own, server.url + own),
    }
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            for what, (script, scope, granted) in tries.items():
                tab = browser.new_context().new_page()
                tab.goto(f"{link.url}/page{q}#{quote(json.dumps([script, scope]))}")
                tab.wait_for_function("document.title != 'waiting'", timeout=20_000)
                expected = f"scope {granted}" if granted else "refused"
                assert tab.title().startswith(expected), (what, tab.title())
                tab.context.close()
        finally:
            browser.close()
