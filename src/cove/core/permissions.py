"""What an API key may do: Daytona's organization resource permissions.

A key holds a set of them (``POST /api/api-keys {"permissions": [...]}``); each
route needs at most one (``cove.api.scopes``). A key made by the operator (the
first-start admin key, ``cove keys create`` on the server's host) or set in
``COVE_API_KEY`` holds all of them, also those a later version adds.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from cove.errors import BadRequest, Forbidden


class Permission(StrEnum):
    """Daytona's ``CreateApiKeyPermissionsEnum`` (the same strings, in its order)."""

    WRITE_REGISTRIES = "write:registries"
    DELETE_REGISTRIES = "delete:registries"
    WRITE_SNAPSHOTS = "write:snapshots"
    DELETE_SNAPSHOTS = "delete:snapshots"
    WRITE_SANDBOXES = "write:sandboxes"
    DELETE_SANDBOXES = "delete:sandboxes"
    READ_VOLUMES = "read:volumes"
    WRITE_VOLUMES = "write:volumes"
    DELETE_VOLUMES = "delete:volumes"
    WRITE_REGIONS = "write:regions"
    DELETE_REGIONS = "delete:regions"
    READ_RUNNERS = "read:runners"
    WRITE_RUNNERS = "write:runners"
    DELETE_RUNNERS = "delete:runners"
    READ_AUDIT_LOGS = "read:audit_logs"
    MANAGE_API_KEYS = "manage:api_keys"
    MANAGE_SECRETS = "manage:secrets"
    READ_LIMITS = "read:limits"
    MANAGE_SSO = "manage:sso"
    READ_BILLING = "read:billing"
    MANAGE_BILLING = "manage:billing"


ALL: frozenset[Permission] = frozenset(Permission)
ORDER = {p: n for n, p in enumerate(Permission)}


def parse(values: Iterable[str]) -> frozenset[Permission]:
    """The permissions named by ``values``.

    Raises:
        BadRequest: a value that is not one of Daytona's permissions.
    """
    unknown = [v for v in values if v not in Permission._value2member_map_]
    if unknown:
        raise BadRequest(f"unknown permission(s): {', '.join(unknown)}; valid: "
                         f"{', '.join(Permission)}")  # fmt: skip
    return frozenset(Permission(v) for v in values)


def ordered(permissions: Iterable[Permission]) -> list[str]:
    """``permissions`` as strings, in Daytona's order (stable output)."""
    return [str(p) for p in sorted(set(permissions), key=ORDER.__getitem__)]


def require(held: frozenset[Permission], needed: Permission | None) -> None:
    """Raise unless ``held`` includes ``needed`` (None: nothing needed).

    Raises:
        Forbidden: the permission is missing.
    """
    if needed is not None and needed not in held:
        raise Forbidden(f"This API key lacks the permission '{needed}' needed here")


def require_all(held: frozenset[Permission], wanted: Iterable[Permission], what: str) -> None:
    """Raise unless ``held`` includes every permission of ``wanted``.

    Raises:
        Forbidden: naming the missing permissions and ``what`` was refused.
    """
    missing = set(wanted) - held
    if missing:
        raise Forbidden(f"Insufficient permissions for {what}: {', '.join(ordered(missing))}")
