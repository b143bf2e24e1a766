"""Toolbox calls whose answer streams: kept open across a StreamingResponse.

A :class:`ToolboxService.call` lives in one ``async with``; a streamed HTTP body
outlives its handler, so :class:`AgentStream` holds the call open until the
body is done (or the client went away), reading the agent's frames one at a
time so nothing accumulates in the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from starlette.responses import StreamingResponse

from cove.core.sandbox import Sandbox
from cove.core.toolbox import AGENT_FAILURES, ToolboxService, agent_failure
from cove.errors import ToolboxError
from cove.toolbox import protocol
from cove.toolbox.client import AgentCall

log = logging.getLogger(__name__)
Frame = tuple[bytes, bytes]


class AgentStream:
    """One open toolbox call, read frame by frame."""

    def __init__(self, stack: AsyncExitStack, agent: AgentCall) -> None:
        self._stack = stack
        self.agent = agent
        self.result: dict = {}

    @classmethod
    async def open(cls, toolbox: ToolboxService, sandbox: Sandbox, message: dict) -> AgentStream:
        """Connect to the sandbox's agent and send ``message``.

        Raises:
            CoveError: the sandbox's agent cannot be reached.
        """
        stack = AsyncExitStack()
        agent = await stack.enter_async_context(toolbox.call(sandbox, message))
        return cls(stack, agent)

    async def next(self) -> Frame | None:
        """The next frame, or None once the final reply (then in :attr:`result`) arrived.

        Raises:
            ToolboxError: the agent answered with an error, or broke the protocol.
        """
        try:
            frame = await self.agent.next_frame()
        except AGENT_FAILURES as exc:
            raise agent_failure(exc) from exc
        if frame is None:
            self.result = self.agent.result
        return frame

    async def message(self) -> dict:
        """The next J frame's object (an interim answer such as ``ready``)."""
        frame = await self.next()
        if frame is None or frame[0] != protocol.JSON:
            raise ToolboxError(502, "AGENT_ERROR", "the agent answered out of turn")
        return protocol.decode(frame[1])

    async def send(self, kind: bytes, payload: bytes = b"") -> None:
        await self.agent.send_data(kind, payload)

    async def close(self) -> None:
        self.agent.close()
        await self._stack.aclose()


async def items_response(toolbox: ToolboxService, sandbox: Sandbox, message: dict,
                         prefix: bytes = b"[", suffix: bytes = b"]") -> StreamingResponse:
    """A JSON array built from the agent's ``{"items": [...]}`` batches as they come.

    The first frame is awaited before answering, so an error at the start (a
    missing directory, say) is still a proper error response.
    """
    stream = await AgentStream.open(toolbox, sandbox, message)
    try:
        first = await stream.next()
    except BaseException:
        await stream.close()
        raise
    body = _items(stream, first, prefix, suffix)
    return StreamingResponse(body, media_type="application/json")


async def _items(stream: AgentStream, frame: Frame | None, prefix: bytes,
                 suffix: bytes) -> AsyncIterator[bytes]:
    try:
        yield prefix
        separator = b""
        while frame is not None:
            if frame[0] == protocol.JSON:
                items = protocol.decode(frame[1]).get("items") or []
                if items:
                    yield separator + b",".join(json.dumps(item).encode() for item in items)
                    separator = b","
            frame = await stream.next()
        yield suffix
    except ToolboxError as exc:  # too late for an error status: end the body short
        log.warning("toolbox listing failed mid-stream: %s", exc.message)
    finally:
        await stream.close()
