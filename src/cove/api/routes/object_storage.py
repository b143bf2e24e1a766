"""Object storage for build contexts: ``GET /api/object-storage/push-access``
(Daytona's route) and the S3 subset the SDK's uploader speaks, under
``/api/object-storage/s3/<bucket>/<key>`` (see :mod:`cove.core.contexts`).

The S3 routes take no API key: every request must be SigV4-signed with
push-access credentials, and answers are S3's (XML errors), not Cove's envelope.
"""

from __future__ import annotations

import asyncio
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from pathlib import Path

from fastapi import APIRouter, Request, Response

from cove.api.deps import PrincipalDep, ServicesDep
from cove.core.contexts import (
    BUCKET,
    REGION,
    SHARE,
    AccessDenied,
    ContextStore,
    NoSuchKey,
    TooLarge,
)
from cove.errors import RuntimeBackendError
from cove.schemas.object_storage import StorageAccess

router = APIRouter(prefix="/object-storage", tags=["object-storage"])
S3 = "/s3/{bucket}/{key:path}"
MAX_LIST = 2 * 1024 * 1024  # bytes of a CompleteMultipartUpload body (10,000 parts)


@router.get("/push-access")
async def push_access(who: PrincipalDep, services: ServicesDep) -> StorageAccess:
    """Short-lived credentials that may upload the organization's build contexts."""
    grant = services.contexts.push_access(who.organization_id, who.key_id)
    base = services.settings.base_url
    return StorageAccess(
        access_key=grant.access_key, secret=grant.secret, session_token=grant.session_token,
        storage_url=f"{base}/api/object-storage/s3", organization_id=grant.organization_id,
        bucket=BUCKET, region=REGION,
    )  # fmt: skip


def _error(status: int, code: str, message: str) -> Response:
    root = ET.Element("Error")
    ET.SubElement(root, "Code").text = code
    ET.SubElement(root, "Message").text = message
    return Response(ET.tostring(root, xml_declaration=True, encoding="utf-8"), status,
                    media_type="application/xml")  # fmt: skip


def _xml(tag: str, **fields: str) -> Response:
    root = ET.Element(tag)
    for name, value in fields.items():
        ET.SubElement(root, name).text = value
    return Response(ET.tostring(root, xml_declaration=True, encoding="utf-8"),
                    media_type="application/xml")  # fmt: skip


async def _guarded(request: Request, bucket: str, key: str, services: ServicesDep) -> Response:
    store: ContextStore = services.contexts
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        org, declared = store.authorize(request.method, request.scope.get("raw_path", b"").decode()
                                        .split("?")[0], request.url.query, headers)  # fmt: skip
        if bucket != BUCKET:
            raise AccessDenied(f"the bucket is {BUCKET}")
        return await _dispatch(request, store, org, key, declared)
    except AccessDenied as exc:
        return _error(403, "AccessDenied", str(exc))
    except NoSuchKey as exc:
        return _error(404, "NoSuchKey" if request.method != "HEAD" else "NotFound", str(exc))
    except TooLarge as exc:
        return _error(400, "EntityTooLarge", str(exc))
    except ValueError as exc:
        return _error(400, "InvalidRequest", str(exc))
    except RuntimeBackendError as exc:  # the shared store failed
        return _error(503, "ServiceUnavailable", exc.message)


async def _dispatch(
    request: Request, store: ContextStore, org: str, key: str, declared: str
) -> Response:
    q = request.query_params
    if request.method == "HEAD":
        st = await asyncio.to_thread(store.head, org, key)
        modified = formatdate(st.modified, usegmt=True)
        return Response(
            headers={"Content-Length": str(st.size), "ETag": st.etag, "Last-Modified": modified}
        )
    if request.method == "POST" and "uploads" in q:
        upload_id = await asyncio.to_thread(store.start_upload, org, key)
        return _xml("InitiateMultipartUploadResult", Bucket=BUCKET, Key=key, UploadId=upload_id)
    if "uploadId" not in q:
        if request.method != "PUT":
            raise AccessDenied(f"{request.method} is not allowed here")
        tmp = store.new_part_file(store.object_path(org, key))
        async with _room(request, store, org, store.max_bytes) as room:
            etag = await _receive(request, tmp, declared, room, store.max_bytes)
            await asyncio.to_thread(store.put, org, key, tmp)
        return Response(headers={"ETag": etag})
    upload_id = q["uploadId"]
    if request.method == "PUT":
        number = int(q.get("partNumber", "0"))
        tmp, most = await asyncio.to_thread(store.receive_part, org, key, upload_id, number)
        async with _room(request, store, org, most) as room:
            etag = await _receive(request, tmp, declared, room, most)
            await asyncio.to_thread(store.add_part, org, key, upload_id, number, tmp)
        return Response(headers={"ETag": etag})
    if request.method == "DELETE":
        await asyncio.to_thread(store.abort_upload, org, key, upload_id)
        return Response(status_code=204)
    numbers = _part_numbers(await _small_body(request))
    st = await asyncio.to_thread(store.complete_upload, org, key, upload_id, numbers)
    return _xml("CompleteMultipartUploadResult", Bucket=BUCKET, Key=key, ETag=st.etag)


@asynccontextmanager
async def _room(request: Request, store: ContextStore, org: str, most: int) -> AsyncIterator[int]:
    """Room in the organization's share for the request's body (at most ``most``
    bytes, fewer if its length says so), held while it comes in and is stored."""
    announced = request.headers.get("x-amz-decoded-content-length",
                                    request.headers.get("content-length", ""))  # fmt: skip
    wanted = min(most, int(announced)) if announced.isdigit() else most
    room = await asyncio.to_thread(store.reserve, org, wanted)
    try:
        yield room
    finally:
        store.release(org, room)


async def _receive(request: Request, tmp: Path, declared: str, limit: int,
                   max_bytes: int) -> str:  # fmt: skip
    """Stream the body to ``tmp``, checking its size and declared SHA-256; its ETag."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    try:
        with tmp.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(
                        f"a context may be at most {limit} bytes" if limit >= max_bytes else
                        f"the organization's build contexts have room for {limit} more bytes "
                        f"here{SHARE}")  # fmt: skip
                sha.update(chunk)
                md5.update(chunk)
                out.write(chunk)
        if declared != "UNSIGNED-PAYLOAD" and sha.hexdigest() != declared:
            raise AccessDenied("the body does not match x-amz-content-sha256")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return f'"{md5.hexdigest()}"'


async def _small_body(request: Request) -> bytes:
    """A request's body of at most :data:`MAX_LIST` bytes (a list of parts)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LIST:
            raise ValueError("the list of parts is too long")
    return bytes(body)


def _part_numbers(body: bytes) -> list[int]:
    """The part numbers of a CompleteMultipartUpload body, in order."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - the body is small and signed; no entities
    except ET.ParseError as exc:
        raise ValueError("malformed CompleteMultipartUpload body") from exc
    numbers = [int(el.text or "0") for el in root.iter() if el.tag.endswith("PartNumber")]
    if numbers != sorted(set(numbers)):
        raise ValueError("parts must be listed in ascending order")
    return numbers


@router.api_route(S3, methods=["HEAD", "PUT", "POST", "DELETE"], include_in_schema=False)
async def s3_object(bucket: str, key: str, request: Request, services: ServicesDep) -> Response:
    """An S3 object request (HEAD, PUT, multipart upload)."""
    return await _guarded(request, bucket, key, services)
