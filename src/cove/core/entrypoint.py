"""The sandbox's entrypoint session (``/process/session/entrypoint``).

Daytona's daemon runs an image's entrypoint as a command of a session named
``entrypoint``; the SDK reads that session and its command's logs. In Cove the
entrypoint (when a sandbox has one) is the first command of the agent session
``ENTRYPOINT_SESSION``: whoever starts it creates that session (see
``AgentClient.session_create(..., reserved=True)``) and runs the entrypoint in
it. A sandbox without an entrypoint answers an empty session and empty logs.

:class:`Launcher` is that starter: after every fresh start of a sandbox made from
an image (create, start, restore, recover, fork), it runs the image's ENTRYPOINT
followed by its CMD (Docker's rules: a shell form is stored as ``/bin/sh -c ...``
already; CMD alone runs when there is no ENTRYPOINT) as the image's user, with the
image's env and working directory, its stdin ``/dev/null`` as under ``docker run``
without ``-i``. The entrypoint may run for ever or fail: the sandbox stays started
either way and its output is in the session's logs.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from cove.core.agent_client import ENTRYPOINT_SESSION, AgentClient
from cove.core.agent_types import Output
from cove.core.sandbox import Sandbox
from cove.errors import CoveError, NotFound, ToolboxError
from cove.schemas.toolbox_sessions import CommandLogs, SessionPublic

LAUNCH_SECONDS = 60.0  # starting the session and queueing the command
log = logging.getLogger(__name__)
# The agent client of a sandbox, as a user: (sandbox, user) -> client.
AgentFor = Callable[[Sandbox, str], AgentClient]
# The image config of a sandbox's snapshot (None: not made from an image).
ConfigFor = Callable[[Sandbox], Mapping[str, object] | None]


def command_line(config: Mapping[str, object] | None) -> str | None:
    """The shell line that runs an image's ENTRYPOINT + CMD (None when it has neither)."""
    if not config:
        return None
    words = [str(w) for w in _words(config.get("entrypoint")) + _words(config.get("cmd"))]
    if not words:
        return None
    return shlex.join(words) + " </dev/null"


def image_user(config: Mapping[str, object]) -> str:
    """The image's User (name or uid, without the group), else root."""
    return str(config.get("user") or "").partition(":")[0] or "root"


class Launcher:
    """Runs a sandbox's entrypoint in the ``entrypoint`` session after it started.

    Args:
        config_for: the image config of a sandbox's snapshot.
        agent_for: a client of a sandbox's agent acting as a given user.
    """

    def __init__(self, config_for: ConfigFor, agent_for: AgentFor) -> None:
        self._config_for = config_for
        self._agent_for = agent_for

    async def __call__(self, sandbox: Sandbox) -> None:
        """Start the entrypoint (nothing when the image has none, or it already runs:
        the server restarted); failures are logged, the sandbox stays started."""
        try:
            config = self._config_for(sandbox)
        except NotFound:
            return
        line = command_line(config)
        if config is None or line is None:
            return
        agent = self._agent_for(sandbox, image_user(config))
        try:
            await asyncio.wait_for(_launch(agent, line), LAUNCH_SECONDS)
        except (CoveError, TimeoutError) as exc:
            log.warning("entrypoint of sandbox %s not started: %s", sandbox.id, exc)


async def _launch(agent: AgentClient, line: str) -> None:
    try:
        await agent.session_create(ENTRYPOINT_SESSION, reserved=True)
    except ToolboxError as exc:
        if exc.status_code == 409:  # it runs already (this server restarted)
            return
        raise
    await agent.session_exec_async(ENTRYPOINT_SESSION, line)


def _words(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


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
