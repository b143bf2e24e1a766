"""Where the agent puts the processes it starts: out of its own reach... of theirs.

The Cove server hands the agent (on its command line) descriptors of:

- the workload's user namespace (``--userns-fd``): nested in the sandbox's,
  mapping the sandbox's ids 0..65535 but not the agent's own id, so no process
  started there, root included, can signal, trace or become the agent or init;
- cgroup directories every new process joins (``--join-fds``: on cgroup v1
  hosts the ``work`` cgroups holding the workload's memory and pids limits,
  which the agent stays above);
- the directory under which each command gets a cgroup of its own
  (``--kill-fd``, ``--kill-mode kill|freezer``): a timeout or a kill then
  reaches every process the command started, however it forked or setsid-ed;
- the capabilities root of the workload keeps (``--caps``).

Without them (the agent run in process by unit tests) processes simply run as
the requested user, and a kill walks the process tree.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import itertools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_CLONE_NEWUSER = 0x10000000
_PR_CAPBSET_DROP = 24
_CAP_LAST = 63
FREEZE_WAIT = 2.0


@dataclass
class Confinement:
    """What the server handed the agent (None/empty: not confined)."""

    userns: int | None = None
    join: list[int] = field(default_factory=list)
    kill_root: int | None = None
    kill_mode: str = "kill"
    caps: frozenset[int] = frozenset()
    listen: int | None = None


CURRENT = Confinement()
_counter = itertools.count(1)
_libc: ctypes.CDLL | None = None


def configure(argv: list[str]) -> Confinement:
    """Read ``--listen-fd N --userns-fd N --join-fds A,B --kill-fd N --kill-mode M
    --caps C,D`` and make every descriptor close-on-exec (no user process
    inherits them)."""
    global CURRENT, _libc
    opts = dict(zip(argv[::2], argv[1::2], strict=False))

    def fd(name: str) -> int | None:
        return int(opts[name]) if name in opts else None

    def fds(name: str) -> list[int]:
        return [int(x) for x in opts.get(name, "").split(",") if x]

    CURRENT = Confinement(
        userns=fd("--userns-fd"), join=fds("--join-fds"), kill_root=fd("--kill-fd"),
        kill_mode=opts.get("--kill-mode", "kill"), caps=frozenset(fds("--caps")),
        listen=fd("--listen-fd"),
    )  # fmt: skip
    for descriptor in [*CURRENT.join, CURRENT.userns, CURRENT.kill_root, CURRENT.listen]:
        if descriptor is not None:
            os.set_inheritable(descriptor, False)
    _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    sweep()
    return CURRENT


class Group:
    """A cgroup of one command (and everything it starts)."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.fd = -1
        root = CURRENT.kill_root
        if root is None:
            return
        sweep()
        name = f"c{os.getpid()}-{next(_counter)}"
        os.mkdir(name, 0o755, dir_fd=root)
        self.name = name
        self.fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root)

    def pids(self) -> list[int]:
        """Processes in the group (as the sandbox's pid namespace numbers them)."""
        if self.fd < 0:
            return []
        try:
            with open(os.open("cgroup.procs", os.O_RDONLY, dir_fd=self.fd)) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def kill(self) -> bool:
        """SIGKILL every process of the group; False when there is no group."""
        if self.fd < 0:
            return False
        if CURRENT.kill_mode == "kill":
            _write_at(self.fd, "cgroup.kill", "1")
        else:
            _freeze_kill(self)
        return True

    def close(self) -> None:
        """Forget the group; its cgroup goes once empty (now or in a later sweep)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.name is not None and CURRENT.kill_root is not None:
            _rmdir(self.name)


def preexec(uid: int, gid: int, groups: list[int], group: Group | None) -> Callable[[], None]:
    """The child's last steps before exec: join the cgroups, enter the workload's
    user namespace, become ``uid``, keep only the workload's capabilities."""
    userns, join, caps = CURRENT.userns, list(CURRENT.join), CURRENT.caps
    target = group.fd if group is not None else -1
    libc = _libc

    def confine() -> None:
        for fd in [*join, *([target] if target >= 0 else [])]:
            _write_at(fd, "cgroup.procs", "0")
        assert libc is not None and userns is not None
        if libc.setns(userns, _CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "setns into the workload's user namespace")
        for cap in range(_CAP_LAST + 1):
            if cap not in caps and libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                if ctypes.get_errno() == errno.EINVAL:
                    break  # past the kernel's last capability
                raise OSError(ctypes.get_errno(), "drop capability")
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    return confine


def confined() -> bool:
    return CURRENT.userns is not None


def sweep() -> None:
    """Remove the empty per-command cgroups of commands that are over."""
    root = CURRENT.kill_root
    if root is None:
        return
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if name.startswith("c") and name[1:2].isdigit():
            _rmdir(name)


def _rmdir(name: str) -> None:
    try:
        os.rmdir(name, dir_fd=CURRENT.kill_root)
    except OSError:
        pass  # busy: processes left in the background; a later sweep takes it


def _write_at(dir_fd: int, name: str, value: str) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _freeze_kill(group: Group) -> None:
    """cgroup v1: freeze (no process can fork meanwhile), kill every task, thaw."""
    _write_at(group.fd, "freezer.state", "FROZEN")
    deadline = time.monotonic() + FREEZE_WAIT
    while time.monotonic() < deadline:
        with open(os.open("freezer.state", os.O_RDONLY, dir_fd=group.fd)) as f:
            if f.read().strip() == "FROZEN":
                break
        time.sleep(0.005)
    for pid in group.pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _write_at(group.fd, "freezer.state", "THAWED")
