"""HTTP bodies streamed from the agent client's event streams.

A streamed HTTP body outlives its handler: the handler awaits the stream's first
event (so an error at the start is still a proper error response), then hands the
rest to a :class:`StreamingResponse`, which closes the stream when the body is
done or the client went away (ending the agent's request). Nothing accumulates
in the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import StreamingResponse

from cove.api import multipart
from cove.core.agent_types import FileData, FileError, FileEvent, FileStart
from cove.core.buildlog import BuildLog
from cove.errors import ClientGone, ToolboxError

log = logging.getLogger(__name__)
T = TypeVar("T")
# A route answering a build log as plain text (see :func:`build_log_response`).
BUILD_LOG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}}
}


def build_log_response(log: BuildLog, follow: bool) -> StreamingResponse:
    """A build log as text; with ``follow``, streamed until the build ends."""
    return StreamingResponse(log.follow(follow=follow), media_type="text/plain")


async def first_event(events: AsyncGenerator[T, None]) -> T | None:
    """The stream's first event (None if it has none); closes it if that fails."""
    try:
        return await anext(events, None)
    except BaseException:
        await events.aclose()
        raise


async def file_response(events: AsyncGenerator[FileEvent, None], name: str,
                        media_type: str = "application/octet-stream") -> StreamingResponse:
    """One file's bytes as they come from the agent (``Content-Length`` when known,
    downloaded as ``name``); an error before the first byte is its error response."""
    first = await first_event(events)
    if isinstance(first, FileError):
        await events.aclose()
        raise ToolboxError(first.status, first.code, first.message)
    size = first.size if isinstance(first, FileStart) else None
    headers = {"Content-Length": str(size)} if size is not None else {}
    headers["Content-Disposition"] = multipart.disposition(None, name)
    return StreamingResponse(_file_data(events), media_type=media_type, headers=headers)


async def _file_data(events: AsyncGenerator[FileEvent, None]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            if isinstance(event, FileData):
                yield event.data
    finally:
        await events.aclose()


async def items_response(batches: AsyncGenerator[list[Any], None], prefix: bytes = b"[",
                         suffix: bytes = b"]") -> StreamingResponse:
    """A JSON array built from the batches of items as they come."""
    first = await first_event(batches)
    return StreamingResponse(_items(batches, first, prefix, suffix), media_type="application/json")


async def _items(batches: AsyncGenerator[list[Any], None], batch: list[Any] | None,
                 prefix: bytes, suffix: bytes) -> AsyncIterator[bytes]:
    try:
        yield prefix
        separator = b""
        while batch is not None:
            if batch:
                yield separator + b",".join(json.dumps(_plain(item)).encode() for item in batch)
                separator = b","
            batch = await anext(batches, None)
        yield suffix
    except ToolboxError as exc:  # too late for an error status: end the body short
        log.warning("toolbox listing failed mid-stream: %s", exc.message)
    finally:
        await batches.aclose()


def _plain(item: Any) -> Any:
    return item.model_dump(mode="json", by_alias=True) if isinstance(item, BaseModel) else item


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` while the HTTP client stays; when it hangs up first, ``work`` is
    cancelled (ending its agent request, so the command stops) and ClientGone raised.
    (``work`` runs in the caller's task, a watcher in one of its own that cancels it.)"""
    caller = asyncio.current_task()
    assert caller is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await _hang_up(request)
        gone = True
        caller.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and caller.uncancel() == 0:  # our cancel, not one from outside
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


async def _hang_up(request: Request) -> None:
    """Return when the client disconnects (the request's body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
