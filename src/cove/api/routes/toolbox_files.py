"""Toolbox: the sandbox's file system (``/toolbox/{id}/files``).

Paths are handed to the sandbox's agent as given: the server never resolves
or opens them, so they mean what they mean inside the sandbox. Uploads and
downloads stream through in both directions; no file is held in memory.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from cove.api import multipart
from cove.api.deps import AgentDep
from cove.api.params import ModeQuery, OwnerQuery, PatternQuery, SandboxPathQuery
from cove.api.streaming import first_event, items_response
from cove.core.agent_client import AgentClient
from cove.core.agent_streams import Upload
from cove.core.agent_types import FileData, FileEnd, FileEvent, FileStart
from cove.errors import CoveError, ToolboxError
from cove.schemas.toolbox_files import (
    FileInfo,
    FilesDownloadRequest,
    Match,
    ReplaceRequest,
    ReplaceResult,
    SearchFilesResponse,
    UploadedFile,
    UploadFilesResponse,
)

router = APIRouter(tags=["toolbox"], prefix="/files")
log = logging.getLogger(__name__)
FIELD = re.compile(r"files\[(\d+)\]\.(path|file)")
MAX_PATH_FIELD = 64 * 1024
# What one bulk upload (a body of any length) keeps for its reply: bytes of the paths
# it named and of its errors; past that it is refused.
MAX_HELD = 16 * 1024 * 1024
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "description": "parts files[i].path (text) then files[i].file (binary)",
    "propertyNames": {"pattern": rf"^{FIELD.pattern}$"},
    "additionalProperties": {"type": "string", "format": "binary"}}}}}}


@router.get("", response_model=list[FileInfo])
async def list_files(path: SandboxPathQuery, agent: AgentDep,
                     depth: Annotated[int | None, Query(ge=1, le=64)] = None) -> Response:
    """The entries of a directory."""
    return await items_response(agent.list_files(path, depth))


@router.get("/info")
async def file_info(path: SandboxPathQuery, agent: AgentDep) -> FileInfo:
    """Facts about one file or directory."""
    return await agent.file_info(path)


@router.post("/folder", status_code=201)
async def create_folder(path: SandboxPathQuery, agent: AgentDep, mode: ModeQuery = None) -> None:
    """Create a directory (and its parents), owned by the sandbox user."""
    await agent.make_dir(path, mode)


@router.delete("", status_code=204, response_class=Response)
async def delete_file(path: SandboxPathQuery, agent: AgentDep, recursive: bool = False) -> Response:
    """Delete a file, or a directory with ``recursive=true``."""
    await agent.delete_file(path, recursive)
    return Response(status_code=204)


@router.post("/move")
async def move_file(source: SandboxPathQuery, destination: SandboxPathQuery,
                    agent: AgentDep) -> None:
    """Move or rename a file or directory (the destination must not exist)."""
    await agent.move_file(source, destination)


@router.post("/permissions")
async def set_permissions(path: SandboxPathQuery, agent: AgentDep, owner: OwnerQuery = None,
                          group: OwnerQuery = None, mode: ModeQuery = None) -> None:
    """Change a file's mode, owner or group."""
    await agent.set_permissions(path, owner, group, mode)


@router.get("/find", response_model=list[Match])
async def find_in_files(path: SandboxPathQuery, pattern: PatternQuery, agent: AgentDep) -> Response:
    """Lines containing ``pattern`` in the files below ``path``."""
    return await items_response(agent.find_in_files(path, pattern))


@router.get("/search", response_model=SearchFilesResponse)
async def search_files(path: SandboxPathQuery, pattern: PatternQuery, agent: AgentDep) -> Response:
    """Files below ``path`` whose name matches the glob ``pattern``."""
    return await items_response(agent.search_files(path, pattern), b'{"files":[', b"]}")


@router.post("/replace")
async def replace_in_files(body: ReplaceRequest, agent: AgentDep) -> list[ReplaceResult]:
    """Replace text in files; one result per file."""
    return await agent.replace_in_files(body.files, body.pattern, body.new_value)


@router.post("/bulk-download", response_class=StreamingResponse, responses={200: {
    "description": "one part per file (``file``, or ``error`` with the daemon's error)",
    "content": {"multipart/form-data": {"schema": {"type": "string", "format": "binary"}}}}})
async def bulk_download(body: FilesDownloadRequest, agent: AgentDep) -> StreamingResponse:
    """The requested files as multipart/form-data, one part (or error part) each."""
    events = agent.read_files(body.paths)
    first = await first_event(events)
    boundary = f"cove-{secrets.token_hex(16)}"
    return StreamingResponse(_download_parts(events, first, boundary),
                             media_type=f"multipart/form-data; boundary={boundary}")


async def _download_parts(events: AsyncGenerator[FileEvent, None], event: FileEvent | None,
                          boundary: str) -> AsyncIterator[bytes]:
    try:
        while event is not None:
            yield _download_part(boundary, event)
            event = await anext(events, None)
        yield multipart.closing(boundary)
    except ToolboxError as exc:  # no closing boundary: the client sees a cut-short body
        log.warning("bulk download failed mid-stream: %s", exc.message)
    finally:
        await events.aclose()


