"""Container registry credentials of an organization (Daytona's ``/docker-registry``).

Each organization keeps its own: another organization never sees, finds or uses
them. The password is write-only (no response carries it) and kept sealed
(encrypted, see ``Sealer``): only a pull opens it. A pull uses the
credentials whose URL names the image's registry (``docker.io``,
``ghcr.io``, ``host:port``) and, when set, whose project is the first part of
the image's repository; among several, the one with a project, then the
organization's default, then the newest. Credentials go to that registry only.
An organization keeps at most :data:`MAX_REGISTRIES` (each a row kept until deleted,
all of them listed at once and looked through on each pull).
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cove.core.imageref import ImageRef, registry_host
from cove.core.ports import RegistryAuth, Sealer
from cove.core.sandbox import utcnow
from cove.errors import BadRequest, QuotaExceeded

MAX_REGISTRIES = 100  # per organization


@dataclass
class DockerRegistry:
    id: str
    organization_id: str
    name: str
    url: str
    username: str
    password: str = field(repr=False)  # as stored: sealed (plain in rows of old servers)
    project: str = ""
    is_default: bool = False
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


class RegistryStore(Protocol):
    def add(self, registry: DockerRegistry) -> None: ...

    def get(self, organization_id: str, registry_id: str) -> DockerRegistry:
        """Raises NotFound (also for another organization's)."""

    def save(self, registry: DockerRegistry) -> None: ...

    def remove(self, registry_id: str) -> None: ...

    def list(self, organization_id: str) -> list[DockerRegistry]: ...

    def all(self) -> builtins.list[DockerRegistry]:
        """Every organization's."""


class RegistryService:
    """Create, list, change and delete an organization's registry credentials."""

    def __init__(self, store: RegistryStore, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer

    def create(
        self, organization_id: str, *, name: str, url: str, username: str, password: str,
        project: str | None = None,
    ) -> DockerRegistry:  # fmt: skip
        """Raises BadRequest (an empty field or a URL that names no registry) or
        QuotaExceeded (the organization has :data:`MAX_REGISTRIES`)."""
        registry = DockerRegistry(
            id=str(uuid.uuid4()), organization_id=organization_id, name=name, url=url,
            username=username, password="", project=project or "",
        )  # fmt: skip
        _check(registry, password)
        if len(self.store.list(organization_id)) >= MAX_REGISTRIES:
            raise QuotaExceeded(f"an organization has at most {MAX_REGISTRIES} registries")
        registry.password = self.sealer.seal(password, registry.id)
        self.store.add(registry)
        return registry

    def list(self, organization_id: str) -> list[DockerRegistry]:
        return self.store.list(organization_id)

    def get(self, organization_id: str, registry_id: str) -> DockerRegistry:
        return self.store.get(organization_id, registry_id)

    def update(
        self, organization_id: str, registry_id: str, *, name: str, url: str, username: str,
        password: str | None = None, project: str | None = None,
    ) -> DockerRegistry:  # fmt: skip
        """Change the fields given (the password only when one is sent)."""
        registry = self.store.get(organization_id, registry_id)
        registry.name, registry.url, registry.username = name, url, username
        if project is not None:
            registry.project = project
        _check(registry, password)
        if password is not None:
            registry.password = self.sealer.seal(password, registry.id)
        registry.updated_at = utcnow()
        self.store.save(registry)
        return registry

    def delete(self, organization_id: str, registry_id: str) -> None:
        self.store.remove(self.store.get(organization_id, registry_id).id)

    def set_default(self, organization_id: str, registry_id: str) -> DockerRegistry:
        """Make it the one preferred when several match an image equally."""
        chosen = self.store.get(organization_id, registry_id)
        for registry in self.store.list(organization_id):
            if registry.is_default != (registry.id == chosen.id):
                registry.is_default = registry.id == chosen.id
                registry.updated_at = utcnow()
                self.store.save(registry)
        chosen.is_default = True
        return chosen

    def auth_for(self, organization_id: str, image: ImageRef) -> RegistryAuth | None:
        """The organization's credentials for ``image``'s registry, if it has any."""
        matches = [r for r in self.store.list(organization_id) if _matches(r, image)]
        if not matches:
            return None
        best = max(matches, key=lambda r: (bool(r.project), r.is_default, r.created_at))
        try:
            password = self.sealer.open(best.password, best.id)
        except ValueError:
            raise BadRequest(f"the password of registry '{best.name}' cannot be decrypted "
                             "(the server's registry.key changed?): set it again") from None
        return RegistryAuth(registry=image.registry, username=best.username,
                            password=password)  # fmt: skip

    def seal_plain(self) -> int:
        """Seal the passwords that servers before sealing stored in the clear; how many."""
        sealed = 0
        for registry in self.store.all():
            if not self.sealer.is_sealed(registry.password):
                registry.password = self.sealer.seal(registry.password, registry.id)
                self.store.save(registry)
                sealed += 1
        return sealed


def _matches(registry: DockerRegistry, image: ImageRef) -> bool:
    try:
        host = registry_host(registry.url)
    except BadRequest:
        return False
    project = registry.project.strip("/")
    return host == image.registry and (not project or image.repository.startswith(project + "/"))


def _check(registry: DockerRegistry, password: str | None) -> None:
    """Raises BadRequest: a field (``password``, unless None: unchanged) is not valid."""
    fields = {"name": registry.name, "url": registry.url, "username": registry.username}
    if password is not None:
        fields["password"] = password
    for label, value in fields.items():
        if not value or not value.strip():
            raise BadRequest(f"the registry's {label} must not be empty")
        if len(value) > 4096 or "\0" in value:
            raise BadRequest(f"the registry's {label} is not valid")
    if ":" in registry.username:
        raise BadRequest("the registry's username must not contain ':'")
    registry_host(registry.url)
