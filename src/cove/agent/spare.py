"""Spare processes: ``exec`` and ``code_run`` without waiting on a cgroup migration.

A command must join its cgroups before it runs (``confine``), and moving a process
into a cgroup (a write to ``cgroup.procs``) waits for an RCU grace period: 3-10 ms,
far more than the fork and exec themselves. So after the first command, the agent
keeps one *spare*: a fork of itself that has already joined the cgroups every
command joins and a per-command cgroup of its own, and waits (holding nothing of
the agent's but its pipes) for the command it will become. Taking it, the agent
sends the command; the spare then does what a fresh spawn does after joining
(working directory, stdin from /dev/null, stdout/stderr to pipes, a new session,
default signals, the workload's user namespace, user, capabilities and seccomp
filter) and execs it, PATH looked up in the command's environment, as
``subprocess`` does. Failures before the exec come back as the OSError a fresh
spawn raises. A new spare is forked once the command that took one is answered;
one left unused for ``IDLE_SECONDS`` exits (an idle sandbox keeps none). On the
gVisor tier (a new user namespace per command) commands are spawned as before.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import struct
from collections.abc import Awaitable, Callable

from . import confine, protocol, users

IDLE_SECONDS = protocol.SPARE_SECONDS
ENABLED = False  # set by ``enable`` (the crun tier), or by tests
_ERROR = struct.Struct("ii")  # errno, what failed (0: the working directory, 1: else)
_current: Spare | None = None
WAITING: set[int] = set()  # pids of spares not (yet) running a command, alive or not reaped


def waiting() -> set[int]:
    """The pids of spares that run no command (an idle agent does not count them)."""
    return set(WAITING)


def enable() -> None:
    """Use spares when commands join cgroups a spare can join ahead (not on gVisor)."""
    global ENABLED
    ENABLED = not confine.CURRENT.new_userns


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
    """A forked process in its cgroups, waiting for the command it will become."""

    def __init__(self) -> None:
        self.group = confine.Group()
        fds: list[int] = []
        try:
            self.order_r, self.order_w = _pipe(fds)
            self.error_r, self.error_w = _pipe(fds)
            self.out_r, self.out_w = _pipe(fds)
            self.err_r, self.err_w = _pipe(fds)
            join = confine.joiner(self.group)
            self.pid = os.fork()
        except BaseException:
            for fd in fds:
                os.close(fd)
            self.group.close()
            raise
        if self.pid == 0:
            _child(self, join)  # never returns
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
        """
        try:
            workdir = users.start_dir(user, cwd)
            if users.privileged():
                os.fchown(self.out_r, user.uid, user.gid)
                os.fchown(self.err_r, user.uid, user.gid)
            order = {"argv": argv, "cwd": workdir, "env": users.environment(user, env),
                     "merge": merge, "uid": user.uid, "gid": user.gid, "groups": user.groups()}
            self._retire.cancel()
            WAITING.discard(self.pid)  # from here on it is the command
            os.write(self.order_w, json.dumps(order).encode())  # far below a pipe's buffer
        except BaseException:
            self.discard()
            raise
        os.close(self.order_w)
        if merge:
            os.close(self.err_r)
        self.exited.report_failure(self.error_r, workdir, argv[0])
        return self.exited, self.out_r, (self.out_r if merge else self.err_r)


def prepare(done: Callable[[], Awaitable[None]]) -> None:
    """Have a spare waiting for the first command once ``done()`` returns (the server's
    readiness and keep-warm pings): its cgroup migration, the slow part, is then over
    before a command comes, and the first command runs as fast as the later ones."""
    if ENABLED and _current is None:
        asyncio.ensure_future(_refill(done()))


def take(done: Callable[[], Awaitable[None]]) -> Spare | None:
    """The spare, or None: spares are off, or there is none yet (the first command, a
    failed fork). Either way a new spare is forked for the next command once ``done()``
    returns (the request is answered: the fork, ~1 ms, never delays this command)."""
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


def _child(spare: Spare, join: Callable[[], None]) -> None:
    """The spare's life: let go of the agent's descriptors, join the cgroups, wait for
    the order, become the command. Never returns."""
    what = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        keep = {spare.order_r, spare.error_w, spare.out_w, spare.err_w, *confine.held_fds(),
                spare.group.fd}
        _close_all_but(keep)
        join()
        order = json.loads(_read_to_end(spare.order_r) or b"null")
        if order is None:
            os._exit(0)  # discarded
        devnull = os.open(os.devnull, os.O_RDWR)  # (close-on-exec, as every fd but 0-2)
        _onto(devnull, 0)
        _onto(spare.out_w, 1)
        _onto(spare.out_w if order["merge"] else spare.err_w, 2)
        what = 0
        os.chdir(order["cwd"])
        what = 1
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess's restore_signals
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        _become(order["uid"], order["gid"], order["groups"])
        os.execvpe(order["argv"][0], order["argv"], order["env"])
    except OSError as exc:
        os.write(spare.error_w, _ERROR.pack(exc.errno or 0, what))
    except BaseException:  # noqa: BLE001 - the child must never return into the agent
        os.write(spare.error_w, _ERROR.pack(0, 1))
    finally:
        os._exit(255)


def _become(uid: int, gid: int, groups: list[int]) -> None:
    if confine.confined():
        confine.becomer(uid, gid, groups)()
    elif os.geteuid() == 0 and uid != 0:  # as subprocess's user=, group=, extra_groups=
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)


def _onto(fd: int, target: int) -> None:
    """Make ``target`` a copy of ``fd`` that the command inherits."""
    if fd == target:
        os.set_inheritable(fd, True)
    else:
        os.dup2(fd, target)


def _read_to_end(fd: int) -> bytes:
    data = bytearray()
    while chunk := os.read(fd, 65536):
        data += chunk
    return bytes(data)


def _close_all_but(keep: set[int]) -> None:
    low = 0
    for fd in sorted(k for k in keep if k >= 0):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
