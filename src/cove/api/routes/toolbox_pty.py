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
from collections.abc import AsyncIterator

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from cove.api.deps import StartedSandboxDep, ToolboxDep
from cove.api.routes.toolbox_sessions import race
from cove.core.sandbox import Sandbox
from cove.core.toolbox import ToolboxService
from cove.errors import BadRequest, CoveError
from cove.schemas.toolbox_sessions import (
    PtyCreate,
    PtyCreated,
    PtyList,
    PtyResize,
    PtySessionInfo,
)
from cove.toolbox import protocol
from cove.toolbox.client import AgentCall

router = APIRouter(tags=["toolbox"])
PREFIX = "/process/pty"
EXIT_CONTROL = "X-Daytona-Pty-Exit-Control"
ENVS_PROTOCOL = "X-Daytona-Pty-Envs~"


def _owner(sandbox: Sandbox) -> dict:
    """Who the terminal's shell runs as, and the sandbox's environment."""
    return {"user": sandbox.user, "env": dict(sandbox.env)}


@router.post(PREFIX, status_code=201)
async def create_pty(body: PtyCreate, sandbox: StartedSandboxDep,
                     toolbox: ToolboxDep) -> PtyCreated:
    """Create a terminal (its shell starts now, or at the first connect if ``lazyStart``)."""
    info = await toolbox.request(sandbox, {
        "op": "pty_create", **body.model_dump(by_alias=True, exclude_none=True),
        **_owner(sandbox)})
    return PtyCreated(session_id=info["id"])


@router.get(PREFIX)
async def list_ptys(sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> PtyList:
    """The sandbox's terminals."""
    return PtyList.model_validate(await toolbox.request(sandbox, {"op": "pty_list"}))


@router.get(PREFIX + "/{session_id}")
async def get_pty(session_id: str, sandbox: StartedSandboxDep,
                  toolbox: ToolboxDep) -> PtySessionInfo:
    """One terminal."""
    reply = await toolbox.request(sandbox, {"op": "pty_get", "id": session_id})
    return PtySessionInfo.model_validate(reply)


@router.post(PREFIX + "/{session_id}/resize")
async def resize_pty(session_id: str, body: PtyResize, sandbox: StartedSandboxDep,
                     toolbox: ToolboxDep) -> PtySessionInfo:
    """Change the terminal's size (its programs get SIGWINCH)."""
    reply = await toolbox.request(sandbox, {"op": "pty_resize", "id": session_id,
                                            "cols": body.cols, "rows": body.rows})
    return PtySessionInfo.model_validate(reply)


@router.delete(PREFIX + "/{session_id}")
async def kill_pty(session_id: str, sandbox: StartedSandboxDep,
                   toolbox: ToolboxDep) -> dict[str, str]:
    """Kill the terminal's shell and everything it started."""
    await toolbox.request(sandbox, {"op": "pty_kill", "id": session_id})
    return {"message": "PTY session deleted"}


@router.websocket(PREFIX + "/create-connect")
async def create_connect(websocket: WebSocket, sandbox: StartedSandboxDep, toolbox: ToolboxDep,
                         id: str, cols: int = 80, rows: int = 24, cwd: str | None = None) -> None:
    """Create a terminal and connect to it in one round trip."""
    message = {"op": "pty_attach", "create": True, "id": id, "cols": cols, "rows": rows,
               "cwd": cwd, "envs": _offered_envs(websocket), **_owner(sandbox)}
    await _connect(websocket, toolbox, sandbox, message)


@router.websocket(PREFIX + "/{session_id}/connect")
async def connect(websocket: WebSocket, session_id: str, sandbox: StartedSandboxDep,
                  toolbox: ToolboxDep) -> None:
    """Attach to a running terminal."""
    await _connect(websocket, toolbox, sandbox, {"op": "pty_attach", "id": session_id})


def _offered_envs(websocket: WebSocket) -> dict[str, str]:
    """Environment variables the client sent as an ``X-Daytona-Pty-Envs~<base64url JSON>``."""
    envs: dict[str, str] = {}
    for offered in websocket.scope.get("subprotocols", []):
        if offered.startswith(ENVS_PROTOCOL):
            encoded = offered[len(ENVS_PROTOCOL):]
            try:
                value = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            except (binascii.Error, ValueError) as exc:
                raise BadRequest("malformed PTY envs subprotocol") from exc
            if not isinstance(value, dict):
                raise BadRequest("PTY envs must be a JSON object")
            envs.update({str(k): str(v) for k, v in value.items()})
    return envs


async def _connect(websocket: WebSocket, toolbox: ToolboxService, sandbox: Sandbox,
                   message: dict) -> None:
    exit_control = EXIT_CONTROL in websocket.scope.get("subprotocols", [])
    try:
        async with toolbox.call(sandbox, message) as agent:
            frames = agent.frames()
            await anext(frames)  # attached (an error here is an HTTP denial)
            await websocket.accept(subprotocol=EXIT_CONTROL if exit_control else None)
            await _control(websocket, status="connected")
            if await race(_output(websocket, frames), _input(websocket, agent)) == 0:
                code: int | None = int(agent.result.get("exitCode", 0))
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


async def _output(websocket: WebSocket, frames: AsyncIterator[tuple[bytes, bytes]]) -> None:
    async for kind, payload in frames:
        if kind == protocol.DATA:
            await websocket.send_bytes(payload)


async def _input(websocket: WebSocket, agent: AgentCall) -> None:
    """Relay the client's keystrokes until it leaves."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes") or (message.get("text") or "").encode()
        if data:
            await agent.send_data(protocol.DATA, data)
