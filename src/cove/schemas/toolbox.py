"""Wire models of the toolbox API (what the SDK's toolbox client speaks)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cove.schemas.base import WireModel


class ExecuteRequest(WireModel):
    command: str
    cwd: str | None = None
    envs: dict[str, str] | None = None
    timeout: int | None = Field(default=None, ge=0)


class ExecuteResponse(WireModel):
    exit_code: int
    result: str


class CodeRunRequest(WireModel):
    code: str
    language: str | None = None
    argv: list[str] | None = None
    envs: dict[str, str] | None = None
    timeout: int | None = Field(default=None, ge=0)


class CodeRunResponse(WireModel):
    exit_code: int
    result: str
    artifacts: dict[str, list[Any]] = Field(default_factory=lambda: {"charts": []})


class DirResponse(WireModel):
    dir: str


class EnvUpdate(WireModel):
    set: dict[str, str] | None = None
    unset: list[str] | None = None
