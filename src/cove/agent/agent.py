"""The toolbox agent: serves requests from the Cove server inside one sandbox.

Started by the sandbox's init (and restarted if it dies), it accepts on a
listening Unix socket that the Cove server bound on the host (in the sandbox's
directory, which nothing in the sandbox can see) and handed to init: no name
inside the sandbox leads to it, so no process of the sandbox can take its place.
(On the gVisor tier it binds that socket itself, in a directory only its uid
may enter; see ``confine``.) It runs as the sandbox's agent uid, which the
workload (started in a nested user namespace, see ``confine``) can neither
signal, trace nor become. As a
second guard, peers inside the sandbox's pid namespace are refused (not on
gVisor, whose SO_PEERCRED says pid 1 for every peer).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import confine, mux, protocol, relay, spare
from .protocol import AgentError

log = logging.getLogger("cove-agent")
_PEERCRED = struct.Struct("3i")
IDLE_EXIT = 75  # the exit status of an idle agent (init starts it on the next connection)
# Checks of handler modules: whether something of theirs lives that an exit would lose
# (sessions, terminals, interpreter contexts), so the agent must not exit idle.
KEEP_ALIVE: list[Callable[[], bool]] = []
CHANNELS: set[mux.Channel] = set()


@dataclass
class Request:
    """One request: its message and the stream it came on."""

    message: dict[str, Any]
    stream: mux.Stream

    async def send(self, kind: bytes, payload: bytes = b"", *, hold: bool = False) -> None:
        await self.stream.send(kind, payload, hold=hold)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.stream.send(protocol.JSON, protocol.encode(message))

    async def receive(self) -> tuple[bytes, bytes]:
        """The server's next frame (after the request). Raises EOFError at its end."""
        return await self.stream.receive()

    async def hung_up(self) -> None:
        """Return once the server will send nothing more on this request."""
        await self.stream.ended_by_peer()

    def arg(self, name: str, kind: type | tuple[type, ...] = str, default: Any = ...) -> Any:
        value = self.message.get(name, default)
        if value is ...:
            raise protocol.bad_request(f"missing field '{name}'")
        if value is not None and value is not default and not isinstance(value, kind):
            raise protocol.bad_request(f"field '{name}' has the wrong type")
        return value


Handler = Callable[[Request], Awaitable["dict[str, Any] | None"]]
HANDLERS: dict[str, Handler] = {}
CANCELLABLE: set[str] = set()


def op(name: str, *, cancel_when_abandoned: bool = False) -> Callable[[Handler], Handler]:
    """Register a handler. It returns the reply's fields (``ok`` is added), or
    None when it already sent its own final reply. With ``cancel_when_abandoned``,
    it is cancelled when the server abandons the request (for work that is only
    worth doing for the caller, such as a command whose output nobody will read)."""

    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        if cancel_when_abandoned:
            CANCELLABLE.add(name)
        return fn

    return register


def _peer_pid(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return _PEERCRED.unpack(raw)[0]


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, check_peer: bool = True
) -> None:
    """Serve one connection: every stream the server opens on it is a request."""
    if check_peer and _peer_pid(writer) != 0:  # a process of this sandbox, not Cove
        writer.close()
        return
    try:
        first = await protocol.read_frame(reader)
    except (EOFError, ConnectionError, protocol.ProtocolError):
        writer.close()
        return
    if first[0] == protocol.RELAY and first[1] == 0:
        relay.hand_over(writer, first[2])
        return
    channel = mux.Channel(reader, writer, opened=serve_request)
    channel.deliver(*first)
    CHANNELS.add(channel)
    try:
        await channel.closed.wait()
    finally:
        CHANNELS.discard(channel)


async def serve_request(stream: mux.Stream, payload: bytes) -> None:
    """Serve one request (a stream whose first frame carried ``payload``)."""
    try:
        request = Request(protocol.decode(payload), stream)
        name = request.arg("op")
        handler = _handler(name)
        stream.accept()
        if name in CANCELLABLE:
            reply = await _unless_abandoned(stream, handler(request))
        else:
            reply = await handler(request)
        if reply is not None:
            await request.send_json({"ok": True, **reply})
    except AgentError as exc:
        await _try_send(stream, exc.reply())
    except (EOFError, ConnectionError, protocol.ProtocolError):
        pass
    except Exception as exc:  # noqa: BLE001 - report, never crash the agent
        log.exception("request failed")
        await _try_send(stream, AgentError(500, "INTERNAL_ERROR", repr(exc)).reply())
    finally:
        stream.finish()


