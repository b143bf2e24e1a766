"""SSH access tokens: who may open SSH sessions to which sandbox, until when.

As on Daytona, a token is the SSH user name (``ssh -p PORT <token>@host``; no
password, no key), valid for one sandbox until it expires, and creating one
revokes the sandbox's earlier tokens. Unlike Daytona's, a token also ends with the
API key that asked for it: once that key is revoked or expires, the token opens
nothing and its open connections are closed (by the gateway's sweep). Only a
token's SHA-256 is stored, so the database does not hold usable tokens; they
survive a server restart.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cove.core.ports import SandboxStore
from cove.core.sandbox import Sandbox, utcnow
from cove.errors import BadRequest, NotFound

TOKEN_LENGTH = 32
# Letters and digits only (Daytona's alphabet without "_" and "-"): nothing a shell or
# ssh's option parser reads specially.
ALPHABET = string.ascii_letters + string.digits
DEFAULT_MINUTES = 60.0
MAX_MINUTES = 365 * 24 * 60.0


@dataclass(frozen=True)
class SshAccess:
    """One token's grant (the token itself is not kept)."""

    id: str
    sandbox_id: str
    organization_id: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    key_id: str | None = None  # the API key that asked for it (None: COVE_API_KEY's)


class SshAccessStore(Protocol):
    """Where grants are kept, by the hash of their token."""

    def add(self, access: SshAccess, token_hash: str) -> None: ...

    def remove(self, sandbox_id: str, token_hash: str | None = None) -> list[str]:
        """Delete the sandbox's grants (only that token's, if given); their ids."""
        ...

    def find(self, token_hash: str) -> SshAccess | None:
        """The grant of that token, unless the key that asked for it is gone or expired."""
        ...

    def existing(self, ids: Collection[str]) -> set[str]:
        """Which of the grants ``ids`` are still kept (not revoked, the sandbox not gone,
        the key that asked for it neither revoked nor expired)."""
        ...


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def plausible(token: str) -> bool:
    """Whether ``token`` could be one Cove made (checked before any lookup)."""
    return len(token) == TOKEN_LENGTH and all(c in ALPHABET for c in token)


class SshAccessService:
    """Creates, revokes and checks SSH access tokens."""

    def __init__(self, store: SshAccessStore, sandboxes: SandboxStore, *,
                 enabled: bool = True) -> None:  # fmt: skip
        self._store = store
        self._sandboxes = sandboxes
        self.enabled = enabled  # the server runs the SSH gateway
        # Called with the ids of revoked grants (the gateway closes their sessions).
        self.revoked_hooks: list[Callable[[list[str]], None]] = []

    def create(self, organization_id: str, id_or_name: str, minutes: float | None,
               key_id: str | None = None) -> tuple[SshAccess, str]:  # fmt: skip
        """A new token for the caller's sandbox, valid ``minutes`` (default 60) and while
        the caller's key ``key_id`` works; the sandbox's earlier tokens are revoked.

        Raises:
            NotFound: no such sandbox in the caller's organization.
            BadRequest: ``minutes`` is not in (0, one year], or the gateway is off.
        """
        minutes = DEFAULT_MINUTES if minutes is None else minutes
        if not 0 < minutes <= MAX_MINUTES:
            raise BadRequest(f"expiresInMinutes must be above 0 and at most {MAX_MINUTES:.0f}")
        sandbox = self._sandboxes.get(organization_id, id_or_name)
        if not self.enabled:
            raise BadRequest("SSH access is turned off on this server (COVE_SSH_PORT=0)")
        self._revoked(self._store.remove(sandbox.id))
        token = "".join(secrets.choice(ALPHABET) for _ in range(TOKEN_LENGTH))
        now = utcnow()
        access = SshAccess(id=str(uuid.uuid4()), sandbox_id=sandbox.id,
                           organization_id=organization_id,
                           expires_at=now + timedelta(minutes=minutes), created_at=now,
                           updated_at=now, key_id=key_id)  # fmt: skip
        self._store.add(access, hash_token(token))
        return access, token

    def revoke(self, organization_id: str, id_or_name: str, token: str | None) -> Sandbox:
        """Revoke one token of the caller's sandbox, or all of them (``token`` None).

        Raises:
            NotFound: no such sandbox in the caller's organization.
        """
        sandbox = self._sandboxes.get(organization_id, id_or_name)
        self._revoked(self._store.remove(sandbox.id, hash_token(token) if token else None))
        return sandbox

    def forget(self, sandbox_id: str) -> None:
        """Drop every grant of a sandbox that is gone."""
        self._revoked(self._store.remove(sandbox_id))

    def validate(self, organization_id: str, token: str) -> str | None:
        """The id of the caller's sandbox ``token`` opens now, else None."""
        access = self.check(token)
        return access.sandbox_id if access and access.organization_id == organization_id else None

    def check(self, token: str) -> SshAccess | None:
        """The unexpired grant of ``token`` (its key still working), else None."""
        if not plausible(token):
            return None
        access = self._store.find(hash_token(token))
        if access is None or access.expires_at <= utcnow():
            return None
        return access

    def sandbox(self, access: SshAccess) -> Sandbox:
        """The sandbox ``access`` is for.

        Raises:
            NotFound: it was deleted.
        """
        sandbox = self._sandboxes.get_by_id(access.sandbox_id)
        if sandbox.organization_id != access.organization_id:
            raise NotFound(f"Sandbox with ID {access.sandbox_id} not found")
        return sandbox

    def sweep(self, ids: Collection[str]) -> None:
        """Tell the hooks which of the grants ``ids`` were revoked elsewhere (through
        another API replica), or whose key was revoked or expired: their connections
        here are closed too."""
        if ids:
            self._revoked(sorted(set(ids) - self._store.existing(ids)))

    def _revoked(self, ids: list[str]) -> None:
        if ids:
            for hook in self.revoked_hooks:
                hook(ids)


def ssh_command(token: str, host: str, port: int) -> str:
    """The command that opens a session, as Daytona writes it."""
    return f"ssh {token}@{host}" if port == 22 else f"ssh -p {port} {token}@{host}"
