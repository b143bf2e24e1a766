"""Image references as Docker names them: ``python:3.12``, ``ghcr.io/o/app:v1``,
``127.0.0.1:5000/tiny@sha256:...``.

A reference is parsed by the grammar of the distribution project (lower-case
path components, a tag of at most 128 word characters, a ``sha256`` digest) and
normalized the way Docker does: a first component that is not a host (no ``.``
or ``:``, not ``localhost``) means Docker Hub, ``docker.io``, whose one-component
names live under ``library/``; no tag and no digest means ``latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cove.errors import BadRequest

DOCKER_HUB = "docker.io"
_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]{1,5})?$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_NAME = 255


@dataclass(frozen=True)
class ImageRef:
    """A normalized reference: ``registry/repository`` and a tag or a digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        """The canonical form, by digest when there is one (``name@sha256:...``)."""
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


def is_host(component: str) -> bool:
    """Whether the first component of a name is a registry host (Docker's rule)."""
    return "." in component or ":" in component or component == "localhost"


def parse(image: str) -> ImageRef:
    """Parse and normalize ``image``.

    Raises:
        BadRequest: not a valid image reference.
    """
    text = image.strip()
    bad = BadRequest(f"'{image}' is not a valid image reference (e.g. python:3.12, "
                     "ghcr.io/owner/name:tag or name@sha256:<64 hex digits>)")  # fmt: skip
    if not text or len(text) > 512 or any(c.isspace() for c in text):
        raise bad
    rest, _, digest = text.partition("@")
    first, slash, remainder = rest.partition("/")
    registry, path = (first.lower(), remainder) if slash and is_host(first) else (DOCKER_HUB, rest)
    repository, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _HOST.match(registry) or not _PATH.match(repository):
        raise bad
    if (colon and not _TAG.match(tag)) or (digest and not _DIGEST.match(digest)):
        raise bad
    if len(f"{registry}/{repository}") > MAX_NAME:
        raise bad
    if digest:
        return ImageRef(registry, repository, None, digest)
    return ImageRef(registry, repository, tag or "latest")


def registry_host(url: str) -> str:
    """The registry a credential's URL names: ``https://index.docker.io/v1/`` and
    ``docker.io`` are both ``docker.io``; ``ghcr.io/`` is ``ghcr.io``.

    Raises:
        BadRequest: not a host name (with an optional port and path).
    """
    text = url.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
    host, _, path = text.strip("/").partition("/")
    host = host.lower()
    if host in _HUB_ALIASES:
        host = DOCKER_HUB
    if not host or not _HOST.match(host):
        raise BadRequest(f"'{url}' is not a registry URL (e.g. ghcr.io or 127.0.0.1:5000)")
    return host
