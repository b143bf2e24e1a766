"""The code interpreter: stateful Python contexts, each one ``python3`` of the sandbox.

A context is a long-lived ``python3`` of the image running
``interpreter_driver`` as the sandbox user, spawned and kept by the agent (so
contexts outlive the Cove server's restarts, not the agent's). The agent talks
to it over a private pipe pair and also reads its fds 1 and 2 (output of
child processes). Runs in one context are serialized, first come first served.

A timeout interrupts the code (SIGINT, i.e. KeyboardInterrupt, twice), then
kills the context's whole process tree: its state is lost, and a fresh
interpreter starts on the next run. The same happens when the interpreter
dies (``os._exit``, the OOM killer): that run ends with an error saying so.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import select
import signal
import struct
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import confine, protocol, users
from .agent import KEEP_ALIVE, Request, op
from .process import kill_tree

DEFAULT_ID = "default"
RETRY_INTERRUPT_SECONDS = 1.0  # a second SIGINT, for code that swallowed the first
KILL_SECONDS = 3.0  # after the timeout, when the code still has not stopped
LINE_WAIT_SECONDS = 0.01  # for the end of a line, before sending its start on
_HEADER = struct.Struct(">I")
_MERGE_LIMIT = 256 * 1024  # characters of output per event sent on, at most
_DRIVER = (Path(__file__).with_name("interpreter_driver.py")).read_bytes()
_CONTEXTS: dict[str, Context] = {}
KEEP_ALIVE.append(lambda: bool(_CONTEXTS))


async def _ready(fds: set[int], *, write: bool = False) -> None:
    """Wait until one of ``fds`` is readable (writable); one-shot, so a stalled peer never spins."""
    loop = asyncio.get_running_loop()
    add, remove = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader,
                                                                         loop.remove_reader)
    ready = loop.create_future()
    for fd in fds:
        add(fd, _settle, ready)
    try:
        await ready
    finally:
        for fd in fds:
            remove(fd)


def _read(fd: int) -> bytes | None:
    """What ``fd`` holds now: b"" at end of file, None when nothing is there yet."""
    try:
        return os.read(fd, protocol.CHUNK)
    except BlockingIOError:
        return None


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await _ready({fd}, write=True)


class Worker:
    """One running interpreter and the agent's ends of its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process, fds: tuple[int, int, int, int],
                 group: confine.Group) -> None:  # fmt: skip
        self.proc = proc
        self.group = group  # the interpreter's cgroup: it and everything the code starts
        self.cmd_fd, self.msg_fd, out_fd, err_fd = fds
        self.streams = {out_fd: "stdout", err_fd: "stderr"}
        self.sink: asyncio.Queue[dict[str, Any]] | None = None
        self.alive = True
        self.reported = False  # the user was told that it died
        self.pump = asyncio.ensure_future(self._pump())

    @classmethod
    async def spawn(cls, user: users.User, cwd: str, env: dict[str, str]) -> Worker:
        """Start ``python3`` running the driver as ``user`` in ``cwd``.

        Raises:
            AgentError: bad cwd, or no python3 in the sandbox.
        """
        (cmd_r, cmd_w), (msg_r, msg_w), (out_r, out_w), (err_r, err_w) = (
            os.pipe() for _ in range(4))
        ours = (cmd_w, msg_r, out_r, err_r)
        group = confine.Group()
        try:
            proc = await asyncio.create_subprocess_exec(
                "python3", "-", str(cmd_r), str(msg_w), stdin=asyncio.subprocess.PIPE,
                stdout=out_w, stderr=err_w, pass_fds=(cmd_r, msg_w),
                **users.spawn_kwargs(user, cwd, env, group))
        except BaseException as exc:
            for fd in ours:
                os.close(fd)
            group.close()
            if isinstance(exc, FileNotFoundError):
                raise protocol.bad_request("the code interpreter needs python3 in the "
                                           "sandbox, and there is none on its PATH") from exc
            raise
        finally:
            for fd in (cmd_r, msg_w, out_w, err_w):
                os.close(fd)
        for fd in ours:
            os.set_blocking(fd, False)
        assert proc.stdin is not None
        proc.stdin.write(_DRIVER)
        proc.stdin.close()
        return cls(proc, ours, group)

    async def send(self, command: dict[str, Any]) -> None:
        body = json.dumps(command).encode()
        try:
            await _write_all(self.cmd_fd, _HEADER.pack(len(body)) + body)
        except OSError:
            pass  # it died: the pump reports it

    def dead(self) -> bool:
        """Whether it is gone, even when the pump has not noticed yet."""
        if not self.alive:
            return True  # (and its fds are closed)
        poller = select.poll()
        poller.register(self.msg_fd, select.POLLIN)
        return any(ev & select.POLLHUP for _, ev in poller.poll(0))

    def interrupt(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.proc.returncode is None:
            kill_tree(self.proc.pid, self.group)

    def death(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if code == -signal.SIGKILL else ""
            return f"was killed by {name}{hint}"
        return f"exited with code {code}"

    async def _emit(self, event: dict[str, Any]) -> None:
        if self.sink is not None:
            await self.sink.put(event)

    async def _pump(self) -> None:
        """Read the three pipes until the interpreter is gone, events to :attr:`sink`."""
        decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in self.streams}
        buffer = b""
        try:
            while True:
                await _ready({self.msg_fd, *self.streams})
                await self._drain_streams(decoders)
                data = _read(self.msg_fd)
                if data == b"":
                    break
                buffer += data or b""
                events, buffer = _split(buffer)
                for event in events:
                    if event.get("type") == "done":
                        await self._drain_streams(decoders)
                    await self._emit(event)
        except protocol.ProtocolError:
            pass  # the user's code wrote garbage on the driver's pipe
        finally:
            self.alive = False
            self.kill()
            await self.proc.wait()
            self.group.close()
            await self._drain_streams(decoders)
            for fd in (self.cmd_fd, self.msg_fd, *self.streams):
                os.close(fd)
            await self._emit({"type": "exit"})

    async def _drain_streams(self, decoders: Mapping[int, codecs.IncrementalDecoder]) -> None:
        for fd, kind in self.streams.items():
            while data := _read(fd):
                await self._emit({"type": kind, "text": decoders[fd].decode(data)})


def _split(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """The complete events at the start of ``buffer``, and what is left.

    Raises:
        ProtocolError: not a frame of the driver.
    """
    events = []
    while len(buffer) >= _HEADER.size:
        size = _HEADER.size + _HEADER.unpack_from(buffer)[0]
        if size > protocol.MAX_FRAME:
            raise protocol.ProtocolError("oversized event")
        if len(buffer) < size:
            break
        events.append(protocol.decode(buffer[_HEADER.size:size]))
        buffer = buffer[size:]
    return events, buffer


class Context:
    """A stateful interpreter: its identity, owner and current :class:`Worker`."""

    def __init__(self, context_id: str, user: users.User, cwd: str, env: dict[str, str]) -> None:
        self.id = context_id
        self.user = user
        self.cwd = cwd
        self.env = env
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.created_at = now.replace("+00:00", "Z")
        self.worker: Worker | None = None
        self.lock = asyncio.Lock()
        self.timed_out = False
        self.deleted = False

    def info(self) -> dict[str, Any]:
        active = self.worker is not None and self.worker.alive
        return {"id": self.id, "active": active, "createdAt": self.created_at,
                "cwd": self.cwd, "language": "python"}

    async def start(self) -> str | None:
        """A live worker; when the last one had died unnoticed, a notice saying so."""
        old = self.worker
        if old is not None:
            if not old.dead():
                return None
            old.kill()
            await asyncio.wait({old.pump})
        self.worker = await Worker.spawn(self.user, self.cwd, self.env)
        if old is None or old.reported:
            return None
        return (f"[the interpreter of this context {old.death()} since the last run; a fresh "
                "one was started, so earlier variables and imports are gone]\n")

    async def run(self, request: Request, code: str, envs: dict[str, str],
                  timeout: float | None) -> str:
        """Run ``code``, stream its events to ``request``; "completed" or "timeout"."""
        async with self.lock:
            notice = await self.start()
            worker = self.worker
            assert worker is not None
            worker.sink = asyncio.Queue(maxsize=16)
            self.timed_out = False
            guard = asyncio.ensure_future(self._guard(worker, timeout)) if timeout else None
            try:
                if notice:
                    await worker.sink.put({"type": "stderr", "text": notice})
                await worker.send({"code": code, "envs": envs})
                await self._forward(request, worker)
            finally:
                sink, worker.sink = worker.sink, None
                while not sink.empty():  # frees a pump blocked on a full queue
                    sink.get_nowait()
                if guard is not None:
                    guard.cancel()
            return "timeout" if self.timed_out else "completed"

    async def _guard(self, worker: Worker, timeout: float) -> None:
        await asyncio.sleep(timeout)
        self.timed_out = True
        worker.interrupt()
        await asyncio.sleep(RETRY_INTERRUPT_SECONDS)
        worker.interrupt()
        await asyncio.sleep(KILL_SECONDS - RETRY_INTERRUPT_SECONDS)
        worker.kill()

    async def _forward(self, request: Request | None, worker: Worker) -> None:
        """Relay events, adjacent output merged, up to the end of the run."""
        assert worker.sink is not None
        while True:
            for event in _merged(await _batch(worker.sink)):
                kind = event["type"]
                if kind == "done":
                    return
                if kind == "exit":
                    worker.reported = True
                    event = self._death_error(worker)
                try:
                    if request is not None:
                        await request.send_json(event)
                except (ConnectionError, RuntimeError):
                    request = None  # the client left: run on, to the end, unseen
                if kind == "exit":
                    return

    def _death_error(self, worker: Worker) -> dict[str, Any]:
        lost = "this context's state (variables, imports) is lost; a fresh interpreter starts "\
               "on the next run"
        if self.deleted:
            return _error("ContextDeleted", "the context was deleted while this code ran")
        if self.timed_out:
            return _error("TimeoutError", "the code did not stop when interrupted after the "
                          f"timeout, so its interpreter was killed: {lost}")
        return _error("InterpreterDied", f"the interpreter {worker.death()} while running "
                      f"this code: {lost}")

    def close(self) -> None:
        self.deleted = True
        if self.worker is not None:
            self.worker.kill()


async def _batch(sink: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events queued now; a line still open waits a moment for its end
    (``print`` writes the text and the newline separately)."""
    batch = [await sink.get()]
    while len(batch) < 256:
        while not sink.empty():
            batch.append(sink.get_nowait())
        last = batch[-1]
        if last["type"] not in ("stdout", "stderr") or last["text"].endswith("\n"):
            break
        try:
            batch.append(await asyncio.wait_for(sink.get(), LINE_WAIT_SECONDS))
        except TimeoutError:
            break
    return batch


def _error(name: str, value: str) -> dict[str, Any]:
    return {"type": "error", "name": name, "value": value, "traceback": ""}


def _merged(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for event in events:
        if (out and event["type"] in ("stdout", "stderr") and out[-1]["type"] == event["type"]
                and len(out[-1]["text"]) < _MERGE_LIMIT):
            out[-1] = {"type": event["type"], "text": out[-1]["text"] + event["text"]}
        else:
            out.append(event)
    return out


def _context(request: Request) -> Context:
    context_id = request.arg("contextId", str, None) or DEFAULT_ID
    context = _CONTEXTS.get(context_id)
    if context is None and context_id == DEFAULT_ID:
        user = users.lookup(request.arg("user", str, None))
        env = request.arg("env", dict, None) or {}
        context = Context(DEFAULT_ID, user, users.work_dir(user), env)
        _CONTEXTS[DEFAULT_ID] = context
    if context is None:
        raise protocol.not_found(f"context not found: {context_id}", "PROCESS_NOT_FOUND")
    return context


@op("interpreter_run")
async def run(request: Request) -> dict[str, Any]:
    """Run code in a context (default: the shared one); events as J frames."""
    code = request.arg("code")
    timeout = request.arg("timeout", (int, float), None)
    outcome = await _context(request).run(
        request, code, request.arg("envs", dict, None) or {}, timeout or None)
    return {"outcome": outcome}


@op("interpreter_create")
async def create(request: Request) -> dict[str, Any]:
    """A new context, its interpreter started at once."""
    user = users.lookup(request.arg("user", str, None))
    cwd = os.path.join(user.home, request.arg("cwd", str, None) or "")
    context = Context(str(uuid.uuid4()), user, os.path.normpath(cwd),
                      request.arg("env", dict, None) or {})
    await context.start()
    _CONTEXTS[context.id] = context
    return {"context": context.info()}


@op("interpreter_list")
async def list_contexts(request: Request) -> dict[str, Any]:
    """The user-created contexts (not the default one), oldest first."""
    found = [c.info() for c in _CONTEXTS.values() if c.id != DEFAULT_ID]
    return {"contexts": sorted(found, key=lambda info: info["createdAt"])}


@op("interpreter_delete")
async def delete(request: Request) -> dict[str, Any]:
    """Delete a context and kill its processes."""
    context_id = request.arg("id")
    if context_id == DEFAULT_ID:
        raise protocol.bad_request("the default context cannot be deleted")
    context = _CONTEXTS.pop(context_id, None)
    if context is None:
        raise protocol.not_found(f"context not found: {context_id}", "PROCESS_NOT_FOUND")
    context.close()
    return {}


def shutdown_all(wait: float = 5.0) -> None:
    """Kill every context and forget them; for tests of the in-process agent, called
    from outside the agent's thread (it waits up to ``wait`` seconds for the pumps)."""
    pumps = [c.worker.pump for c in _CONTEXTS.values() if c.worker is not None]
    for context in _CONTEXTS.values():
        context.close()
    _CONTEXTS.clear()
    deadline = time.monotonic() + wait
    while not all(p.done() for p in pumps) and time.monotonic() < deadline:
        time.sleep(0.01)


def _settle(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
