"""The sandbox's entrypoint session (``/process/session/entrypoint``).

Daytona's daemon runs an image's entrypoint as a command of a session named
``entrypoint``; the SDK reads that session and its command's logs. In Cove the
entrypoint (when a sandbox has one) is the first command of the agent session
``ENTRYPOINT_SESSION``: whoever starts it creates that session (see
``AgentClient.session_create(..., reserved=True)``) and runs the entrypoint in
it. A sandbox without an entrypoint answers an empty session and empty logs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from cove.core.agent_client import ENTRYPOINT_SESSION, AgentClient
from cove.core.agent_types import Output
from cove.errors import ToolboxError
from cove.schemas.toolbox_sessions import CommandLogs, SessionPublic


async def session(agent: AgentClient) -> SessionPublic:
    """The entrypoint session: its commands (none when the sandbox has no entrypoint)."""
    try:
        return await agent.session_get(ENTRYPOINT_SESSION)
    except ToolboxError as exc:
        if exc.status_code != 404:
            raise
        return SessionPublic(session_id=ENTRYPOINT_SESSION, commands=[])


async def logs(agent: AgentClient) -> CommandLogs:
    """The entrypoint's output so far (empty without an entrypoint)."""
    current = await session(agent)
    if not current.commands:
        return CommandLogs(output="", stdout="", stderr="")
    return await agent.session_logs(ENTRYPOINT_SESSION, current.commands[0].id)


def follow(agent: AgentClient,
           until_exit: bool) -> AbstractAsyncContextManager[AsyncIterator[Output]]:  # fmt: skip
    """The entrypoint's output as it comes (nothing without an entrypoint)."""

    @asynccontextmanager
    async def output() -> AsyncIterator[AsyncIterator[Output]]:
        current = await session(agent)
        if not current.commands:
            yield _nothing()
            return
        async with agent.session_follow(ENTRYPOINT_SESSION, current.commands[0].id,
                                        until_exit) as chunks:  # fmt: skip
            yield chunks

    return output()


async def _nothing() -> AsyncIterator[Output]:
    return
    yield  # an empty async generator
