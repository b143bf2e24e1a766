"""Previews of sandboxes the server cannot reach directly (a runner on another host):
HTTP and WebSocket connections to a sandbox's port made as byte streams of the
runner (``Runner.open_port``) instead of TCP connections.

HTTP goes through an httpx client whose connections are such streams (the URL's
host is the sandbox id, its port the sandbox's port); a WebSocket client gets one
end of a socket pair whose other end is spliced to the stream.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import httpcore
import httpx

from cove.core.ports import AgentConnection, Runner, splice
from cove.errors import CoveError

CHUNK = 64 * 1024
# No cap on the proxy's connections to sandboxes: each belongs to a client's request in
# progress (and closes when its client leaves). A shared cap (httpx's default: 100,
# httpcore's: 10) would let one sandbox whose answers hang take every connection,
# stalling the previews of all others.
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20, keepalive_expiry=5)


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, conn: AgentConnection) -> None:
        self._reader, self._writer = conn

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await asyncio.wait_for(self._reader.read(max_bytes), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._writer.write(buffer)
        await asyncio.wait_for(self._writer.drain(), timeout)

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:  # fmt: skip
        raise httpcore.ConnectError("no TLS to a sandbox's port")

    def get_extra_info(self, info: str) -> Any:
        return None


class _Backend(httpcore.AsyncNetworkBackend):
    """Connections to ``<sandbox id>:<port>`` are streams of the runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None,
                          ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        try:
            return _Stream(await asyncio.wait_for(self.runner.open_port(host, port), timeout))
        except (CoveError, TimeoutError) as exc:
            raise httpcore.ConnectError(str(exc)) from None

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def stream_client(runner: Runner) -> httpx.AsyncClient:
    """An HTTP client whose ``http://<sandbox id>:<port>`` URLs reach that port through
    the runner."""
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001
        max_connections=LIMITS.max_connections,
        max_keepalive_connections=LIMITS.max_keepalive_connections,
        keepalive_expiry=LIMITS.keepalive_expiry,
        network_backend=_Backend(runner),
    )
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(30, read=None),
                             trust_env=False)  # fmt: skip


async def stream_socket(runner: Runner, sandbox_id: str, port: int) -> socket.socket:
    """A socket connected (through a spliced pair) to ``port`` of the sandbox.

    Raises:
        Unavailable: the runner cannot reach it.
    """
    upstream = await runner.open_port(sandbox_id, port)
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    local = await asyncio.open_connection(sock=theirs)
    task = asyncio.create_task(splice(local, upstream))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return ours


_tasks: set[asyncio.Task[None]] = set()
