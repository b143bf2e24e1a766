"""Running commands: ``exec`` (one shell command), ``code_run``, and sandbox info."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import confine, protocol, relay, spare, users
from .agent import KEEP_ALIVE, Request, op
from .artifacts import ArtifactSplitter, chart_env
from .protocol import AgentError

VERSION = "cove-agent 0.1.0"
DRAIN_SECONDS = 0.2
RUNNERS = {
    "python": ["python3", "-c"],
    "javascript": ["node", "-e"],
    "typescript": ["tsx", "-e"],
}


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (found through /proc, so setsid cannot hide one)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, group: confine.Group | None = None) -> None:
    """SIGKILL everything ``pid`` started: its cgroup ``group`` when it has one (no
    process escapes that), else ``pid``, its process group and every descendant."""
    if group is not None and group.kill():
        return
    victims = [pid, *descendants(pid)]
    for target in victims:
        try:
            os.kill(target, signal.SIGSTOP)  # freeze first so none can fork away
        except ProcessLookupError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for target in victims:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Clipped:
    """Where a command's output goes when the server wants at most ``limit`` bytes of
    it: the first half is sent as it comes; of the rest only the newest half is kept
    and sent at the end, after a ``{"omitted": n}`` J frame counting what was dropped.
    The command runs on, read at full speed, whatever it prints."""

    def __init__(self, request: Request, kind: bytes, limit: int, *, hold: bool = False
                 ) -> None:  # fmt: skip
        self.request = request
        self.kind = kind
        self.hold = hold  # (see ``mux.Stream.send``)
        self.head = limit - limit // 2  # bytes still to send as they come
        self.keep = limit // 2
        self.tail: deque[bytes] = deque()
        self.size = 0
        self.omitted = 0

    async def write(self, chunk: bytes) -> None:
        if self.head > 0:
            now, chunk = chunk[: self.head], chunk[self.head :]
            self.head -= len(now)
            await self.request.send(self.kind, now, hold=self.hold)
        if chunk:
            self.tail.append(chunk)
            self.size += len(chunk)
            while self.tail and self.size - len(self.tail[0]) >= self.keep:
                self.size -= len(dropped := self.tail.popleft())
                self.omitted += len(dropped)

    async def close(self) -> None:
        """Send what was kept of the end (after the count of what was dropped)."""
        tail = b"".join(self.tail)
        cut = max(0, len(tail) - self.keep)
        self.omitted += cut
        self.tail.clear()
        if self.omitted:
            await self.request.send_json({"omitted": self.omitted})
        for start in range(cut, len(tail), protocol.CHUNK):
            await self.request.send(self.kind, tail[start : start + protocol.CHUNK],
                                    hold=self.hold)  # fmt: skip


class Passed:
    """Where a command's output goes when the server takes all of it."""

    def __init__(self, request: Request, kind: bytes, *, hold: bool = False) -> None:
        self.request = request
        self.kind = kind
        self.hold = hold  # (see ``mux.Stream.send``)

    async def write(self, chunk: bytes) -> None:
        await self.request.send(self.kind, chunk, hold=self.hold)

    async def close(self) -> None:
        pass


def _sink(request: Request, kind: bytes, limit: int | None) -> Clipped | Passed:
    """A command's output: small frames may be held back a few ms, to reach the server
    with the reply in one write (see ``mux.Stream.send``)."""
    if limit is None:
        return Passed(request, kind, hold=True)
    return Clipped(request, kind, limit, hold=True)