async def _unless_abandoned(
    stream: mux.Stream, work: Awaitable[dict[str, Any] | None]
) -> dict[str, Any] | None:
    """Run a handler until it is done or the server abandons its request (it reset
    the stream, or the connection is gone): then the handler is cancelled, so the
    work it started (a command, a search) stops instead of running for nobody. (It
    runs in the request's task, which the stream's end cancels: no task of its own.)"""
    task = asyncio.current_task()
    assert task is not None
    abandoned = False

    def abandon() -> None:
        nonlocal abandoned
        abandoned = True
        task.cancel()

    stream.when_ended(abandon)
    try:
        return await work
    except asyncio.CancelledError:
        if abandoned and task.uncancel() == 0:  # our cancel, not one of the agent's exit
            raise EOFError("the server abandoned the request") from None
        raise
    finally:
        stream.when_ended(None)


async def _try_send(stream: mux.Stream, message: dict[str, Any]) -> None:
    try:
        await stream.send(protocol.JSON, protocol.encode(message))
    except (ConnectionError, RuntimeError):
        pass


# Each handler module and the ops it registers. A module is imported at the first
# request for one of its ops, but those of EAGER at start: an agent's start (every
# sandbox's, and every restart after an idle exit) imports only what commands need,
# and what few sandboxes use (files, sessions, git, the interpreter, LSP, computer
# use) costs neither start-up time nor memory until used. A unit test checks this
# table against what the modules register.
OP_MODULES: dict[str, tuple[str, ...]] = {
    "process": ("ping", "exec", "code_run", "info", "env_forget"),
    "files": ("fs_info", "fs_list", "fs_mkdir", "fs_delete", "fs_move", "fs_chmod"),
    "fs_search": ("fs_find", "fs_search", "fs_replace"),
    "fs_transfer": ("fs_write", "fs_read"),
    "git": ("git_clone", "git_status", "git_add", "git_commit", "git_branches",
            "git_branch_create", "git_branch_delete", "git_checkout", "git_pull", "git_push"),
    "git_admin": ("git_init", "git_reset", "git_restore", "git_remotes", "git_remote_add",
                  "git_config_get", "git_config_set", "git_config_user", "git_credentials"),
    "sessions": ("session_create", "session_list", "session_get", "session_delete",
                 "session_exec", "session_command", "session_logs", "session_input"),
    "terminal": ("pty_create", "pty_list", "pty_get", "pty_resize", "pty_kill", "pty_attach"),
    "pipes": ("pipe_exec",),
    "interpreter": ("interpreter_run", "interpreter_create", "interpreter_list",
                    "interpreter_delete"),
    "lsp": ("lsp_start", "lsp_stop", "lsp_did_open", "lsp_did_close", "lsp_completions",
            "lsp_document_symbols", "lsp_workspace_symbols"),
    "computer": ("computeruse_start", "computeruse_stop", "computeruse_status",
                 "computeruse_process"),
    "computer_input": ("computeruse_mouse_position", "computeruse_mouse_move",
                       "computeruse_mouse_click", "computeruse_mouse_drag",
                       "computeruse_mouse_button", "computeruse_mouse_scroll",
                       "computeruse_keyboard_type", "computeruse_keyboard_press",
                       "computeruse_keyboard_hold", "computeruse_screenshot",
                       "computeruse_display_info", "computeruse_windows"),
    "computer_record": ("computeruse_recording_start", "computeruse_recording_stop",
                        "computeruse_recording_list", "computeruse_recording_get",
                        "computeruse_recording_delete", "computeruse_recording_read"),
    "computer_a11y": ("computeruse_a11y_tree", "computeruse_a11y_find",
                      "computeruse_a11y_node"),
}  # fmt: skip
EAGER = ("process",)
_MODULE_OF = {name: module for module, ops in OP_MODULES.items() for name in ops}