def _download_part(boundary: str, event: FileEvent) -> bytes:
    if isinstance(event, FileData):
        return event.data
    if isinstance(event, FileEnd):
        return b"\r\n"
    if isinstance(event, FileStart):
        return multipart.part_head(boundary, "file", event.path, "application/octet-stream",
                                   event.size)
    body = json.dumps({"message": event.message, "statusCode": event.status,
                       "code": event.code, "source": "DAYTONA_DAEMON"}).encode()
    head = multipart.part_head(boundary, "error", event.path, "application/json")
    return head + body + b"\r\n"


@router.post("/bulk-upload", response_model=UploadFilesResponse, openapi_extra=UPLOAD_BODY,
             responses={400: {"description": "a file failed, or invalid input", "content": {
                 "application/json": {"schema": {"anyOf": [
                     {"$ref": "#/components/schemas/UploadFilesResponse"},
                     {"$ref": "#/components/schemas/ErrorEnvelope"}]}}}}})
async def bulk_upload(request: Request, agent: AgentDep) -> JSONResponse:
    """Write the uploaded files (parts ``files[i].path`` then ``files[i].file``)."""
    try:
        parser = multipart.UploadParser(request.headers.get("content-type", ""))
    except ValueError:
        return JSONResponse({"errors": ["invalid multipart form"], "files": []}, 400)
    upload = _BulkUpload(agent)
    try:
        async for chunk in request.stream():
            for event in parser.feed(chunk):
                await upload.handle(*event)
        parser.finish()
    except ValueError as exc:
        upload.errors.append(f"invalid multipart form: {exc}")
    except ClientDisconnect:
        log.info("upload to %s abandoned by the client", request.url.path)
    finally:
        await upload.abort()
    body = UploadFilesResponse(files=upload.files, errors=upload.errors or None)
    return JSONResponse(body.model_dump(exclude_none=True), 400 if upload.errors else 200)


class _BulkUpload:
    """Routes the parts of one bulk upload: paths are remembered, files streamed
    to the agent (one call per file), errors collected per file (all of them
    together at most ``MAX_HELD`` bytes: the body's length is not bounded)."""

    def __init__(self, agent: AgentClient) -> None:
        self.agent = agent
        self.destinations: dict[str, str] = {}
        self.files: list[UploadedFile] = []
        self.errors: list[str] = []
        self._field: tuple[str, str] | None = None  # (index, "path" | "file")
        self._text = bytearray()
        self._upload: Upload | None = None
        self._held = 0

    def _hold(self, text: str) -> str:
        """Count ``text`` as kept until the reply.

        Raises:
            ValueError: the upload keeps too much (the route's invalid form).
        """
        self._held += len(text)
        if self._held > MAX_HELD:
            raise ValueError(f"too many files or errors (their names above {MAX_HELD} bytes)")
        return text

    def _error(self, message: str) -> None:
        self.errors.append(self._hold(message))

    async def handle(self, kind: str, value: bytes | str | None) -> None:
        if kind == "part":
            await self._begin(str(value))
        elif kind == "data" and self._field is not None:
            await self._data(value if isinstance(value, bytes) else b"")
        elif kind == "end" and self._field is not None:
            await self._end()

    async def _begin(self, name: str) -> None:
        match = FIELD.fullmatch(name)
        self._field = (match[1], match[2]) if match else None
        self._text.clear()
        if match is None:
            self._error(f"unexpected part {name!r} (parts are files[i].path and "
                        "files[i].file)")  # fmt: skip
        if self._field is None or self._field[1] == "path":
            return
        index = self._field[0]
        if index not in self.destinations:
            self._error(f"file[{index}]: missing .path metadata")
            self._field = None
            return
        await self._open(self.destinations[index])

    async def _open(self, path: str) -> None:
        try:
            self._upload = await self.agent.write_file(path)
        except CoveError as exc:
            self._field = None
            self._error(f"{path}: {exc.message}")

    async def _data(self, data: bytes) -> None:
        if self._field is not None and self._field[1] == "path":
            self._text.extend(data)
            if len(self._text) > MAX_PATH_FIELD:
                raise ValueError("a files[i].path field is too long")
        elif self._upload is not None:
            await self._upload.send(data)

    async def _end(self) -> None:
        assert self._field is not None
        index, kind = self._field
        self._field = None
        if kind == "path":
            path = self._text.decode(errors="replace").strip()
            if path:
                self.destinations[index] = self._hold(path)
            else:
                self._error(f"path[{index}]: empty path")
            return
        await self._finish(self.destinations[index])

    async def _finish(self, path: str) -> None:
        upload, self._upload = self._upload, None
        if upload is None:
            return
        try:
            size = await upload.finish()
            self.files.append(UploadedFile(path=self._hold(path), bytes=size))
        except CoveError as exc:
            self._error(f"{path}: {exc.message}")

    async def abort(self) -> None:
        """Drop a file still being written (the agent discards it)."""
        upload, self._upload = self._upload, None
        if upload is not None:
            await upload.abort()
