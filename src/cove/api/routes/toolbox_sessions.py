"""Toolbox: sessions, persistent shells in the sandbox (``/process/session``).

The sessions live in the sandbox's agent, so they outlive this server; every
request here is translated into one agent request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager

from fastapi import APIRouter, Request, Response, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from cove.api.deps import AgentDep
from cove.api.params import AgentIdPath
from cove.api.streaming import unless_client_leaves
from cove.core.agent_types import Output
from cove.errors import CoveError
from cove.schemas.toolbox_sessions import (
    CommandLogs,
    CommandPublic,
    SessionCreate,
    SessionExecuteRequest,
    SessionExecuteResponse,
    SessionInput,
    SessionPublic,
)

router = APIRouter(tags=["toolbox"])
PREFIX = "/process/session"
MARKERS = {"stdout": b"\x01\x01\x01", "stderr": b"\x02\x02\x02"}


@router.post(PREFIX, status_code=201, response_class=Response)
async def create_session(body: SessionCreate, agent: AgentDep) -> Response:
    """Start a session: a shell that keeps its state between commands."""
    await agent.session_create(body.session_id)
    return Response(status_code=201)


@router.get(PREFIX)
async def list_sessions(agent: AgentDep) -> list[SessionPublic]:
    """The sandbox's sessions and their commands."""
    return await agent.session_list()


@router.get(PREFIX + "/{session_id}")
async def get_session(session_id: AgentIdPath, agent: AgentDep) -> SessionPublic:
    """One session and its commands."""
    return await agent.session_get(session_id)


@router.delete(PREFIX + "/{session_id}", status_code=204, response_class=Response)
async def delete_session(session_id: AgentIdPath, agent: AgentDep) -> Response:
    """End a session, killing every process it started."""
    await agent.session_delete(session_id)
    return Response(status_code=204)


@router.post(PREFIX + "/{session_id}/exec", responses={202: {
    "model": SessionExecuteResponse, "description": "started (``runAsync``): only its ``cmdId``"}})
async def execute(session_id: AgentIdPath, body: SessionExecuteRequest, request: Request,
                  response: Response, agent: AgentDep) -> SessionExecuteResponse:
    """Run a command in the session (queued behind a running one); 202 when asynchronous.
    A client that hangs up stops waiting (the command runs on in its session)."""
    suppress = bool(body.suppress_input_echo)
    if body.run_async or body.async_:
        response.status_code = 202
        return SessionExecuteResponse(
            cmd_id=await agent.session_exec_async(session_id, body.command, suppress))
    work = agent.session_exec(session_id, body.command, suppress)
    done = await unless_client_leaves(request, work)
    return SessionExecuteResponse(cmd_id=done.cmd_id, exit_code=done.exit_code,
                                  output=done.output, stdout=done.stdout, stderr=done.stderr)


@router.get(PREFIX + "/{session_id}/command/{command_id}")
async def get_command(session_id: AgentIdPath, command_id: AgentIdPath,
                      agent: AgentDep) -> CommandPublic:
    """A command of the session; ``exitCode`` is null while it runs."""
    return await agent.session_command(session_id, command_id)


@router.get(PREFIX + "/{session_id}/command/{command_id}/logs")
async def get_logs(session_id: AgentIdPath, command_id: AgentIdPath,
                   agent: AgentDep) -> CommandLogs:
    """The command's output so far."""
    return await agent.session_logs(session_id, command_id)


@router.websocket(PREFIX + "/{session_id}/command/{command_id}/logs")
async def follow_logs(websocket: WebSocket, session_id: AgentIdPath, command_id: AgentIdPath,
                      agent: AgentDep, follow: bool = False) -> None:
    """Stream the command's output (``\\x01\\x01\\x01``: stdout, ``\\x02\\x02\\x02``: stderr)."""
    await relay_output(websocket, agent.session_follow(session_id, command_id, follow))


async def relay_output(websocket: WebSocket,
                       source: AbstractAsyncContextManager[AsyncIterator[Output]]) -> None:
    """Send a command's output to the WebSocket (accepted once ``source`` is entered)."""
    try:
        async with source as output:
            await websocket.accept()  # the command exists (else the error is an HTTP denial)
            finished = await race(_send_output(websocket, output),
                                  _until_disconnect(websocket)) == 0
    except CoveError as exc:
        if websocket.client_state is WebSocketState.CONNECTING:
            raise
        await websocket.close(1011, exc.message[:120])
        return
    if finished:
        await websocket.close(1000)


async def race(*coroutines: Awaitable[None]) -> int | None:
    """Run the coroutines until one ends and cancel the others.

    A relay runs one coroutine per direction, so whichever side closes tears
    the other down. Returns the index of the one that ended, None if it ended
    because the WebSocket client went away; any other failure propagates.
    """
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await task
    winner = done.pop()
    try:
        winner.result()
    except WebSocketDisconnect:
        return None
    return tasks.index(winner)


async def _send_output(websocket: WebSocket, output: AsyncIterator[Output]) -> None:
    async for chunk in output:
        await websocket.send_bytes(MARKERS[chunk.stream] + chunk.data)


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


@router.post(PREFIX + "/{session_id}/command/{command_id}/input", status_code=204,
             response_class=Response)
async def send_input(session_id: AgentIdPath, command_id: AgentIdPath, body: SessionInput,
                     agent: AgentDep) -> Response:
    """Write to the running command's stdin."""
    await agent.session_input(session_id, command_id, body.data)
    return Response(status_code=204)
