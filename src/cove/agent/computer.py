"""Computer use: a virtual desktop in the sandbox (``computeruse_*`` ops), as Daytona's.

``computeruse_start`` starts, as the sandbox user and each in a cgroup of its own
(``confine.Group``), in this order: ``xvfb`` (display ``:0``, 1024x768x24, no TCP),
``wm`` (matchbox, a small window manager: windows open maximized; ``xfce4``, Daytona's
name for its desktop, is accepted as an alias), ``x11vnc`` (VNC on 127.0.0.1:5901, inside
the sandbox only) and ``novnc`` (websockify serving noVNC on port 6080, which preview
URLs reach). A process that dies is started again (at most ``MAX_RESTARTS`` times). What
each prints is kept, bounded (``LOG_BYTES`` of stdout as its logs, as much of stderr as
its errors).

Input and screenshots are in ``computer_input``: helper programs (xdotool, Python with
PIL) run as the desktop's user through ``computer_run.run_x``, with argv lists only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import confine, protocol, users
from .agent import Request, op
from .process import kill_tree

DISPLAY = ":0"
DESKTOP_ENV = {"DISPLAY": DISPLAY}
X_SOCKET = "/tmp/.X11-unix/X0"
SCREEN = (1024, 768)
VNC_PORT, NOVNC_PORT = 5901, 6080
PROGRAMS: dict[str, tuple[int, list[str]]] = {  # name: (priority, argv)
    # (a lock left by an Xvfb of before a sandbox restart may name a live pid now;
    # -noreset: an X server resets when its last client leaves, and that wipes the root
    # window's properties, the accessibility bus's address among them: the bus launcher
    # sets it and disconnects, maybe before any other client connected)
    "xvfb": (100, ["/bin/sh", "-c", 'rm -f /tmp/.X0-lock && exec "$@"', "xvfb", "Xvfb",
                   DISPLAY, "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp",
                   "-noreset"]),
    "wm": (200, ["matchbox-window-manager", "-display", DISPLAY]),
    "x11vnc": (300, ["x11vnc", "-display", DISPLAY, "-forever", "-shared", "-localhost",
                     "-nopw", "-rfbport", str(VNC_PORT)]),
    "novnc": (400, ["websockify", "--web", "/usr/share/novnc", str(NOVNC_PORT),
                    f"localhost:{VNC_PORT}"]),
}  # fmt: skip
# Started with the desktop when installed, not reported (Daytona's status has four): the
# accessibility (AT-SPI) bus, on a session bus of its own; apps find it through the X
# root window's AT_SPI_BUS property.
HIDDEN: dict[str, tuple[int, list[str]]] = {
    "a11y": (150, ["dbus-run-session", "--", "/usr/libexec/at-spi-bus-launcher",
                   "--launch-immediately"]),
}  # fmt: skip
ALIASES = {"xfce4": "wm"}
LOG_BYTES = 64 * 1024
MAX_RESTARTS = 3
READY_SECONDS = 10.0
STOP_SECONDS = 2.0


class Ring:
    """The newest ``LOG_BYTES`` of a stream."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        while self.size - len(self.chunks[0]) >= LOG_BYTES:
            self.size -= len(self.chunks.popleft())

    def text(self) -> str:
        return b"".join(self.chunks)[-LOG_BYTES:].decode(errors="replace")


