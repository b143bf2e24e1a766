"""Which permission each route needs of the caller's API key (as Daytona's
``@RequiredOrganizationResourcePermissions``), checked once per request where the
key is resolved (:func:`cove.api.deps.get_principal`).

Routes are named by their endpoint (``module.function`` under
``cove.api.routes``). Every toolbox route needs ``write:sandboxes`` (as Daytona's
toolbox controller). A route missing from the table is open only to keys holding
every permission (fail closed); ``tests/unit/api/test_scopes.py`` keeps the table
complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Scope

from cove.core.auth import Principal
from cove.core.permissions import ALL, require_all
from cove.core.permissions import Permission as P

ROUTES = "cove.api.routes."
TOOLBOX = ROUTES + "toolbox_"
EVERY = object()  # a route missing from the table: every permission

# endpoint -> the permission it needs (None: any valid key of the organization)
NEEDS: dict[str, P | None] = {
    # sandboxes: reading needs nothing, deleting delete:sandboxes, the rest write
    "sandboxes.list_sandboxes": None,
    "sandboxes.get_sandbox": None,
    "sandboxes.toolbox_proxy_url": None,
    "sandboxes.build_logs_url": None,
    "sandboxes.stream_build_logs": None,
    "sandboxes.update_last_activity": None,
    "sandboxes.create_sandbox": P.WRITE_SANDBOXES,
    "sandboxes.delete_sandbox": P.DELETE_SANDBOXES,
    "sandboxes.start_sandbox": P.WRITE_SANDBOXES,
    "sandboxes.stop_sandbox": P.WRITE_SANDBOXES,
    "sandboxes.pause_sandbox": P.WRITE_SANDBOXES,
    "sandboxes.fork_sandbox": P.WRITE_SANDBOXES,
    "sandboxes.snapshot_sandbox": P.WRITE_SANDBOXES,
    "sandboxes.archive_sandbox": P.WRITE_SANDBOXES,
    "sandboxes.recover_sandbox": P.WRITE_SANDBOXES,
    "sandboxes.resize_sandbox": P.WRITE_SANDBOXES,
    "sandboxes.replace_labels": P.WRITE_SANDBOXES,
    "sandboxes.set_public": P.WRITE_SANDBOXES,
    "sandboxes.set_interval": P.WRITE_SANDBOXES,
    "sandbox_extras.update_sandbox_secrets": P.WRITE_SANDBOXES,
    "sandbox_extras.sandbox_metrics": None,
    "sandbox_network.update_network_settings": P.WRITE_SANDBOXES,
    "previews.get_preview_url": None,
    "previews.get_signed_preview_url": None,
    "previews.expire_signed_preview_url": None,
    # the signing key signs toolbox file URLs: as much as a toolbox call
    "signed_files.get_signing_key": P.WRITE_SANDBOXES,
    "signed_files.rotate_signing_key": P.WRITE_SANDBOXES,
    "ssh_access.validate_ssh_access": None,
    "ssh_access.create_ssh_access": P.WRITE_SANDBOXES,
    "ssh_access.revoke_ssh_access": P.WRITE_SANDBOXES,
    "warm_pools.list_warm_pools": None,
    "warm_pools.get_warm_pool": None,
    "warm_pools.create_warm_pool": P.WRITE_SANDBOXES,
    "warm_pools.update_warm_pool": P.WRITE_SANDBOXES,
    "warm_pools.delete_warm_pool": P.WRITE_SANDBOXES,
    # snapshots
    "snapshots.list_snapshots": None,
    "snapshots.get_snapshot": None,
    "snapshots.build_logs_url": None,
    "snapshots.stream_build_logs": None,
    "snapshots.create_snapshot": P.WRITE_SNAPSHOTS,
    "snapshots.activate_snapshot": P.WRITE_SNAPSHOTS,
    "snapshots.delete_snapshot": P.DELETE_SNAPSHOTS,
    # upload credentials for build contexts (as Daytona: none; the build that uses
    # one needs write:sandboxes or write:snapshots)
    "object_storage.push_access": None,
    # volumes: even reading needs read:volumes (as on Daytona)
    "volumes.list_volumes": P.READ_VOLUMES,
    "volumes.get_volume": P.READ_VOLUMES,
    "volumes.get_volume_by_name": P.READ_VOLUMES,
    "volumes.create_volume": P.WRITE_VOLUMES,
    "volumes.delete_volume": P.DELETE_VOLUMES,
    # registries
    "docker_registry.list_registries": None,
    "docker_registry.get_registry": None,
    "docker_registry.create_registry": P.WRITE_REGISTRIES,
    "docker_registry.update_registry": P.WRITE_REGISTRIES,
    "docker_registry.set_default_registry": P.WRITE_REGISTRIES,
    "docker_registry.delete_registry": P.DELETE_REGISTRIES,
    # secrets: all of it
    "secrets.create_secret": P.MANAGE_SECRETS,
    "secrets.list_secrets": P.MANAGE_SECRETS,
    "secrets.get_secret": P.MANAGE_SECRETS,
    "secrets.update_secret": P.MANAGE_SECRETS,
    "secrets.delete_secret": P.MANAGE_SECRETS,
    # keys and organizations: the service checks manage:api_keys where it applies
    # (not for the caller's own key, its organization)
    "api_keys.create_api_key": None,
    "api_keys.list_api_keys": None,
    "api_keys.get_current_api_key": None,
    "api_keys.get_api_key": None,
    "api_keys.delete_api_key": None,
    "api_keys.delete_user_api_key": None,
    "organizations.list_organizations": None,
    "organizations.get_organization": None,
    "organizations.create_organization": None,
    "organizations.list_organization_users": None,
    # quotas and usage: any key of the organization (as Daytona's usage overview)
    "usage.get_organization_usage_overview": None,
    "usage.get_aggregated_usage": None,
    "usage.get_usage_per_sandbox": None,
    "usage.get_usage_chart": None,
    "usage.get_sandbox_usage_periods": None,
    "usage.get_sandbox_metrics": None,
}
_cache: dict[Callable[..., Any], Any] = {}


def needed(endpoint: Callable[..., Any] | None) -> P | None | object:
    """The permission ``endpoint`` needs, or :data:`EVERY`."""
    if endpoint is None:
        return EVERY
    try:
        return _cache[endpoint]
    except KeyError:
        found = _cache[endpoint] = _lookup(f"{endpoint.__module__}.{endpoint.__name__}")
        return found


def _lookup(name: str) -> P | None | object:
    if name.startswith(TOOLBOX):
        return P.WRITE_SANDBOXES
    return NEEDS.get(name.removeprefix(ROUTES), EVERY) if name.startswith(ROUTES) else EVERY


def check(who: Principal, scope: Scope) -> None:
    """Raises :class:`cove.errors.Forbidden` unless ``who`` may call the route of
    ``scope`` (the key set in ``COVE_API_KEY`` and operators' keys always may)."""
    if who.permissions is ALL:
        return
    route = scope.get("route")
    need = needed(getattr(route, "endpoint", None))
    if need is EVERY:
        require_all(who.permissions, set(P), "this route")
    elif need is not None:
        assert isinstance(need, P)
        who.require(need)
