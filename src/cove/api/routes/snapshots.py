"""Snapshot endpoints (``/api/snapshots``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from cove.api.deps import ImagesDep, PrincipalDep, ServicesDep, SnapshotsDep
from cove.api.dto import iso
from cove.api.streaming import BUILD_LOG, build_log_response
from cove.core.snapshots import Snapshot
from cove.errors import BadRequest
from cove.schemas.sandbox import Url
from cove.schemas.snapshot import SnapshotCreate, SnapshotPublic, SnapshotsPublic

router = APIRouter(prefix="/snapshots", tags=["snapshots"])
GIB = 1024**3


def snapshot_public(s: Snapshot) -> SnapshotPublic:
    return SnapshotPublic(
        id=s.id, organization_id=s.organization_id, general=s.general, name=s.name,
        image_name=s.image_name, state=s.state,
        size=round(s.size / GIB, 3) if s.size is not None else None,
        cpu=s.cpu, mem=s.memory, disk=s.disk, error_reason=s.error_reason,
        created_at=iso(s.created_at), updated_at=iso(s.updated_at),
        last_used_at=iso(s.last_used_at) if s.last_used_at else None,
        source_sandbox_id=s.source_sandbox_id,
        entrypoint=_entrypoint(s),
    )  # fmt: skip


def _entrypoint(s: Snapshot) -> list[str] | None:
    """A pulled image's Entrypoint, else its Cmd (None for other snapshots)."""
    config = s.image_config or {}
    words = config.get("entrypoint") or config.get("cmd")
    return [str(w) for w in words] if words else None


@router.get("")
async def list_snapshots(
    who: PrincipalDep,
    snapshots: SnapshotsDep,
    page: Annotated[int, Query(ge=1, le=2**31 - 1)] = 1,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> SnapshotsPublic:
    """List the snapshots the organization can use."""
    items, total, pages = snapshots.page(who.organization_id, page, limit)
    return SnapshotsPublic(
        items=[snapshot_public(s) for s in items], total=total, page=page, total_pages=pages
    )


@router.post("")
async def create_snapshot(
    body: SnapshotCreate, who: PrincipalDep, images: ImagesDep, services: ServicesDep
) -> SnapshotPublic:
    """Make a snapshot of an image: pulled from its registry (``pulling`` until
    ``active`` or ``error``), a local OCI layout (imported at once), or built from a
    Dockerfile (``buildInfo``: ``building`` until ``active`` or ``build_failed``)."""
    if body.build_info is not None:
        info = body.build_info
        snap = await services.snapshot_builds.create(
            who.organization_id, body.name, info.dockerfile_content, info.context_hashes or ()
        )
        return snapshot_public(snap)
    if not body.image_name:
        raise BadRequest("imageName or buildInfo is required")
    snap = await images.create_snapshot(who.organization_id, body.name, body.image_name,
                                        body.entrypoint)  # fmt: skip
    return snapshot_public(snap)


@router.get("/{id_or_name}/build-logs-url")
async def build_logs_url(
    id_or_name: str, request: Request, who: PrincipalDep, services: ServicesDep
) -> Url:
    """Where the build log of a snapshot built from a Dockerfile is streamed."""
    snap = services.snapshots.get(who.organization_id, id_or_name)
    services.snapshot_builds.build_log(who.organization_id, snap.id)
    return Url(url=str(request.url_for("stream_snapshot_build_logs", id_or_name=snap.id)))


@router.get("/{id_or_name}/build-logs", name="stream_snapshot_build_logs",
            response_class=StreamingResponse,
            responses=BUILD_LOG)
async def stream_build_logs(
    id_or_name: str, who: PrincipalDep, services: ServicesDep, follow: bool = False
) -> StreamingResponse:
    """The build log as text; with ``follow``, streamed until the build ends."""
    out = services.snapshot_builds.build_log(who.organization_id, id_or_name)
    return build_log_response(out, follow)


@router.get("/{id_or_name}")
async def get_snapshot(
    id_or_name: str, who: PrincipalDep, snapshots: SnapshotsDep
) -> SnapshotPublic:
    """Get a snapshot by id or name."""
    return snapshot_public(snapshots.get(who.organization_id, id_or_name))


@router.delete("/{id_or_name}", response_class=Response)
async def delete_snapshot(id_or_name: str, who: PrincipalDep, snapshots: SnapshotsDep) -> Response:
    """Delete a snapshot (409 while sandboxes use it)."""
    await snapshots.delete(who.organization_id, id_or_name)
    return Response(status_code=200)


@router.post("/{id_or_name}/activate")
async def activate_snapshot(
    id_or_name: str, who: PrincipalDep, snapshots: SnapshotsDep
) -> SnapshotPublic:
    """Activate a snapshot."""
    return snapshot_public(snapshots.activate(who.organization_id, id_or_name))
