"""The server's side of the agent protocol: one connection per request."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

from . import protocol
from .protocol import AgentError

# How far the reader may run ahead of its consumer (it pauses the socket at
# twice this). Frames are read with readexactly, which is not bound by it, so
# a streamed download holds at most about this much in the server.
READ_AHEAD = 128 * 1024


class AgentCall:
    """One request to an agent, over a connected socket.

    Use as ``async with AgentCall(sock) as call: await call.send({...})``, then
    read frames with :meth:`frames` until the final reply, or :meth:`reply`.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.result: dict[str, Any] = {}

    async def __aenter__(self) -> AgentCall:
        self._sock.setblocking(False)
        self.reader, self.writer = await asyncio.open_unix_connection(
            sock=self._sock, limit=READ_AHEAD
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        else:
            self._sock.close()

    async def send(self, message: dict[str, Any]) -> None:
        assert self.writer is not None
        await protocol.send_json(self.writer, message)

    async def accepted(self) -> None:
        """Read the agent's first frame: ``A`` when it serves the request.

        Raises:
            AgentError: it refused the request at once.
            ProtocolError: it sent anything else.
            EOFError: it hung up.
        """
        assert self.reader is not None
        kind, payload = await protocol.read_frame(self.reader)
        if kind == protocol.ACCEPTED:
            return
        if kind == protocol.JSON:
            _check_reply(protocol.decode(payload))
        raise protocol.ProtocolError(f"expected the agent to accept, got a {kind!r} frame")

    async def send_data(self, kind: bytes, payload: bytes = b"") -> None:
        assert self.writer is not None
        await protocol.send(self.writer, kind, payload)

    async def next_frame(self) -> tuple[bytes, bytes] | None:
        """The next frame, or None once the final reply arrived (then in :attr:`result`).

        Raises:
            AgentError: the reply says the request failed, or the agent hung up.
            ProtocolError: the agent broke the protocol.
        """
        assert self.reader is not None
        try:
            kind, payload = await protocol.read_frame(self.reader)
        except EOFError as exc:
            raise AgentError(502, "AGENT_GONE", "the sandbox's agent hung up") from exc
        if kind == protocol.JSON:
            message = protocol.decode(payload)
            if "ok" in message:
                self.result = _check_reply(message)
                return None
        return kind, payload

    async def frames(self) -> AsyncIterator[tuple[bytes, bytes]]:
        """Frames up to (not including) the final reply, which :attr:`result` then holds.

        Raises:
            AgentError: the reply says the request failed.
        """
        while (frame := await self.next_frame()) is not None:
            yield frame

    async def reply(self) -> dict[str, Any]:
        """Skip to the final reply and return it."""
        async for _ in self.frames():
            pass
        return self.result


def _check_reply(message: dict[str, Any]) -> dict[str, Any]:
    """A final reply: returned when ``ok``, else raised as the AgentError it describes
    (its fields checked: the agent is inside the sandbox, its words are not trusted)."""
    if message.get("ok") is True:
        return message
    status, code, text = message.get("status"), message.get("code"), message.get("message")
    if not (isinstance(status, int) and isinstance(code, str) and isinstance(text, str)):
        raise protocol.ProtocolError("the agent sent a malformed error reply")
    if not 400 <= status <= 499:  # the agent failed (or lies): the gateway's error, not ours
        return _raise(AgentError(502, "AGENT_ERROR", f"toolbox agent failed: {text[:4096]}"))
    return _raise(AgentError(status, code[:64], text[:4096]))


def _raise(exc: AgentError) -> dict[str, Any]:
    raise exc
