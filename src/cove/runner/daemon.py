"""``cove runner``: this host's sandboxes, served to the API over mutual TLS.

It owns the host through a :class:`cove.runner.local.LocalRunner` and serves the
Runner port as described in :mod:`cove.runner.wire`: calls on the HTTPS port
(uvicorn), byte streams to agents and sandbox ports on the stream port (the next
one). Both refuse, in the TLS handshake, any caller without a client certificate
signed by the CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from cove import errors
from cove.core.ports import ISOLATIONS, AgentConnection, splice
from cove.runner import wire
from cove.runner.local import LocalRunner

log = logging.getLogger("cove.runner.daemon")
FIRST_LINE_SECONDS = 10.0  # a stream's request line must come this fast
FIRST_LINE_BYTES = 1024
CHUNK = 64 * 1024


def create_app(runner: LocalRunner, inventory: Inventory, stream_port: int) -> FastAPI:
    """The runner's HTTPS API (calls; the TLS layer has authenticated the caller)."""
    app = FastAPI(title="Cove runner", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        return {"stream_port": stream_port, **await asyncio.to_thread(inventory.read)}

    @app.post("/v1/call/{method}")
    async def call(method: str, request: Request) -> Any:
        try:
            args = wire.decode_args(method, await _json(request))
        except errors.CoveError as exc:
            return _error(exc)
        if method == "pull_image":
            return StreamingResponse(_pull(runner, args), media_type="application/x-ndjson")
        try:
            result = await getattr(runner, method)(**args)
        except Exception as exc:  # noqa: BLE001 - every failure goes back as an error
            return _error(exc)
        if method == "list_ids":
            result = sorted(result)
        return {"result": wire.encode(wire.METHODS[method][1], result)}

    return app


class Inventory:
    """What the API may ask the runner synchronously: its snapshots, local images,
    isolation tiers, whether it fetches the snapshots it lacks and its volumes dir
    (sent at connect time and after each change)."""

    def __init__(self, runner: LocalRunner, snapshot_dir: Path | None,
                 layout_dir: Path | None, default_snapshot: str) -> None:  # fmt: skip
        self.runner, self.snapshot_dir, self.layout_dir = runner, snapshot_dir, layout_dir
        self.default_snapshot = default_snapshot

    def read(self) -> dict[str, Any]:
        snaps = sorted({*_names(self.snapshot_dir), self.default_snapshot})
        images = [n for n in _names(self.layout_dir) if self.runner.has_local_image(n)]
        return {
            "snapshots": [n for n in snaps if self.runner.has_snapshot(n)],
            "local_images": images,
            "isolations": [n for n in ISOLATIONS if self.runner.has_isolation(n)],
            "fetches_snapshots": self.runner.fetches_snapshots(),
            # the id of the shared volumes dir (COVE_VOLUMES_DIR) it uses; null: its own
            "volume_store": self.runner.volume_store(),
        }


def _names(directory: Path | None) -> list[str]:
    if directory is None or not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


async def _json(request: Request) -> object:
    try:
        return await request.json()
    except ValueError:
        raise errors.BadRequest("the body is not JSON") from None


def _error(exc: BaseException) -> JSONResponse:
    if not isinstance(exc, errors.CoveError):
        log.exception("runner call failed", exc_info=exc)
    status = exc.status_code if isinstance(exc, errors.CoveError) else 500
    return JSONResponse({"error": wire.error_body(exc)}, status_code=status)


async def _pull(runner: LocalRunner, args: dict[str, Any]) -> AsyncIterator[bytes]:
    """JSON lines: the pull's progress, then its result or error. The API leaving the
    call (its snapshot was deleted) cancels the pull (see LocalRunner.pull_image)."""
    lines: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(runner.pull_image(**args, progress=lines.put_nowait))
    try:
        while not task.done() or not lines.empty():
            getter = asyncio.create_task(lines.get())
            try:
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                getter.cancel()
            if getter.done() and not getter.cancelled():
                yield (json.dumps({"progress": getter.result()}) + "\n").encode()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    try:
        result = {"result": wire.encode(wire.METHODS["pull_image"][1], task.result())}
    except Exception as exc:  # noqa: BLE001 - sent back as the call's error
        result = {"error": wire.error_body(exc)}
    yield (json.dumps(result) + "\n").encode()


class StreamServer:
    """The stream port: each TLS connection names a sandbox (and port), then is spliced
    to its agent (or that port) without buffering more than a chunk."""

    def __init__(self, runner: LocalRunner) -> None:
        self.runner = runner
        self._writers: set[asyncio.StreamWriter] = set()

    def close_all(self) -> None:
        """Hang up every stream (at shutdown: the API reconnects to the next runner)."""
        for writer in list(self._writers):
            writer.close()

    async def start(self, host: str, port: int, context: ssl.SSLContext) -> asyncio.Server:
        return await asyncio.start_server(self.handle, host, port, ssl=context,
                                          ssl_handshake_timeout=FIRST_LINE_SECONDS)  # fmt: skip

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._handle(reader, writer)
        finally:
            self._writers.discard(writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target = await self._open(reader)
        except Exception as exc:  # noqa: BLE001 - told to the caller, then hung up
            with contextlib.suppress(OSError, ssl.SSLError):
                writer.write((json.dumps({"error": wire.error_body(exc)}) + "\n").encode())
                await writer.drain()
            writer.close()
            return
        writer.write(b'{"ok": true}\n')
        await splice((reader, writer), target)

    async def _open(self, reader: asyncio.StreamReader) -> AgentConnection:
        try:
            line = await asyncio.wait_for(reader.readline(), FIRST_LINE_SECONDS)
        except (TimeoutError, ValueError):
            raise errors.BadRequest("no request line") from None
        if len(line) > FIRST_LINE_BYTES or not line.endswith(b"\n"):
            raise errors.BadRequest("bad request line")
        try:
            request = json.loads(line)
            sandbox_id = wire.check_name(request["sandbox"])
            port = request.get("port")
        except (ValueError, KeyError, TypeError):
            raise errors.BadRequest("bad request line") from None
        if port is None:
            return await self.runner.open_agent(sandbox_id)
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise errors.BadRequest(f"bad port {port!r}")
        return await self.runner.open_port(sandbox_id, port)