@dataclass
class Program:
    """One desktop process: its argv, what it printed, how it runs."""

    name: str
    priority: int
    argv: list[str]
    out: Ring = field(default_factory=Ring)
    err: Ring = field(default_factory=Ring)
    proc: asyncio.subprocess.Process | None = None
    group: confine.Group | None = None
    hidden: bool = False  # optional, not reported (HIDDEN)
    wanted: bool = False  # started and not stopped: restart it when it dies
    ending: bool = False  # being stopped by the agent (its death is no surprise)
    restarts: int = 0
    tasks: list[asyncio.Future[Any]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def status(self) -> dict[str, Any]:
        pid = self.proc.pid if self.running and self.proc else None
        return {"running": self.running, "pid": pid, "priority": self.priority,
                "autoRestart": True}  # fmt: skip


_programs = {name: Program(name, prio, argv) for name, (prio, argv) in PROGRAMS.items()}
_programs.update({name: Program(name, prio, argv, hidden=True)
                  for name, (prio, argv) in HIDDEN.items()})  # fmt: skip
_lock = asyncio.Lock()
_owner: users.User | None = None
BEFORE_STOP: list[Callable[[], Awaitable[None]]] = []  # run before the desktop stops


def program(name: str) -> Program:
    """The process called ``name`` (or by its alias). Raises AgentError 404."""
    found = _programs.get(ALIASES.get(name, name))
    if found is None or found.hidden:
        raise protocol.not_found(f"no computer-use process '{name}' (one of "
                                 f"{', '.join(PROGRAMS)})")  # fmt: skip
    return found


def owner() -> users.User | None:
    """The user the desktop runs (or last ran) as; None before the first start."""
    return _owner


def desktop_user() -> users.User:
    """The user the desktop runs as. Raises AgentError 400 when it is not running."""
    if _owner is None or not _programs["xvfb"].running:
        raise protocol.bad_request("computer use is not started (POST /computeruse/start)",
                                   "COMPUTER_USE_NOT_STARTED")  # fmt: skip
    return _owner


async def _launch(prog: Program, user: users.User) -> None:
    group = confine.Group()
    out_r, out_w = users.owned_pipe(user)
    err_r, err_w = users.owned_pipe(user)
    try:
        prog.proc = await asyncio.create_subprocess_exec(
            *prog.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out_w, stderr=err_w,
            **users.spawn_kwargs(user, user.home, DESKTOP_ENV, group))
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        group.close()
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    prog.group = group
    prog.tasks = [asyncio.ensure_future(_keep(out_r, prog.out)),
                  asyncio.ensure_future(_keep(err_r, prog.err)),
                  asyncio.ensure_future(_watch(prog, prog.proc, user))]  # fmt: skip


async def _keep(fd: int, ring: Ring) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=protocol.CHUNK)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb"))
    try:
        while chunk := await reader.read(protocol.CHUNK):
            ring.add(chunk)
    finally:
        transport.close()


async def _watch(prog: Program, proc: asyncio.subprocess.Process, user: users.User) -> None:
    """Restart ``prog`` when it dies while wanted (at most MAX_RESTARTS times). When the X
    server died, every process is started again, in order (they all need the display);
    one that dies while the X server is down comes back with it."""
    await proc.wait()
    if prog.proc is not proc or not prog.wanted or prog.ending or prog.restarts >= MAX_RESTARTS:
        return
    prog.err.add(f"[cove] {prog.name} exited ({proc.returncode}); restarting\n".encode())
    await asyncio.sleep(1.0)
    try:
        await _restart(prog, proc, user)
    except Exception as exc:  # noqa: BLE001 - keep the reason where the user can read it
        prog.err.add(f"[cove] restarting {prog.name} failed: {exc!r}\n".encode())


async def _restart(prog: Program, proc: asyncio.subprocess.Process, user: users.User) -> None:
    async with _lock:
        if not prog.wanted or prog.proc is not proc:
            return
        if prog.name == "xvfb":
            prog.restarts += 1
            with contextlib.suppress(protocol.AgentError):
                await _restart_display(user)
        elif _programs["xvfb"].running:
            prog.restarts += 1
            await _end(prog, keep_wanted=True)
            await _launch(prog, user)


async def _restart_display(user: users.User) -> None:
    """Start the X server again and, after it, every other process (all need the display;
    the accessibility bus publishes its address on the X server's root window, so one
    that outlived its X server is unreachable). Raises AgentError as ``_start_all``."""
    for other in _programs.values():
        await _end(other, keep_wanted=True)
    await _start_all(user)


async def _end(prog: Program, *, keep_wanted: bool = False) -> None:
    """Stop ``prog``: SIGTERM (Xvfb then cleans up), then SIGKILL its whole cgroup."""
    prog.wanted, prog.ending = keep_wanted, True
    proc, group = prog.proc, prog.group
    if proc is not None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), STOP_SECONDS)
        with contextlib.suppress(FileNotFoundError):  # empty: swept by confine.sweep()
            kill_tree(proc.pid, group)
        await proc.wait()
    for task in prog.tasks:
        if task is not asyncio.current_task():
            task.cancel()
    if group is not None:
        group.close()
    prog.group, prog.ending = None, False


