"""What one HTTP client may hold of the server before any key is checked.

uvicorn bounds none of it on its own, and each of these took a ``cove serve`` down
from one address with no key (``tests/unit/api/test_httpguard.py``):

- **Connections.** Opened and left idle, or fed a request head a byte at a time,
  they stay open for ever: uvicorn's keep-alive timer starts only after a response.
  About a thousand of them used up the server's open files, so it could no longer
  accept, nor reach its sandboxes' agents. Each client address (an IPv6 one by its
  /64) may hold ``http_max_connections_per_client`` at once, and all clients together
  ``http_max_connections`` (by default a quarter of the open-files limit: the rest is
  the server's own, two per started sandbox). A connection past either gets a 503 and
  is closed at once. Upgraded WebSockets count until they close.
- **Time to send a request head.** A head must be complete within
  ``http_header_seconds`` of its first byte, or of the connection's opening. An idle
  keep-alive connection is still governed by the keep-alive timeout.
- **The head's size.** httptools keeps a header's value by appending each piece to
  the last (so a long header costs memory and quadratic time), and uvicorn does the
  same with the URL: one 300 MB header made the server grow past 400 MB at full CPU.
  A head still incomplete past ``http_max_head_bytes`` gets a 431 and the connection
  is closed. (A head that arrives whole in one read is parsed once, at no such cost:
  it may pass the bound by up to that read's size, 256 KiB at most.)
- **TLS handshakes.** With ``COVE_TLS_CERT``, a connection is counted from the
  moment it is accepted, before its handshake (asyncio's TLS server would call the
  protocol only once the handshake is over, and gives a handshake 60 s): a client
  that opens connections and never says hello holds no more than its share, and
  each for at most ``http_header_seconds``. A connection past a cap is closed
  before its handshake (no 503 can be said yet). So the guard does the TLS itself,
  not uvicorn: it counts the accepted connection, then hands its socket to
  ``loop.connect_accepted_socket`` with the certificate.
- **A WebSocket message's size.** uvicorn takes messages of up to 16 MiB, and holds
  one still arriving whole before the application sees any of it: 40 connections of
  one key, each sending 15 MiB of a message it never finished, grew the server by
  600 MB (a thousand, past this host's memory). A message is now at most
  ``WS_MAX_MESSAGE`` (1 MiB, as a request body; a longer one closes its connection
  with 1009), so what one connection holds stays near that.

The guard is a subclass of uvicorn's httptools protocol (``uvicorn.Config(http=...)``
takes a protocol class) and of its WebSocket protocol, for the count of upgraded
connections; both are made by :func:`protocols`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import resource
import socket
import ssl
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from cove.core.config import Settings
from cove.schemas.limits import MAX_BODY

log = logging.getLogger(__name__)


def client_key(client: tuple[str, int] | None) -> str:
    """Whose connection this is: its IPv4 address, its IPv6 /64 (one host's usual share)."""
    if not client:
        return ""  # a Unix socket: one local client
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return client[0]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def default_max_connections() -> int:
    """A quarter of this process's open-files limit (the rest is the server's own)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(64, soft // 4)


@dataclass
class Gate:
    """The open connections, by client, against the two caps (0: no cap).

    ``total`` None: :func:`default_max_connections`, read at the first connection (the
    runtime raises the open-files limit when the app starts, after the gate is made).
    ``what`` names the connections counted, in the refusal of one past its client's cap.
    """

    per_client: int
    total: int | None
    what: str = "open connections to the server (COVE_HTTP_MAX_CONNECTIONS_PER_CLIENT)"
    open: Counter[str] = field(default_factory=Counter)
    count: int = 0

    def admit(self, key: str) -> str | None:
        """Count the connection in, or say why it may not open."""
        if self.total is None:
            self.total = default_max_connections()
        if self.total and self.count >= self.total:
            return "the server has as many open connections as it takes; try again later"
        if self.per_client and self.open[key] >= self.per_client:
            return f"this address already has {self.per_client} {self.what}; close some first"
        self.open[key] += 1
        self.count += 1
        return None

    def release(self, key: str) -> None:
        self.count -= 1
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]


# The envelope's ``code`` of each refusal (the error hierarchy's, where it has one).
_CODES = {408: "TIMEOUT", 431: "HEADERS_TOO_LARGE", 503: "TOO_MANY_CONNECTIONS"}


def refusal_body(status: int, message: str) -> bytes:
    """A refusal's body: Daytona's error envelope (what is known before any request)."""
    return json.dumps({"statusCode": status, "message": message, "code": _CODES[status],
                       "source": "DAYTONA_API", "error": HTTPStatus(status).phrase}).encode()


def refusal(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response in Daytona's error envelope, after which the server closes."""
    phrase = HTTPStatus(status).phrase
    body = refusal_body(status, message)
    head = (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body


WS_MAX_MESSAGE = MAX_BODY  # a WebSocket message of a client, as a request body
_HANDSHAKES: set[asyncio.Task[None]] = set()  # TLS handshakes under way (kept referenced)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context (``COVE_TLS_CERT``/``COVE_TLS_KEY``), None without."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def server_options(settings: Settings) -> dict[str, Any]:
    """The guard's options of ``uvicorn.Config``: the protocol classes (see
    :func:`protocols`, which also serve TLS: give uvicorn no certificate) and the
    bound on a WebSocket message."""
    http, ws = protocols(settings)
    return {"http": http, "ws": ws, "ws_max_size": WS_MAX_MESSAGE}


def protocols(settings: Settings) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """The HTTP and WebSocket protocol classes for ``uvicorn.Config(http=..., ws=...)``."""
    gate = Gate(settings.http_max_connections_per_client, settings.http_max_connections)
    header_seconds = settings.http_header_seconds
    max_head = settings.http_max_head_bytes
    tls = tls_context(settings)
    handshake_seconds = header_seconds or 60.0  # (asyncio's own bound)

    class GuardedWebSocket(WebSocketsSansIOProtocol):
        """A WebSocket upgraded from a :class:`GuardedHttp` connection, still counted."""

        gate_key: str | None = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self.gate_key is not None:
                gate.release(self.gate_key)
                self.gate_key = None
            super().connection_lost(exc)

    class GuardedHttp(HttpToolsProtocol):
        """uvicorn's httptools protocol with the bounds in this module's docstring."""

        gate_key: str | None = None
        head_bytes = 0
        in_head = False
        head_timer: asyncio.TimerHandle | None = None
        secured = False  # the HTTP side of a TLS connection (see ``_hand_over``)
        handed_over = False  # a TLS connection's accepted side, handed over

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._made_with = (args, kwargs)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if tls is not None and not self.secured:
                self._hand_over(transport, tls)
                return
            super().connection_made(transport)
            if self.gate_key is None:  # (a TLS connection was counted at its accept)
                key = client_key(self.client)
                refused = gate.admit(key)
                if refused is not None:
                    transport.write(refusal(503, refused))
                    transport.close()
                    return
                self.gate_key = key
            self._arm()

        def _hand_over(self, accepted: asyncio.Transport, context: ssl.SSLContext) -> None:
            """Count a connection of a TLS server at its accept, then hand its socket to
            a TLS transport (its handshake within ``handshake_seconds``) and a protocol
            of its own, for HTTP once it is secured. The accepted transport is aborted at
            once, before it reads anything (the socket lives on in its duplicate)."""
            self.handed_over = True
            key = client_key(accepted.get_extra_info("peername"))
            sock = None
            if gate.admit(key) is None:  # (past a cap: nothing can be said before TLS)
                try:
                    sock = socket.socket(fileno=os.dup(accepted.get_extra_info("socket").fileno()))
                except OSError:
                    gate.release(key)
            accepted.abort()
            if sock is None:
                return
            args, kwargs = self._made_with
            secured = type(self)(*args, **kwargs)
            secured.secured, secured.gate_key = True, key
            task = self.loop.create_task(secured._handshake(sock, context))
            _HANDSHAKES.add(task)
            task.add_done_callback(_HANDSHAKES.discard)

        async def _handshake(self, sock: socket.socket, context: ssl.SSLContext) -> None:
            try:
                await self.loop.connect_accepted_socket(
                    lambda: self, sock, ssl=context, ssl_handshake_timeout=handshake_seconds)
            except (OSError, TimeoutError, RuntimeError, asyncio.CancelledError):
                sock.close()  # (ssl.SSLError is an OSError; most often closed already)
                self._uncount()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.handed_over:  # the accepted side of a TLS connection: not HTTP's
                return
            self._disarm()
            self._uncount()
            super().connection_lost(exc)

        def _uncount(self) -> None:
            if self.gate_key is not None:
                gate.release(self.gate_key)
                self.gate_key = None

        def data_received(self, data: bytes) -> None:
            if self.handed_over or self.transport.is_closing():
                return  # (handed over: aborted before it reads, so never)
            if not self.in_head and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # a new head starts here: it has until the timer
            super().data_received(data)
            if self.in_head and not self.transport.is_closing():
                # Counted only while the head is incomplete: a chunk that also held a
                # body's end counts whole (at most one read's worth too many).
                self.head_bytes += len(data)
                if self.head_bytes > max_head:
                    log.warning("a request head from %s passed %d bytes", self.gate_key, max_head)
                    self._refuse(431, f"the request's headers and URL are longer than "
                                      f"{max_head} bytes (COVE_HTTP_MAX_HEAD_BYTES)")  # fmt: skip

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.in_head = True
            self.head_bytes = 0

        def on_headers_complete(self) -> None:
            self.in_head = False
            self._disarm()
            super().on_headers_complete()

        def handle_websocket_upgrade(self) -> None:
            super().handle_websocket_upgrade()
            upgraded: Any = self.transport.get_protocol()
            if isinstance(upgraded, GuardedWebSocket):  # the count moves with the transport
                upgraded.gate_key, self.gate_key = self.gate_key, None

        def _arm(self) -> None:
            if self.head_timer is None and header_seconds:
                self.head_timer = self.loop.call_later(header_seconds, self._head_timeout)

        def _disarm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_timeout(self) -> None:
            self.head_timer = None
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self._arm()  # a request under way (a pipelined head waits): its own time
                return
            if self.in_head:
                self._refuse(408, f"the request's head did not arrive within {header_seconds:g} "
                                  "seconds (COVE_HTTP_HEADER_SECONDS)")  # fmt: skip
            else:
                self.transport.close()  # opened and never used

        def _refuse(self, status: int, message: str) -> None:
            self.in_head = False
            self.transport.write(refusal(status, message))
            self.transport.close()

    return GuardedHttp, GuardedWebSocket
