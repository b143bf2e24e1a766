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
- the capabilities root of the workload keeps (``--caps``);
- the path of cove-init inside the sandbox (``--spare-helper``), which runs the
  agent's spare processes (see ``spare``).

On the gVisor tier (``runner/oci/gvisor.py``) the agent starts with effective uid
0 and takes the agent uid itself, keeping its capabilities (``--become``);
binds its own socket (``--listen-path``); gives every command a new user
namespace, mapped by a thread of the agent (``--userns new``: gVisor cannot
setns into one); takes gVisor's own cgroupfs
(``--cgroup-root``: every cgroup directory and file becomes the agent uid's,
so that root of the workload, uid 0 there, can neither leave its cgroup nor
raise a limit): every command joins the ``work`` cgroup of the ``pids``
controller, which holds the workload's pids limit (``--pids-max``), and gets
a cgroup of its own in the ``cpuacct`` hierarchy (gVisor's pids limits are
not hierarchical, so the two cannot be one cgroup, as on a cgroup v1 host);
and kills a group by
SIGKILLing its processes until none is left (``--kill-mode loop``: no
cgroup.kill there); and installs Cove's seccomp filter in every command
(``--seccomp``, a compiled BPF program).

Without them (the agent run in process by unit tests) processes simply run as
the requested user, and a kill walks the process tree.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_CLONE_NEWUSER = 0x10000000
_PR_CAPBSET_DROP = 24
_PR_SET_KEEPCAPS = 8
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CAP_LAST = 63
FREEZE_WAIT = 2.0
WORKLOAD_IDS = 65536  # ids 0..65535 of a new user namespace, mapped to the same outside
KILL_ROUNDS = 500


@dataclass
class Confinement:
    """What the server handed the agent (None/empty: not confined)."""

    userns: int | None = None
    join: list[int] = field(default_factory=list)
    kill_root: int | None = None
    kill_mode: str = "kill"
    caps: frozenset[int] = frozenset()
    listen: int | None = None
    listen_path: str | None = None
    new_userns: bool = False  # every command unshares a user namespace of its own
    seccomp: bytes | None = None  # a BPF program installed in every command
    peer_check: bool = True  # refuse peers inside the sandbox's pid namespace
    idle_exit: float = 0.0  # exit after so many idle seconds (init restarts it on demand)
    spare_helper: str | None = None  # cove-init, which runs spares (see ``spare``)


CURRENT = Confinement()
_counter = itertools.count(1)
_OPEN: set[str] = set()  # names of the groups made and not closed yet
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

    # By soname: the libc the runtime already runs on (find_library would spawn ldconfig).
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if "--become" in opts:
        _become(int(opts["--become"]))
    join, kill_root = fds("--join-fds"), fd("--kill-fd")
    if "--cgroup-root" in opts:
        join, kill_root = _own_cgroups(opts["--cgroup-root"], int(opts.get("--pids-max", "0")))
    CURRENT = Confinement(
        userns=fd("--userns-fd"), join=join, kill_root=kill_root,
        kill_mode=opts.get("--kill-mode", "kill"), caps=frozenset(fds("--caps")),
        listen=fd("--listen-fd"), listen_path=opts.get("--listen-path"),
        new_userns=opts.get("--userns") == "new", seccomp=_read(opts.get("--seccomp")),
        peer_check=opts.get("--peer-check") != "off",
        idle_exit=float(opts.get("--idle-exit", "0")), spare_helper=opts.get("--spare-helper"),
    )  # fmt: skip
    for descriptor in [*CURRENT.join, CURRENT.userns, CURRENT.kill_root, CURRENT.listen]:
        if descriptor is not None:
            os.set_inheritable(descriptor, False)
    sweep()
    return CURRENT


def _become(uid: int) -> None:
    """Take ``uid`` (and its gid) for good, keeping the permitted capabilities, and
    make them effective again (they are not ambient: gVisor has none)."""
    libc = _libc
    assert libc is not None
    if libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_KEEPCAPS")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for half in data:
        half.effective = half.permitted
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


