"""Terminals: interactive shells on pseudo-terminals owned by the agent (``pty_*`` ops).

The agent holds each PTY's master side, so a terminal outlives the server's
connections (and restarts): clients attach with ``pty_attach``, which streams
the terminal's output as D frames and takes input as D frames (and a J frame
``{"op": "resize", ...}``); a client hanging up only detaches. Output produced
while no client is attached is kept (the newest BACKLOG bytes) for the next one.
When the shell exits, attached clients get its exit code and the terminal is
forgotten; ``pty_kill`` kills the shell and everything it started.
"""

from __future__ import annotations

import asyncio
import datetime
import fcntl
import os
import pty
import struct
import termios
from collections import deque
from typing import Any

from . import confine, protocol, users
from .agent import KEEP_ALIVE, Request, op
from .process import kill_tree
from .protocol import AgentError
from .shell import read_some, write_all

BACKLOG = 1024 * 1024
QUEUE = 64  # chunks queued per attached client before the terminal waits for it
TERMINALS: dict[str, Terminal] = {}
KEEP_ALIVE.append(lambda: bool(TERMINALS))
EXITED = None


class Terminal:
    """One shell on a pseudo-terminal."""

    def __init__(self, tid: str, user: users.User, cwd: str, env: dict[str, str],
                 envs: dict[str, str], size: tuple[int, int], lazy: bool) -> None:
        self.id, self.user, self.cwd, self.env, self.envs = tid, user, cwd, env, envs
        self.cols, self.rows = size
        self.lazy = lazy
        self.command: str | None = None  # run with ``shell -c`` instead of ``shell -i``
        self.created_at = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        self.proc: asyncio.subprocess.Process | None = None
        self.master = -1
        self.exit_code: int | None = None
        self.clients: list[asyncio.Queue[bytes | None]] = []
        self.backlog: deque[bytes] = deque()
        self.backlog_size = 0
        self.write_lock = asyncio.Lock()
        self.start_lock = asyncio.Lock()  # two first clients of a lazy terminal
        self.watcher: asyncio.Future[None] | None = None
        self.group = confine.Group()  # the terminal's cgroup: its shell and all it starts

    @property
    def active(self) -> bool:
        return self.proc is not None and self.exit_code is None

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "active": self.active, "cols": self.cols, "rows": self.rows,
                "createdAt": self.created_at, "cwd": self.cwd, "envs": self.envs,
                "lazyStart": self.lazy}

    async def start(self) -> None:
        """Start the shell (once) with the terminal as its controlling tty."""
        async with self.start_lock:
            if self.proc is None:
                await self._spawn()

    async def _spawn(self) -> None:
        master, slave = pty.openpty()
        try:
            _set_size(master, self.cols, self.rows)
            if users.privileged():  # the user's terminal, as login(1) would make it
                os.fchown(slave, self.user.uid, self.user.gid)
                os.fchmod(slave, 0o620)
            kwargs = users.spawn_kwargs(self.user, self.cwd, self.env, self.group, _take_terminal)
            args = ["-i"] if self.command is None else ["-c", self.command]
            self.proc = await asyncio.create_subprocess_exec(
                _shell(self.user), *args, stdin=slave, stdout=slave, stderr=slave, **kwargs)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self.watcher = asyncio.ensure_future(self._watch())

    def resize(self, cols: int, rows: int) -> None:
        if not self.active:
            raise AgentError(410, "SESSION_ENDED", f"terminal {self.id} is not running")
        _set_size(self.master, cols, rows)
        self.cols, self.rows = cols, rows

    async def write(self, data: bytes) -> None:
        if self.active:
            async with self.write_lock:
                await write_all(self.master, data)

    def attach(self) -> asyncio.Queue[bytes | None]:
        """A new client's queue of output chunks (None: the shell exited), backlog first."""
        client: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE)
        if self.backlog:
            client.put_nowait(b"".join(self.backlog))
            self.backlog.clear()
            self.backlog_size = 0
        if self.exit_code is not None:
            client.put_nowait(EXITED)
        self.clients.append(client)
        return client

    def detach(self, client: asyncio.Queue[bytes | None]) -> None:
        if client in self.clients:
            self.clients.remove(client)
        while not client.empty():  # unblocks a delivery waiting for room
            client.get_nowait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            kill_tree(self.proc.pid, self.group)

    async def _deliver(self, data: bytes | None) -> None:
        if not self.clients and data is not None:
            self.backlog.append(data)
            self.backlog_size += len(data)
            while self.backlog_size > BACKLOG:
                self.backlog_size -= len(self.backlog.popleft())
        for client in list(self.clients):
            await client.put(data)  # a slow client slows the terminal down

    async def _pump(self) -> None:
        while data := await read_some(self.master):
            await self._deliver(data)

    async def _watch(self) -> None:
        assert self.proc is not None
        pump = asyncio.ensure_future(self._pump())
        code = await self.proc.wait()
        await asyncio.wait([pump], timeout=0.5)  # what the shell wrote last
        pump.cancel()
        os.close(self.master)  # hangs up whatever still holds the terminal
        self.exit_code = code if code >= 0 else 128 - code
        self.group.close()
        if TERMINALS.get(self.id) is self:
            del TERMINALS[self.id]
        await self._deliver(EXITED)


