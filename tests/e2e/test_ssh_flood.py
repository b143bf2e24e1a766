"""Connections to the SSH gateway that never log in (``cove.api.ssh``): one address
gets its share, then is closed at once, while others are still served. Before, each
was held up to the login timeout, and a few hundred from one address used up the
server's open files: it then answered no one, on SSH or HTTP."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from pathlib import Path

import httpx

from cove.testing import ServerProcess
from tests.e2e.conftest import KEY


def _banner(conn: socket.socket) -> bytes:
    """The server's first line (b"" if it closed, or said nothing, first)."""
    data = b""
    with contextlib.suppress(OSError):
        while b"\n" not in data:
            chunk = conn.recv(256)
            if not chunk:
                break
            data += chunk
    return data


def test_one_address_cannot_take_the_ssh_gateway_from_everyone(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, api_key=KEY, env={"COVE_NETWORK": "none"})
    held: list[socket.socket] = []
    try:
        server.start()
        assert server.proc is not None
        in_use = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
        limit = in_use + 300  # the server's open files: 300 more than it has now
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
        for _ in range(400):  # connected, and never a login
            conn = socket.create_connection(("127.0.0.1", server.ssh_port), timeout=5,
                                            source_address=("127.0.0.2", 0))  # fmt: skip
            held.append(conn)
        with socket.create_connection(("127.0.0.1", server.ssh_port), timeout=5) as other:
            assert _banner(other).startswith(b"SSH-2.0-Cove")
        assert httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200
    finally:
        for conn in held:
            conn.close()
        server.stop()
