"""API keys: who is calling, and on behalf of which organization."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cove.core.config import Settings
from cove.core.ports import KeyStore
from cove.errors import Unauthorized

DEFAULT_ORGANIZATION = "default"
CACHE_ENTRIES = 10_000  # keys remembered at most (all are forgotten when it is full)


@dataclass(frozen=True)
class Principal:
    organization_id: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "cove_" + secrets.token_urlsafe(32)


class AuthService:
    """Checks bearer keys. Only hashes are stored; ``COVE_API_KEY`` is never written.

    A key found in the database is trusted for ``COVE_AUTH_CACHE_SECONDS`` before the
    database is asked again (a toolbox call should not cost a query), so a key
    revoked elsewhere (``cove keys revoke``, another process) stops working within
    that time, one revoked through this service at once. Unknown keys are never
    remembered: a new key works at once.
    """

    def __init__(self, settings: Settings, keys: KeyStore,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._env_key = settings.api_key
        self._keys = keys
        self._ttl = settings.auth_cache_seconds
        self._clock = clock
        self._known: dict[str, tuple[str, float]] = {}  # key hash -> organization, until
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
        return Principal(self._organization_for(hash_key(key)))

    def _organization_for(self, key_hash: str) -> str:
        now = self._clock()
        known = self._known.get(key_hash)
        if known is not None and now < known[1]:
            return known[0]
        org = self._keys.organization_for(key_hash)
        if org is None:
            self._known.pop(key_hash, None)
            raise Unauthorized("Invalid API key")
        if self._ttl > 0:
            if len(self._known) >= CACHE_ENTRIES:
                self._known.clear()
            self._known[key_hash] = (org, now + self._ttl)
        return org

    def revoke_key(self, key: str) -> bool:
        """Delete an API key (given whole); whether it existed. It stops working at
        once here, within ``COVE_AUTH_CACHE_SECONDS`` in other server processes."""
        key_hash = hash_key(key.strip())
        self._known.pop(key_hash, None)
        return self._keys.remove_key(key_hash)
