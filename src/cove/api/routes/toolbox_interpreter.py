"""Toolbox: the stateful Python code interpreter (``/process/interpreter``).

``execute`` is a WebSocket: the client sends one JSON text frame, gets the
run's ``stdout`` / ``stderr`` / ``error`` frames as they happen, and the server
closes with 1000 when the run ends, 4008 when it timed out, 1008 / 1011 when
it could not run (e.g. an unknown context), the way Daytona's daemon does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from cove.api.deps import AgentDep
from cove.api.params import AgentIdPath
from cove.api.routes.toolbox_sessions import race
from cove.core.agent_types import InterpreterEvent, RunEnded
from cove.errors import BadRequest, CoveError
from cove.schemas.toolbox_interpreter import (
    InterpreterContextCreate,
    InterpreterContextPublic,
    InterpreterContextsPublic,
    InterpreterRun,
)

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
async def execute(ws: WebSocket, agent: AgentDep) -> None:
    """Run code in an interpreter context, streaming its output."""
    await ws.accept()
    body = await _first_frame(ws)
    if body is None:
        return
    events = agent.interpreter_run(body.code, body.context_id, body.envs or {},
                                   body.timeout_seconds())
    outcome: list[tuple[int, str]] = []

    async def relay() -> None:
        outcome.append(await _relay(ws, events))

    # The client is watched meanwhile: a run may say nothing for long (no timeout, or
    # an agent that lies), and its relay must not outlive the client that left.
    try:
        if await race(relay(), _client_leaves(ws)) == 0:
            await ws.close(*outcome[0])
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client left; the run goes on in the sandbox to its end
    finally:
        await events.aclose()


async def _client_leaves(ws: WebSocket) -> None:
    """Return when the client hangs up (what else it sends is ignored)."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


async def _relay(ws: WebSocket, events: AsyncIterator[InterpreterEvent]) -> tuple[int, str]:
    """Send the run's events on to the client; the close code and reason to end with."""
    try:
        async for event in events:
            if isinstance(event, RunEnded):
                return (CLOSE_TIMEOUT if event.timed_out else 1000), ""
            await ws.send_text(event.model_dump_json())
    except CoveError as exc:  # the agent's (ToolboxError), or the server's (429, 503)
        return (CLOSE_POLICY if exc.status_code < 500 else CLOSE_ERROR), _reason(exc.message)
    return CLOSE_ERROR, "the run ended without an outcome"


@router.post("/process/interpreter/context")
async def create_context(body: InterpreterContextCreate,
                         agent: AgentDep) -> InterpreterContextPublic:
    """Create an isolated interpreter context."""
    if body.language not in (None, "python"):
        raise BadRequest(f"unsupported language '{body.language}' (only 'python' is)")
    return await agent.interpreter_create(body.cwd)


@router.get("/process/interpreter/context")
async def list_contexts(agent: AgentDep) -> InterpreterContextsPublic:
    """List the user-created interpreter contexts."""
    return await agent.interpreter_list()


@router.delete("/process/interpreter/context/{context_id}")
async def delete_context(context_id: AgentIdPath, agent: AgentDep) -> dict[str, str]:
    """Delete an interpreter context and kill its processes."""
    await agent.interpreter_delete(context_id)
    return {"message": f"context {context_id} deleted"}
