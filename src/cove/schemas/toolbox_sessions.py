"""Wire models of the toolbox's sessions and PTY API (what the SDK's toolbox client speaks)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel
from cove.schemas.limits import AgentId, EnvMap, SandboxPath, Text

# -- sessions: persistent shells running one command at a time


class SessionCreate(WireModel):
    """``POST /process/session``."""

    session_id: AgentId


class SessionExecuteRequest(WireModel):
    """``POST /process/session/{sid}/exec``; ``async`` is the deprecated ``runAsync``."""

    command: Text
    run_async: bool | None = None
    async_: bool | None = Field(default=None, alias="async")
    suppress_input_echo: bool | None = None


class SessionExecuteResponse(WireModel):
    """The command's id; for a synchronous command also its output and exit code."""

    cmd_id: str
    output: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None


class CommandPublic(WireModel):
    """One command of a session; ``exitCode`` is null while it runs."""

    id: str
    command: str
    exit_code: int | None = None


class SessionPublic(WireModel):
    session_id: str
    commands: list[CommandPublic]


class CommandLogs(WireModel):
    """A command's output so far: both streams in arrival order, and each one."""

    output: str
    stdout: str
    stderr: str


class SessionInput(WireModel):
    data: str


# -- PTY: interactive terminals


class PtyCreate(WireModel):
    """``POST /process/pty``; ``lazyStart`` delays the shell until a client connects."""

    id: AgentId
    cols: int | None = Field(default=None, ge=1, le=1000)
    rows: int | None = Field(default=None, ge=1, le=1000)
    cwd: SandboxPath | None = None
    envs: EnvMap | None = None
    lazy_start: bool | None = None


class PtyCreated(WireModel):
    session_id: str


class PtyResize(WireModel):
    cols: int = Field(ge=1, le=1000)
    rows: int = Field(ge=1, le=1000)


class PtySessionInfo(WireModel):
    id: str
    active: bool
    cols: int
    rows: int
    created_at: str
    cwd: str
    envs: dict[str, str]
    lazy_start: bool


class PtyList(WireModel):
    sessions: list[PtySessionInfo]