def _own_cgroups(root: str, pids_max: int) -> tuple[list[int], int]:
    """Take every cgroup under ``root``; make the ``pids`` controller's ``work``
    cgroup with the workload's pids limit. Returns descriptors of the cgroups
    every command joins (``work``) and of the one its own cgroup is made in."""
    uid, gid = os.geteuid(), os.getegid()
    for top, _dirs, files in os.walk(root):
        for name in [".", *files]:
            os.chown(os.path.join(top, name), uid, gid, follow_symlinks=False)
    work = os.path.join(root, "pids", "work")
    os.makedirs(work, exist_ok=True)
    if pids_max > 0:
        with open(os.path.join(work, "pids.max"), "w") as f:
            f.write(str(pids_max))
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    return [os.open(work, flags)], os.open(os.path.join(root, "cpuacct"), flags)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


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
        _OPEN.add(name)  # not swept while open (a spare joins it later)
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
        elif CURRENT.kill_mode == "loop":
            _loop_kill(self)
        else:
            _freeze_kill(self)
        return True

    def close(self) -> None:
        """Forget the group; its cgroup goes once empty (now or in a later sweep)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.name is not None and CURRENT.kill_root is not None:
            _OPEN.discard(self.name)
            _rmdir(self.name)


def preexec(uid: int, gid: int, groups: list[int], group: Group | None) -> Callable[[], None]:
    """The child's last steps before exec: join the cgroups, enter the workload's
    user namespace (or a new one), become ``uid``, keep only the workload's
    capabilities (and install the seccomp filter)."""
    join, become = joiner(group), becomer(uid, gid, groups)

    def confine() -> None:
        join()
        become()

    return confine


def joiner(group: Group | None) -> Callable[[], None]:
    """What moves the calling process into the cgroups every command joins and its
    own ``group`` (the slow part: a migration waits for an RCU grace period)."""
    join, new_userns = list(CURRENT.join), CURRENT.new_userns
    target = group.fd if group is not None else -1

    def run() -> None:
        me = str(os.getpid()) if new_userns else "0"  # (gVisor's cgroupfs takes pids)
        for fd in [*join, *([target] if target >= 0 else [])]:
            _write_at(fd, "cgroup.procs", me)

    return run


def becomer(uid: int, gid: int, groups: list[int]) -> Callable[[], None]:
    """What makes the calling process the workload's ``uid``: in the workload's user
    namespace (or a new one), with only the workload's capabilities and the seccomp
    filter."""
    userns, caps = CURRENT.userns, CURRENT.caps
    libc = _libc
    install = _seccomp_installer(CURRENT.seccomp)
    mapper = _Mapper() if CURRENT.new_userns else None

    def run() -> None:
        assert libc is not None
        if mapper is not None:
            mapper.enter(libc)
        elif userns is None or libc.setns(userns, _CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "setns into the workload's user namespace")
        for cap in range(_CAP_LAST + 1):
            if cap not in caps and libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                if ctypes.get_errno() == errno.EINVAL:
                    break  # past the kernel's last capability
                raise OSError(ctypes.get_errno(), "drop capability")
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        install()

    return run


class _Mapper:
    """A new process's way into a user namespace of its own: it unshares one, and a
    thread of the agent (a process cannot map its own ids) writes the id maps."""

    WAIT = 30.0

    def __init__(self) -> None:
        self.ready_r, self.ready_w = os.pipe2(os.O_CLOEXEC)
        self.go_r, self.go_w = os.pipe2(os.O_CLOEXEC)
        threading.Thread(target=self._serve, daemon=True, name="userns-mapper").start()

    def enter(self, libc: ctypes.CDLL) -> None:
        """(In the new process.) Unshare, and wait for the maps."""
        if libc.unshare(_CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "unshare a user namespace")
        os.write(self.ready_w, str(os.getpid()).encode())
        if os.read(self.go_r, 1) != b"1":
            raise OSError(errno.EPERM, "map the command's user namespace")

    def _serve(self) -> None:
        try:
            readable, _, _ = select.select([self.ready_r], [], [], self.WAIT)
            pid = os.read(self.ready_r, 32) if readable else b""
            if not pid:
                return  # the process died first (or never came)
            ok = b"1"
            try:
                for name in ("uid_map", "gid_map"):
                    fd = os.open(f"/proc/{int(pid)}/{name}", os.O_WRONLY | os.O_CLOEXEC)
                    try:
                        os.write(fd, f"0 0 {WORKLOAD_IDS}\n".encode())
                    finally:
                        os.close(fd)
            except (OSError, ValueError):
                ok = b"0"
            os.write(self.go_w, ok)
        finally:
            for fd in (self.ready_r, self.ready_w, self.go_r, self.go_w):
                os.close(fd)


def _seccomp_installer(program: bytes | None) -> Callable[[], None]:
    """What installs the BPF ``program`` (built here, run in the child)."""
    if not program:
        return lambda: None
    libc = _libc
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))

    def install() -> None:
        assert libc is not None and buffer
        if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "install the seccomp filter")

    return install


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def confined() -> bool:
    return CURRENT.userns is not None or CURRENT.new_userns


# The pids (as strings) of the relays alive: the cgroups they make for their commands
# ("r<pid>-<n>") are theirs to remove while they live (see init.c's relay mode).
RELAYS: set[str] = set()


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
        if name.startswith("c") and name[1:2].isdigit() and name not in _OPEN:
            _rmdir(name)
        elif name.startswith("r") and name[1:].partition("-")[0] not in RELAYS:
            _rmdir(name)  # (a relay's, which made it and is gone: see ``relay``)


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


def _loop_kill(group: Group) -> None:
    """SIGKILL the group's processes, again and again, until none is left that was
    not killed already (a process cannot leave its cgroup; what it forked before
    it died is found in the next round)."""
    killed: set[int] = set()
    for _ in range(KILL_ROUNDS):
        alive = [pid for pid in group.pids() if pid not in killed]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed.update(alive)
        time.sleep(0.002)


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
