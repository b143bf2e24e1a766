"""API keys: who is calling, and on behalf of which organization."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cove.core.config import Settings
from cove.core.ports import KeyStore
from cove.errors import Unauthorized

DEFAULT_ORGANIZATION = "default"


@dataclass(frozen=True)
class Principal:
    organization_id: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "cove_" + secrets.token_urlsafe(32)


class AuthService:
    """Checks bearer keys. Only hashes are stored; ``COVE_API_KEY`` is never written."""

    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        self._env_key = settings.api_key
        self._keys = keys
        self.default_organization_id = keys.ensure_organization(DEFAULT_ORGANIZATION)

    def bootstrap(self) -> str | None:
        """On a first start without ``COVE_API_KEY``, create an admin key and return it
        (to be printed once). Returns None when nothing was created."""
        if self._env_key or self._keys.count_keys():
            return None
        return self.create_key(DEFAULT_ORGANIZATION, name="admin")

    def create_key(self, organization: str, *, name: str = "key") -> str:
        org_id = self._keys.ensure_organization(organization)
        key = new_key()
        self._keys.add_key(organization_id=org_id, name=name, key_hash=hash_key(key))
        return key

    def authenticate(self, authorization: str | None) -> Principal:
        """Resolve an ``Authorization: Bearer <key>`` header.

        Raises:
            Unauthorized: no key, or a key nobody issued.
        """
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
        if self._env_key and hmac.compare_digest(key, self._env_key):
            return Principal(self.default_organization_id)
        org = self._keys.organization_for(hash_key(key))
        if org is None:
            raise Unauthorized("Invalid API key")
        return Principal(org)
