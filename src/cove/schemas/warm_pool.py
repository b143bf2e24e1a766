"""The warm pool schema family (``/warm-pools``)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel
from cove.schemas.limits import MAX_NAME


class WarmPoolCreate(WireModel):
    """Body of ``POST /warm-pools`` (Daytona's CreateWarmPool)."""

    snapshot: str = Field(min_length=1, max_length=MAX_NAME)
    pool: int = Field(ge=1, le=1000)
    target: str | None = Field(default=None, min_length=1, max_length=64)


class WarmPoolUpdate(WireModel):
    """Body of ``PATCH /warm-pools/{id}`` (Daytona's UpdateWarmPool)."""

    pool: int = Field(ge=0, le=1000)


class WarmPoolPublic(WireModel):
    """Daytona's WarmPool (times as ISO strings)."""

    id: str
    organization_id: str
    snapshot: str
    target: str
    pool: int
    current_size: int
    cpu: int
    mem: int
    disk: int
    os_user: str
    env: dict[str, str]
    error_reason: str | None = None
    created_at: str
    updated_at: str