async def run_streaming(
    request: Request, argv: list[str], *, user: users.User, cwd: str | None,
    env: dict[str, str] | None, timeout: float | None, merge: bool, limit: int | None = None,
    charts: int | None = None,
) -> int:
    """Run ``argv``, stream its output as frames, return its exit code. With
    ``limit``, at most that many bytes of each stream are sent (see :class:`Clipped`);
    with ``charts``, chart artifact lines of stdout are sent apart, at most that many
    bytes of them (see :class:`~cove.agent.artifacts.ArtifactSplitter`).

    Raises:
        AgentError: 408 PROCESS_EXECUTION_TIMEOUT once ``timeout`` passes (the
            whole process tree is killed at that moment).
    """
    proc, out_r, err_r, group = await _spawn(request, argv, user, cwd, env, merge)
    sinks: list[Clipped | Passed | ArtifactSplitter] = [_sink(request, protocol.STDOUT, limit)]
    if charts is not None:
        sinks[0] = ArtifactSplitter(request, sinks[0], charts)
    pumps = [Pump(out_r, sinks[0])]
    if not merge:
        sinks.append(_sink(request, protocol.STDERR, limit))
        pumps.append(Pump(err_r, sinks[1]))
    try:
        async with asyncio.timeout(timeout if timeout and timeout > 0 else None):
            await finished(proc, pumps)
    except TimeoutError:
        kill_tree(proc.pid, group)
        await proc.wait()
        raise AgentError(408, "PROCESS_EXECUTION_TIMEOUT", "command execution timeout") from None
    finally:
        if proc.returncode is None:
            kill_tree(proc.pid, group)
        for pump in pumps:
            pump.task.cancel()
        _after_answer(request, group.close)  # its rmdir need not delay the answer
    for sink in sinks:
        await sink.close()
    code = proc.returncode
    assert code is not None  # finished waited for it
    return code if code >= 0 else 128 - code


_AFTER: set[asyncio.Task[None]] = set()


def _after_answer(request: Request, then: Callable[[], None]) -> None:
    """Call ``then`` once the request is over (answered, reset, or its connection
    gone), or when the agent stops."""

    async def wait() -> None:
        try:
            await request.hung_up()
        finally:
            then()

    task = asyncio.ensure_future(wait())
    _AFTER.add(task)
    task.add_done_callback(_AFTER.discard)


async def _spawn(
    request: Request, argv: list[str], user: users.User, cwd: str | None,
    env: dict[str, str] | None, merge: bool,
) -> tuple[asyncio.subprocess.Process | spare.Exited, int, int, confine.Group]:
    """Start ``argv`` in a cgroup of its own: by the spare when there is one, else
    afresh. Returns the process, the read ends of its stdout and stderr, its group."""
    ready = spare.take(request.hung_up)
    if ready is not None:
        launched, out_r, err_r = ready.launch(argv, user, cwd, env, merge)
        return launched, out_r, err_r, ready.group
    out_r, out_w = users.owned_pipe(user)
    err_r, err_w = (out_r, out_w) if merge else users.owned_pipe(user)
    group = confine.Group()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out_w, stderr=err_w,
            **users.spawn_kwargs(user, cwd, env, group),
        )
    except BaseException:
        for fd in {out_r, err_r}:
            os.close(fd)
        group.close()
        raise
    finally:
        for fd in {out_w, err_w}:
            os.close(fd)
    return proc, out_r, err_r, group


class Pipe:
    """The agent's end of one of a command's pipes, read straight from its descriptor
    (no transport, no stream buffer: a read takes what the pipe holds, at most ``n``
    bytes, and waits on the loop only while it is empty)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._loop = asyncio.get_running_loop()

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; empty at the end (every writer gone)."""
        while True:
            try:
                return os.read(self._fd, n)
            except BlockingIOError:
                pass
            except OSError:  # (a pipe's read end fails no other way; as the end)
                return b""
            ready = self._loop.create_future()
            self._loop.add_reader(self._fd, _resolve, ready)
            try:
                await ready
            finally:
                self._loop.remove_reader(self._fd)

    def discard(self) -> None:
        """Read what comes from now on and drop it, until the end; then close. At most
        ``DISCARDED_MAX`` pipes at once are read so; past that, it is closed now."""
        if len(_discarded) >= DISCARDED_MAX:
            self.close()
            return
        _discarded.add(self)
        self._loop.add_reader(self._fd, self._drop)

    def _drop(self) -> None:
        try:
            if os.read(self._fd, protocol.CHUNK):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._loop.remove_reader(self._fd)
        _discarded.discard(self)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _resolve(ready: asyncio.Future[None]) -> None:
    """(A reader callback that may run after its read was cancelled, in the same turn
    of the loop.)"""
    if not ready.done():
        ready.set_result(None)


