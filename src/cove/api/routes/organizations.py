"""Organization endpoints (``/api/organizations``): the caller's own organization
only; the rest of Daytona's organization routes (invitations, roles, regions, ...)
are not offered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from cove.api.deps import PrincipalDep, ServicesDep
from cove.api.dto import iso
from cove.core.config import Settings
from cove.core.keys import ApiKey, Organization
from cove.core.permissions import ALL
from cove.core.secrets import MAX_SECRETS
from cove.schemas.limits import MAX_ENV_VARS
from cove.schemas.organization import OrganizationPublic, OrganizationUserPublic

router = APIRouter(prefix="/organizations", tags=["organizations"])
OrganizationId = Annotated[str, Path(min_length=1, max_length=64)]
SNAPSHOT_DEACTIVATION_MINUTES = 20160  # Daytona's default; Cove never deactivates


def organization_public(org: Organization, settings: Settings) -> OrganizationPublic:
    created = iso(org.created_at)
    return OrganizationPublic(
        id=org.id, name=org.name, created_by="", personal=False, created_at=created,
        updated_at=created, suspended=False, suspended_at=created, suspension_reason="",
        suspended_until=created, suspension_cleanup_grace_period_hours=0,
        max_cpu_per_sandbox=settings.max_cpu, max_memory_per_sandbox=settings.max_memory,
        max_disk_per_sandbox=settings.max_disk, secret_quota=MAX_SECRETS,
        max_secrets_per_sandbox=MAX_ENV_VARS,
        snapshot_deactivation_timeout_minutes=SNAPSHOT_DEACTIVATION_MINUTES,
        default_queue_timeout=None, sandbox_limited_network_egress=False,
        preview_warning_enabled=False, sso_enabled=False, scim_enabled=False,
        authenticated_rate_limit=None, sandbox_create_rate_limit=None,
        sandbox_lifecycle_rate_limit=None, experimental_config={}, otel_config=None,
        authenticated_rate_limit_ttl_seconds=None, sandbox_create_rate_limit_ttl_seconds=None,
        sandbox_lifecycle_rate_limit_ttl_seconds=None,
    )  # fmt: skip


def member_public(key: ApiKey) -> OrganizationUserPublic:
    created = iso(key.created_at)
    return OrganizationUserPublic(
        user_id=key.id, organization_id=key.organization_id, name=key.name, email="",
        role="owner" if key.held == ALL else "member", assigned_roles=[],
        created_at=created, updated_at=created,
    )  # fmt: skip


@router.get("")
async def list_organizations(who: PrincipalDep, services: ServicesDep
                             ) -> list[OrganizationPublic]:  # fmt: skip
    """The caller's organization (a key belongs to one)."""
    return [organization_public(o, services.settings) for o in services.organizations.mine(who)]


@router.post("", status_code=201)
async def create_organization(who: PrincipalDep, services: ServicesDep) -> OrganizationPublic:
    """Refused (403): the operator makes organizations (``cove keys create --org``)."""
    services.organizations.create(who)


@router.get("/{organization_id}")
async def get_organization(organization_id: OrganizationId, who: PrincipalDep,
                           services: ServicesDep) -> OrganizationPublic:  # fmt: skip
    """The caller's organization; any other id is not found."""
    found = services.organizations.get(who, organization_id)
    return organization_public(found, services.settings)


@router.get("/{organization_id}/users")
async def list_organization_users(
    organization_id: OrganizationId, who: PrincipalDep, services: ServicesDep
) -> list[OrganizationUserPublic]:
    """The organization's members: in Cove, its API keys."""
    return [member_public(k) for k in services.organizations.members(who, organization_id)]
