"""Cove's preview proxy: HTTP (streamed both ways) and WebSocket traffic to a port
of a sandbox, reached at its veth address.

Addressed by path, ``/preview/{sandboxId}/{port}/...`` (and ``/preview/s/{signed
token}/...``), or, when ``COVE_PREVIEW_DOMAIN`` is set, by host name only:
``{port}-{sandboxId}.<domain>`` (and ``{signed token}.<domain>``). The upstream
sees the rest of the path. A private sandbox needs its preview token
(``X-Daytona-Preview-Token`` header or ``token`` query parameter), the API key
of its organization (``Authorization: Bearer``) or a signed URL. None of these
reach the sandbox (see :mod:`cove.api.preview_headers`).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import connect as ws_connect

from cove.api.deps import Services
from cove.api.httpguard import WS_MAX_MESSAGE
from cove.api.preview_headers import (
    TOKEN_HEADER,
    Route,
    downstream_headers,
    header,
    upstream_headers,
    upstream_subprotocols,
)
from cove.api.preview_streams import LIMITS, stream_client, stream_socket
from cove.errors import CoveError

_PATH = re.compile(
    r"^/preview/(?:s/(?P<token>[a-z2-7]+)|(?P<sid>[^/]+)/(?P<port>\d+))(?P<rest>/.*)?$"
)
_HOST_PORT = re.compile(r"^(?P<port>\d+)-(?P<sid>.+)$")


def preview_url(services: Services, sandbox_id: str, port: int | str) -> str:
    """A preview's URL (``port`` may be a template's placeholder, ``{{PORT}}``)."""
    settings = services.settings
    if settings.preview_domain:
        return _host_url(settings.base_url, f"{port}-{sandbox_id}", settings.preview_domain)
    return f"{settings.base_url}/preview/{sandbox_id}/{port}"


def signed_url(services: Services, token: str) -> str:
    settings = services.settings
    if settings.preview_domain:
        return _host_url(settings.base_url, token, settings.preview_domain)
    return f"{settings.base_url}/preview/s/{token}"


def _host_url(base: str, label: str, domain: str) -> str:
    parts = urlsplit(base)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{label}.{domain}{port}"


def _port(digits: str) -> int:
    """The port a preview's address names (0, refused later, for one out of range:
    ``int`` of thousands of digits would raise)."""
    return int(digits) if digits.isascii() and len(digits) <= 5 else 0


@dataclass
class _Target:
    sandbox_id: str
    port: int
    path: str
    route: Route
    bare: bool = False  # /preview/{id}/{port} or /preview/s/{token}: no "/" after it


class PreviewProxy:
    """ASGI middleware: preview traffic goes to sandboxes, the rest to ``app``."""

    def __init__(self, app: ASGIApp, services: Callable[[], Services]) -> None:
        self.app = app
        self._services = services
        self._client: httpx.AsyncClient | None = None
        self._streams: httpx.AsyncClient | None = None  # to sandboxes on other hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._target(scope) if scope["type"] in ("http", "websocket") else None
        if target is None:
            await self.app(scope, receive, send)
            return
        try:
            upstream, query = await self._authorize(scope, target)
        except _Deny as deny:
            await _refuse(scope, receive, send, deny.status, deny.text)
            return
        direct = upstream is not None  # else through the runner (another host)
        base = upstream if direct else f"http://{target.sandbox_id}:{target.port}"
        url = f"{base}{target.path}" + (f"?{query}" if query else "")
        if scope["type"] == "websocket":
            ws_url = "ws" + url.removeprefix("http")  # http(s):// -> ws(s)://
            sock = None if direct else await self._stream_socket(target)
            if not direct and sock is None:
                await _refuse(scope, receive, send, 502, "preview upstream unreachable")
                return
            await _websocket(scope, receive, send, ws_url, target.route, sock)
        else:
            await self._http(scope, receive, send, url, target.route, direct)

    def _target(self, scope: Scope) -> _Target | None:
        domain = self._services().settings.preview_domain
        host = header(scope, "host") or ""
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        # The path as sent, not decoded: the sandbox gets it as it was (%3F is no query),
        # and a path-based preview is only at a literal /preview/{id}/{port}/...
        raw = scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0]
        if domain and host.endswith("." + domain):
            label, path = host[: -len(domain) - 1], raw or "/"
            match = _HOST_PORT.match(label)
            if match:
                return _Target(match["sid"], _port(match["port"]), path, Route(by_host=True))
            return self._signed(label, path, by_host=True)
        match = _PATH.match(raw)
        if match is None:
            return None
        rest = match["rest"] or "/"
        if match["token"]:
            target = self._signed(match["token"], rest, by_host=False)
        else:
            target = _Target(match["sid"], _port(match["port"]), rest, Route(by_host=False))
        target.bare = match["rest"] is None
        return target

    def _signed(self, token: str, path: str, *, by_host: bool) -> _Target:
        grant = self._services().previews.verify(token)
        if grant is None:  # refused below: no such sandbox
            return _Target("", 0, path, Route(by_host=by_host))
        return _Target(grant.sandbox_id, grant.port, path, Route(by_host, signed_token=token))

    async def _stream_socket(self, target: _Target) -> socket.socket | None:
        runner = self._services().lifecycle.runner
        try:
            return await stream_socket(runner, target.sandbox_id, target.port)
        except CoveError:
            return None

    async def _authorize(self, scope: Scope, target: _Target) -> tuple[str | None, str]:
        """The upstream base URL of the target (None: reached through the runner's
        streams) and the query to pass on.

        Raises:
            _Deny: the caller may not, or the sandbox does not run.
        """
        services = self._services()
        domain = services.settings.preview_domain
        # With a preview domain, the API's host (the dashboard's origin) serves no
        # sandbox's page: one there could draw a look-alike dashboard on its origin.
        if domain and not target.route.by_host:
            raise _Deny(404, f"previews are served at their own host names under {domain}: "
                             "GET /api/sandbox/{id}/ports/{port}/preview-url gives one's URL")
        # A service worker controls what lies under its script's last "/": at a bare
        # /preview/s/{token}, every signed preview (and the tokens in their URLs).
        if target.bare and header(scope, "service-worker") is not None:
            raise _Deny(404, "a service worker's script must lie under /preview/.../")
        query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode(),
                                               keep_blank_values=True)]  # fmt: skip
        token = header(scope, TOKEN_HEADER) or dict(query).get("token")
        try:
            sandbox = services.lifecycle.store.get_by_id(target.sandbox_id)
        except CoveError:
            raise _Deny(404, "no such sandbox or preview link") from None
        signed = target.route.signed_token is not None
        if not (sandbox.public or signed or services.previews.check(sandbox.id, token)):
            try:
                who = services.auth.authenticate(header(scope, "authorization"))
            except CoveError:
                raise _Deny(401, "preview token required") from None
            if who.organization_id != sandbox.organization_id:
                raise _Deny(401, "preview token required")
        if not 1 <= target.port <= 65535:
            raise _Deny(400, "the port of a preview must be between 1 and 65535")
        if str(sandbox.state) != "started":
            raise _Deny(502, f"sandbox {sandbox.id} is not running")
        upstream = await services.lifecycle.runner.preview_upstream(sandbox.id, target.port)
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        return upstream, rest

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, url: str, route: Route, direct: bool
    ) -> None:
        if self._client is None:  # never through a proxy of the environment
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(30, read=None),
                                             limits=LIMITS, trust_env=False)  # fmt: skip
        if self._streams is None:
            self._streams = stream_client(self._services().lifecycle.runner)
        client = self._client if direct else self._streams
        headers = upstream_headers(scope, route)
        # A request without a body is sent without one: a streamed body would go as
        # "Transfer-Encoding: chunked", whose end a server that expects no body (GET)
        # leaves unread on a connection the pool then reuses.
        bodied = header(scope, "content-length") not in (None, "0") or header(
            scope, "transfer-encoding") is not None  # fmt: skip
        body_read = asyncio.Event()
        if not bodied:
            body_read.set()
        request = client.build_request(
            scope["method"],
            url,
            headers=headers,
            content=_body(receive, body_read) if bodied else None,
        )
        # The sandbox's answer may never end (nor start: no read timeout, for streams):
        # when the client hangs up, the exchange ends, its upstream connection with it.
        exchange = asyncio.ensure_future(_exchange(client, request, scope, send, route))
        gone = asyncio.ensure_future(_client_leaves(receive, body_read))
        try:
            done, _ = await asyncio.wait((exchange, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (gone, exchange):
                task.cancel()
            await asyncio.wait((gone, exchange))  # the upstream closed
        if exchange in done:
            exchange.result()  # its error, if any


async def _exchange(client: httpx.AsyncClient, request: httpx.Request, scope: Scope,
                    send: Send, route: Route) -> None:  # fmt: skip
    """Send ``request`` to the sandbox, its answer to the client."""
    try:
        upstream = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        await _plain(send, 502, f"preview upstream unreachable: {exc}")
        return
    try:
        out = downstream_headers(upstream.headers.multi_items(), route, header(scope, "host") or "")
        await send({"type": "http.response.start", "status": upstream.status_code,
                    "headers": out})  # fmt: skip
        async for chunk in upstream.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await upstream.aclose()


async def _client_leaves(receive: Receive, body_read: asyncio.Event) -> None:
    """Return when the client hangs up (asked once its request's body is read)."""
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


class _Deny(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status, self.text = status, text


async def _body(receive: Receive, read: asyncio.Event) -> AsyncIterator[bytes]:
    """The request's body; ``read`` is set once it is all read (or the client left)."""
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body"):
                return
    finally:
        read.set()


async def _plain(send: Send, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})  # fmt: skip
    await send({"type": "http.response.body", "body": text.encode()})


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, text: str) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": text[:120]})
    else:
        await _plain(send, status, text)


