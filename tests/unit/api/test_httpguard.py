"""What one HTTP client may hold of the server before any key is checked
(``cove.api.httpguard``), tried against a real uvicorn server with the guard's
protocols, from loopback addresses of their own (127.0.0.2 is the attacker).

Without the guard, each attack here took a ``cove serve`` down: about a thousand idle
connections used up its open files (it then answered no one), and one endless header
grew it by hundreds of MB at full CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import uvloop
from websockets.sync.client import connect as ws_connect

from cove.api import httpguard
from cove.core.config import Settings
from cove.testing import free_port


async def _app(scope, receive, send) -> None:  # noqa: ANN001
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()  # connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    else:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})


class Served:
    """A uvicorn server with the guard's protocols, on a thread, on asyncio's own loop
    or (``loop="uvloop"``) on uvloop, which ``cove serve`` runs on."""

    def __init__(self, settings: Settings, loop: str = "asyncio") -> None:
        self.port = free_port()
        config = uvicorn.Config(_app, host="127.0.0.1", port=self.port, timeout_keep_alive=30,
                                log_level="critical", **httpguard.server_options(settings))
        self.server = uvicorn.Server(config)
        run = uvloop.run if loop == "uvloop" else asyncio.run
        self.thread = threading.Thread(target=lambda: run(self.server.serve()))

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                        source_address=(source, 0))  # fmt: skip
        return conn

    def get(self, source: str = "127.0.0.1", extra: bytes = b"") -> bytes:
        with self.connect(source) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
            return answer(conn)


def answer(conn: socket.socket) -> bytes:
    """All the server sent until it closed, or until a whole response with a body."""
    data = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length: " + str(len(body)).encode() in head.lower():
                break
    return data


def envelope(response: bytes) -> dict:
    return json.loads(response.partition(b"\r\n\r\n")[2])


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, **kw)  # type: ignore[arg-type]


@pytest.fixture
def held() -> Iterator[list[socket.socket]]:
    conns: list[socket.socket] = []
    yield conns
    for conn in conns:
        conn.close()


def _wait_open(served: Served, source: str) -> bytes:
    """A request from ``source``, retried while the server still counts closed ones."""
    deadline = time.monotonic() + 5
    while (got := served.get(source)).startswith(b"HTTP/1.1 503") and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


def test_one_address_holds_at_most_its_share_of_connections(
        tmp_path: Path, held: list[socket.socket]) -> None:
    with Served(settings(tmp_path, http_max_connections_per_client=3)) as served:
        held.extend(served.connect("127.0.0.2") for _ in range(3))
        refused = served.get("127.0.0.2")
        assert refused.startswith(b"HTTP/1.1 503"), refused
        body = envelope(refused)
        assert body["statusCode"] == 503 and body["code"] == "TOO_MANY_CONNECTIONS"
        assert "COVE_HTTP_MAX_CONNECTIONS_PER_CLIENT" in body["message"]
        # another address is served meanwhile
        assert served.get("127.0.0.1").startswith(b"HTTP/1.1 200")
        # and the attacker's share comes back as its connections close
        held.pop().close()
        assert _wait_open(served, "127.0.0.2").startswith(b"HTTP/1.1 200")


def test_all_clients_together_hold_at_most_the_total(
        tmp_path: Path, held: list[socket.socket]) -> None:
    with Served(settings(tmp_path, http_max_connections_per_client=0,
                         http_max_connections=4)) as served:  # fmt: skip
        held.extend(served.connect(f"127.0.0.{n}") for n in range(2, 6))
        assert served.get("127.0.0.9").startswith(b"HTTP/1.1 503")
        held.pop().close()
        assert _wait_open(served, "127.0.0.9").startswith(b"HTTP/1.1 200")


def test_a_head_sent_slowly_is_cut_off(tmp_path: Path) -> None:
    with Served(settings(tmp_path, http_header_seconds=0.5)) as served:
        with served.connect() as slow:
            slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            for _ in range(4):  # still sending, a byte at a time
                time.sleep(0.2)
                with contextlib.suppress(OSError):
                    slow.sendall(b"X")
            got = answer(slow)
        assert got.startswith(b"HTTP/1.1 408"), got
        assert "COVE_HTTP_HEADER_SECONDS" in envelope(got)["message"]
        with served.connect() as idle:  # opened and never used
            started = time.monotonic()
            assert answer(idle) == b""
            assert time.monotonic() - started < 4


def test_an_idle_keep_alive_connection_is_not_cut_off_by_the_head_timer(tmp_path: Path) -> None:
    with Served(settings(tmp_path, http_header_seconds=0.3)) as served, served.connect() as conn:
        for _ in range(2):
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer(conn).startswith(b"HTTP/1.1 200")
            time.sleep(0.8)  # idle past the head timer: keep-alive (30 s) governs


def test_a_long_head_gets_431_and_the_server_stops_reading_it(tmp_path: Path) -> None:
    with Served(settings(tmp_path, http_max_head_bytes=4096)) as served:
        assert served.get(extra=b"X-Fine: " + b"a" * 3000 + b"\r\n").startswith(b"HTTP/1.1 200")
        with served.connect("127.0.0.2") as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
            sent = 0
            with contextlib.suppress(OSError):  # the server closes while we send
                for _ in range(64):
                    conn.sendall(b"a" * (1 << 20))
                    sent += 1
            got = answer(conn)
        assert got.startswith(b"HTTP/1.1 431"), got[:200]
        assert "COVE_HTTP_MAX_HEAD_BYTES" in envelope(got)["message"]
        assert sent < 64  # it stopped reading long before 64 MB


def test_websockets_count_until_they_close(tmp_path: Path) -> None:
    with Served(settings(tmp_path, http_max_connections_per_client=2)) as served:
        url = f"ws://127.0.0.1:{served.port}/ws"
        first, second = ws_connect(url), ws_connect(url)
        try:
            assert served.get().startswith(b"HTTP/1.1 503")
        finally:
            first.close()
        assert _wait_open(served, "127.0.0.1").startswith(b"HTTP/1.1 200")
        second.close()
        # both released: two new connections fit again
        third, fourth = ws_connect(url), ws_connect(url)
        third.close()
        fourth.close()


def _upgraded(served: Served) -> socket.socket:
    conn = served.connect()
    conn.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return conn


def test_a_websocket_message_past_its_bound_is_refused_before_it_is_held(tmp_path: Path) -> None:
    """A client announcing a 15 MiB message is closed (1009, "message too big") at the
    announcement; uvicorn's own bound (16 MiB) let it hold 15 MiB of the server per
    connection while it never finished (40 connections: +600 MB of the server)."""
    with Served(settings(tmp_path)) as served, _upgraded(served) as conn:
        size = 15 * 2**20
        conn.sendall(bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big") + b"\0\0\0\0")
        conn.sendall(b"x" * 4096)  # a start of the payload, the rest never comes
        close = conn.recv(64)
        assert close[0] == 0x88, close  # a close frame, unmasked from the server
        assert int.from_bytes(close[2:4], "big") == 1009
        assert httpguard.WS_MAX_MESSAGE == 2**20


def test_a_websocket_message_within_the_bound_is_taken(tmp_path: Path) -> None:
    with Served(settings(tmp_path)) as served:
        with ws_connect(f"ws://127.0.0.1:{served.port}/ws", max_size=None) as ws:
            ws.send(b"x" * httpguard.WS_MAX_MESSAGE)
            ws.send(b"y" * 100)
            assert ws.ping().wait(5)  # answered: the connection is still open


@pytest.mark.parametrize(("client", "key"), [
    (("192.0.2.7", 5), "192.0.2.7"),
    (("2001:db8:1:2:aaaa::1", 5), "2001:db8:1:2::/64"),
    (("::ffff:192.0.2.7", 5), "192.0.2.7"),
    (None, ""),
])  # fmt: skip
def test_client_key(client: tuple[str, int] | None, key: str) -> None:
    assert httpguard.client_key(client) == key


def _tls_settings(tmp_path: Path, **kw: object) -> Settings:
    """Settings with a self-signed certificate for 127.0.0.1 (``openssl``)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=cove",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)  # fmt: skip
    return settings(tmp_path, tls_cert=cert, tls_key=key, **kw)


