"""The organization schema family (``/api/organizations``), as Daytona's client
reads it: every field it requires is present; those Cove has no notion of hold
neutral values (never suspended, no rate limits, no SSO)."""

from __future__ import annotations

from typing import Any

from cove.schemas.base import WireModel


class OrganizationPublic(WireModel):
    """Daytona's ``Organization``. ``suspendedAt``/``suspendedUntil`` are required
    by the client even when ``suspended`` is false: they repeat ``createdAt``."""

    id: str
    name: str
    created_by: str
    personal: bool
    created_at: str
    updated_at: str
    suspended: bool
    suspended_at: str
    suspension_reason: str
    suspended_until: str
    suspension_cleanup_grace_period_hours: int
    max_cpu_per_sandbox: int
    max_memory_per_sandbox: int
    max_disk_per_sandbox: int
    secret_quota: int
    max_secrets_per_sandbox: int
    snapshot_deactivation_timeout_minutes: int
    default_queue_timeout: int | None
    sandbox_limited_network_egress: bool
    preview_warning_enabled: bool
    sso_enabled: bool
    scim_enabled: bool
    authenticated_rate_limit: int | None
    sandbox_create_rate_limit: int | None
    sandbox_lifecycle_rate_limit: int | None
    experimental_config: dict[str, Any]
    otel_config: dict[str, Any] | None
    authenticated_rate_limit_ttl_seconds: int | None
    sandbox_create_rate_limit_ttl_seconds: int | None
    sandbox_lifecycle_rate_limit_ttl_seconds: int | None


class OrganizationUserPublic(WireModel):
    """Daytona's ``OrganizationUser``: in Cove, one of the organization's API keys
    (``userId`` its id, ``name`` its name; ``owner`` when it holds every permission,
    else ``member``; no email, no roles)."""

    user_id: str
    organization_id: str
    name: str
    email: str
    role: str
    assigned_roles: list[dict[str, Any]]
    created_at: str
    updated_at: str
