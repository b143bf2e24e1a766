"""A toolbox agent started before its sandbox: Python's start-up done ahead of time.

Most of a cold start used to be the agent's own start (importing ``asyncio`` and
the rest of the standard library it needs, about 30 ms here). The runtime keeps
a process of this script ready: started by root on the host from the agent's
packed runtime (``python3 -I -S -B prestart.py``), with nothing of the server in
it (an environment of ``LANG`` alone, no descriptor but its order socket on 0),
it imports the agent's standard-library modules and the agent's own start-up
modules (from the host's compiled copy of its package, the files the sandbox
mounts) and waits.

When a sandbox starts, the runtime moves it into the cgroups of the sandbox's
init and sends it an order (a JSON message with descriptors): what init would
hand its agent (environment, arguments, descriptors) and the confinement init
has (uid and gid, capabilities, the nofile limit, the OOM score, the seccomp
filter). It then, in this order:

1. takes back the server's scheduling priority (it loads its modules at a lower
   one), takes the OOM score and the limit, and stops being dumpable;
2. enters every namespace of init at once (``setns`` on a pidfd of init, so no
   path of the sandbox is looked up), the user namespace first;
3. drops supplementary groups and every capability outside the agent's set from
   the bounding set, takes the agent's uid and gid, and has exactly the agent's
   capabilities (effective, permitted, inheritable, ambient) as init has them;
4. sets no_new_privs and loads the sandbox's seccomp filter;
5. forks twice: the first child is in the sandbox's pid namespace; it forks the
   agent, hands the runtime a pidfd of it and exits, so that the agent becomes
   the child of init (the reaper of that namespace), as the agent init starts.
   Before the forks it has taken init's descriptor layout and init's
   environment (the paths of the runtime and the package, as the sandbox sees
   them, were taken once its modules were loaded, before the order). The
   agent takes a session of its own, reports its pid in the sandbox, makes its
   event loop (serving nothing) and waits for the runtime's last word, which comes
   after init has been told it runs (init's "p" go); then it runs.

If the server goes away before that last word, the child exits (init, told or
not, starts an agent itself). What the agent's modules read from the environment
when they load is read again once the process has the sandbox's
(``users.capture_environment``).
"""

from __future__ import annotations

import gc
import os
import sys

gc.disable()  # (as the agent's own start: it turns it on once loaded)
sys.modules["ssl"] = None  # type: ignore[assignment]  # (as the agent's own start)
CAP_SYS_NICE = 23
NICE = os.getpriority(os.PRIO_PROCESS, 0)


def _can_renice() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    return False


# It loads its modules behind everything else of the host (a fresh sandbox's first
# calls most of all); it takes the server's priority back when a sandbox needs it.
RENICE = _can_renice()
if RENICE:
    os.nice(10)

import array  # noqa: E402
import asyncio  # noqa: E402
import binascii  # noqa: E402
import concurrent.futures  # noqa: E402,F401
import ctypes  # noqa: E402
import dataclasses  # noqa: E402,F401
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402,F401
import resource  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402,F401
import textwrap  # noqa: E402,F401
import time  # noqa: E402
import typing  # noqa: E402,F401

ORDER_MAX = 1 << 20
PKG_HOST = os.path.dirname(os.path.abspath(__file__))  # (this script is in the package)
CLONE_NEW = {"user": 0x10000000, "mnt": 0x20000, "pid": 0x20000000, "net": 0x40000000,
             "ipc": 0x08000000, "uts": 0x04000000, "cgroup": 0x02000000}  # fmt: skip
PR_SET_DUMPABLE, PR_SET_KEEPCAPS, PR_SET_SECCOMP = 4, 8, 22
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 24, 38, 47, 2
SECCOMP_MODE_FILTER = 2
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
_CAP_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg: int, what: str, arg3: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), 0, 0), what)


def _capset(mask: int) -> None:
    header = struct.pack("Ii", _CAP_VERSION_3, 0)
    low, high = mask & 0xFFFFFFFF, mask >> 32
    data = struct.pack("6I", low, low, low, high, high, high)  # effective, permitted, inheritable
    number = SYS_CAPSET[os.uname().machine]
    _check(_libc.syscall(number, header, data), "capset")


