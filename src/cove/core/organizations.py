"""Organizations as their keys see them (``/api/organizations``).

A key belongs to one organization and sees only that one: another organization's id
is "not found", whether it exists or not. Organizations are made by the operator
(``cove keys create --org NAME`` on the server's host), never through the API.
"""

from __future__ import annotations

from typing import NoReturn

from cove.core.auth import Principal
from cove.core.keys import ApiKey, Organization
from cove.core.permissions import Permission
from cove.core.ports import KeyStore
from cove.errors import Forbidden, NotFound


class OrganizationService:
    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def mine(self, who: Principal) -> list[Organization]:
        """The caller's organization (a key belongs to exactly one)."""
        return [self.get(who, who.organization_id)]

    def get(self, who: Principal, organization_id: str) -> Organization:
        """Raises :class:`NotFound` for any organization but the caller's."""
        found = self.keys.organization(organization_id)
        if found is None or organization_id != who.organization_id:
            raise NotFound("Organization not found")
        return found

    def members(self, who: Principal, organization_id: str) -> list[ApiKey]:
        """The organization's members: its keys (Cove has no user accounts)."""
        self.get(who, organization_id)
        who.require(Permission.MANAGE_API_KEYS)
        return self.keys.list_keys(organization_id)

    def create(self, who: Principal) -> NoReturn:
        """Always refused: organizations are the operator's to make."""
        del who
        raise Forbidden("Organizations are created by the operator on the server's host "
                        "(`cove keys create --org NAME` makes one with its first key)")
