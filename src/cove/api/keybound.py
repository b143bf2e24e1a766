"""WebSockets last no longer than the API key they were opened with.

A WebSocket is authenticated once, at its handshake; a terminal, an interpreter or a
log followed through it may stay open for hours. So, as the Socket.IO events do
(:meth:`cove.api.events.SocketEvents.watch`), every ``WATCH_SECONDS`` the key of
each open WebSocket is checked again; once it is revoked or has expired the route is
cancelled (its ``finally`` blocks end what it had open in the sandbox) and the
client gets close code 1008 (policy violation).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from cove.api.preview_headers import header
from cove.core.auth import AuthService

WATCH_SECONDS = 2.0
POLICY_VIOLATION = 1008


class KeyBound:
    """ASGI middleware: see the module's docstring. (WebSockets without an
    ``Authorization`` header, after :class:`cove.api.wsauth.SubprotocolBearer`, are
    refused by their routes or need no key: they pass as they are.)"""

    def __init__(self, app: ASGIApp, auth: Callable[[], AuthService],
                 every: float = WATCH_SECONDS) -> None:  # fmt: skip
        self.app = app
        self.auth = auth
        self.every = every

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        authorization = header(scope, "authorization") if scope["type"] == "websocket" else None
        if authorization is None:
            return await self.app(scope, receive, send)
        route = asyncio.ensure_future(self.app(scope, receive, send))
        try:
            while not (await asyncio.wait({route}, timeout=self.every))[0]:
                if not self.auth().works(authorization):
                    route.cancel()
                    with contextlib.suppress(BaseException):
                        await route
                    with contextlib.suppress(Exception):  # (the client may be gone)
                        await send({"type": "websocket.close", "code": POLICY_VIOLATION,
                                    "reason": "The API key no longer works"})  # fmt: skip
                    return None
            return route.result()
        finally:
            route.cancel()