# Pipes whose command exited while processes it left behind still hold them: what those
# print is read and dropped (see ``Pump.release``). At most this many at once. They keep
# the agent from its idle exit, which would close them under those processes.
DISCARDED_MAX = 256
_discarded: set[Pipe] = set()
KEEP_ALIVE.append(lambda: bool(_discarded))


class Pump:
    """Copies one of a command's pipes to its sink, keeping count of the time it spends
    handing output on (waiting for the connection to the server, or its credit). Once
    its task ends the pipe is closed (at the end of the output, or cancelled), or read
    on and dropped (released, see :meth:`release`)."""

    def __init__(self, fd: int, sink: Clipped | Passed | ArtifactSplitter) -> None:
        self._loop = asyncio.get_running_loop()
        self._sent = 0.0  # seconds spent in the sink's writes (all but the current one)
        self._since: float | None = None  # when the current write began
        self._pipe = Pipe(fd)
        self._released = False
        self.task = asyncio.ensure_future(self._run(sink))
        self.task.add_done_callback(self._ended)  # (also when cancelled before it ran)

    async def _run(self, sink: Clipped | Passed | ArtifactSplitter) -> None:
        while chunk := await self._pipe.read(protocol.CHUNK):
            self._since = self._loop.time()
            try:
                await sink.write(chunk)
            finally:
                self._sent += self._loop.time() - self._since
                self._since = None

    def _ended(self, _task: asyncio.Future[None]) -> None:
        if self._released:
            self._pipe.discard()
        else:
            self._pipe.close()

    def release(self) -> None:
        """Stop handing output on (the command exited; processes it left behind hold
        the pipe): what they print from now on is dropped as it comes, so that they
        run on as they would with their output sent, neither blocked by a full pipe
        nor broken by a closed one, and the agent keeps no buffer for them."""
        self._released = True
        self.task.cancel()

    def sending(self) -> float:
        """The seconds it spent handing output on so far."""
        now = self._loop.time()
        return self._sent + (now - self._since if self._since is not None else 0.0)


async def finished(proc: asyncio.subprocess.Process | spare.Exited,
                    pumps: Sequence[Pump]) -> None:  # fmt: skip
    """The command exited and what it printed was read. Processes it left in the
    background do not hold the call: their output is read for DRAIN_SECONDS more,
    then dropped (they keep running, in the command's cgroup: see ``Pump.release``). The time
    a pump spends handing output on does not count: the rest of what the command
    printed before it exited is still sent when the connection to the server is slow
    (busy with other requests' data), where it was cut off and lost after 0.2 s."""
    await proc.wait()
    loop = asyncio.get_running_loop()
    exited = loop.time()
    sent = {pump: pump.sending() for pump in pumps}
    pending = [pump for pump in pumps if not pump.task.done()]
    while pending:
        # Each pump's drain time left: DRAIN_SECONDS less what passed since the exit
        # while it was not handing output on.
        left = {pump: DRAIN_SECONDS - (loop.time() - exited - (pump.sending() - sent[pump]))
                for pump in pending}  # fmt: skip
        for pump in [pump for pump in pending if left[pump] <= 0]:
            pump.release()
            pending.remove(pump)
        if pending:
            await asyncio.wait([pump.task for pump in pending],
                               timeout=min(left[pump] for pump in pending))  # fmt: skip
            pending = [pump for pump in pending if not pump.task.done()]


