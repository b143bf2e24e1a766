"""Toolbox: interactive terminals (PTYs) in the sandbox (``/process/pty``).

The terminals live in the sandbox's agent, so they outlive this server. A
WebSocket client is relayed to the agent both ways (one task per direction);
when it hangs up the terminal keeps running and can be reattached.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from contextlib import AbstractAsyncContextManager
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from cove.api.deps import AgentDep
from cove.api.params import AgentIdPath, OptionalPathQuery
from cove.api.routes.toolbox_sessions import race
from cove.core.agent_streams import PtyAttachment
from cove.errors import BadRequest, CoveError
from cove.schemas.limits import MAX_ID, NO_NUL, EnvMap
from cove.schemas.toolbox_sessions import (
    PtyCreate,
    PtyCreated,
    PtyList,
    PtyResize,
    PtySessionInfo,
)

router = APIRouter(tags=["toolbox"])
PREFIX = "/process/pty"
EXIT_CONTROL = "X-Daytona-Pty-Exit-Control"
ENVS_PROTOCOL = "X-Daytona-Pty-Envs~"
_ENVS: TypeAdapter[dict[str, str]] = TypeAdapter(EnvMap)


@router.post(PREFIX, status_code=201)
async def create_pty(body: PtyCreate, agent: AgentDep) -> PtyCreated:
    """Create a terminal (its shell starts now, or at the first connect if ``lazyStart``)."""
    return PtyCreated(session_id=(await agent.pty_create(body)).id)


@router.get(PREFIX)
async def list_ptys(agent: AgentDep) -> PtyList:
    """The sandbox's terminals."""
    return await agent.pty_list()


@router.get(PREFIX + "/{session_id}")
async def get_pty(session_id: AgentIdPath, agent: AgentDep) -> PtySessionInfo:
    """One terminal."""
    return await agent.pty_get(session_id)


@router.post(PREFIX + "/{session_id}/resize")
async def resize_pty(session_id: AgentIdPath, body: PtyResize, agent: AgentDep) -> PtySessionInfo:
    """Change the terminal's size (its programs get SIGWINCH)."""
    return await agent.pty_resize(session_id, body.cols, body.rows)


@router.delete(PREFIX + "/{session_id}")
async def kill_pty(session_id: AgentIdPath, agent: AgentDep) -> dict[str, str]:
    """Kill the terminal's shell and everything it started."""
    await agent.pty_kill(session_id)
    return {"message": "PTY session deleted"}


@router.websocket(PREFIX + "/create-connect")
async def create_connect(websocket: WebSocket, agent: AgentDep,
                         id: Annotated[str, Query(min_length=1, max_length=MAX_ID, pattern=NO_NUL)],
                         cols: Annotated[int, Query(ge=1, le=1000)] = 80,
                         rows: Annotated[int, Query(ge=1, le=1000)] = 24,
                         cwd: OptionalPathQuery = None) -> None:
    """Create a terminal and connect to it in one round trip."""
    envs = _offered_envs(websocket)
    await _connect(websocket, agent.pty_create_attach(id, cols, rows, cwd, envs))


@router.websocket(PREFIX + "/{session_id}/connect")
async def connect(websocket: WebSocket, session_id: AgentIdPath, agent: AgentDep) -> None:
    """Attach to a running terminal."""
    await _connect(websocket, agent.pty_attach(session_id))


def _offered_envs(websocket: WebSocket) -> dict[str, str]:
    """Environment variables the client sent as an ``X-Daytona-Pty-Envs~<base64url JSON>``."""
    envs: dict[str, str] = {}
    for offered in websocket.scope.get("subprotocols", []):
        if offered.startswith(ENVS_PROTOCOL):
            encoded = offered[len(ENVS_PROTOCOL):]
            try:
                value = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            except (binascii.Error, ValueError, RecursionError) as exc:
                raise BadRequest("malformed PTY envs subprotocol") from exc
            if not isinstance(value, dict):
                raise BadRequest("PTY envs must be a JSON object")
            envs.update({str(k): str(v) for k, v in value.items()})
    try:
        return _ENVS.validate_python(envs)
    except ValidationError as exc:
        raise BadRequest(f"PTY envs: {exc.errors()[0]['msg']}") from exc


async def _connect(websocket: WebSocket,
                   attaching: AbstractAsyncContextManager[PtyAttachment]) -> None:
    exit_control = EXIT_CONTROL in websocket.scope.get("subprotocols", [])
    try:
        async with attaching as pty:  # attached (else the error is an HTTP denial)
            await websocket.accept(subprotocol=EXIT_CONTROL if exit_control else None)
            await _control(websocket, status="connected")
            if await race(_output(websocket, pty), _input(websocket, pty)) == 0:
                code: int | None = pty.exit_code
            else:
                code = None  # the client left; the terminal keeps running
    except CoveError as exc:
        if websocket.client_state is WebSocketState.CONNECTING:
            raise
        await _control(websocket, status="error", error=exc.message)
        await websocket.close(1011, exc.message[:120])
        return
    if code is not None:  # the shell exited
        if exit_control:
            await _control(websocket, status="exited", exitCode=code)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.close(1000, json.dumps({"exitCode": code}))


async def _control(websocket: WebSocket, **fields: object) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(json.dumps({"type": "control", **fields}))


async def _output(websocket: WebSocket, pty: PtyAttachment) -> None:
    async for data in pty.output():
        await websocket.send_bytes(data)


async def _input(websocket: WebSocket, pty: PtyAttachment) -> None:
    """Relay the client's keystrokes until it leaves."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes") or (message.get("text") or "").encode()
        if data:
            await pty.send_input(data)
