"""The dashboard's WebSockets carry the API key as a subprotocol.

A browser cannot set headers on ``new WebSocket(url, protocols)``: it sends only the
``Sec-WebSocket-Protocol`` values it is given. So the dashboard offers
``cove.bearer.<base64url of the key>`` beside ``cove.dashboard`` (as Kubernetes does
with ``base64url.bearer.authorization.k8s.io.<token>``), and this middleware turns the
first into the ``Authorization: Bearer`` header the routes check, removing it from
the offered list so no route, and no sandbox, ever sees it. A browser fails a
handshake whose answer names none of the protocols it offered: when the route
accepts with none, ``cove.dashboard`` is answered. A WebSocket that has an
``Authorization`` header (the SDKs') is left as it is.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BEARER = "cove.bearer."
MARKER = "cove.dashboard"


def bearer_protocol(key: str) -> str:
    """The subprotocol that carries ``key`` (what the dashboard offers)."""
    return BEARER + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode(value: str) -> str | None:
    encoded = value[len(BEARER):]
    try:  # a header value is ASCII (keys are)
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None


class SubprotocolBearer:
    """ASGI middleware: see the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        offered: list[str] = scope.get("subprotocols") or []
        if scope["type"] != "websocket" or not any(p.startswith(BEARER) for p in offered):
            return await self.app(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k != b"sec-websocket-protocol"]
        kept = [p for p in offered if not p.startswith(BEARER)]
        key = next((_decode(p) for p in offered if p.startswith(BEARER)), None)
        if key and not any(k == b"authorization" for k, _ in headers):
            headers.append((b"authorization", f"Bearer {key}".encode()))
        scope = {**scope, "headers": headers, "subprotocols": kept}

        async def answer(message: Message) -> None:
            if message["type"] == "websocket.accept" and not message.get("subprotocol"):
                if MARKER in kept:
                    message = {**message, "subprotocol": MARKER}
            await send(message)

        return await self.app(scope, receive, answer)
