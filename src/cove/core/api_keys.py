"""Managing an organization's API keys through the API (``/api/api-keys``).

Cove has no user accounts: an organization's members are its keys. A key holding
``manage:api_keys`` lists, creates and deletes the keys of its organization, within
two rules that keep a key from raising itself: a new key holds no permission its
creator lacks and expires no later than its creator; a key is deleted only by one
holding every permission it holds. An organization holds at most
:data:`MAX_API_KEYS` keys (each is a row kept until deleted, and the list answers
them all at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cove.core.auth import AuthService, Principal
from cove.core.coordination import Coordination
from cove.core.keys import ApiKey, mask
from cove.core.permissions import Permission, parse, require_all
from cove.core.sandbox import utcnow
from cove.errors import BadRequest, Conflict, Forbidden, NotFound, QuotaExceeded

ENV_KEY_ID = "COVE_API_KEY"  # the id and name shown for the key set in COVE_API_KEY
MAX_API_KEYS = 1000  # per organization (the operator's ``cove keys create`` is not held to it)


class ApiKeyService:
    """Args:
        coordination: names a key's check and insert are serialized under (per
            organization, across replicas: two same-named keys are never both made).
    """

    def __init__(self, auth: AuthService, coordination: Coordination) -> None:
        self.auth, self.coordination = auth, coordination

    async def create(self, who: Principal, *, name: str, permissions: Sequence[str],
               expires_at: datetime | None) -> tuple[ApiKey, str]:  # fmt: skip
        """A new key of the caller's organization and its value (shown only now).

        Raises:
            Forbidden: the caller lacks ``manage:api_keys`` or a permission it assigns,
                or the new key would outlive the caller.
            BadRequest: an unknown permission, an expiry in the past.
            QuotaExceeded: the organization has :data:`MAX_API_KEYS` keys.
            Conflict: the organization has a key of that name.
        """
        who.require(Permission.MANAGE_API_KEYS)
        wanted = parse(permissions)
        require_all(who.permissions, wanted, "assigning")
        expires_at = _utc(expires_at)
        if expires_at is not None and expires_at <= utcnow():
            raise BadRequest("expiresAt must be in the future")
        limit = who.key.expires_at if who.key else None
        if limit is not None and (expires_at is None or expires_at > limit):
            raise Forbidden(f"This API key expires at {limit.isoformat()}: the keys it "
                            "creates must expire no later (set expiresAt)")  # fmt: skip
        async with self.coordination.lock("api-key-names", who.organization_id):
            keys = self.auth.keys.list_keys(who.organization_id)
            if any(k.name == name for k in keys):
                raise Conflict("API key with this name already exists")
            if len(keys) >= MAX_API_KEYS:
                raise QuotaExceeded(f"an organization has at most {MAX_API_KEYS} API keys")
            return self.auth.issue(who.organization_id, name=name, permissions=wanted,
                                   expires_at=expires_at,
                                   created_by=who.key_id)  # fmt: skip

    def list(self, who: Principal) -> list[ApiKey]:
        """The organization's keys, the most recently used first (never their values)."""
        who.require(Permission.MANAGE_API_KEYS)
        found = self.auth.keys.list_keys(who.organization_id)
        never = datetime.min.replace(tzinfo=UTC)
        return sorted(found, key=lambda k: (k.last_used_at or never, k.created_at), reverse=True)

    def current(self, who: Principal) -> ApiKey:
        """The caller's own key (needs no permission)."""
        if who.key is not None:
            return who.key
        return ApiKey(id=ENV_KEY_ID, organization_id=who.organization_id, name=ENV_KEY_ID,
                      permissions=None, mask=mask(""), created_at=self.auth.started_at)  # fmt: skip

    def get(self, who: Principal, name: str, key_id: str | None = None) -> ApiKey:
        """The organization's key called ``name`` (and with id ``key_id`` if given).

        Raises:
            NotFound: no such key in the caller's organization.
            Conflict: several keys have that name (made by the operator): give the id.
        """
        who.require(Permission.MANAGE_API_KEYS)
        found = [k for k in self.auth.keys.list_keys(who.organization_id)
                 if k.name == name and key_id in (None, k.id)]  # fmt: skip
        if not found:
            raise NotFound("API key not found")
        if len(found) > 1:
            raise Conflict(f"{len(found)} API keys are named {name!r}: delete one by its "
                           "user id (DELETE /api/api-keys/{userId}/{name})")  # fmt: skip
        return found[0]

    def delete(self, who: Principal, name: str, key_id: str | None = None) -> None:
        """Revoke a key of the caller's organization (at once in this server).

        Raises:
            Forbidden: the key holds a permission the caller lacks.
            NotFound, Conflict: as :meth:`get`.
        """
        key = self.get(who, name, key_id)
        require_all(who.permissions, key.held, "deleting this API key")
        self.auth.forget(key)


def _utc(value: datetime | None) -> datetime | None:
    """A time without a zone is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
