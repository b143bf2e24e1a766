"""Sessions: persistent shells that run commands one at a time (the ``session_*`` ops).

A session is one shell (:mod:`.shell`) running as the sandbox user with the
sandbox's environment, owned by the agent, so it outlives the server's
connections (and restarts). The agent writes it one command at a time on its
private script pipe, wrapped in markers that carry an unguessable per-session
token ``T``::

    command printf 'T<\\n'; command printf 'T<\\n' >&2; (exit P);
    command eval '<cmd>'; command printf 'T>%d\\n' "$?"; command printf 'T>\\n' >&2

``command eval`` runs the command in the shell itself (``cd`` and ``export``
carry over) and turns a syntax error into exit code 2 instead of killing the
shell; ``(exit P)`` restores ``$?`` of the previous command. The shell's stdout
and stderr are pipes to the agent, split at the markers into per-command logs
(output between commands, e.g. of background jobs, goes to the latest command).
A command's stdin is the shell's stdin, a pipe only ``session_input`` writes
to; input a command left unread is discarded before the next one starts.
Nothing is written to disk and no variable is added to the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections import deque
from itertools import islice
from typing import Any

from . import protocol, users
from .agent import KEEP_ALIVE, Request, op
from .process import kill_tree
from .protocol import AgentError
from .shell import END, START, Shell, Splitter, new_token, script_line, spawn, split

LOG_CAP = 4 * 1024 * 1024  # newest bytes of output kept per command
# Of all sessions together (the agent's memory is the sandbox's): beyond this, the
# oldest finished commands lose their logs first.
LOGS_CAP = 64 * 1024 * 1024
MAX_COMMANDS = 1000  # per session; the oldest finished ones are forgotten
STDERR_GRACE = 1.0  # seconds to wait for the stderr end marker once the exit code is known
INPUT_TIMEOUT = 10.0
SESSIONS: dict[str, Session] = {}
KEEP_ALIVE.append(lambda: bool(SESSIONS))
_ORDER = itertools.count()


class Log:
    """A command's output: ``(kind, bytes)`` chunks in arrival order, newest LOG_CAP bytes."""

    def __init__(self) -> None:
        self.chunks: deque[tuple[bytes, bytes]] = deque()
        self.first = 0  # sequence number of chunks[0]
        self.size = 0
        self.changed = asyncio.Event()

    def append(self, kind: bytes, data: bytes) -> None:
        self.chunks.append((kind, data))
        self.size += len(data)
        while self.size > LOG_CAP and len(self.chunks) > 1:
            self.size -= len(self.chunks.popleft()[1])
            self.first += 1
        self.wake()

    def wake(self) -> None:
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    def since(self, seq: int) -> tuple[list[tuple[bytes, bytes]], int]:
        """The chunks from sequence number ``seq`` on, and the next sequence number."""
        start = max(seq, self.first)
        return list(islice(self.chunks, start - self.first, None)), self.first + len(self.chunks)

    def clear(self) -> None:
        self.first += len(self.chunks)
        self.chunks.clear()
        self.size = 0


class Command:
    """One command of a session: queued, running, then finished with an exit code."""

    def __init__(self, text: str, suppress_echo: bool) -> None:
        self.id = str(uuid.uuid4())
        self.created = next(_ORDER)
        self.text = text
        self.suppress_echo = suppress_echo
        self.exit_code: int | None = None
        self.rc = 1  # from the stdout end marker
        self.started = False
        self.log = Log()
        self.done = asyncio.Event()
        self.pending_input: list[bytes] = []
        self.ended: set[bytes] = set()  # streams whose end marker arrived

    def finish(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code
            self.done.set()
            self.log.wake()

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.text, "exitCode": self.exit_code}


class Channel:
    """The session's view of one of its shell's output streams: who gets its bytes."""

    def __init__(self, session: Session, kind: bytes) -> None:
        self.session = session
        self.kind = kind
        self.owner: Command | None = None  # between its start and end markers

    def data(self, data: bytes) -> None:
        owner = self.owner or self.session.latest
        if owner is not None:
            owner.log.append(self.kind, data)

    def marker(self, body: bytes) -> None:
        if body == START:
            self.owner = self.session.current
        elif body.startswith(END) and self.owner is not None:
            code = int(body[1:]) if body[1:].isdigit() else None
            self.session.stream_ended(self.owner, self.kind, code)
            self.owner = None


