"""Wire models of the toolbox API (what the SDK's toolbox client speaks)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cove.schemas.base import WireModel
from cove.schemas.limits import (
    MAX_ENV_VARS,
    MAX_TIMEOUT,
    EnvMap,
    EnvName,
    EnvValue,
    SandboxPath,
    Text,
)


class ExecuteRequest(WireModel):
    command: Text
    cwd: SandboxPath | None = None
    envs: EnvMap | None = None
    timeout: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT)


class ExecuteResponse(WireModel):
    exit_code: int
    result: str


class CodeRunRequest(WireModel):
    code: Text
    language: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.+-]*$")
    argv: list[Text] | None = Field(default=None, max_length=1024)
    envs: EnvMap | None = None
    timeout: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT)


class CodeRunResponse(WireModel):
    exit_code: int
    result: str
    artifacts: dict[str, list[Any]] = Field(default_factory=lambda: {"charts": []})


class DirResponse(WireModel):
    dir: str


class EnvUpdate(WireModel):
    set: EnvMap | None = None
    unset: list[Text] | None = None


class UpdateEnvRequest(WireModel):
    """``POST /env``: names to remove, then variables to set, for processes started later."""

    set: EnvMap | None = None
    unset: list[EnvName] | None = Field(default=None, max_length=MAX_ENV_VARS)
    unset_value_prefix: EnvValue | None = Field(default=None, min_length=1)
