"""Registry credential endpoints (``/api/docker-registry``), per organization."""

from __future__ import annotations

from fastapi import APIRouter, Response

from cove.api.deps import PrincipalDep, RegistriesDep
from cove.api.dto import iso
from cove.core.registries import DockerRegistry
from cove.schemas.registry import RegistryCreate, RegistryPublic, RegistryUpdate

router = APIRouter(prefix="/docker-registry", tags=["docker-registry"])


def _public(r: DockerRegistry) -> RegistryPublic:
    return RegistryPublic(
        id=r.id, name=r.name, url=r.url, username=r.username, project=r.project,
        is_default=r.is_default, created_at=iso(r.created_at), updated_at=iso(r.updated_at),
    )  # fmt: skip


@router.post("", status_code=201)
async def create_registry(
    body: RegistryCreate, who: PrincipalDep, registries: RegistriesDep
) -> RegistryPublic:
    """Store credentials for a registry; pulls from it use them."""
    return _public(registries.create(who.organization_id, **body.model_dump()))


@router.get("")
async def list_registries(who: PrincipalDep, registries: RegistriesDep) -> list[RegistryPublic]:
    """The organization's registries."""
    return [_public(r) for r in registries.list(who.organization_id)]


@router.get("/{registry_id}")
async def get_registry(
    registry_id: str, who: PrincipalDep, registries: RegistriesDep
) -> RegistryPublic:
    """One of the organization's registries."""
    return _public(registries.get(who.organization_id, registry_id))


@router.patch("/{registry_id}")
async def update_registry(
    registry_id: str, body: RegistryUpdate, who: PrincipalDep, registries: RegistriesDep
) -> RegistryPublic:
    """Change a registry (its password only when one is sent)."""
    return _public(registries.update(who.organization_id, registry_id, **body.model_dump()))


@router.post("/{registry_id}/set-default")
async def set_default_registry(
    registry_id: str, who: PrincipalDep, registries: RegistriesDep
) -> RegistryPublic:
    """Prefer this registry's credentials when several match an image."""
    return _public(registries.set_default(who.organization_id, registry_id))


@router.delete("/{registry_id}", status_code=204)
async def delete_registry(
    registry_id: str, who: PrincipalDep, registries: RegistriesDep
) -> Response:
    """Delete a registry's credentials."""
    registries.delete(who.organization_id, registry_id)
    return Response(status_code=204)