class Session:
    """One shell and its commands."""

    def __init__(self, sid: str, shell: Shell) -> None:
        self.id = sid
        self.shell = shell
        self.token = new_token()
        self.commands: dict[str, Command] = {}
        self.queue: asyncio.Queue[Command] = asyncio.Queue()
        self.current: Command | None = None
        self.latest: Command | None = None
        self.exit_code: int | None = None  # the shell's, once it ended
        self.input_lock = asyncio.Lock()
        self.tasks = [asyncio.ensure_future(self._run()), asyncio.ensure_future(self._watch())]

    @property
    def ended(self) -> bool:
        return self.exit_code is not None

    def public(self) -> dict[str, Any]:
        return {"sessionId": self.id, "commands": [c.public() for c in self.commands.values()]}

    def command(self, cid: str) -> Command:
        if cid not in self.commands:
            raise protocol.not_found(f"command {cid} not found in session {self.id}",
                                     "COMMAND_NOT_FOUND")
        return self.commands[cid]

    def submit(self, text: str, suppress_echo: bool) -> Command:
        if self.ended:
            raise AgentError(410, "SESSION_ENDED", f"session {self.id} has ended")
        command = Command(text, suppress_echo)
        self.commands[command.id] = command
        self._forget_old()
        self.queue.put_nowait(command)
        return command

    async def send_input(self, command: Command, data: bytes) -> None:
        if command.exit_code is not None:
            raise AgentError(410, "COMMAND_ALREADY_COMPLETED",
                             f"command {command.id} already completed "
                             f"with exit code {command.exit_code}")
        if not command.suppress_echo:
            command.log.append(protocol.STDOUT, data)
        if not command.started:
            command.pending_input.append(data)
            return
        async with self.input_lock:
            try:
                await asyncio.wait_for(self.shell.feed(data), INPUT_TIMEOUT)
            except TimeoutError:
                raise AgentError(409, "INPUT_NOT_CONSUMED",
                                 "the command is not reading its input") from None

    def stream_ended(self, command: Command, kind: bytes, code: int | None) -> None:
        command.ended.add(kind)
        if kind == protocol.STDOUT:
            command.rc = code if code is not None else 1
            if protocol.STDERR not in command.ended:  # e.g. the command ran `exec 2>&1`
                asyncio.get_running_loop().call_later(STDERR_GRACE, command.finish, command.rc)
        if {protocol.STDOUT, protocol.STDERR} <= command.ended:
            command.finish(command.rc)

    async def _run(self) -> None:
        """Feed queued commands to the shell, one at a time."""
        previous = 0
        while True:
            command = await self.queue.get()
            if self.ended:
                command.finish(self.exit_code or 0)
                continue
            self.shell.discard_input()
            self.current = self.latest = command
            command.started = True
            try:
                await self.shell.run(script_line(command.text, self.token, previous))
                for data in command.pending_input:
                    await self.shell.feed(data)
            except OSError:
                pass  # the shell is gone: _watch finishes the command
            command.pending_input.clear()
            await command.done.wait()
            previous = command.exit_code or 0
            self.current = None
            self._trim_logs()

    async def _watch(self) -> None:
        """Split the shell's output; when it exits, end the session."""
        readers = [asyncio.ensure_future(self._split(self.shell.stdout, protocol.STDOUT)),
                   asyncio.ensure_future(self._split(self.shell.stderr, protocol.STDERR))]
        code = await self.shell.proc.wait()
        await asyncio.wait(readers, timeout=0.5)  # background jobs may hold the pipes open
        self.exit_code = code if code >= 0 else 128 - code
        for command in self.commands.values():
            command.finish(self.exit_code)

    async def _split(self, stream: asyncio.StreamReader, kind: bytes) -> None:
        channel = Channel(self, kind)
        await split(stream, Splitter(self.token, channel.data, channel.marker))

    def _forget_old(self) -> None:
        finished = [c for c in self.commands.values() if c.exit_code is not None]
        for command in finished[: max(0, len(self.commands) - MAX_COMMANDS)]:
            del self.commands[command.id]

    def _trim_logs(self) -> None:
        """Keep the logs of every session within LOGS_CAP: the oldest finished
        commands (of any session) lose theirs first; running ones keep theirs."""
        commands = [c for s in SESSIONS.values() if s is not self for c in s.commands.values()]
        commands += self.commands.values()
        total = sum(c.log.size for c in commands)
        for command in sorted(commands, key=lambda c: c.created):
            if total <= LOGS_CAP:
                break
            if command.exit_code is not None and command.log.size:
                total -= command.log.size
                command.log.clear()

    async def close(self) -> None:
        """Kill the shell and everything it started."""
        if self.shell.proc.returncode is None:
            kill_tree(self.shell.proc.pid, self.shell.group)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.shell.proc.wait(), 5)
        for task in self.tasks:
            task.cancel()
        for command in self.commands.values():
            command.finish(137)
        self.shell.close()


