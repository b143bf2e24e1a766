"""Volume endpoints (``/api/volumes``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from cove.api.deps import PrincipalDep, VolumesDep
from cove.api.dto import iso
from cove.core.volumes import Volume
from cove.schemas.volume import VolumeCreate, VolumePublic

router = APIRouter(prefix="/volumes", tags=["volumes"])


def _public(v: Volume) -> VolumePublic:
    return VolumePublic(
        id=v.id, name=v.name, organization_id=v.organization_id, state=v.state,
        created_at=iso(v.created_at), updated_at=iso(v.updated_at),
        last_used_at=iso(v.last_used_at) if v.last_used_at else None,
    )  # fmt: skip


@router.get("")
async def list_volumes(who: PrincipalDep, volumes: VolumesDep) -> list[VolumePublic]:
    """List the organization's volumes."""
    return [_public(v) for v in volumes.list(who.organization_id)]


@router.post("")
async def create_volume(body: VolumeCreate, who: PrincipalDep, volumes: VolumesDep) -> VolumePublic:
    """Create a volume."""
    return _public(await volumes.create(who.organization_id, body.name))


@router.get("/by-name/{name}")
async def get_volume_by_name(name: str, who: PrincipalDep, volumes: VolumesDep) -> VolumePublic:
    """Get a volume by name."""
    return _public(volumes.get(who.organization_id, name))


@router.get("/{volume_id}")
async def get_volume(volume_id: str, who: PrincipalDep, volumes: VolumesDep) -> VolumePublic:
    """Get a volume by id."""
    return _public(volumes.get(who.organization_id, volume_id))


@router.delete("/{volume_id}", response_class=Response)
async def delete_volume(volume_id: str, who: PrincipalDep, volumes: VolumesDep) -> Response:
    """Delete a volume and its data (409 while a sandbox mounts it)."""
    await volumes.delete(who.organization_id, volume_id)
    return Response(status_code=200)
