"""The volume schema family (``/volumes``)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel
from cove.schemas.limits import MAX_NAME, PLAIN_NAME


class VolumeCreate(WireModel):
    """Body of ``POST /volumes``."""

    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=PLAIN_NAME)


class VolumePublic(WireModel):
    """Daytona's VolumeDto (times as ISO strings)."""

    id: str
    name: str
    organization_id: str
    state: str
    created_at: str
    updated_at: str
    last_used_at: str | None = None
    error_reason: str | None = None
