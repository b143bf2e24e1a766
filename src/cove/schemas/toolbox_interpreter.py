"""Wire models of the code interpreter (``/process/interpreter``)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel
from cove.schemas.limits import MAX_TIMEOUT, AgentId, EnvMap, SandboxPath, Text

DEFAULT_TIMEOUT_SECONDS = 600


class InterpreterContextCreate(WireModel):
    """``POST /process/interpreter/context`` (the SDK sends ``{}`` or ``{"cwd"}``)."""

    cwd: SandboxPath | None = None
    language: str | None = Field(default=None, max_length=64)


class InterpreterContextPublic(WireModel):
    """One interpreter context, as the SDK's ``InterpreterContext``."""

    id: str
    active: bool
    created_at: str
    cwd: str
    language: str


class InterpreterContextsPublic(WireModel):
    """The user-created contexts."""

    contexts: list[InterpreterContextPublic]


class InterpreterRun(WireModel):
    """The one text frame a client sends on ``/process/interpreter/execute``."""

    code: Text = Field(min_length=1)
    context_id: AgentId | None = None
    envs: EnvMap | None = None
    # seconds; 0 = none; absent = 10 minutes
    timeout: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT)

    def timeout_seconds(self) -> int | None:
        """The timeout to enforce, None for none."""
        if self.timeout is None:
            return DEFAULT_TIMEOUT_SECONDS
        return self.timeout or None
