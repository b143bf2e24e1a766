"""The secret schema family (``/secret``, ``PUT /sandbox/{id}/secrets``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from cove.schemas.base import WireModel
from cove.schemas.limits import MAX_ENV_VARS, NO_NUL, EnvName

SecretName = Annotated[str, StringConstraints(min_length=1, max_length=255,
                                              pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")]  # fmt: skip
SecretValue = Annotated[str, StringConstraints(min_length=1, max_length=32 * 1024, pattern=NO_NUL)]
Host = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=1024, pattern=NO_NUL)]
# [{ENV_VAR: secret name}], as the SDK sends them.
SecretMounts = Annotated[
    list[Annotated[dict[EnvName, SecretName], Field(max_length=MAX_ENV_VARS)]],
    Field(max_length=MAX_ENV_VARS),
]


class SecretCreate(WireModel):
    """Body of ``POST /secret``: the value is write-only."""

    name: SecretName
    value: SecretValue
    description: Description | None = None
    hosts: list[Host] | None = Field(default=None, max_length=64)


class SecretUpdate(WireModel):
    """Body of ``PATCH /secret/{id}``: omitted fields stay as they are."""

    value: SecretValue | None = None
    description: Description | None = None
    hosts: list[Host] | None = Field(default=None, max_length=64)


class SecretPublic(WireModel):
    """Daytona's Secret DTO: never the value."""

    id: str
    name: str
    description: str | None = None
    placeholder: str
    hosts: list[str]
    created_at: str
    updated_at: str


class SecretsPage(WireModel):
    """Response of ``GET /secret/paginated``."""

    items: list[SecretPublic]
    total: int
    next_cursor: str | None


class SandboxSecretsUpdate(WireModel):
    """Body of ``PUT /sandbox/{id}/secrets``: the whole new set ([] detaches all)."""

    secrets: SecretMounts
