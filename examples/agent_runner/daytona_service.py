"""Seed 001's ``DaytonaService``, written against the real ``daytona`` SDK (0.226.1).

The async client fits FastAPI: nothing here blocks the event loop while a sandbox
starts or a program runs.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import Awaitable, Callable

from daytona import (
    AsyncDaytona,
    AsyncSandbox,
    CreateSandboxFromSnapshotParams,
    SessionExecuteRequest,
)

LineHandler = Callable[[str], Awaitable[None]]
AGENT_DIR = "/home/daytona"
SESSION = "agent"
# Runs a script with its stdout and stderr line-buffered: each line leaves in one write,
# as it is printed. (Block buffering would hold lines back until the buffer fills; with
# `python -u` print() writes the text and its newline separately, and the SDK's log
# stream hands on a chunk of one or two bytes only once more output follows.)
LAUNCHER = (
    "import runpy, sys; "
    "sys.stdout.reconfigure(line_buffering=True); sys.stderr.reconfigure(line_buffering=True); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_command(path: str) -> str:
    """The shell command that runs the Python script at ``path`` in the sandbox."""
    return shlex.join(["python3", "-c", LAUNCHER, path])


class LineSplitter:
    """Turns a stream's chunks into whole lines for ``on_line`` (chunks may split lines)."""

    def __init__(self, on_line: LineHandler) -> None:
        self._on_line = on_line
        self._pending = ""

    async def feed(self, chunk: str) -> None:
        """Takes one chunk; hands on each line it completes."""
        *lines, self._pending = (self._pending + chunk).split("\n")
        for line in lines:
            await self._on_line(line)

    async def flush(self) -> None:
        """Hands on the last line when the program did not end it with a newline."""
        if self._pending:
            line, self._pending = self._pending, ""
            await self._on_line(line)


class DaytonaService:
    """Creates a sandbox per agent run, uploads and runs the agent's code, cleans up."""

    def __init__(self, client: AsyncDaytona) -> None:
        self.client = client

    async def create_sandbox(self, agent_id: str, auto_stop_minutes: int = 15) -> AsyncSandbox:
        """Creates and starts a sandbox for one run of an agent.

        It is ephemeral: should this backend die before deleting it, the sandbox is
        deleted once it stops by itself after ``auto_stop_minutes`` without activity.
        """
        params = CreateSandboxFromSnapshotParams(
            language="python",
            name=f"agent-{agent_id}-{uuid.uuid4().hex[:8]}",  # names are unique per organization
            auto_stop_interval=auto_stop_minutes,
            ephemeral=True,
            labels={"agent_id": agent_id},
        )
        return await self.client.create(params)

    async def upload_agent_code(self, sandbox: AsyncSandbox, code: str,
                                filename: str = "agent.py") -> str:  # fmt: skip
        """Uploads the agent's code into the sandbox; returns its path there."""
        path = f"{AGENT_DIR}/{filename}"
        await sandbox.fs.upload_file(code.encode(), path)
        return path

    async def run_agent(self, sandbox: AsyncSandbox, path: str, on_stdout: LineHandler,
                        on_stderr: LineHandler) -> int:  # fmt: skip
        """Runs the uploaded code, handing on its output line by line as it is printed.

        Returns:
            The program's exit code.
        """
        await sandbox.process.create_session(SESSION)
        command = await sandbox.process.execute_session_command(
            SESSION, SessionExecuteRequest(command=run_command(path), run_async=True)
        )
        out, err = LineSplitter(on_stdout), LineSplitter(on_stderr)
        # Follows the command's output until it exits.
        await sandbox.process.get_session_command_logs_async(SESSION, command.cmd_id,
                                                             out.feed, err.feed)  # fmt: skip
        await out.flush()
        await err.flush()
        return await self._exit_code(sandbox, command.cmd_id)

    async def _exit_code(self, sandbox: AsyncSandbox, cmd_id: str) -> int:
        finished = await sandbox.process.get_session_command(SESSION, cmd_id)
        while finished.exit_code is None:  # the log ends as the program exits
            await asyncio.sleep(0.1)
            finished = await sandbox.process.get_session_command(SESSION, cmd_id)
        return finished.exit_code

    async def cleanup_sandbox(self, sandbox: AsyncSandbox) -> None:
        """Deletes the sandbox after the run."""
        await sandbox.delete()
