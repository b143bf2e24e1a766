"""A toolbox call ends when its client leaves: an HTTP client that hangs up before
the answer started, any client that takes nothing for ``SEND_SECONDS``.

A toolbox route waits for the sandbox's agent, which is untrusted: it may accept a
request and then say nothing. Nothing else ends that wait (uvicorn does not cancel
a request whose client is gone), so every call a client gave up on would hold its
task and its agent request until the sandbox stops: an agent the sandbox's root
replaced made the server keep one for each request sent and dropped. So a call not
answered within ``WATCH_SECONDS`` is watched: once its client has hung up, the route
is cancelled (its agent request ends) and answered 499 (to no one, as
:class:`cove.errors.ClientGone`). The calls answered sooner, nearly all, cost a timer;
once an answer started, a streamed body notices a hang-up itself.

Watching reads the request's messages, so it must not take the route's body: it is
kept for the route (at most ``MAX_BODY``, see :mod:`cove.api.bodylimit`), and a file
upload, whose body the route streams to the sandbox, is watched once it was read.

A client that stops reading (its TCP window full) is gone too, once it took nothing
for ``SEND_SECONDS`` (as nginx's ``send_timeout``): else a send to it waits for ever
(uvicorn's keepalive gives up on such a WebSocket without ending it; a sandbox's stop
or deletion never reaches a send), and with it the relay or download, holding its
agent request and the window of output (``cove.agent.mux.WINDOW``) the sandbox sent.
The send then fails as one to a client that hung up (an ``OSError``: a WebSocket's
route gets WebSocketDisconnect); what the server had written stays with the
connection, no more than its transport's buffer.

For that, an answer's body goes to uvicorn in pieces of at most ``PIECE`` bytes:
uvicorn waits for a client to take what it has (its transport's buffer below the
high-water mark) only before a write, then writes the whole body it was given into
the buffer. An answer built whole (an execute's or a session's logs: up to ~6 times
``COVE_OUTPUT_LIMIT`` in JSON, each control byte ``\\u0001``) went into it at once,
and stayed for as long as a client that reads nothing kept its connection (past the
keep-alive timeout, which closes a transport only once its buffer is written).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cove.api.errors import envelope
from cove.errors import ClientGone

WATCH_SECONDS = 1.0
SEND_SECONDS = 60.0
PIECE = 64 * 1024


class UntilClientLeaves:
    """ASGI middleware (see the module's docstring); ``streamed(path)``: whether the
    route streams the request's body (a file upload)."""

    def __init__(self, app: ASGIApp, streamed: Callable[[str], bool],
                 every: float = WATCH_SECONDS) -> None:  # fmt: skip
        self.app = app
        self.streamed = streamed
        self.every = every

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] == "websocket":
            with contextlib.suppress(Stalled):  # (else a WebSocketDisconnect for the route)
                await self.app(scope, receive, _within_deadline(send))
            return None
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        task = asyncio.current_task()
        assert task is not None
        call = _Call(receive, task, self.streamed(scope.get("path", "")))
        timer = asyncio.get_running_loop().call_later(self.every, call.due)
        sending = _within_deadline(send)

        async def answering(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.answered()
            await sending(message)

        try:
            return await self.app(scope, call.receive, answering)
        except asyncio.CancelledError:
            if not call.gone or task.uncancel() > 0:  # a cancel from outside
                raise
        except Stalled:
            return None  # (nothing more can be said to it)
        finally:
            timer.cancel()
            call.answered()
        gone = ClientGone()
        response = envelope(Request(scope), gone.status_code, gone.message, gone.code)
        with contextlib.suppress(OSError):
            await response(scope, call.receive, send)
        return None


class Stalled(ConnectionAbortedError):
    """The client took nothing for ``SEND_SECONDS``."""


def _within_deadline(send: Send) -> Send:
    async def within(message: Message) -> None:
        try:
            async with asyncio.timeout(SEND_SECONDS):
                await send(message)
        except TimeoutError:
            raise Stalled(f"the client took nothing for {SEND_SECONDS:.0f} s") from None

    async def sending(message: Message) -> None:
        body = message.get("body", b"")
        if len(body) <= PIECE or message["type"] != "http.response.body":
            return await within(message)
        more = message.get("more_body", False)
        for start in range(0, len(body), PIECE):
            end = start + PIECE
            await within({"type": "http.response.body", "body": body[start:end],
                          "more_body": more or end < len(body)})  # fmt: skip

    return sending


class _Call:
    """One request's messages, read by its route and, once due, by a watcher."""

    def __init__(self, receive: Receive, task: asyncio.Task[Any], streamed: bool) -> None:
        self._receive = receive
        self._task = task
        self._streamed = streamed
        self._kept: deque[Message] = deque()  # body messages the watcher read
        self._reading = asyncio.Lock()  # the body's messages are read one at a time
        self._body_read = False  # its last body message (or a disconnect) was read
        self._due = False
        self._done = False
        self._watcher: asyncio.Task[None] | None = None
        self.gone = False

    async def receive(self) -> Message:
        """The route's next message: a kept one first."""
        if not self._kept and self._body_read:
            return await self._receive()  # (a disconnect: both may wait for it)
        async with self._reading:
            if self._kept:
                return self._kept.popleft()
            message = await self._receive()
        self._note(message)
        return message

    def _note(self, message: Message) -> None:
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._body_read = True
            if self._due:
                self._watch()

    def due(self) -> None:
        """The call has waited long enough to be watched."""
        self._due = True
        if self._body_read or not self._streamed:
            self._watch()

    def answered(self) -> None:
        """The answer started (or the route ended): nothing more to watch."""
        self._done = True
        if self._watcher is not None:
            self._watcher.cancel()

    def _watch(self) -> None:
        if self._watcher is None and not self._done:
            self._watcher = asyncio.ensure_future(self._until_hang_up())

    async def _until_hang_up(self) -> None:
        if not self._body_read:
            async with self._reading:
                while not self._body_read:
                    message = await self._receive()
                    self._kept.append(message)
                    self._note(message)
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self._done:
            self.gone = True
            self._task.cancel()
