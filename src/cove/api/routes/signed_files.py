"""Signed file URLs: the per-sandbox signing key (``/api/sandbox/{id}/signing-key``),
downloads (``/toolbox/{id}/files/download``) and uploads (``.../files/upload-v2``)
through a signed URL, which need no API key (see :mod:`cove.core.signing`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.requests import ClientDisconnect, Request
from starlette.responses import StreamingResponse

from cove.api import multipart
from cove.api.deps import PrincipalDep, ServicesDep
from cove.api.params import SandboxPathQuery
from cove.api.streaming import file_response
from cove.core.agent_streams import Upload
from cove.core.permissions import Permission
from cove.core.sandbox import Sandbox
from cove.errors import BadRequest
from cove.schemas.toolbox_files import UploadedFile

router = APIRouter(prefix="/sandbox", tags=["sandbox"])
toolbox_router = APIRouter(prefix="/files", tags=["toolbox"])
Signature = Annotated[str | None, Query(max_length=128)]
Expires = Annotated[str | None, Query(max_length=20)]


@router.get("/{sandbox_id}/signing-key")
async def get_signing_key(sandbox_id: str, who: PrincipalDep, services: ServicesDep) -> str:
    """The sandbox's key for signing file URLs (made on first use)."""
    sandbox = services.lifecycle.get(who.organization_id, sandbox_id)
    return services.signer.key(sandbox.id)


@router.post("/{sandbox_id}/signing-key/rotate")
async def rotate_signing_key(sandbox_id: str, who: PrincipalDep, services: ServicesDep) -> str:
    """Replace the sandbox's signing key: every URL signed before stops working."""
    sandbox = services.lifecycle.get(who.organization_id, sandbox_id)
    return services.signer.rotate(sandbox.id)


@toolbox_router.get("/download", response_class=StreamingResponse, responses={200: {
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def download_file(
    sandbox_id: str, path: SandboxPathQuery, request: Request, services: ServicesDep,
    expires: Expires = None, signature: Signature = None,
) -> StreamingResponse:  # fmt: skip
    """One file's bytes: with a signed URL's ``expires`` and ``signature`` (no API key),
    or with the API key."""
    sandbox = _sandbox(services, request, sandbox_id, "GET", path, expires, signature)
    events = services.toolbox.agent(sandbox).read_files([path])
    return await file_response(events, path.rsplit("/", 1)[-1])


@toolbox_router.post("/upload-v2", responses={400: {"description": "invalid input"}},
                     openapi_extra={"requestBody": {"content": {
                         "multipart/form-data": {"schema": {"type": "object", "properties": {
                             "file": {"type": "string", "format": "binary"}}}},
                         "application/octet-stream": {"schema": {
                             "type": "string", "format": "binary"}}}}})
async def upload_file(
    sandbox_id: str, path: SandboxPathQuery, request: Request, services: ServicesDep,
    expires: Expires = None, signature: Signature = None,
) -> UploadedFile:  # fmt: skip
    """Write one file at ``path``: the multipart field ``file``, or the raw body (with a
    signed URL's ``expires`` and ``signature``, or the API key)."""
    sandbox = _sandbox(services, request, sandbox_id, "POST", path, expires, signature)
    content_type = request.headers.get("content-type", "")
    parser = None
    if content_type.startswith("multipart/"):
        try:
            parser = multipart.UploadParser(content_type)
        except ValueError as exc:
            raise BadRequest(f"invalid multipart form: {exc}") from exc
    upload = await services.toolbox.agent(sandbox).write_file(path)
    try:
        if parser is None:
            async for chunk in request.stream():
                await upload.send(chunk)
        else:
            await _send_file_part(request, parser, upload)
        return UploadedFile(path=path, bytes=await upload.finish())
    except ValueError as exc:
        raise BadRequest(f"invalid multipart form: {exc}") from exc
    except ClientDisconnect:
        raise BadRequest("the upload was cut short") from None
    finally:
        await upload.abort()  # nothing once finished


async def _send_file_part(request: Request, parser: multipart.UploadParser,
                          upload: Upload) -> None:  # fmt: skip
    """Stream the first part named ``file`` to ``upload`` (ValueError: no such part)."""
    state = "before"  # then "in", then "done"
    async for chunk in request.stream():
        for kind, value in parser.feed(chunk):
            if kind == "part" and state == "before" and value == "file":
                state = "in"
            elif kind == "data" and state == "in" and isinstance(value, bytes):
                await upload.send(value)
            elif kind == "end" and state == "in":
                state = "done"
    parser.finish()
    if state != "done":
        raise ValueError("no part named file")


def _sandbox(services: ServicesDep, request: Request, sandbox_id: str, method: str,
             path: str, expires: str | None, signature: str | None) -> Sandbox:  # fmt: skip
    """The started sandbox a transfer is allowed on (checked signature or API key)."""
    if signature is None and expires is None:
        who = services.auth.authenticate(request.headers.get("authorization"))
        who.require(Permission.WRITE_SANDBOXES)  # as every toolbox call
        return services.toolbox.sandbox(who.organization_id, sandbox_id)
    services.signer.check(sandbox_id, method, path, expires, signature)
    found = services.lifecycle.store.get_by_id(sandbox_id)
    return services.toolbox.sandbox(found.organization_id, found.id)
