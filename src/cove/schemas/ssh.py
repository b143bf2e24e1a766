"""SSH access (``/api/sandbox/{id}/ssh-access``), as Daytona's DTOs."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel


class SshAccessPublic(WireModel):
    """A new SSH access token (shown only here: Cove keeps its hash)."""

    id: str
    sandbox_id: str
    token: str
    expires_at: str = Field(json_schema_extra={"format": "date-time"})
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    ssh_command: str = Field(description="e.g. ssh -p 2222 <token>@host")


class SshAccessValidation(WireModel):
    """Whether a token opens a sandbox of the caller's organization now (``sandboxId``
    is empty when it does not)."""

    valid: bool
    sandbox_id: str
