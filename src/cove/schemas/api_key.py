"""The API key schema family (``/api/api-keys``), as Daytona's client reads it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from cove.schemas.base import WireModel

# No "/": a name is a path segment (DELETE /api-keys/{name}).
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^/\x00]+$")]
PermissionName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ApiKeyCreate(WireModel):
    """Body of ``POST /api-keys`` (Daytona's ``CreateApiKey``)."""

    name: KeyName
    permissions: list[PermissionName] = Field(max_length=64)
    # ISO 8601; a time without a zone is UTC.
    expires_at: Annotated[datetime | None, Field(strict=False)] = None


class ApiKeyCreated(WireModel):
    """Daytona's ``ApiKeyResponse``: the only answer that holds the key's value."""

    name: str
    value: str
    created_at: str
    permissions: list[str]
    expires_at: str | None


class ApiKeyPublic(WireModel):
    """Daytona's ``ApiKeyList``: a key with its value masked. ``userId`` is the key's
    own id (an organization's members are its keys)."""

    name: str
    value: str
    created_at: str
    permissions: list[str]
    last_used_at: str | None
    expires_at: str | None
    user_id: str
    organization_id: str