def _seccomp(program: bytes) -> None:
    filt = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(filt, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


def enter(order: dict[str, typing.Any], init: int) -> None:
    """Steps 1-4 of the header, in this process (single-threaded, as setns wants)."""
    if RENICE:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(int(order["oom"])))
    nofile = int(order["nofile"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    _prctl(PR_SET_DUMPABLE, 0, "dumpable")
    flags = 0
    for flag in CLONE_NEW.values():
        flags |= flag
    _check(_libc.setns(init, flags), "setns")
    os.setgroups([])
    caps = {int(c) for c in order["caps"]}
    for cap in range(64):
        if cap in caps:
            continue
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the kernel's last capability
                break
            _check(-1, "capbset")
    _prctl(PR_SET_KEEPCAPS, 1, "keepcaps")
    uid, gid = int(order["uid"]), int(order["gid"])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    _capset(mask)
    for cap in sorted(caps):
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, "ambient", cap)
    _prctl(PR_SET_KEEPCAPS, 0, "keepcaps")
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    _seccomp(binascii.a2b_base64(order["seccomp"]))
    os.chdir("/")


def take_layout(order: dict[str, typing.Any], fds: list[int], control: socket.socket
                ) -> socket.socket:  # fmt: skip
    """Once inside (before the forks, so that they copy it): init's descriptor layout,
    init's environment and arguments. Returns the order socket, moved above the
    numbers the agent opens before it closes it (its event loop's three), so that
    they are the numbers they are in the agent init starts."""
    stdio, service = fds[:3], fds[3:]
    first = int(order["first_fd"])
    wanted = {**dict(enumerate(stdio)), **{first + i: fd for i, fd in enumerate(service)}}
    if control.fileno() in wanted:
        raise ValueError(f"the order socket is descriptor {control.fileno()}")
    # (moved above every target first, so that no dup2 overwrites a source)
    top = max([*wanted, *fds, control.fileno()]) + 1
    moved = {n: os.dup2(fd, top + i, inheritable=False) for i, (n, fd) in enumerate(wanted.items())}
    for n, fd in moved.items():
        os.dup2(fd, n)
    spot = max(wanted) + 8  # (the lowest free numbers, which the loop takes, are below)
    if control.fileno() != spot:
        os.dup2(control.fileno(), spot, inheritable=False)
        control.detach()  # (its descriptor is closed below, with every other)
        control = socket.socket(fileno=spot)
    # everything else closed (this process is not in the sandbox's /proc to list them)
    keep = sorted({*wanted, spot})
    for low, high in zip([-1, *keep], [*keep, os.sysconf("SC_OPEN_MAX")], strict=True):
        if low + 1 < high:  # (an empty range would close every descriptor: close_range(n, n-1))
            os.closerange(low + 1, high)
    _environ(order["env"])
    sys.modules["toolbox.users"].capture_environment()
    sys.argv = ["-c", *order["args"]]
    return control


def preload() -> None:
    """The agent's package: its start-up modules (those it loads before it serves),
    loaded here from the host's copy, the files the sandbox mounts (their paths are
    moved once they are all loaded, see ``_paths`` and ``main``)."""
    spec = importlib.util.spec_from_file_location(
        "toolbox", f"{PKG_HOST}/__init__.py", submodule_search_locations=[PKG_HOST])
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules["toolbox"] = package
    spec.loader.exec_module(package)
    agent = importlib.import_module("toolbox.agent")
    for module in agent.EAGER:
        importlib.import_module(f"toolbox.{module}")


def _prefixes(mount: str) -> dict[str, str]:
    """The runtime's prefix as computed from the relative command line, and
    normalised -> where the sandbox mounts it."""
    return {sys.prefix: mount, os.path.normpath(sys.prefix): mount}


def _paths(moves: dict[str, str], pkg: str) -> None:
    """The paths of the runtime and the package as the sandbox sees them (this process
    started on the host): of the interpreter, the import path and every module loaded
    so far (a package's submodules are found through its ``__path__``)."""
    order = sorted(moves, key=len, reverse=True)

    def moved(value: object) -> object:
        for here in order:
            if isinstance(value, str) and (value == here or value.startswith(here + "/")):
                return moves[here] + value[len(here):]
        return value

    for name in ("executable", "_base_executable", "prefix", "exec_prefix", "base_prefix",
                 "base_exec_prefix", "_stdlib_dir"):  # fmt: skip
        if hasattr(sys, name):
            setattr(sys, name, moved(getattr(sys, name)))
    sys.path[:] = [str(moved(p)) for p in sys.path]
    for module in list(sys.modules.values()):
        for attr in ("__file__", "__cached__"):
            if isinstance(getattr(module, attr, None), str):
                setattr(module, attr, moved(getattr(module, attr)))
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [moved(p) for p in search]
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.origin = moved(spec.origin)
            if isinstance(spec.submodule_search_locations, list):
                spec.submodule_search_locations[:] = [
                    moved(p) for p in spec.submodule_search_locations]
        loader = getattr(module, "__loader__", None)
        if isinstance(getattr(loader, "path", None), str):
            loader.path = moved(loader.path)  # type: ignore[union-attr]
    sys.path.insert(0, pkg)
    sys.path_importer_cache.clear()


def _environ(env: dict[str, str]) -> None:
    """Init's environment; the C library's time zone re-read from the sandbox's files."""
    os.environ.clear()
    os.environ["TZ"] = "UTC0"  # (a change of TZ makes tzset read /etc/localtime again)
    time.tzset()
    os.environ.clear()
    os.environ.update(env)
    time.tzset()


def _receive(control: socket.socket) -> tuple[dict[str, typing.Any], list[int]]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = control.recvmsg(ORDER_MAX, socket.CMSG_LEN(64 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        raise SystemExit(0)  # the runtime went away before it needed this process
    return json.loads(data), list(fds)


def main() -> None:
    control = socket.socket(fileno=os.dup(0))  # (0 is to be the agent's stdin)
    os.close(0)
    mount, pkg_mount = sys.argv[1:3]  # where the sandbox mounts the runtime and the package
    preload()
    # Every module it will use is loaded: their paths (and the interpreter's) are
    # moved to where the sandbox sees them now, ahead of the order. Nothing is
    # imported from here on, so nothing looks for them on the host.
    _paths({**_prefixes(mount), PKG_HOST: pkg_mount}, os.path.dirname(pkg_mount))
    control.sendall(b"ready")
    order, fds = _receive(control)
    try:
        enter(order, fds[0])
        control = take_layout(order, fds[1:], control)
        between = os.fork()  # (the first process of this one in the sandbox's pid namespace)
    except (OSError, KeyError, ValueError) as exc:
        control.sendall(f"error {exc}".encode())
        raise SystemExit(1) from None
    if between:
        os.waitpid(between, 0)
        os._exit(0)
    try:
        pid = os.fork()
        if pid:
            _forked(control, pid)
    except OSError as exc:
        control.sendall(f"error {exc}".encode())
        os._exit(1)
    _agent(control)


def _forked(control: socket.socket, pid: int) -> typing.NoReturn:
    """The process between: hand the runtime a pidfd of the agent (to kill it with if
    the hand-over fails) and exit, so that the agent becomes init's child (the
    reaper of this pid namespace), as the agent init starts is."""
    try:
        pidfd = os.pidfd_open(pid)
        control.sendmsg([b"forked"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [pidfd]))])  # fmt: skip
    except OSError as exc:
        os.kill(pid, 9)
        control.sendall(f"error {exc}".encode())
        os._exit(1)
    os._exit(0)


def _agent(control: socket.socket) -> typing.NoReturn:
    os.setsid()
    control.sendall(b"ok %d" % os.getpid())
    # While the runtime tells init: the agent's event loop, made (serving nothing yet).
    loop = asyncio.new_event_loop()
    if control.recv(16) != b"run":
        os._exit(0)  # the runtime went away: init starts an agent itself
    control.close()
    _prctl(PR_SET_DUMPABLE, 1, "dumpable")  # (as init's agent: no longer half entered)
    sys.modules["toolbox.agent"].run(loop)
    os._exit(0)  # (run exits)


if __name__ == "__main__":
    main()
