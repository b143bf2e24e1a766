"""The server's side of one request to an agent: a stream of the multiplexed channel."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from cove.agent import protocol
from cove.agent.mux import Stream
from cove.agent.protocol import AgentError, ProtocolError

# The most values a JSON frame of the agent may hold, counted as its ``{ [ , :``
# outside strings. The server decodes the agent's JSON on the event loop every
# sandbox shares, at up to ~2 us and ~100 bytes a value: a frame of MAX_FRAME bytes
# of ``[],`` took ~6 s and ~400 MB; this many values, a few hundred ms at worst (a
# git status of ~28,000 files; text in strings, such as output, counts for nothing).
MAX_JSON_VALUES = 2**18
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # (unrolled: no backtracking)


class AgentCall:
    """One request to an agent.

    Use as ``async with AgentCall(stream) as call: await call.send({...})``, then
    read frames with :meth:`next_frame` / :meth:`frames` until the final reply
    (then in :attr:`result`), or :meth:`reply` when nothing comes before it.
    Leaving before the final reply resets the stream: the agent stops the
    request's work.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.result: dict[str, Any] = {}
        self.done = False

    async def __aenter__(self) -> AgentCall:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the request: a finished one is forgotten, an unfinished one reset."""
        if self.done or self.stream.ended:
            self.stream.finish()
        else:
            self.stream.reset()
        self.done = True

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send(protocol.JSON, protocol.encode(message))

    async def send_data(self, kind: bytes, payload: bytes = b"") -> None:
        await self.stream.send(kind, payload)

    async def accepted(self) -> None:
        """Read the agent's first frame: ``A`` when it serves the request.

        Raises:
            AgentError: it refused the request at once.
            ProtocolError: it sent anything else.
            EOFError: it hung up.
        """
        kind, payload = await self.stream.receive()
        if kind == protocol.ACCEPTED:
            return
        if kind == protocol.JSON:
            self.done = True
            _check_reply(decode(payload))
        raise protocol.ProtocolError(f"expected the agent to accept, got a {kind!r} frame")

    async def next_frame(self) -> tuple[bytes, bytes] | None:
        """The next frame, or None once the final reply arrived (then in :attr:`result`).

        Raises:
            AgentError: the reply says the request failed, or the agent hung up.
            ProtocolError: the agent broke the protocol.
        """
        if self.done:
            return None
        try:
            kind, payload = await self.stream.receive()
        except EOFError as exc:
            raise AgentError(502, "AGENT_GONE", "the sandbox's agent hung up") from exc
        if kind == protocol.JSON:
            message = decode(payload)
            if "ok" in message:
                self.done = True
                self.stream.finish()
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
        """The final reply, which must come next: a request answered in one piece gets
        nothing before it, and frames a lying agent sends first (endless, say) are not
        the server's to read, whether or not its client is still there.

        Raises:
            AgentError: the reply says the request failed.
            ProtocolError: a frame came before it.
        """
        if await self.next_frame() is not None:
            raise ProtocolError("the agent sent a frame before its reply")
        return self.result


def decode(payload: bytes) -> dict[str, Any]:
    """A JSON frame of the agent, if it holds at most ``MAX_JSON_VALUES`` values.

    Raises:
        ProtocolError: it holds more, or it is not a JSON object.
    """
    bare = _STRING.sub(b"", payload) if b'"' in payload else payload
    if sum(bare.count(char) for char in b"{[,:") > MAX_JSON_VALUES:
        raise ProtocolError(f"the agent sent a JSON frame of more than {MAX_JSON_VALUES} values")
    return protocol.decode(payload)


def _check_reply(message: dict[str, Any]) -> dict[str, Any]:
    """A final reply: returned when ``ok``, else raised as the AgentError it describes
    (its fields checked: the agent is inside the sandbox, its words are not trusted)."""
    if message.get("ok") is True:
        return message
    status, code, text = message.get("status"), message.get("code"), message.get("message")
    if not (isinstance(status, int) and isinstance(code, str) and isinstance(text, str)):
        raise protocol.ProtocolError("the agent sent a malformed error reply")
    if not 400 <= status <= 499:  # the agent failed (or lies): the gateway's error, not ours
        raise AgentError(502, "AGENT_ERROR", f"toolbox agent failed: {text[:4096]}")
    raise AgentError(status, code[:64], text[:4096])