def _shell(user: users.User) -> str:
    if os.path.basename(user.shell) in ("nologin", "false"):
        return "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    return user.shell


def _take_terminal() -> None:
    """In the shell's process, after setsid: make the pty its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _size(request: Request, name: str, default: int) -> int:
    value = request.arg(name, int, default)
    if not _valid(value):
        raise protocol.bad_request(f"{name} must be between 1 and 1000")
    return value


async def create(request: Request) -> Terminal:
    """A new terminal as described by the request (started unless ``lazyStart``)."""
    tid = request.arg("id")
    if not tid or "/" in tid:
        raise protocol.bad_request("invalid terminal id")
    if tid in TERMINALS:
        raise AgentError(409, "PTY_ALREADY_EXISTS", f"PTY session with ID '{tid}' already exists")
    user = users.lookup(request.arg("user", str, None))
    cwd = request.arg("cwd", str, None) or users.work_dir(user)
    if not os.path.isdir(cwd):
        raise protocol.bad_request(f"working directory {cwd} does not exist")
    envs = {"TERM": "xterm-256color", **(request.arg("envs", dict, None) or {})}
    env = {**(request.arg("env", dict, None) or {}), **envs}
    size = (_size(request, "cols", 80), _size(request, "rows", 24))
    lazy = bool(request.arg("lazyStart", bool, False))
    terminal = Terminal(tid, user, cwd, env, envs, size, lazy)
    terminal.command = request.arg("command", str, None)
    TERMINALS[tid] = terminal
    if not terminal.lazy:
        try:
            await terminal.start()
        except BaseException:
            del TERMINALS[tid]
            raise
    return terminal


def lookup(request: Request) -> Terminal:
    tid = request.arg("id")
    if tid not in TERMINALS:
        raise protocol.not_found(f"PTY session {tid} not found", "PROCESS_NOT_FOUND")
    return TERMINALS[tid]


@op("pty_create")
async def create_terminal(request: Request) -> dict[str, Any]:
    return (await create(request)).info()


@op("pty_list")
async def list_terminals(request: Request) -> dict[str, Any]:
    return {"sessions": [t.info() for t in TERMINALS.values()]}


@op("pty_get")
async def get_terminal(request: Request) -> dict[str, Any]:
    return lookup(request).info()


@op("pty_resize")
async def resize_terminal(request: Request) -> dict[str, Any]:
    terminal = lookup(request)
    terminal.resize(_size(request, "cols", terminal.cols), _size(request, "rows", terminal.rows))
    return terminal.info()


@op("pty_kill")
async def kill_terminal(request: Request) -> dict[str, Any]:
    """Kill the shell and everything it started; attached clients see exit code 137."""
    terminal = lookup(request)
    del TERMINALS[terminal.id]
    terminal.kill()
    if terminal.watcher is not None:
        await asyncio.wait([terminal.watcher], timeout=5)
    return {}


@op("pty_attach")
async def attach(request: Request) -> dict[str, Any] | None:
    """Connect to a terminal (``create``: a new one): J ``connected``, then D frames both ways.

    Ends with the shell's exit code, or silently when the server hangs up.
    """
    terminal = await create(request) if request.arg("create", bool, False) else lookup(request)
    await terminal.start()
    client = terminal.attach()
    await request.send_json({"event": "connected", **terminal.info()})
    typing = asyncio.ensure_future(_input(request, terminal))
    try:
        while True:
            chunk = asyncio.ensure_future(client.get())
            await asyncio.wait([chunk, typing], return_when=asyncio.FIRST_COMPLETED)
            if not chunk.done():
                chunk.cancel()
                return None
            data = chunk.result()
            if data is EXITED:
                return {"exitCode": terminal.exit_code}
            await request.send(protocol.DATA, data)
    finally:
        terminal.detach(client)
        typing.cancel()


async def _input(request: Request, terminal: Terminal) -> None:
    """Apply what the server sends until it hangs up: D input, J resize."""
    while True:
        try:
            kind, payload = await request.receive()
        except (EOFError, ConnectionError, protocol.ProtocolError):
            return
        if kind == protocol.DATA:
            await terminal.write(payload)
        elif kind == protocol.JSON:
            message = protocol.decode(payload)
            cols, rows = message.get("cols"), message.get("rows")
            if message.get("op") == "resize" and terminal.active and _valid(cols, rows):
                assert isinstance(cols, int) and isinstance(rows, int)
                terminal.resize(cols, rows)


def _valid(*sizes: object) -> bool:
    return all(isinstance(n, int) and 1 <= n <= 1000 for n in sizes)
