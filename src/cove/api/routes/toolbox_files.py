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
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from cove.api import multipart
from cove.api.deps import StartedSandboxDep, ToolboxDep
from cove.api.streaming import AgentStream, items_response
from cove.core.sandbox import Sandbox
from cove.core.toolbox import ToolboxService
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
from cove.toolbox import protocol

router = APIRouter(tags=["toolbox"], prefix="/files")
log = logging.getLogger(__name__)
FIELD = re.compile(r"files\[(\d+)\]\.(path|file)")
MAX_PATH_FIELD = 64 * 1024


def _msg(sandbox: Sandbox, op: str, **fields: object) -> dict:
    return {"op": op, "user": sandbox.user, **fields}


@router.get("", response_model=list[FileInfo])
async def list_files(path: str, sandbox: StartedSandboxDep, toolbox: ToolboxDep,
                     depth: int | None = None) -> Response:
    """The entries of a directory."""
    return await items_response(toolbox, sandbox, _msg(sandbox, "fs_list", path=path, depth=depth))


@router.get("/info")
async def file_info(path: str, sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> FileInfo:
    """Facts about one file or directory."""
    reply = await toolbox.request(sandbox, _msg(sandbox, "fs_info", path=path))
    return FileInfo.model_validate(reply["file"])


@router.post("/folder", status_code=201)
async def create_folder(path: str, sandbox: StartedSandboxDep, toolbox: ToolboxDep,
                        mode: str | None = None) -> None:
    """Create a directory (and its parents), owned by the sandbox user."""
    await toolbox.request(sandbox, _msg(sandbox, "fs_mkdir", path=path, mode=mode))


@router.delete("", status_code=204)
async def delete_file(path: str, sandbox: StartedSandboxDep, toolbox: ToolboxDep,
                      recursive: bool = False) -> Response:
    """Delete a file, or a directory with ``recursive=true``."""
    await toolbox.request(sandbox, _msg(sandbox, "fs_delete", path=path, recursive=recursive))
    return Response(status_code=204)


@router.post("/move")
async def move_file(source: str, destination: str, sandbox: StartedSandboxDep,
                    toolbox: ToolboxDep) -> None:
    """Move or rename a file or directory (the destination must not exist)."""
    await toolbox.request(sandbox, _msg(sandbox, "fs_move", source=source,
                                        destination=destination))


@router.post("/permissions")
async def set_permissions(path: str, sandbox: StartedSandboxDep, toolbox: ToolboxDep,
                          owner: str | None = None, group: str | None = None,
                          mode: str | None = None) -> None:
    """Change a file's mode, owner or group."""
    await toolbox.request(sandbox, _msg(sandbox, "fs_chmod", path=path, owner=owner,
                                        group=group, mode=mode))


@router.get("/find", response_model=list[Match])
async def find_in_files(path: str, pattern: str, sandbox: StartedSandboxDep,
                        toolbox: ToolboxDep) -> Response:
    """Lines containing ``pattern`` in the files below ``path``."""
    return await items_response(toolbox, sandbox,
                                _msg(sandbox, "fs_find", path=path, pattern=pattern))


@router.get("/search", response_model=SearchFilesResponse)
async def search_files(path: str, pattern: str, sandbox: StartedSandboxDep,
                       toolbox: ToolboxDep) -> Response:
    """Files below ``path`` whose name matches the glob ``pattern``."""
    message = _msg(sandbox, "fs_search", path=path, pattern=pattern)
    return await items_response(toolbox, sandbox, message, b'{"files":[', b"]}")


@router.post("/replace")
async def replace_in_files(body: ReplaceRequest, sandbox: StartedSandboxDep,
                           toolbox: ToolboxDep) -> list[ReplaceResult]:
    """Replace text in files; one result per file."""
    reply = await toolbox.request(sandbox, _msg(
        sandbox, "fs_replace", files=body.files, pattern=body.pattern, newValue=body.new_value))
    return [ReplaceResult.model_validate(r) for r in reply["results"]]


@router.post("/bulk-download")
async def bulk_download(body: FilesDownloadRequest, sandbox: StartedSandboxDep,
                        toolbox: ToolboxDep) -> StreamingResponse:
    """The requested files as multipart/form-data, one part (or error part) each."""
    stream = await AgentStream.open(toolbox, sandbox, _msg(sandbox, "fs_read", paths=body.paths))
    boundary = f"cove-{secrets.token_hex(16)}"
    return StreamingResponse(_download_parts(stream, boundary),
                             media_type=f"multipart/form-data; boundary={boundary}")


async def _download_parts(stream: AgentStream, boundary: str) -> AsyncIterator[bytes]:
    try:
        while (frame := await stream.next()) is not None:
            kind, payload = frame
            if kind == protocol.DATA:
                yield payload
            elif kind == protocol.END:
                yield b"\r\n"
            elif kind == protocol.JSON:
                yield _download_head(boundary, protocol.decode(payload))
        yield multipart.closing(boundary)
    except ToolboxError as exc:  # no closing boundary: the client sees a cut-short body
        log.warning("bulk download failed mid-stream: %s", exc.message)
    finally:
        await stream.close()


def _download_head(boundary: str, header: dict) -> bytes:
    if "file" in header:
        return multipart.part_head(boundary, "file", header["file"], "application/octet-stream",
                                   header.get("size"))
    error = header["error"]
    body = json.dumps({"message": error["message"], "statusCode": error["status"],
                       "code": error["code"], "source": "DAYTONA_DAEMON"}).encode()
    head = multipart.part_head(boundary, "error", header["path"], "application/json")
    return head + body + b"\r\n"


@router.post("/bulk-upload", response_model=UploadFilesResponse)
async def bulk_upload(request: Request, sandbox: StartedSandboxDep,
                      toolbox: ToolboxDep) -> JSONResponse:
    """Write the uploaded files (parts ``files[i].path`` then ``files[i].file``)."""
    try:
        parser = multipart.UploadParser(request.headers.get("content-type", ""))
    except ValueError:
        return JSONResponse({"errors": ["invalid multipart form"], "files": []}, 400)
    upload = _BulkUpload(toolbox, sandbox)
    try:
        async for chunk in request.stream():
            for event in parser.feed(chunk):
                await upload.handle(*event)
        parser.finish()
    except ValueError as exc:
        upload.errors.append(f"invalid multipart form: {exc}")
    except ClientDisconnect:
        log.info("upload to sandbox %s abandoned by the client", sandbox.id)
    finally:
        await upload.abort()
    body = UploadFilesResponse(files=upload.files, errors=upload.errors or None)
    return JSONResponse(body.model_dump(exclude_none=True), 400 if upload.errors else 200)


class _BulkUpload:
    """Routes the parts of one bulk upload: paths are remembered, files streamed
    to the agent (one call per file), errors collected per file."""

    def __init__(self, toolbox: ToolboxService, sandbox: Sandbox) -> None:
        self.toolbox, self.sandbox = toolbox, sandbox
        self.destinations: dict[str, str] = {}
        self.files: list[UploadedFile] = []
        self.errors: list[str] = []
        self._field: tuple[str, str] | None = None  # (index, "path" | "file")
        self._text = bytearray()
        self._stream: AgentStream | None = None
        self._broken = False

    async def handle(self, kind: str, value: bytes | str | None) -> None:
        if kind == "part":
            await self._begin(str(value))
        elif kind == "data" and self._field is not None:
            await self._data(bytes(value or b""))
        elif kind == "end" and self._field is not None:
            await self._end()

    async def _begin(self, name: str) -> None:
        match = FIELD.fullmatch(name)
        self._field = (match[1], match[2]) if match else None
        self._text.clear()
        if self._field is None or self._field[1] == "path":
            return
        index = self._field[0]
        if index not in self.destinations:
            self.errors.append(f"file[{index}]: missing .path metadata")
            self._field = None
            return
        await self._open(self.destinations[index])

    async def _open(self, path: str) -> None:
        message = {"op": "fs_write", "path": path, "user": self.sandbox.user}
        try:
            self._stream = await AgentStream.open(self.toolbox, self.sandbox, message)
            await self._stream.message()  # {"ready": true}
        except CoveError as exc:
            self.errors.append(f"{path}: {exc.message}")
            await self.abort()
            self._field = None
        self._broken = False

    async def _data(self, data: bytes) -> None:
        if self._field is not None and self._field[1] == "path":
            self._text.extend(data)
            if len(self._text) > MAX_PATH_FIELD:
                raise ValueError("a files[i].path field is too long")
        elif self._stream is not None and not self._broken:
            try:
                await self._stream.send(protocol.DATA, data)
            except ConnectionError:
                self._broken = True  # the agent gave up: its reply says why

    async def _end(self) -> None:
        assert self._field is not None
        index, kind = self._field
        self._field = None
        if kind == "path":
            path = self._text.decode(errors="replace").strip()
            if path:
                self.destinations[index] = path
            else:
                self.errors.append(f"path[{index}]: empty path")
            return
        await self._finish(self.destinations[index])

    async def _finish(self, path: str) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            if not self._broken:
                await stream.send(protocol.END)
            while await stream.next() is not None:
                pass
            self.files.append(UploadedFile(path=path, bytes=int(stream.result.get("bytes", 0))))
        except (ToolboxError, ConnectionError) as exc:
            self.errors.append(f"{path}: {getattr(exc, 'message', exc)}")
        finally:
            await stream.close()

    async def abort(self) -> None:
        """Drop a file still being written (the agent discards it)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()
