"""An organization's secrets (Daytona's ``/secret``) and their mounts in sandboxes.

As on Daytona, a secret's value is write-only: no answer carries it, it is kept
encrypted (the store's business) and never logged. A sandbox that mounts a
secret as ``ENV_NAME`` sees the secret's opaque ``placeholder`` in that variable,
never the value (Daytona substitutes the value on outbound requests to the
secret's ``hosts``; Cove does not do that yet). Every lookup is scoped to the
caller's organization: another organization's secret is not found (404).
"""

from __future__ import annotations

import builtins
import re
import secrets as random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from cove.core.sandbox import utcnow
from cove.errors import BadRequest, NotFound, QuotaExceeded
from cove.schemas.limits import MAX_ENV_BYTES, MAX_ENV_VARS

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")
HOST = re.compile(r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                  r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")  # fmt: skip
MAX_VALUE = 32 * 1024  # an env var's value at most (what it stands for)
MAX_HOSTS = 64
ENV_SECONDS = 1.0  # a sandbox's secrets' env is used this long without a query...
ENV_ENTRIES = 10_000  # ...for this many sandboxes at most
MAX_DESCRIPTION = 1024
MAX_SECRETS = 1000  # per organization
Sort = Literal["name", "createdAt", "updatedAt"]


@dataclass
class Secret:
    """A secret's metadata; the value stays in the store, encrypted."""

    id: str
    organization_id: str
    name: str
    placeholder: str
    description: str | None = None
    hosts: list[str] = field(default_factory=list)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class SecretPage:
    items: list[Secret]
    total: int
    next_cursor: str | None


class SecretStore(Protocol):
    def add(self, secret: Secret, value: str) -> None:
        """Raises Conflict when the organization has a secret of that name."""

    def get(self, organization_id: str, secret_id: str) -> Secret:
        """Raises NotFound (also for another organization's)."""

    def by_names(self, organization_id: str, names: Sequence[str]) -> dict[str, Secret]: ...

    def save(self, secret: Secret, value: str | None) -> None:
        """Store changed metadata, and the value when it is not None."""

    def remove(self, secret_id: str) -> None: ...

    def page(
        self, organization_id: str, *, name: str | None, sort: Sort, descending: bool,
        offset: int, limit: int,
    ) -> tuple[list[Secret], int]: ...  # fmt: skip

    def value(self, organization_id: str, secret_id: str) -> str: ...

    def mounts(self, sandbox_id: str) -> dict[str, Secret]:
        """The secrets mounted in a sandbox, by env var name."""

    def set_mounts(self, sandbox_id: str, mounts: Mapping[str, str]) -> None:
        """Replace a sandbox's mounts (env var name -> secret id)."""


class SecretService:
    """Create, list, change and delete secrets; mount them in sandboxes."""

    def __init__(self, store: SecretStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        # sandbox id -> (its secrets' env, until when it is used without a query): every
        # toolbox call needs it; a change here drops it, one elsewhere ages out.
        self._envs: dict[str, tuple[dict[str, str], float]] = {}

    def create(
        self, organization_id: str, *, name: str, value: str,
        description: str | None = None, hosts: list[str] | None = None,
    ) -> Secret:  # fmt: skip
        """Raises BadRequest (invalid field), QuotaExceeded (too many) or Conflict (the name
        is taken)."""
        secret = Secret(id=str(uuid.uuid4()), organization_id=organization_id, name=name,
                        placeholder=f"cove-secret-{random.token_hex(16)}",
                        description=description, hosts=list(hosts or []))  # fmt: skip
        _check(secret, value)
        _, count = self.store.page(organization_id, name=None, sort="createdAt",
                                   descending=False, offset=0, limit=0)  # fmt: skip
        if count >= MAX_SECRETS:
            raise QuotaExceeded(f"an organization has at most {MAX_SECRETS} secrets")
        self.store.add(secret, value)
        self._envs.clear()
        return secret

    def get(self, organization_id: str, secret_id: str) -> Secret:
        return self.store.get(organization_id, secret_id)

    def list(self, organization_id: str, *, cursor: str | None = None, limit: int = 100,
             name: str | None = None, sort: Sort = "createdAt",
             order: Literal["asc", "desc"] = "desc") -> SecretPage:  # fmt: skip
        """One page; the cursor is where the next one starts."""
        offset = _offset(cursor)
        items, total = self.store.page(
            organization_id, name=name or None, sort=sort, descending=order == "desc",
            offset=offset, limit=limit,
        )  # fmt: skip
        after = offset + len(items)
        return SecretPage(items, total, str(after) if after < total and items else None)

    def update(
        self, organization_id: str, secret_id: str, *, value: str | None = None,
        description: str | None = None, hosts: builtins.list[str] | None = None,
    ) -> Secret:  # fmt: skip
        """Change the fields given; the others stay."""
        secret = self.store.get(organization_id, secret_id)
        if description is not None:
            secret.description = description
        if hosts is not None:
            secret.hosts = list(hosts)
        _check(secret, value)
        secret.updated_at = utcnow()
        self.store.save(secret, value)
        self._envs.clear()
        return secret

    def delete(self, organization_id: str, secret_id: str) -> None:
        """Delete it; sandboxes that mounted it lose that variable (for new processes)."""
        self.store.remove(self.store.get(organization_id, secret_id).id)
        self._envs.clear()

    def resolve(self, organization_id: str, mounts: Sequence[Mapping[str, str]],
                env: Mapping[str, str]) -> dict[str, str]:  # fmt: skip
        """Env var name -> secret id for ``[{ENV: secret name}]``, checked.

        Raises:
            BadRequest: a name given twice, also in ``env``, or too many or too large.
            NotFound: no secret of that name in the organization.
        """
        wanted: dict[str, str] = {}
        for entry in mounts:
            for env_name, secret_name in entry.items():
                if env_name in wanted or env_name in env:
                    raise BadRequest(f"secrets: the env var {env_name} is given twice")
                wanted[env_name] = secret_name
        if len(wanted) + len(env) > MAX_ENV_VARS:
            raise BadRequest(f"env and secrets: at most {MAX_ENV_VARS} variables")
        found = self.store.by_names(organization_id, list(set(wanted.values())))
        for secret_name in wanted.values():
            if secret_name not in found:
                raise NotFound(f"Secret with name {secret_name} not found")
        resolved = {k: found[v] for k, v in wanted.items()}
        size = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items()) + sum(
            len(k.encode()) + len(s.placeholder) + 2 for k, s in resolved.items())
        if size > MAX_ENV_BYTES:
            raise BadRequest(f"env and secrets take {size} bytes, at most {MAX_ENV_BYTES}")
        return {k: s.id for k, s in resolved.items()}

    def mount(self, sandbox_id: str, mounts: Mapping[str, str]) -> None:
        """Replace the sandbox's mounts with ``mounts`` (from :meth:`resolve`)."""
        self._envs.pop(sandbox_id, None)
        try:
            self.store.set_mounts(sandbox_id, mounts)
        finally:
            self._envs.pop(sandbox_id, None)

    def none_mounted(self, sandbox_id: str) -> None:
        """Note that the sandbox just created mounts no secret (its first toolbox call
        reads nothing for them)."""
        if len(self._envs) >= ENV_ENTRIES:
            self._envs.clear()
        self._envs[sandbox_id] = ({}, self._clock() + ENV_SECONDS)

    def env(self, sandbox_id: str) -> dict[str, str]:
        """What the sandbox's processes get for its mounted secrets: the placeholders
        (read again after ENV_SECONDS, at once after a change made here)."""
        now = self._clock()
        known = self._envs.get(sandbox_id)
        if known is not None and now < known[1]:
            return known[0]
        env = {k: s.placeholder for k, s in self.store.mounts(sandbox_id).items()}
        if len(self._envs) >= ENV_ENTRIES:
            self._envs.clear()
        self._envs[sandbox_id] = (env, now + ENV_SECONDS)
        return env


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not cursor.isdigit() or len(cursor) > 12:
        raise BadRequest(f"invalid cursor '{cursor}'")
    return int(cursor)


def _check(secret: Secret, value: str | None) -> None:
    if not NAME.match(secret.name):
        raise BadRequest("the secret's name must match ^[a-zA-Z_][a-zA-Z0-9_-]*$ "
                         "(at most 255 characters)")  # fmt: skip
    if value is not None and (not value or len(value) > MAX_VALUE or "\0" in value):
        raise BadRequest(f"the secret's value must be 1 to {MAX_VALUE} characters, without NUL")
    if secret.description is not None and (
        len(secret.description) > MAX_DESCRIPTION or "\0" in secret.description
    ):
        raise BadRequest(f"the secret's description: at most {MAX_DESCRIPTION} characters")
    if len(secret.hosts) > MAX_HOSTS:
        raise BadRequest(f"the secret's hosts: at most {MAX_HOSTS}")
    for host in secret.hosts:
        if len(host) > 253 or not HOST.match(host):
            raise BadRequest(f"the secret's hosts: '{host[:300]}' is not a host name "
                             "(api.example.com or *.example.com, no port)")  # fmt: skip
