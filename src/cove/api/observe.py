"""The outermost ASGI layer: a request id for each HTTP request and WebSocket (echoed
as ``X-Request-Id``, carried by its log lines) and each HTTP request's duration by
route template and status class. It sits on every call's path, so it does little:
no allocation beyond the id and one histogram observation.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cove.api.logs import REQUEST_ID, request_id
from cove.api.metrics import Telemetry

OTHER = "other"  # requests no route matched (previews, Socket.IO, 404s): one label


class Observe:
    """Wraps ``app``: request ids and HTTP latencies into ``telemetry``."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.http = telemetry.http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            return await self.app(scope, receive, send)
        rid = request_id(scope.get("headers") or [])
        token = REQUEST_ID.set(rid)
        if kind == "websocket":
            try:
                return await self.app(scope, receive, send)
            finally:
                REQUEST_ID.reset(token)
        header = (b"x-request-id", rid.encode())
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = message.get("headers") or []
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    message["headers"] = [*headers, header]  # (a preview's upstream's wins)
            await send(message)

        began = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            took = time.perf_counter() - began
            self.http.labels(template(scope), f"{status[0] // 100}xx").observe(took)
            REQUEST_ID.reset(token)


def template(scope: Scope) -> str:
    """The route template the request matched (``/api/sandbox/{sandbox_id_or_name}``),
    else ``other``: never a value a client chose.

    FastAPI names the route as its router declared it, without the prefixes it was
    included under (``/toolbox/{sandbox_id}``): those are rebuilt from the path, each
    segment a path parameter's value becoming the parameter's name.
    """
    route = scope.get("route")
    own, regex = getattr(route, "path", None), getattr(route, "path_regex", None)
    if not own or regex is None:
        return OTHER
    path: str = scope.get("path", "")
    if regex.match(path):
        return own
    cut = path.find("/", 1)
    while cut != -1 and not regex.match(path[cut:]):
        cut = path.find("/", cut + 1)
    if cut == -1:
        return OTHER
    # (``path`` is decoded, the values as they are in it: quoted, "é" or "a b" was no
    # parameter's, and put in the label as sent, a series more for any client's call)
    names = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    parts = [f"{{{names[p]}}}" if p in names else p for p in path[:cut].split("/")]
    return "/".join(parts) + own
