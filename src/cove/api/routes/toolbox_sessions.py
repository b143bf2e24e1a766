"""Toolbox: sessions, persistent shells in the sandbox (``/process/session``).

The sessions live in the sandbox's agent, so they outlive this server; every
request here is translated into one agent request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable

from fastapi import APIRouter, Response, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from cove.api.deps import StartedSandboxDep, ToolboxDep
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
from cove.toolbox import protocol
from cove.toolbox.client import AgentCall

router = APIRouter(tags=["toolbox"])
PREFIX = "/process/session"
MARKERS = {protocol.STDOUT: b"\x01\x01\x01", protocol.STDERR: b"\x02\x02\x02"}


def _op(op: str, **fields: object) -> dict:
    return {"op": op, **fields}


async def _logs(agent: AgentCall) -> CommandLogs:
    """Collect O/E frames into the three strings of the one-shot logs."""
    both, out, err = bytearray(), bytearray(), bytearray()
    async for kind, payload in agent.frames():
        if kind in MARKERS:
            both += payload
            (out if kind == protocol.STDOUT else err).extend(payload)
    return CommandLogs(output=both.decode(errors="replace"), stdout=out.decode(errors="replace"),
                       stderr=err.decode(errors="replace"))


@router.post(PREFIX, status_code=201)
async def create_session(body: SessionCreate, sandbox: StartedSandboxDep,
                         toolbox: ToolboxDep) -> Response:
    """Start a session: a shell that keeps its state between commands."""
    await toolbox.request(sandbox, _op("session_create", sessionId=body.session_id,
                                       user=sandbox.user, env=dict(sandbox.env)))
    return Response(status_code=201)


@router.get(PREFIX)
async def list_sessions(sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> list[SessionPublic]:
    """The sandbox's sessions and their commands."""
    reply = await toolbox.request(sandbox, _op("session_list"))
    return [SessionPublic.model_validate(s) for s in reply["sessions"]]


@router.get(PREFIX + "/{session_id}")
async def get_session(session_id: str, sandbox: StartedSandboxDep,
                      toolbox: ToolboxDep) -> SessionPublic:
    """One session and its commands."""
    reply = await toolbox.request(sandbox, _op("session_get", sessionId=session_id))
    return SessionPublic.model_validate(reply)


@router.delete(PREFIX + "/{session_id}", status_code=204)
async def delete_session(session_id: str, sandbox: StartedSandboxDep,
                         toolbox: ToolboxDep) -> Response:
    """End a session, killing every process it started."""
    await toolbox.request(sandbox, _op("session_delete", sessionId=session_id))
    return Response(status_code=204)


@router.post(PREFIX + "/{session_id}/exec")
async def execute(session_id: str, body: SessionExecuteRequest, response: Response,
                  sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> SessionExecuteResponse:
    """Run a command in the session (queued behind a running one); 202 when asynchronous."""
    run_async = bool(body.run_async or body.async_)
    message = _op("session_exec", sessionId=session_id, command=body.command,
                  suppressInputEcho=bool(body.suppress_input_echo), **{"async": run_async})
    async with toolbox.call(sandbox, message) as agent:
        if run_async:
            response.status_code = 202
            return SessionExecuteResponse(cmd_id=(await agent.reply())["cmdId"])
        logs = await _logs(agent)
    return SessionExecuteResponse(cmd_id=agent.result["cmdId"], exit_code=agent.result["exitCode"],
                                  **logs.model_dump())


@router.get(PREFIX + "/{session_id}/command/{command_id}")
async def get_command(session_id: str, command_id: str, sandbox: StartedSandboxDep,
                      toolbox: ToolboxDep) -> CommandPublic:
    """A command of the session; ``exitCode`` is null while it runs."""
    reply = await toolbox.request(sandbox, _op("session_command",
                                               sessionId=session_id, commandId=command_id))
    return CommandPublic.model_validate(reply)


@router.get(PREFIX + "/{session_id}/command/{command_id}/logs")
async def get_logs(session_id: str, command_id: str, sandbox: StartedSandboxDep,
                   toolbox: ToolboxDep) -> CommandLogs:
    """The command's output so far."""
    message = _op("session_logs", sessionId=session_id, commandId=command_id)
    async with toolbox.call(sandbox, message) as agent:
        return await _logs(agent)


@router.websocket(PREFIX + "/{session_id}/command/{command_id}/logs")
async def follow_logs(websocket: WebSocket, session_id: str, command_id: str,
                      sandbox: StartedSandboxDep, toolbox: ToolboxDep,
                      follow: bool = False) -> None:
    """Stream the command's output (``\\x01\\x01\\x01``: stdout, ``\\x02\\x02\\x02``: stderr)."""
    message = _op("session_logs", sessionId=session_id, commandId=command_id,
                  follow=follow)
    try:
        async with toolbox.call(sandbox, message) as agent:
            frames = agent.frames()
            await anext(frames)  # the command exists (an error here is an HTTP denial)
            await websocket.accept()
            finished = await race(_send_output(websocket, frames),
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


async def _send_output(websocket: WebSocket, frames: AsyncIterator[tuple[bytes, bytes]]) -> None:
    async for kind, payload in frames:
        if kind in MARKERS:
            await websocket.send_bytes(MARKERS[kind] + payload)


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


@router.post(PREFIX + "/{session_id}/command/{command_id}/input", status_code=204)
async def send_input(session_id: str, command_id: str, body: SessionInput,
                     sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> Response:
    """Write to the running command's stdin."""
    await toolbox.request(sandbox, _op("session_input", sessionId=session_id,
                                       commandId=command_id, data=body.data))
    return Response(status_code=204)
