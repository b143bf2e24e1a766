"""API keys: who is calling, on behalf of which organization, allowed to do what."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cove.core.activity import Stamps
from cove.core.config import Settings
from cove.core.keys import ApiKey, hash_key, mask, new_key
from cove.core.permissions import ALL, Permission, require
from cove.core.ports import KeyStore
from cove.core.sandbox import utcnow
from cove.errors import Unauthorized

__all__ = ["AuthService", "Principal", "hash_key", "new_key"]

DEFAULT_ORGANIZATION = "default"
CACHE_ENTRIES = 10_000  # keys remembered at most (all are forgotten when it is full)
USED_EVERY = 60.0  # seconds: a key's lastUsedAt is noted at most this often
USAGE_FLUSH_SECONDS = 5.0


@dataclass(frozen=True)
class Principal:
    """The caller: its organization and what its key may do."""

    organization_id: str
    permissions: frozenset[Permission] = ALL
    key: ApiKey | None = None  # None: the key set in COVE_API_KEY (not stored)

    @property
    def key_id(self) -> str | None:
        """The stored key's id (None: COVE_API_KEY's): what it makes records it."""
        return self.key.id if self.key is not None else None

    def require(self, needed: Permission | None) -> None:
        """Raises :class:`cove.errors.Forbidden` unless the key holds ``needed``."""
        require(self.permissions, needed)


class AuthService:
    """Checks bearer keys. Only hashes are stored; ``COVE_API_KEY`` is never written.

    A key found in the database is trusted for ``COVE_AUTH_CACHE_SECONDS`` before the
    database is asked again (a toolbox call should not cost a query), so a key
    revoked elsewhere (``cove keys revoke``, another process) stops working within
    that time, one revoked through this service at once. An expired key stops at its
    ``expires_at`` exactly (checked on every call). Unknown keys are never
    remembered: a new key works at once.

    A key's last use is noted in memory at most once a minute and written in
    batches (:class:`cove.core.activity.Stamps`), never on a call's path.
    """

    def __init__(self, settings: Settings, keys: KeyStore,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._env_key = settings.api_key
        self._keys = keys
        self._ttl = settings.auth_cache_seconds
        self._clock = clock
        self._known: dict[str, tuple[ApiKey, float]] = {}  # key hash -> key, until
        self._noted: dict[str, float] = {}  # key id -> when its use was last noted
        self.usage = Stamps(keys.touch_keys, USAGE_FLUSH_SECONDS)
        self.default_organization_id = keys.ensure_organization(DEFAULT_ORGANIZATION)
        self.started_at = utcnow()

    @property
    def keys(self) -> KeyStore:
        return self._keys

    def bootstrap(self) -> str | None:
        """On a first start without ``COVE_API_KEY``, create an admin key and return it
        (to be printed once). Returns None when nothing was created."""
        if self._env_key or self._keys.count_keys():
            return None
        return self.create_key(DEFAULT_ORGANIZATION, name="admin")

    def create_key(self, organization: str, *, name: str = "key",
                   permissions: frozenset[Permission] | None = None,
                   expires_at: datetime | None = None) -> str:  # fmt: skip
        """An operator's new key of ``organization`` (by name, created if missing):
        every permission unless ``permissions`` are given. Returns its value."""
        org_id = self._keys.ensure_organization(organization)
        return self.issue(org_id, name=name, permissions=permissions, expires_at=expires_at)[1]

    def issue(self, organization_id: str, *, name: str,
              permissions: frozenset[Permission] | None, expires_at: datetime | None = None,
              created_by: str | None = None) -> tuple[ApiKey, str]:  # fmt: skip
        """Store a new key (its hash) and return it with its value, shown only now."""
        value = new_key()
        key = ApiKey(id=str(uuid.uuid4()), organization_id=organization_id, name=name,
                     permissions=permissions, mask=mask(value), created_at=utcnow(),
                     expires_at=expires_at, created_by=created_by)  # fmt: skip
        self._keys.add_key(key, hash_key(value))
        return key, value

    def authenticate(self, authorization: str | None) -> Principal:
        """Resolve an ``Authorization: Bearer <key>`` header.

        Raises:
            Unauthorized: no key, a key nobody issued (or revoked), an expired key.
        """
        scheme, _, value = (authorization or "").partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
        if self._env_key and hmac.compare_digest(value.encode(), self._env_key.encode()):
            return Principal(self.default_organization_id)
        key = self._key_for(hash_key(value))
        if key.expires_at is not None and key.expired(utcnow()):
            raise Unauthorized("This API key has expired")
        self._note_use(key.id)
        return Principal(key.organization_id, key.held, key)

    def works(self, authorization: str) -> bool:
        """Whether the ``Authorization`` a long-lived connection was opened with still
        works (not revoked: within ``COVE_AUTH_CACHE_SECONDS`` when revoked elsewhere;
        not expired): the connection ends when it does not."""
        try:
            self.authenticate(authorization)
        except Unauthorized:
            return False
        return True

    def key_works(self, key_id: str) -> bool:
        """Whether the stored key ``key_id`` still works (neither revoked nor expired):
        credentials derived from a key (push access) last no longer than it does.
        Asked of the database each time (no cache): a key revoked anywhere counts at once."""
        key = self._keys.key(key_id)
        return key is not None and not key.expired(utcnow())

    def _key_for(self, key_hash: str) -> ApiKey:
        now = self._clock()
        known = self._known.get(key_hash)
        if known is not None and now < known[1]:
            return known[0]
        key = self._keys.key_for(key_hash)
        if key is None:
            self._known.pop(key_hash, None)
            raise Unauthorized("Invalid API key")
        if self._ttl > 0:
            if len(self._known) >= CACHE_ENTRIES:
                self._known.clear()
            self._known[key_hash] = (key, now + self._ttl)
        return key

    def _note_use(self, key_id: str) -> None:
        now = self._clock()
        if now - self._noted.get(key_id, -USED_EVERY) >= USED_EVERY:
            if len(self._noted) >= CACHE_ENTRIES:
                self._noted.clear()
            self._noted[key_id] = now
            self.usage.note(key_id, utcnow())

    def revoke_key(self, key: str) -> bool:
        """Delete an API key (given whole); whether it existed. It stops working at
        once here, within ``COVE_AUTH_CACHE_SECONDS`` in other server processes."""
        key_hash = hash_key(key.strip())
        found = self._keys.key_for(key_hash)
        return found is not None and self.forget(found)

    def forget(self, key: ApiKey) -> bool:
        """Delete ``key``; it stops working at once in this process."""
        self._known = {h: k for h, k in self._known.items() if k[0].id != key.id}
        return self._keys.delete_key(key.id)