def _limit(request: Request) -> int | None:
    limit = request.arg("limit", int, None)
    if limit is not None and limit < 2:
        raise protocol.bad_request("limit must be at least 2 bytes")
    return limit


def _charts(request: Request) -> int | None:
    charts = request.arg("charts", int, None)
    if charts is not None and charts < 0:
        raise protocol.bad_request("charts must not be negative")
    return charts


@op("exec", cancel_when_abandoned=True)
async def exec_command(request: Request) -> dict[str, Any]:
    """Run a shell command; stdout and stderr arrive merged as O frames (with
    ``separate``: stdout as O, stderr as E frames)."""
    user = users.lookup(request.arg("user", str, None))
    command = request.arg("command")
    started = time.monotonic()
    code = await run_streaming(
        request, ["/bin/sh", "-c", command], user=user, cwd=request.arg("cwd", str, None),
        env=request.arg("env", dict, None), timeout=request.arg("timeout", (int, float), None),
        merge=not request.arg("separate", bool, False), limit=_limit(request),
    )
    return {"exitCode": code, "seconds": time.monotonic() - started}


@op("code_run", cancel_when_abandoned=True)
async def code_run(request: Request) -> dict[str, Any]:
    """Run a snippet with the interpreter of its language (python, javascript, typescript).

    With ``charts`` (a byte count), chart artifact lines leave the output and arrive as
    C frames; a Python snippet then gets the snapshot's matplotlib backend for charts
    (``MPLBACKEND``), where the sandbox has it and ``env`` names no backend."""
    language = request.arg("language", str, "python")
    if language not in RUNNERS:
        raise protocol.bad_request(f"unsupported language '{language}'")
    argv = [*RUNNERS[language], request.arg("code"), *request.arg("argv", list, [])]
    user = users.lookup(request.arg("user", str, None))
    charts = _charts(request)
    env = request.arg("env", dict, None)
    if charts is not None and language == "python":
        env = chart_env(env)
    code = await run_streaming(
        request, argv, user=user, cwd=request.arg("cwd", str, None), env=env,
        timeout=request.arg("timeout", (int, float), None), merge=True, limit=_limit(request),
        charts=charts,
    )
    return {"exitCode": code}


@op("info")
async def info(request: Request) -> dict[str, Any]:
    """The user's home, the working directory, the environment and the agent version."""
    user = users.lookup(request.arg("user", str, None))
    env = users.environment(user, request.arg("env", dict, None))
    return {"home": user.home, "workDir": users.work_dir(user), "env": env, "version": VERSION}


@op("env_forget")
async def env_forget(request: Request) -> dict[str, Any]:
    names = [str(n) for n in request.arg("names", list)]
    keep = [str(n) for n in request.arg("keep", list, None) or []]
    users.forget_env(names, request.arg("valuePrefix", str, None), keep)
    relay.discard_all()  # (made with the environment as it was)
    return {}


@op("ping")
async def ping(request: Request) -> dict[str, Any]:
    """Readiness, and a warm pool's keep-warm ping: with ``spare``, a spare is readied
    for the first command (see ``spare.prepare``), and the first command's own first
    steps are taken ahead (see ``_first_steps``)."""
    if request.arg("spare", bool, False):
        spare.prepare(request.hung_up)
        asyncio.ensure_future(_first_steps(request.hung_up()))
    return {"pid": os.getpid()}


async def _first_steps(done: Awaitable[None]) -> None:
    """Once the ping is answered: what a command looks up first, looked up once (the C
    library loads its user and group databases' modules on the first lookup, and the
    sandbox's files are read for the first time), so that the first command finds it
    done. The user's entry and groups are kept while /etc/passwd and /etc/group are
    unchanged (see ``users.lookup``); the rest each command looks up again."""
    await done
    try:
        user = users.lookup(None)  # (its groups with it)
        users.environment(user)
        users.start_dir(user, None)
    except Exception:  # noqa: BLE001 - the command itself will report what is wrong
        pass
