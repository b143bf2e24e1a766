"""A bound on request bodies: anything but a file upload above the limit is a 413.

A body announced larger than the limit is refused before it is read; a chunked one
is read up to the limit (so at most that much is held) and then refused. File
uploads stream to the sandbox and are not bounded here.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cove.api.errors import envelope


class BodyLimit:
    """ASGI middleware answering 413 (Daytona's envelope) for bodies above ``limit`` bytes
    on every path for which ``unbounded(path)`` is false."""

    def __init__(self, app: ASGIApp, limit: int, unbounded: Callable[[str], bool]) -> None:
        self.app = app
        self.limit = limit
        self.unbounded = unbounded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.unbounded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        if length is not None:  # the server (h11, httptools) holds it to its length
            await self.app(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        response = envelope(request, 413, f"request body larger than {self.limit} bytes",
                            "PAYLOAD_TOO_LARGE", headers={"Connection": "close"})  # fmt: skip
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay
