"""Warm pool endpoints (``/api/warm-pools``): an organization's pools of started
sandboxes that its creates take over (see :mod:`cove.core.pool`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from cove.api.deps import PrincipalDep, ServicesDep
from cove.api.dto import iso
from cove.core.pool import WarmPool
from cove.core.warm_pools import WarmPoolService
from cove.schemas.warm_pool import WarmPoolCreate, WarmPoolPublic, WarmPoolUpdate

router = APIRouter(prefix="/warm-pools", tags=["warm-pools"])


def get_warm_pools(services: ServicesDep) -> WarmPoolService:
    return services.warm_pools


WarmPoolsDep = Annotated[WarmPoolService, Depends(get_warm_pools)]


def _public(found: tuple[WarmPool, int]) -> WarmPoolPublic:
    pool, ready = found
    return WarmPoolPublic(
        id=pool.id, organization_id=pool.organization_id, snapshot=pool.snapshot,
        target=pool.target, pool=pool.size, current_size=ready, cpu=pool.resources.cpu,
        mem=pool.resources.memory, disk=pool.resources.disk, os_user=pool.user, env={},
        error_reason=pool.error_reason, created_at=iso(pool.created_at),
        updated_at=iso(pool.updated_at),
    )  # fmt: skip


@router.get("")
async def list_warm_pools(who: PrincipalDep, pools: WarmPoolsDep) -> list[WarmPoolPublic]:
    """List the organization's warm pools."""
    return [_public(found) for found in pools.list(who.organization_id)]


@router.post("", status_code=201)
async def create_warm_pool(body: WarmPoolCreate, who: PrincipalDep,
                           pools: WarmPoolsDep) -> WarmPoolPublic:  # fmt: skip
    """Create a warm pool (409 when one of that snapshot and target exists)."""
    return _public(pools.create(who.organization_id, body.snapshot, body.pool, body.target))


@router.get("/{pool_id}")
async def get_warm_pool(pool_id: str, who: PrincipalDep, pools: WarmPoolsDep) -> WarmPoolPublic:
    """Get one of the organization's warm pools."""
    return _public(pools.get(who.organization_id, pool_id))


@router.patch("/{pool_id}")
async def update_warm_pool(pool_id: str, body: WarmPoolUpdate, who: PrincipalDep,
                           pools: WarmPoolsDep) -> WarmPoolPublic:  # fmt: skip
    """Set a warm pool's size (0 drains it)."""
    return _public(pools.update(who.organization_id, pool_id, body.pool))


@router.delete("/{pool_id}", response_class=Response, status_code=204)
async def delete_warm_pool(pool_id: str, who: PrincipalDep, pools: WarmPoolsDep) -> Response:
    """Delete a warm pool; its waiting sandboxes are destroyed."""
    pools.delete(who.organization_id, pool_id)
    return Response(status_code=204)