def _tls_get(served: Served, source: str = "127.0.0.1") -> bytes:
    """A GET over TLS (the certificate taken as it is): the answer, b"" when refused."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with served.connect(source) as raw, context.wrap_socket(raw) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return answer(conn)
    except (ssl.SSLError, OSError):
        return b""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tls_connections_count_from_their_accept_not_their_handshake(
        tmp_path: Path, held: list[socket.socket], loop: str) -> None:
    """Connections that never say hello (no TLS handshake) hold no more than their
    address's share: asyncio's TLS server would not tell the protocol of them until
    their handshake ended (60 s), so any number of them could be held."""
    with Served(_tls_settings(tmp_path, http_max_connections_per_client=3), loop) as served:
        for _ in range(50):  # (each handshake after its accept, as a client sends it)
            assert _tls_get(served).startswith(b"HTTP/1.1 200")
        held.extend(served.connect("127.0.0.2") for _ in range(3))  # no hello, ever
        assert _tls_get(served, "127.0.0.2") == b""  # closed before its handshake
        assert _tls_get(served, "127.0.0.1").startswith(b"HTTP/1.1 200")
        held.pop().close()
        deadline = time.monotonic() + 5
        while not (got := _tls_get(served, "127.0.0.2")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_tls_handshake_has_the_heads_time(tmp_path: Path, loop: str) -> None:
    with Served(_tls_settings(tmp_path, http_header_seconds=0.5), loop) as served:
        with served.connect() as silent:  # accepted, never a hello
            started = time.monotonic()
            assert answer(silent) == b""
            assert time.monotonic() - started < 4
        assert _tls_get(served).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        with ws_connect(f"wss://127.0.0.1:{served.port}/ws", ssl=context) as ws:
            assert ws.ping().wait(5)  # a WebSocket upgraded over TLS
