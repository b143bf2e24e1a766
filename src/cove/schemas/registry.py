"""The docker-registry schema family (``/docker-registry``)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel


class RegistryCreate(WireModel):
    """Body of ``POST /docker-registry`` (Daytona's CreateDockerRegistry)."""

    name: str = Field(min_length=1, max_length=255)
    url: str = Field(min_length=1, max_length=1024)
    username: str = Field(min_length=1, max_length=1024)
    password: str = Field(min_length=1, max_length=4096)
    project: str | None = Field(default=None, max_length=255)


class RegistryUpdate(WireModel):
    """Body of ``PATCH /docker-registry/{id}``; the password only when it changes."""

    name: str = Field(min_length=1, max_length=255)
    url: str = Field(min_length=1, max_length=1024)
    username: str = Field(min_length=1, max_length=1024)
    password: str | None = Field(default=None, min_length=1, max_length=4096)
    project: str | None = Field(default=None, max_length=255)


class RegistryPublic(WireModel):
    """Daytona's DockerRegistry DTO (never the password)."""

    id: str
    name: str
    url: str
    username: str
    project: str
    registry_type: str = "organization"
    is_default: bool = False
    created_at: str
    updated_at: str
