"""API key endpoints (``/api/api-keys``): the value only in the answer to a create."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response

from cove.api.deps import PrincipalDep, ServicesDep
from cove.api.dto import iso
from cove.core.keys import ApiKey
from cove.core.permissions import ordered
from cove.schemas.api_key import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic

router = APIRouter(prefix="/api-keys", tags=["api-keys"])
Name = Annotated[str, Path(min_length=1, max_length=255)]
UserId = Annotated[str, Path(min_length=1, max_length=64)]


def key_public(key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        name=key.name, value=key.mask, created_at=iso(key.created_at),
        permissions=ordered(key.held), last_used_at=_iso(key.last_used_at),
        expires_at=_iso(key.expires_at), user_id=key.id, organization_id=key.organization_id,
    )  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


@router.post("", status_code=201)
async def create_api_key(body: ApiKeyCreate, who: PrincipalDep,
                         services: ServicesDep) -> ApiKeyCreated:  # fmt: skip
    """Create an API key; its value is in this answer only."""
    key, value = await services.api_keys.create(
        who, name=body.name, permissions=body.permissions, expires_at=body.expires_at)
    return ApiKeyCreated(name=key.name, value=value, created_at=iso(key.created_at),
                         permissions=ordered(key.held),
                         expires_at=_iso(key.expires_at))  # fmt: skip


@router.get("")
async def list_api_keys(who: PrincipalDep, services: ServicesDep) -> list[ApiKeyPublic]:
    """The organization's API keys, values masked."""
    return [key_public(k) for k in services.api_keys.list(who)]


@router.get("/current")
async def get_current_api_key(who: PrincipalDep, services: ServicesDep) -> ApiKeyPublic:
    """The calling key, value masked."""
    return key_public(services.api_keys.current(who))


@router.get("/{name}")
async def get_api_key(name: Name, who: PrincipalDep, services: ServicesDep) -> ApiKeyPublic:
    """One API key of the organization, by name, value masked."""
    return key_public(services.api_keys.get(who, name))


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_api_key(name: Name, who: PrincipalDep, services: ServicesDep) -> Response:
    """Revoke an API key of the organization, by name."""
    services.api_keys.delete(who, name)
    return Response(status_code=204)


@router.delete("/{user_id}/{name}", status_code=204, response_class=Response)
async def delete_user_api_key(user_id: UserId, name: Name, who: PrincipalDep,
                              services: ServicesDep) -> Response:  # fmt: skip
    """Revoke an API key by its user id (in Cove, the key's own id) and name."""
    services.api_keys.delete(who, name, key_id=user_id)
    return Response(status_code=204)