async def _display_ready() -> bool:
    """Whether the X server accepts connections on its socket (polled a while)."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if not _programs["xvfb"].running:
            return False
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
            probe.connect(X_SOCKET)
            return True
        await asyncio.sleep(0.05)
    return False


def _statuses() -> dict[str, Any]:
    return {name: prog.status() for name, prog in _programs.items() if not prog.hidden}


def _check_installed(user: users.User) -> None:
    path = users.environment(user).get("PATH")
    needed = ["Xvfb", *(argv[0] for name, (_, argv) in PROGRAMS.items() if name != "xvfb")]
    missing = [name for name in needed if shutil.which(name, path=path) is None]
    if missing:
        raise protocol.bad_request(f"computer use needs {', '.join(missing)} in the sandbox "
                                   "(the default snapshot has them)",
                                   "COMPUTER_USE_NOT_INSTALLED")  # fmt: skip


@op("computeruse_start")
async def start(request: Request) -> dict[str, Any]:
    """Start the desktop's processes that do not run (a no-op for those that do)."""
    global _owner
    user = users.lookup(request.arg("user", str, None))
    _check_installed(user)
    async with _lock:
        for prog in _programs.values():
            prog.restarts = 0 if not prog.running else prog.restarts
        await _start_all(user)
        _owner = user
    return {"message": "Computer use processes started successfully", "status": _statuses()}


async def _start_all(user: users.User) -> None:
    """Start, in order, each process that does not run (the X server first, until it
    accepts connections). Raises AgentError 500 (and stops all) when it does not."""
    path = users.environment(user).get("PATH")
    for prog in sorted(_programs.values(), key=lambda p: p.priority):
        if prog.hidden and not all(shutil.which(a, path=path) for a in prog.argv
                                   if not a.startswith("-")):
            continue  # not installed: no accessibility tree
        if not prog.running:
            await _launch(prog, user)
        prog.wanted = True
        if prog.name == "xvfb" and not await _display_ready():
            await _stop_all()
            raise protocol.AgentError(500, "COMPUTER_USE_START_FAILED",
                                      "the X server did not start: "
                                      + _programs["xvfb"].err.text()[-500:])  # fmt: skip


async def _stop_all() -> None:
    for prog in sorted(_programs.values(), key=lambda p: -p.priority):
        await _end(prog)


@op("computeruse_stop")
async def stop(request: Request) -> dict[str, Any]:
    """Stop every desktop process (and everything each started), recordings first."""
    for hook in BEFORE_STOP:
        await hook()
    async with _lock:
        await _stop_all()
    return {"message": "Computer use processes stopped successfully", "status": _statuses()}


@op("computeruse_status")
async def status(request: Request) -> dict[str, Any]:
    """``active`` (all run), ``partial`` or ``inactive`` (none runs)."""
    running = [p.running for p in _programs.values() if not p.hidden]
    return {"status": "active" if all(running) else "partial" if any(running) else "inactive"}


@op("computeruse_process")
async def process(request: Request) -> dict[str, Any]:
    """One process: ``what`` is ``status``, ``logs`` (stdout), ``errors`` (stderr) or
    ``restart``."""
    prog = program(request.arg("name"))
    what = request.arg("what")
    if what == "status":
        return {"processName": prog.name, "running": prog.running}
    if what == "logs":
        return {"processName": prog.name, "logs": prog.out.text()}
    if what == "errors":
        return {"processName": prog.name, "errors": prog.err.text()}
    if what != "restart":
        raise protocol.bad_request(f"unknown process operation '{what}'")
    user = _owner or users.lookup(request.arg("user", str, None))
    async with _lock:
        prog.restarts = 0
        if prog.name == "xvfb" and prog.wanted:  # the desktop runs: all of it needs the
            await _restart_display(user)  # display, and comes back after it
        else:
            await _end(prog, keep_wanted=True)
            await _launch(prog, user)
    return {"processName": prog.name, "message": f"Process {prog.name} restarted successfully"}
