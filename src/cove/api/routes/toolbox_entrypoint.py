"""Toolbox: the entrypoint session (``/process/session/entrypoint``); mounted before
the sessions' routes, whose ``{session_id}`` would otherwise take the name."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from cove.api.deps import AgentDep
from cove.api.routes.toolbox_sessions import PREFIX, relay_output
from cove.core import entrypoint
from cove.schemas.toolbox_sessions import CommandLogs, SessionPublic

router = APIRouter(tags=["toolbox"])


@router.get(PREFIX + "/entrypoint")
async def get_entrypoint_session(agent: AgentDep) -> SessionPublic:
    """The session running the sandbox's entrypoint (no commands when it has none)."""
    return await entrypoint.session(agent)


@router.get(PREFIX + "/entrypoint/logs")
async def get_entrypoint_logs(agent: AgentDep) -> CommandLogs:
    """The entrypoint's output so far (empty when the sandbox has none)."""
    return await entrypoint.logs(agent)


@router.websocket(PREFIX + "/entrypoint/logs")
async def follow_entrypoint_logs(websocket: WebSocket, agent: AgentDep,
                                 follow: bool = False) -> None:  # fmt: skip
    """Stream the entrypoint's output as the command logs' WebSocket does."""
    await relay_output(websocket, entrypoint.follow(agent, follow))
