"""API keys and organizations as records (only a key's hash is ever stored)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from cove.core.permissions import ALL, Permission

PREFIX = "cove_"
LEGACY_MASK = PREFIX + "*" * 20  # keys made before their mask was stored


@dataclass(frozen=True)
class Organization:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored: never its value.

    ``permissions`` None: an operator's key (the first-start admin key, ``cove keys
    create`` on the host), holding every permission, also those added later.
    """

    id: str
    organization_id: str
    name: str
    permissions: frozenset[Permission] | None
    mask: str
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    created_by: str | None = None  # the id of the key that made it (None: the operator)

    @property
    def held(self) -> frozenset[Permission]:
        return ALL if self.permissions is None else self.permissions

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def mask(key: str) -> str:
    """What lists show of a key: its first 5 and last 3 characters (as Daytona's
    ``dtn********************abc``), enough to tell keys apart, never to use one; of
    a short key (one chosen by hand, say ``COVE_API_KEY``) nothing at all."""
    if len(key) < 32:
        return "*" * 20
    return key[:5] + "*" * 20 + key[-3:]
