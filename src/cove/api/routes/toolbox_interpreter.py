"""Toolbox: the stateful Python code interpreter (``/process/interpreter``).

``execute`` is a WebSocket: the client sends one JSON text frame, gets the
run's ``stdout`` / ``stderr`` / ``error`` frames as they happen, and the server
closes with 1000 when the run ends, 4008 when it timed out, 1008 / 1011 when
it could not run (e.g. an unknown context), the way Daytona's daemon does.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from cove.api.deps import StartedSandboxDep, ToolboxDep
from cove.errors import BadRequest, ToolboxError
from cove.schemas.toolbox_interpreter import (
    InterpreterContextCreate,
    InterpreterContextPublic,
    InterpreterContextsPublic,
    InterpreterRun,
)
from cove.toolbox import protocol

router = APIRouter(tags=["toolbox"])
CLOSE_TIMEOUT, CLOSE_POLICY, CLOSE_ERROR = 4008, 1008, 1011


def _reason(text: str) -> str:
    """A close reason within the 123 bytes a close frame allows."""
    return text.encode()[:120].decode(errors="ignore")


async def _first_frame(ws: WebSocket) -> InterpreterRun | None:
    message = await ws.receive()
    data = message.get("text") or message.get("bytes")
    if data is None:
        return None  # the client left
    try:
        return InterpreterRun.model_validate_json(data)
    except ValidationError as exc:
        await ws.close(CLOSE_POLICY, _reason(f"invalid request: {exc.errors()[0]['msg']}"))
        return None


@router.websocket("/process/interpreter/execute")
async def execute(ws: WebSocket, sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> None:
    """Run code in an interpreter context, streaming its output."""
    await ws.accept()
    body = await _first_frame(ws)
    if body is None:
        return
    message = {"op": "interpreter_run", "user": sandbox.user, "env": sandbox.env,
               "code": body.code, "contextId": body.context_id, "envs": body.envs or {},
               "timeout": body.timeout_seconds()}
    try:
        await ws.close(*await _relay(ws, toolbox, sandbox, message))
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client left; the run goes on in the sandbox to its end


async def _relay(ws: WebSocket, toolbox: ToolboxDep, sandbox: StartedSandboxDep,
                 message: dict) -> tuple[int, str]:
    """Send the run's events on to the client; the close code and reason to end with."""
    try:
        async with toolbox.call(sandbox, message) as agent:
            async for kind, payload in agent.frames():
                if kind == protocol.JSON:
                    await ws.send_text(payload.decode())
            timed_out = agent.result.get("outcome") == "timeout"
    except ToolboxError as exc:
        return (CLOSE_POLICY if exc.status_code < 500 else CLOSE_ERROR), _reason(exc.message)
    return (CLOSE_TIMEOUT if timed_out else 1000), ""


@router.post("/process/interpreter/context")
async def create_context(body: InterpreterContextCreate, sandbox: StartedSandboxDep,
                         toolbox: ToolboxDep) -> InterpreterContextPublic:
    """Create an isolated interpreter context."""
    if body.language not in (None, "python"):
        raise BadRequest(f"unsupported language '{body.language}' (only 'python' is)")
    reply = await toolbox.request(sandbox, {"op": "interpreter_create", "user": sandbox.user,
                                            "env": sandbox.env, "cwd": body.cwd})
    return InterpreterContextPublic.model_validate(reply["context"])


@router.get("/process/interpreter/context")
async def list_contexts(sandbox: StartedSandboxDep,
                        toolbox: ToolboxDep) -> InterpreterContextsPublic:
    """List the user-created interpreter contexts."""
    reply = await toolbox.request(sandbox, {"op": "interpreter_list"})
    return InterpreterContextsPublic.model_validate(reply)


@router.delete("/process/interpreter/context/{context_id}")
async def delete_context(context_id: str, sandbox: StartedSandboxDep,
                         toolbox: ToolboxDep) -> dict[str, str]:
    """Delete an interpreter context and kill its processes."""
    await toolbox.request(sandbox, {"op": "interpreter_delete", "id": context_id})
    return {"message": f"context {context_id} deleted"}