async def _websocket(scope: Scope, receive: Receive, send: Send, url: str, route: Route,
                     sock: socket.socket | None = None) -> None:  # fmt: skip
    """``sock``: already connected to the upstream (through the runner)."""
    await receive()  # websocket.connect
    protocols = upstream_subprotocols(scope, route)
    # The sandbox's server may answer the handshake with a redirect: websockets follows
    # one to another host or port unless the connection's address is given (or a
    # socket), and that would be a WebSocket from this host to a host-only service.
    parts = urlsplit(url)
    through: dict[str, Any] = ({"sock": sock} if sock is not None
                               else {"host": parts.hostname, "port": parts.port})  # fmt: skip
    try:
        upstream = await ws_connect(
            url,
            subprotocols=protocols or None,  # type: ignore[arg-type]
            additional_headers=upstream_headers(scope, route),
            user_agent_header=None,
            proxy=None,
            open_timeout=10,
            # The sandbox's messages: as a client's (1 MiB), and at most 4 frames held
            # while the client is slow to take them (websockets' default: 16).
            max_size=WS_MAX_MESSAGE,
            max_queue=4,
            **through,
        )
    except Exception:  # noqa: BLE001 - any failed handshake
        if sock is not None:
            sock.close()  # ends its splice to the runner too
        await send({"type": "websocket.close", "code": 1011})
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

    async def client_to_upstream() -> None:
        while True:
            message: Message = await receive()
            if message["type"] != "websocket.receive":
                await upstream.close()
                return
            data = message.get("bytes")
            await upstream.send(data if data is not None else message.get("text", ""))

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                key = "bytes" if isinstance(data, bytes) else "text"
                await send({"type": "websocket.send", key: data})
        finally:
            await send({"type": "websocket.close", "code": upstream.close_code or 1000})

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await upstream.close()
