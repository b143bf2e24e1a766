"""Spare processes: ``exec`` and ``code_run`` without waiting on a cgroup migration.

A command must join its cgroups before it runs (``confine``), and moving a process
into a cgroup (a write to ``cgroup.procs``) waits for an RCU grace period: 3-10 ms,
far more than the fork and exec themselves. So after the first command, the agent
keeps one *spare*: a small static helper (``cove-init --spare``, see init.c)
spawned with ``posix_spawn``, which joins the cgroups every command joins and a
per-command cgroup of its own, and waits (holding nothing of the agent's but its
pipes) for the command it will become. Not a fork of the agent: a fork copies the
agent's page tables, shares its pages copy-on-write (each later write of either
side to one copies it) and execs from a large address space, ~2 ms of CPU per
command where the helper costs a fraction of that. Taking it, the agent sends
the command; the spare then does what a fresh spawn does after joining (working
directory, stdin from /dev/null, stdout/stderr to pipes, a new session, default
signals, the workload's user namespace, user and capabilities) and execs it,
PATH looked up in the command's environment, as ``subprocess`` does. Failures
before the exec come back as the OSError a fresh spawn raises. A new spare is
spawned once the command that took one is answered;
one left unused for ``IDLE_SECONDS`` exits (an idle sandbox keeps none). On the
gVisor tier (a new user namespace per command) commands are spawned as before.
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from collections.abc import Awaitable, Callable

from . import confine, protocol, users

IDLE_SECONDS = protocol.SPARE_SECONDS
ENABLED = False  # set by ``enable`` (the crun tier), or by tests
HELPER: str | None = None  # cove-init, run as ``cove-init --spare`` (see ``Spare``)
_ERROR = struct.Struct("ii")  # errno, what failed (0: the working directory, 1: else)
_current: Spare | None = None
WAITING: set[int] = set()  # pids of spares not (yet) running a command, alive or not reaped


def waiting() -> set[int]:
    """The pids of spares that run no command (an idle agent does not count them)."""
    return set(WAITING)


def enable(helper: str | None) -> None:
    """Use spares, run by ``helper`` (cove-init), when commands join cgroups a spare
    can join ahead (not on gVisor, whose commands each get a user namespace and a
    seccomp filter of their own, and spawn afresh)."""
    global ENABLED, HELPER
    HELPER = helper
    ENABLED = helper is not None and not confine.CURRENT.new_userns


class Exited:
    """Waits for a child of the agent to exit (through a pidfd): ``returncode`` as
    ``asyncio.subprocess.Process`` has it (negative: killed by that signal)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        self._fd = os.pidfd_open(pid)
        self._loop.add_reader(self._fd, self._reap)
        self._failure: tuple[int, str, str] | None = None

    def report_failure(self, error_r: int, cwd: str, executable: str) -> None:
        """At the exit, read the spare's error pipe ``error_r``: what it says failed
        before the exec makes :meth:`wait` raise it (as a spawn raises it)."""
        self._failure = (error_r, cwd, executable)

    def _reap(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self.returncode = os.waitstatus_to_exitcode(status)
        error = self._read_failure()
        if self._done.done():
            return
        if error is None:
            self._done.set_result(self.returncode)
        else:
            self._done.set_exception(error)

    def _read_failure(self) -> OSError | None:
        if self._failure is None:
            return None
        error_r, cwd, executable = self._failure
        os.set_blocking(error_r, False)
        try:
            report = os.read(error_r, _ERROR.size)  # its writers are gone: at once
        except BlockingIOError:
            report = b""
        finally:
            os.close(error_r)
        if len(report) < _ERROR.size:
            return None  # exec'd (the pipe closed on exec)
        code, what = _ERROR.unpack(report)
        code = code or errno.EIO
        return OSError(code, os.strerror(code), cwd if what == 0 else executable)

    async def wait(self) -> int:
        """The exit code, once the process exited.

        Raises:
            OSError: it never became the command (see :meth:`report_failure`).
        """
        return await asyncio.shield(self._done)


class Spare:
    """A process in its cgroups, waiting for the command it will become: the agent's
    helper (``cove-init --spare``, a small static program, see init.c) spawned with
    ``posix_spawn`` (no copy of the agent's memory, none of its pages shared)."""

    def __init__(self) -> None:
        assert HELPER is not None
        self.group = confine.Group()
        fds: list[int] = []
        try:
            self.order_r, self.order_w = _pipe(fds)
            self.error_r, self.error_w = _pipe(fds)
            self.out_r, self.out_w = _pipe(fds)
            self.err_r, self.err_w = _pipe(fds)
            self.pid = _spawn_helper(self)
        except BaseException:
            for fd in fds:
                os.close(fd)
            self.group.close()
            raise
        for fd in (self.order_r, self.error_w, self.out_w, self.err_w):
            os.close(fd)
        self.exited = Exited(self.pid)
        WAITING.add(self.pid)
        self._retire = asyncio.get_running_loop().call_later(IDLE_SECONDS, self.discard)

    @property
    def alive(self) -> bool:
        return self.exited.returncode is None

    def discard(self) -> None:
        """Let the spare go (it exits once its order pipe closes)."""
        global _current
        if _current is self:
            _current = None
        self._retire.cancel()
        for fd in (self.order_w, self.error_r, self.out_r, self.err_r):
            _close(fd)
        asyncio.ensure_future(self._bury())

    async def _bury(self) -> None:
        await self.exited.wait()
        WAITING.discard(self.pid)
        self.group.close()

    def launch(self, argv: list[str], user: users.User, cwd: str | None,
               env: dict[str, str] | None, merge: bool) -> tuple[Exited, int, int]:
        """Make the spare run ``argv`` (see ``users.start_dir`` for ``cwd`` and
        ``users.environment`` for ``env``); returns its exit watcher and the read
        ends of its stdout and stderr (the same pipe when ``merge``). It does not wait
        for the exec: a failure before it (as a spawn raises it) comes from the
        watcher's ``wait``.

        Raises:
            AgentError: the working directory does not exist.
            ValueError: an argument or variable holds a NUL byte (as a spawn raises it).
        """
        try:
            workdir = users.start_dir(user, cwd)
            if users.privileged():
                os.fchown(self.out_r, user.uid, user.gid)
                os.fchown(self.err_r, user.uid, user.gid)
            order = _order(argv, workdir, users.environment(user, env), merge, user)
            self._retire.cancel()
            WAITING.discard(self.pid)  # from here on it is the command
            _write_all(self.order_w, order)
        except BaseException:
            self.discard()
            raise
        os.close(self.order_w)
        if merge:
            os.close(self.err_r)
        self.exited.report_failure(self.error_r, workdir, argv[0])
        return self.exited, self.out_r, (self.out_r if merge else self.err_r)


def _spawn_helper(spare: Spare) -> int:
    """Start ``cove-init --spare`` with the spare's pipes and the cgroups to join (its
    own last); only those descriptors are inherited (every other is close-on-exec)."""
    assert HELPER is not None
    current = confine.CURRENT
    join = [*current.join, *([spare.group.fd] if spare.group.fd >= 0 else [])]
    userns = current.userns if current.userns is not None else -1
    passed = [spare.order_r, spare.error_w, spare.out_w, spare.err_w, *join,
              *([userns] if userns >= 0 else [])]  # fmt: skip
    argv = [HELPER, "--spare", str(spare.order_r), str(spare.error_w), str(spare.out_w),
            str(spare.err_w), str(userns), ",".join(map(str, join)),
            ",".join(map(str, sorted(current.caps))) or "-"]  # fmt: skip
    # (a dup2 onto itself clears the descriptor's close-on-exec flag, in the child only)
    actions = [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in passed]
    return os.posix_spawn(HELPER, argv, {}, file_actions=actions)


def _order(argv: list[str], cwd: str, env: dict[str, str], merge: bool,
           user: users.User) -> bytes:  # fmt: skip
    """The helper's order: NUL-terminated fields (see init.c)."""
    groups = [str(g) for g in user.groups()]
    variables = []
    for name, value in env.items():
        if not name or "=" in name:
            raise ValueError(f"illegal environment variable name: {name!r}")
        variables.append(f"{name}={value}")
    fields = [str(user.uid), str(user.gid), "1" if merge else "0", cwd,
              str(len(groups)), *groups, str(len(argv)), *argv, str(len(variables)), *variables,
              ""]  # fmt: skip
    order = "\0".join(fields)  # (each field NUL-terminated: the last, empty, ends the one before)
    if order.count("\0") != len(fields) - 1:
        raise ValueError("embedded null byte")
    return order.encode("utf-8", "surrogateescape")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def prepare(done: Callable[[], Awaitable[None]]) -> None:
    """Have a spare waiting for the first command once ``done()`` returns (the server's
    readiness and keep-warm pings): its cgroup migration, the slow part, is then over
    before a command comes, and the first command runs as fast as the later ones."""
    if ENABLED and _current is None:
        asyncio.ensure_future(_refill(done()))


def take(done: Callable[[], Awaitable[None]]) -> Spare | None:
    """The spare, or None: spares are off, or there is none yet (the first command, a
    failed spawn). Either way a new spare is spawned for the next command once ``done()``
    returns (the request is answered: the spawn never delays this command)."""
    global _current
    if not ENABLED:
        return None
    spare, _current = _current, None
    if spare is not None and not spare.alive:
        spare.discard()
        spare = None
    asyncio.ensure_future(_refill(done()))
    return spare


async def _refill(done: Awaitable[None]) -> None:
    global _current
    await done
    if _current is None and ENABLED:
        # The answer just sent woke the server, often onto this CPU: let it send the
        # answer on before the spawn (~0.2 ms) holds the CPU. Measured from the server's
        # /proc/<pid>/schedstat over 1,000 back-to-back execs, twice each way: its wait
        # for a CPU went from 0.23-0.26 to 0.14-0.17 ms per exec.
        os.sched_yield()
        try:
            _current = Spare()
        except OSError:
            _current = None


def _pipe(opened: list[int]) -> tuple[int, int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    opened += (read_end, write_end)
    return read_end, write_end


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
