"""One SSH session channel, bridged to the sandbox's toolbox agent.

With a terminal (``pty-req``) the session is a terminal of the agent's (the
toolbox's PTYs: an interactive shell, or ``shell -c command``), resized when
the client's window changes and killed when the client goes. Without one it is
``shell -c command`` (or the shell reading stdin) on pipes, stdout and stderr
apart. Either way the client gets the exit status. Sessions count as activity
of the sandbox while they are open (its auto-stop timer does not run out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncssh

from cove.core.agent_client import AgentClient
from cove.core.ssh_access import SshAccess
from cove.errors import CoveError
from cove.server import Services

log = logging.getLogger("cove.ssh")
# Client input buffered before the client is told to wait: chunks, and bytes (a client's
# packets may carry up to 256 KiB each, whatever packet size the gateway announced, as
# asyncssh takes them: 64 chunks alone could hold 16 MiB).
INPUT_QUEUE = 64
INPUT_BYTES = 256 * 1024
TERM = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
DEFAULT_SIZE = (80, 24)


class Session(asyncssh.SSHServerSession):
    """A shell, a command or a terminal in the sandbox, for one SSH channel."""

    def __init__(self, services: Services, access: SshAccess,
                 ended: Callable[[], None] = lambda: None,
                 flowing: asyncio.Event | None = None) -> None:  # fmt: skip
        self.services = services
        self.access = access
        self.ended = ended  # called once, when the channel is gone
        # Set while the connection's socket takes more output (None: not watched).
        self.flowing = flowing
        self.chan: asyncssh.SSHServerChannel | None = None
        self.command: str | None = None
        self.term: str | None = None  # set by a pty-req
        self.size = DEFAULT_SIZE
        self.input: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued = 0  # bytes in self.input
        self.resizes: asyncio.Queue[tuple[int, int]] = asyncio.Queue(maxsize=4)
        self.writable = asyncio.Event()
        self.writable.set()
        self.task: asyncio.Task[None] | None = None

    # -- what the client asks for

    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: object) -> bool:  # fmt: skip
        self.term = term_type if TERM.match(term_type or "") else "xterm-256color"
        self.size = _size(term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        if "\0" in command:
            return False
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return False  # no SFTP (or anything else)

    def session_started(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    def data_received(self, data: bytes, datatype: int | None) -> None:
        data = bytes(data)  # (a bytearray, when the channel joined packets it held)
        self.input.put_nowait(data)
        self.queued += len(data)
        full = self.input.qsize() >= INPUT_QUEUE or self.queued >= INPUT_BYTES
        if full and self.chan is not None:
            self.chan.pause_reading()

    def eof_received(self) -> bool:
        self.input.put_nowait(None)
        return True  # keep sending output

    def terminal_size_changed(self, width: int, height: int, pixwidth: int,
                              pixheight: int) -> None:  # fmt: skip
        if self.resizes.full():  # only the newest size matters
            self.resizes.get_nowait()
        self.resizes.put_nowait(_size(width, height))

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended()
        if self.task is not None:
            self.task.cancel()

    # -- running it

    async def _run(self) -> None:
        assert self.chan is not None
        chan = self.chan
        try:
            agent = self._agent()
            keepalive = asyncio.ensure_future(self._keep_alive())
            try:
                code = await (self._terminal(agent) if self.term else self._pipes(agent))
            finally:
                keepalive.cancel()
        except CoveError as exc:
            chan.write_stderr(f"cove: {exc.message}\r\n".encode())
            code = 1
        except (asyncssh.Error, ConnectionError):
            return
        with contextlib.suppress(asyncssh.Error, OSError):
            chan.exit(code)

    def _agent(self) -> AgentClient:
        """The agent of the grant's sandbox, which must be started.

        Raises:
            NotFound: the sandbox was deleted. InvalidState: it is not started.
        """
        sandbox = self.services.ssh.sandbox(self.access)
        sandbox = self.services.toolbox.sandbox(sandbox.organization_id, sandbox.id)
        return self.services.toolbox.agent(sandbox)

    async def _keep_alive(self) -> None:
        """Record activity while the session is open (as Daytona's gateway does)."""
        interval = min(30.0, self.services.settings.minute_seconds / 2)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(CoveError):
                self.services.lifecycle.touch(self.access.organization_id, self.access.sandbox_id)

    async def _terminal(self, agent: AgentClient) -> int:
        tid = f"ssh-{uuid.uuid4().hex}"
        cols, rows = self.size
        try:
            async with agent.pty_create_attach(tid, cols, rows, None, {"TERM": self.term or ""},
                                               self.command) as pty:  # fmt: skip
                typing = _background(self._type(pty.send_input, pty.resize))
                try:
                    async for data in pty.output():
                        await self._write(data)
                finally:
                    typing.cancel()
                return pty.exit_code or 0
        finally:
            with contextlib.suppress(CoveError):  # the client left: end what it ran
                await agent.pty_kill(tid)

    async def _pipes(self, agent: AgentClient) -> int:
        async with agent.pipe_exec(self.command) as run:
            typing = _background(self._type(run.send_input, None, run.close_input))
            try:
                async for out in run.output():
                    await self._write(out.data, stderr=out.stream == "stderr")
            finally:
                typing.cancel()
            return run.exit_code or 0

    async def _type(self, send: Callable[[bytes], Awaitable[None]],
                    resize: Callable[[int, int], Awaitable[None]] | None,
                    close: Callable[[], Awaitable[None]] | None = None) -> None:
        """Pass the client's input (and window changes) on until its end."""
        assert self.chan is not None
        while True:
            data = asyncio.ensure_future(self.input.get())
            size = asyncio.ensure_future(self.resizes.get())
            await asyncio.wait([data, size], return_when=asyncio.FIRST_COMPLETED)
            if not size.done():
                size.cancel()
            elif resize is not None:
                await resize(*size.result())
            if not data.done():
                data.cancel()
                continue
            chunk = data.result()
            self.queued -= len(chunk or b"")
            if self.input.qsize() < INPUT_QUEUE // 2 and self.queued < INPUT_BYTES // 2:
                self.chan.resume_reading()
            if chunk is None:
                if close is not None:
                    await close()
                return
            await send(chunk)

    async def _write(self, data: bytes, *, stderr: bool = False) -> None:
        assert self.chan is not None
        await self.writable.wait()  # the client's window
        if self.flowing is not None:
            await self.flowing.wait()  # and its socket
        if stderr:
            self.chan.write_stderr(data)
        else:
            self.chan.write(data)


def _background(work: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
    """A task whose failure (the agent went away mid-input) is the output's to report."""
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


def _size(cols: int, rows: int) -> tuple[int, int]:
    """A client's window size as the agent takes it (0, unknown, is the default)."""
    return (min(cols, 1000) or DEFAULT_SIZE[0], min(rows, 1000) or DEFAULT_SIZE[1])