def lookup(request: Request) -> Session:
    sid = request.arg("sessionId")
    if sid not in SESSIONS:
        raise protocol.not_found(f"session {sid} not found", "SESSION_NOT_FOUND")
    return SESSIONS[sid]


async def _until(request: Request, event: asyncio.Event) -> bool:
    """Wait for ``event``; False when the server hung up first."""
    waiter = asyncio.ensure_future(event.wait())
    hangup = asyncio.ensure_future(_hangup(request))
    try:
        await asyncio.wait([waiter, hangup], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        hangup.cancel()
    return event.is_set()


async def _hangup(request: Request) -> None:
    """Return once the server gave up on the request."""
    with contextlib.suppress(ConnectionError):
        await request.hung_up()


async def _send_log(request: Request, command: Command, *, follow: bool) -> bool:
    """Send the command's output as O/E frames (with ``follow``, until it exits)."""
    seq = 0
    while True:
        changed, done = command.log.changed, command.done.is_set()
        chunks, seq = command.log.since(seq)
        for kind, data in chunks:
            await request.send(kind, data)
        if done or not follow:
            return True
        if not await _until(request, changed):
            return False


@op("session_create")
async def create(request: Request) -> dict[str, Any]:
    """Start a session's shell as the sandbox user."""
    sid = request.arg("sessionId")
    if not sid or "/" in sid:
        raise protocol.bad_request("invalid session id")
    if sid in SESSIONS:
        raise AgentError(409, "SESSION_ALREADY_EXISTS", f"session {sid} already exists")
    user = users.lookup(request.arg("user", str, None))
    session = Session(sid, await spawn(user, request.arg("env", dict, None)))
    if sid in SESSIONS:  # created meanwhile by a concurrent request
        await session.close()
        raise AgentError(409, "SESSION_ALREADY_EXISTS", f"session {sid} already exists")
    SESSIONS[sid] = session
    return {}


@op("session_list")
async def list_sessions(request: Request) -> dict[str, Any]:
    return {"sessions": [s.public() for s in SESSIONS.values()]}


@op("session_get")
async def get(request: Request) -> dict[str, Any]:
    return lookup(request).public()


@op("session_delete")
async def delete(request: Request) -> dict[str, Any]:
    """Kill the session's shell and every process it started."""
    session = SESSIONS.pop(lookup(request).id)
    await session.close()
    return {}


@op("session_exec")
async def execute(request: Request) -> dict[str, Any] | None:
    """Queue a command; unless ``async``, wait for it and send its output as O/E frames."""
    session = lookup(request)
    text = request.arg("command")
    if not text.strip() or "\0" in text:
        raise protocol.bad_request("command must be a non-empty string without NUL bytes")
    command = session.submit(text, bool(request.arg("suppressInputEcho", bool, False)))
    if request.arg("async", bool, False):
        return {"cmdId": command.id}
    if not await _until(request, command.done):
        return None
    await _send_log(request, command, follow=False)
    return {"cmdId": command.id, "exitCode": command.exit_code}


@op("session_command")
async def get_command(request: Request) -> dict[str, Any]:
    return lookup(request).command(request.arg("commandId")).public()


@op("session_logs")
async def logs(request: Request) -> dict[str, Any] | None:
    """A J event with the command, then its output as O/E frames (``follow``: until it exits)."""
    command = lookup(request).command(request.arg("commandId"))
    await request.send_json({"event": "command", **command.public()})
    if not await _send_log(request, command, follow=bool(request.arg("follow", bool, False))):
        return None
    return {"exitCode": command.exit_code}


@op("session_input")
async def send_input(request: Request) -> dict[str, Any]:
    """Write to the stdin of a running command (a newline is added if missing)."""
    session = lookup(request)
    command = session.command(request.arg("commandId"))
    if session.ended:
        raise AgentError(410, "SESSION_ENDED", f"session {session.id} has ended")
    data = request.arg("data").encode()
    await session.send_input(command, data if data.endswith(b"\n") else data + b"\n")
    return {}
