"""The server keeps an idle HTTP connection open longer than clients keep theirs
(aiohttp, the async SDK's, 15 s; httpx 5 s): a client never reuses a connection at
the moment the server closes it, which fails a POST it may not retry."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from cove.testing import ServerProcess
from tests.e2e.conftest import KEY, Server


def _answer(conn: socket.socket) -> bytes:
    """One whole response (its head, then as many bytes of body as it announces);
    b"" when the server closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_an_idle_connection_outlives_the_clients_keep_alive(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        request = f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
        conn.sendall(request)
        assert _answer(conn).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # past uvicorn's default keep-alive (5 s), which closed it
        conn.sendall(request)
        assert _answer(conn).startswith(b"HTTP/1.1 200")


def test_one_address_cannot_take_the_server_from_everyone(tmp_path: Path) -> None:
    """Connections left open without a request (``cove.api.httpguard``): one address
    gets its share, then a 503, while another address is still served. Before, about
    a thousand of them used up ``cove serve``'s open files and it answered no one."""
    server = ServerProcess(tmp_path, api_key=KEY, env={
        "COVE_HTTP_MAX_CONNECTIONS_PER_CLIENT": "40", "COVE_NETWORK": "none"})
    held: list[socket.socket] = []
    try:
        server.start()
        for _ in range(40):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                            source_address=("127.0.0.2", 0))  # fmt: skip
            conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")  # never finished
            held.append(conn)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                      source_address=("127.0.0.2", 0)) as refused:  # fmt: skip
            assert _answer(refused).startswith(b"HTTP/1.1 503")
        assert httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200
    finally:
        for conn in held:
            conn.close()
        server.stop()