def _handler(name: str) -> Handler:
    """The handler of op ``name``, its module imported first if it was not yet.

    Raises:
        AgentError: no such op (400), or its module failed to load (500).
    """
    handler = HANDLERS.get(name)
    if handler is not None:
        return handler
    module = _MODULE_OF.get(name)
    if module is None:
        raise protocol.bad_request(f"unknown op {name!r}")
    if not _load(module):
        raise AgentError(500, "INTERNAL_ERROR", f"toolbox module {module} failed to load")
    return HANDLERS[name]


def _load(module: str) -> bool:
    """Import a handler module; a failure is logged (the other ops still serve)."""
    import importlib

    try:
        importlib.import_module(f".{module}", __package__)
    except Exception:  # noqa: BLE001 - keep the agent up for the other ops
        log.exception("toolbox module %s failed to load", module)
        return False
    return True


def load_handlers(modules: tuple[str, ...] = tuple(OP_MODULES)) -> None:
    """Import handler modules (default: every one, for the protocol's spec and tests)."""
    for module in modules:
        _load(module)


async def serve(
    path: str | None = None, *, sock: socket.socket | None = None, check_peer: bool = True
) -> asyncio.Server:
    """Serve on the listening socket ``sock``, or listen on ``path``.

    ``check_peer=False`` serves any peer: only for tests running the agent in process.
    """
    load_handlers(EAGER)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handle(reader, writer, check_peer=check_peer)

    return await asyncio.start_unix_server(
        on_connect, path=path, sock=sock, limit=protocol.MAX_FRAME
    )


def busy() -> bool:
    """Whether the agent serves a request, keeps state a handler registered in
    :data:`KEEP_ALIVE`, or has a child process (a command, a shell, a server)."""
    return (any(ch.busy for ch in CHANNELS) or any(check() for check in KEEP_ALIVE)
            or _has_children())  # fmt: skip


def _has_children() -> bool:
    """Whether a child other than a waiting spare (see :mod:`spare`) or a relay (which
    answers for its commands itself, see :mod:`relay`) lives."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return True
    spares = spare.waiting() | relay.pids()
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                if any(int(pid) not in spares for pid in f.read().split()):
                    return True
        except OSError:
            continue
    return False


async def exit_when_idle(server: asyncio.Server, seconds: float, stop: asyncio.Event) -> None:
    """Once the agent was not :func:`busy` for ``seconds``: stop accepting, close
    every connection and set ``stop``. The check and the closing are one step (no
    await between): a request not yet read is never half-served; the server sees
    the connection end before an accept, and sends it again on a new connection
    (which init answers by starting the agent again)."""
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while True:
        await asyncio.sleep(min(max(seconds / 4, 0.05), 5.0))
        if busy():
            quiet_since = loop.time()
        elif loop.time() - quiet_since >= seconds:
            server.close()
            for channel in list(CHANNELS):
                channel._shut()
            relay.discard_all()  # (a relay's command under way runs on to its answer)
            stop.set()
            return


async def main() -> int:
    conf = confine.configure(sys.argv[1:])
    spare.enable(conf.spare_helper)
    if conf.listen_path is not None:  # gVisor: in a directory only the agent may enter
        server = await serve(conf.listen_path, check_peer=conf.peer_check)
        os.chmod(conf.listen_path, 0o600)
    elif conf.listen is not None:
        server = await serve(sock=socket.socket(fileno=conf.listen), check_peer=conf.peer_check)
    else:
        raise SystemExit("cove-agent: no --listen-fd")
    _settle_memory()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    idle = None
    if conf.idle_exit > 0 and conf.listen is not None:
        idle = asyncio.ensure_future(exit_when_idle(server, conf.idle_exit, stop))
    async with server:
        await stop.wait()
    return IDLE_EXIT if idle is not None and idle.done() else 0


def _settle_memory() -> None:
    """Once the start-up's modules are loaded: keep their objects out of every later
    pass of the cyclic garbage collector (they live as long as the agent; the pages
    of a forked spare stay shared with the agent's), and turn it on (the start
    command turns it off while the agent loads)."""
    gc.freeze()
    gc.enable()


def run(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Entry point inside the sandbox (imported, never run as ``__main__``, so that
    handler modules register on this module's HANDLERS). ``loop``: an event loop
    made ahead (a pre-started agent makes it while init is told its pid)."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    os.umask(0o022)
    if loop is None:
        sys.exit(asyncio.run(main()))
    asyncio.set_event_loop(loop)  # (as asyncio.run sets its own)
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        sys.exit(runner.run(main()))
