"""Seed 001's backend: run an agent's Python code in a Daytona sandbox, stream its logs.

Run it (``DAYTONA_API_URL`` and ``DAYTONA_API_KEY`` in the environment)::

    uvicorn main:app --app-dir examples/agent_runner

``GET /`` is a small page to try it; ``/ws/agents/{agent_id}/run`` is the WebSocket.
The client sends ``{"code": "..."}``; the backend answers with JSON messages:

- ``{"type": "status", "status": "creating"}``, then ``"running"`` with ``sandbox_id``
- ``{"type": "log", "stream": "stdout" | "stderr", "content": LINE}`` as lines are printed
- ``{"type": "execution_complete", "exit_code": N}``, or ``{"type": "error", "message": ...}``

and closes the socket once the sandbox is deleted. A client that goes away mid-run
has its program's sandbox deleted all the same.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from daytona import AsyncDaytona, AsyncSandbox, DaytonaError
from daytona_service import DaytonaService, LineHandler
from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

PAGE = Path(__file__).parent / "static" / "index.html"
AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
RUN_TIMEOUT_SECONDS = 300


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncDaytona() as client:  # DAYTONA_API_URL, DAYTONA_API_KEY
        app.state.daytona = DaytonaService(client)
        yield


app = FastAPI(title="Agent runner (seed 001)", lifespan=lifespan)


@app.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(PAGE)


@app.websocket("/ws/agents/{agent_id}/run")
async def run_agent(websocket: WebSocket, agent_id: str) -> None:
    """Runs the code the client sends in a fresh sandbox, streaming its output."""
    await websocket.accept()
    if not AGENT_ID.fullmatch(agent_id):
        await websocket.close(code=1008, reason="agent id: letters, digits, '.', '_', '-'")
        return
    try:
        request = await websocket.receive_json()
    except WebSocketDisconnect:
        return
    code = request.get("code") if isinstance(request, dict) else None
    if not isinstance(code, str):
        await websocket.close(code=1003, reason='send {"code": "..."}')
        return
    service: DaytonaService = websocket.app.state.daytona
    await websocket.send_json({"type": "status", "status": "creating"})
    try:
        sandbox = await service.create_sandbox(agent_id)
    except DaytonaError as exc:  # e.g. a quota reached
        await websocket.send_json({"type": "error", "message": str(exc)})
        await websocket.close()
        return
    try:
        await until_disconnected(websocket, execute(websocket, service, sandbox, code))
    finally:
        await service.cleanup_sandbox(sandbox)
    if websocket.client_state == WebSocketState.CONNECTED:
        await websocket.close()


async def execute(websocket: WebSocket, service: DaytonaService, sandbox: AsyncSandbox,
                  code: str) -> None:  # fmt: skip
    """Uploads and runs the code, sending each output line, then the exit code."""

    def sender(stream: str) -> LineHandler:
        async def send(line: str) -> None:
            await websocket.send_json({"type": "log", "stream": stream, "content": line})

        return send

    await websocket.send_json({"type": "status", "status": "running", "sandbox_id": sandbox.id})
    try:
        path = await service.upload_agent_code(sandbox, code)
        async with asyncio.timeout(RUN_TIMEOUT_SECONDS):
            exit_code = await service.run_agent(sandbox, path, sender("stdout"), sender("stderr"))
    except (DaytonaError, TimeoutError) as exc:
        await websocket.send_json({"type": "error", "message": str(exc) or "timed out"})
        return
    await websocket.send_json({"type": "execution_complete", "exit_code": exit_code})


async def until_disconnected(websocket: WebSocket, work: Coroutine[Any, Any, None]) -> None:
    """Runs ``work`` until it ends or the client goes away, whichever comes first."""
    task = asyncio.create_task(work)
    gone = asyncio.create_task(wait_disconnect(websocket))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler is cancelled (the server shutting down)
        task.cancel()
        gone.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)
    if gone.cancelled() and not task.cancelled() and task.exception():
        raise task.exception()  # type: ignore[misc]  # a failure not due to the client leaving


async def wait_disconnect(websocket: WebSocket) -> None:
    """Returns when the client closes the socket (anything else it sends is ignored)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
