"""The server's gateway to the toolbox agents inside sandboxes.

A toolbox call is allowed only on a started sandbox of the caller's
organization; anything else fails at once with a clear error instead of
hanging. Every call counts as activity (it resets the auto-stop timer).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from cove.core.ports import Runtime
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import CoveError, InvalidState, ToolboxError
from cove.toolbox.client import AgentCall
from cove.toolbox.protocol import AgentError, ProtocolError

if TYPE_CHECKING:
    from cove.core.lifecycle import LifecycleService

AGENT_BOOT_SECONDS = 15.0


class ToolboxService:
    def __init__(self, lifecycle: LifecycleService) -> None:
        self.lifecycle = lifecycle
        self.runtime = lifecycle.runtime

    def sandbox(self, organization_id: str, sandbox_id: str) -> Sandbox:
        """The caller's started sandbox; records the activity.

        Raises:
            NotFound: no such sandbox in the caller's organization.
            InvalidState: it exists but is not started.
        """
        sandbox = self.lifecycle.get(organization_id, sandbox_id)
        if sandbox.state is not SandboxState.STARTED:
            raise InvalidState(
                f"Sandbox {sandbox.id} is {sandbox.state}; start it to use the toolbox"
            )
        self.lifecycle.touch(organization_id, sandbox.id)
        return sandbox

    @asynccontextmanager
    async def call(self, sandbox: Sandbox, message: dict) -> AsyncIterator[AgentCall]:
        """Open a request to the sandbox's agent and send ``message``.

        Agent errors become :class:`ToolboxError` (source DAYTONA_DAEMON).
        """
        sock = await connect_agent(self.runtime, sandbox.id)
        try:
            async with AgentCall(sock) as agent:
                await agent.send(message)
                yield agent
        except AgentError as exc:
            raise ToolboxError(exc.status, exc.code, exc.message) from exc
        except (ProtocolError, ConnectionError) as exc:
            raise ToolboxError(502, "AGENT_ERROR", f"toolbox agent failed: {exc}") from exc

    async def request(self, sandbox: Sandbox, message: dict) -> dict:
        """A request whose only answer is the final reply."""
        async with self.call(sandbox, message) as agent:
            return await agent.reply()


async def connect_agent(runtime: Runtime, sandbox_id: str) -> socket.socket:
    """A socket to the sandbox's agent, waiting while the agent boots.

    Raises:
        CoveError: the agent did not answer within AGENT_BOOT_SECONDS.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + AGENT_BOOT_SECONDS
    while True:
        try:
            return await asyncio.to_thread(runtime.agent_socket, sandbox_id)
        except CoveError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)
