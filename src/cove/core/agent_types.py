"""What the server's agent client returns: typed results and events of agent requests.

Replies whose shape is the API's own (a file's facts, a git status, a terminal)
are validated straight into the API's wire models; the rest are small types here.
Everything here was checked before it was built: the agent's words are untrusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, TypeAdapter

from cove.schemas.base import WireModel
from cove.schemas.toolbox import Chart

T = TypeVar("T")
Stream = Literal["stdout", "stderr"]
# A file's size as the agent gives it (it becomes a download's Content-Length).
Size = Annotated[int, Field(ge=0, le=2**63 - 1)]


@cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def field(reply: dict[str, Any], key: str, kind: Any) -> Any:
    """``reply[key]`` checked to be a ``kind``.

    Raises:
        KeyError, ValidationError: the agent's reply is not what it must be.
    """
    return _adapter(kind).validate_python(reply[key])


def parse(kind: Any, value: Any) -> Any:
    """``value`` checked to be a ``kind`` (a pydantic model, a plain type or an alias
    such as ``list[Match]``); the caller's annotation carries the checked type."""
    return _adapter(kind).validate_python(value)


@dataclass(frozen=True)
class Output:
    """A chunk of a process's output."""

    stream: Stream
    data: bytes


@dataclass(frozen=True)
class Omitted:
    """The agent left out ``count`` bytes of output here (it was asked for a limit)."""

    count: int


@dataclass(frozen=True)
class ChartData:
    """An artifact line of a code run (after its marker): untrusted, unread JSON."""

    payload: bytes


@dataclass(frozen=True)
class Exited:
    """The process ended (the last event of a streamed command)."""

    exit_code: int


ProcessEvent = Output | Omitted | ChartData | Exited


@dataclass(frozen=True)
class ExecResult:
    """A finished command: its exit code, its output (both streams, as printed) and,
    for a code run, the valid charts it showed."""

    exit_code: int
    output: str
    charts: tuple[Chart, ...] = ()


class AgentInfo(WireModel):
    """The sandbox user's home, working directory and environment, the agent's version."""

    home: str
    work_dir: str
    env: dict[str, str]
    version: str


# -- reading files: per file a FileStart, its FileData chunks and a FileEnd, or a FileError


@dataclass(frozen=True)
class FileStart:
    path: str
    size: Size | None


@dataclass(frozen=True)
class FileData:
    data: bytes


@dataclass(frozen=True)
class FileEnd:
    pass


class FileError(WireModel):
    """A requested file that could not be read (and why, as the agent's error)."""

    path: str
    status: int
    code: str
    message: str


FileEvent = FileStart | FileData | FileEnd | FileError


# -- the code interpreter


class InterpreterOutput(WireModel):
    type: Stream
    text: str


class InterpreterError(WireModel):
    type: Literal["error"]
    name: str
    value: str
    traceback: str


@dataclass(frozen=True)
class RunEnded:
    """The interpreter run is over (the last event of a run)."""

    timed_out: bool


InterpreterEvent = InterpreterOutput | InterpreterError | RunEnded


@dataclass(frozen=True)
class SessionExecResult:
    """A session command run to its end."""

    cmd_id: str
    exit_code: int | None
    output: str
    stdout: str
    stderr: str
