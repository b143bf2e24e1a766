"""The agent client's requests that stream: typed events out of the agent's frames.

Each takes an *opening* (the not yet entered context of one agent request, see
``AgentClient``) and reads and checks every frame inside it, so that any
failure, including a frame or reply of the wrong shape, leaves through that
context, which translates it into the API's error (``agent_failure``, a 502).
Leaving a stream early (closing the iterator, leaving the ``async with``)
resets the request: the agent stops its work.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from cove.agent import protocol
from cove.core.agent_call import AgentCall, decode
from cove.core.agent_types import (
    FileData,
    FileEnd,
    FileError,
    FileEvent,
    FileStart,
    InterpreterError,
    InterpreterEvent,
    InterpreterOutput,
    Output,
    RunEnded,
    Size,
    field,
    parse,
)
from cove.core.output import CappedOutput
from cove.schemas.toolbox_sessions import CommandLogs

Opening = AbstractAsyncContextManager[AgentCall]
Frames = AsyncIterator[tuple[bytes, bytes]]
STREAMS = {protocol.STDOUT: "stdout", protocol.STDERR: "stderr"}


async def _outputs(frames: Frames) -> AsyncGenerator[Output, None]:
    async for kind, payload in frames:
        if kind in STREAMS:
            yield Output(STREAMS[kind], payload)  # type: ignore[arg-type]


async def _first_event(frames: Frames) -> dict[str, Any]:
    """The J event an agent sends before streaming (a terminal attached, a command found)."""
    first = await anext(frames, None)
    if first is None or first[0] != protocol.JSON:
        raise protocol.ProtocolError("the agent answered out of turn")
    return decode(first[1])


async def collect_logs(call: AgentCall, limit: int) -> CommandLogs:
    """A command's output up to the final reply: both streams in order, and each one
    (each clipped to ``limit`` bytes, see :class:`CappedOutput`)."""
    both, out, err = CappedOutput(limit), CappedOutput(limit), CappedOutput(limit)
    async for event in _outputs(call.frames()):
        both.add(event.data)
        (out if event.stream == "stdout" else err).add(event.data)
    return CommandLogs(output=both.text(), stdout=out.text(), stderr=err.text())


@asynccontextmanager
async def follow_output(opening: Opening) -> AsyncIterator[AsyncIterator[Output]]:
    """A session command's output as it comes, once the agent found the command."""
    async with opening as call:
        frames = call.frames()
        await _first_event(frames)
        yield _outputs(frames)


class PtyAttachment:
    """A client attached to a terminal: its output, and input and resizes sent to it."""

    def __init__(self, call: AgentCall, frames: Frames) -> None:
        self._call = call
        self._frames = frames
        self.exit_code: int | None = None  # the shell's, once :meth:`output` ended

    async def output(self) -> AsyncGenerator[bytes, None]:
        """What the terminal prints, until its shell exits."""
        async for kind, payload in self._frames:
            if kind == protocol.DATA:
                yield payload
        self.exit_code = parse(int, self._call.result.get("exitCode", 0))

    async def send_input(self, data: bytes) -> None:
        """Type ``data`` into the terminal."""
        await self._call.send_data(protocol.DATA, data)

    async def resize(self, cols: int, rows: int) -> None:
        """Change the terminal's size."""
        await self._call.send({"op": "resize", "cols": cols, "rows": rows})


@asynccontextmanager
async def attach_pty(opening: Opening) -> AsyncIterator[PtyAttachment]:
    """Attach to a terminal; entering fails if the agent refuses."""
    async with opening as call:
        frames = call.frames()
        await _first_event(frames)
        yield PtyAttachment(call, frames)


class PipeRun:
    """A command on pipes: its output, and its stdin."""

    def __init__(self, call: AgentCall, frames: Frames) -> None:
        self._call = call
        self._frames = frames
        self.exit_code: int | None = None  # once :meth:`output` ended

    def output(self) -> AsyncIterator[Output]:
        """stdout and stderr as they come, until the command exits."""
        return self._outputs()

    async def _outputs(self) -> AsyncGenerator[Output, None]:
        async for event in _outputs(self._frames):
            yield event
        self.exit_code = parse(int, self._call.result.get("exitCode", 0))

    async def send_input(self, data: bytes) -> None:
        """Write ``data`` to the command's stdin."""
        await self._call.send_data(protocol.DATA, data)

    async def close_input(self) -> None:
        """End the command's stdin."""
        await self._call.send_data(protocol.END)


@asynccontextmanager
async def run_on_pipes(opening: Opening) -> AsyncIterator[PipeRun]:
    """Start a command on pipes; entering fails if the agent refuses."""
    async with opening as call:
        frames = call.frames()
        await _first_event(frames)
        yield PipeRun(call, frames)


async def read_events(opening: Opening) -> AsyncGenerator[FileEvent, None]:
    """The events of a ``fs_read``: per file a start, chunks and an end, or an error."""
    async with opening as call:
        async for kind, payload in call.frames():
            if kind == protocol.DATA:
                yield FileData(payload)
            elif kind == protocol.END:
                yield FileEnd()
            elif kind == protocol.JSON:
                yield _file_header(decode(payload))


def _file_header(header: dict[str, Any]) -> FileStart | FileError:
    if "file" in header:
        return FileStart(field(header, "file", str), parse(Size | None, header.get("size")))
    return FileError.model_validate({**field(header, "error", dict), "path": header["path"]})


async def interpreter_events(opening: Opening) -> AsyncGenerator[InterpreterEvent, None]:
    """An interpreter run's output and error events, then RunEnded."""
    async with opening as call:
        async for kind, payload in call.frames():
            if kind == protocol.JSON:
                yield parse(InterpreterOutput | InterpreterError,
                            decode(payload))
        timed_out = call.result.get("outcome") == "timeout"
    yield RunEnded(timed_out)


class Upload:
    """One file being written by the agent: :meth:`send` its bytes, then :meth:`finish`
    (or :meth:`abort`). It outlives any one ``async with``, so its request is entered
    and left by hand, failures going through the request's context all the same."""

    def __init__(self, opening: Opening, call: AgentCall) -> None:
        self._opening: Opening | None = opening
        self._call = call
        self._broken = False

    @classmethod
    async def open(cls, opening: Opening) -> Upload:
        """Start the upload once the agent is ready for the file's bytes."""
        upload = cls(opening, await opening.__aenter__())
        await upload._guard(upload._ready())
        return upload

    async def _ready(self) -> None:
        await _first_event(self._call.frames())  # {"ready": true}

    async def send(self, data: bytes) -> None:
        """Pass on the file's next bytes (dropped once the agent gave up: :meth:`finish`
        then says why)."""
        if self._broken:
            return
        try:
            await self._call.send_data(protocol.DATA, data)
        except ConnectionError:
            self._broken = True

    async def finish(self) -> int:
        """End the file; the number of bytes written.

        Raises:
            ToolboxError: the agent could not write it.
        """
        size = await self._guard(self._finish())
        await self._leave()
        return size

    async def _finish(self) -> int:
        if not self._broken:
            await self._call.send_data(protocol.END)
        result = await self._call.reply()
        return parse(int, result.get("bytes", 0))

    async def abort(self) -> None:
        """Drop the file (the agent discards what it received)."""
        await self._leave()

    async def _guard(self, step: Any) -> Any:
        try:
            return await step
        except BaseException as exc:
            await self._leave(exc)
            raise

    async def _leave(self, exc: BaseException | None = None) -> None:
        """Leave the request's context; with ``exc``, the context raises its translation."""
        opening, self._opening = self._opening, None
        if opening is not None:
            if exc is None:
                await opening.__aexit__(None, None, None)
            else:
                await opening.__aexit__(type(exc), exc, exc.__traceback__)
