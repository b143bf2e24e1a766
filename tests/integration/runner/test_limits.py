"""Resource limits hold against hostile workloads, and the sandbox survives them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from cove.core.config import Settings
from cove.runner.oci import spec
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import cgroup_value, group, init_pid, ok, sh

pytestmark = pytest.mark.integration

HOG = "python3 -c 'b = [bytearray(64 << 20) for _ in range(32)]; print(len(b))'"  # 2 GiB


def test_memory_hog_is_oom_killed(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox(memory=1)
    res = sh(runtime, box.sandbox_id, HOG, timeout=120)
    assert res.exit_code != 0
    assert res.exit_code in (137, -9) or b"Killed" in res.stderr or b"MemoryError" in res.stderr
    memory_limit = ("memory", "memory.limit_in_bytes")
    limit = int(cgroup_value(group(runtime, box.sandbox_id), memory_limit, "memory.max"))
    assert limit == 1 << 30
    assert ok(runtime, box.sandbox_id, "echo alive").strip() == "alive"


def test_fork_bomb_is_contained(
    runtime: OciRuntime, make_sandbox: SandboxFactory, it_settings: Settings
) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    bomb = "nohup sh -c 'f(){ f | f & }; f' >/dev/null 2>&1 &"
    ok(runtime, sid, bomb)
    limit = it_settings.pids_limit
    peak = 0
    # A fork in the sandbox never passes pids.max. The agent's one spare process
    # (agent/spare.py) joins the cgroup by migration, which the kernel does not refuse
    # at the limit (cgroup-v1/pids.rst): it may stand one above it, never more.
    for _ in range(20):
        current = int(cgroup_value(group(runtime, sid), ("pids", "pids.current"), "pids.current"))
        peak = max(peak, current)
        assert current <= limit + 1
        time.sleep(0.1)
    assert peak > limit // 2, peak  # the bomb really ran into the limit
    host = subprocess.run(["sh", "-c", "for i in 1 2 3 4 5; do true & done; wait; echo ok"],
                          capture_output=True, timeout=30)  # fmt: skip
    assert host.stdout == b"ok\n"  # the host can still fork
    assert int(cgroup_value(group(runtime, sid), ("pids", "pids.max"), "pids.max")) == limit
    kill_all_but_init(runtime, sid)
    assert ok(runtime, sid, "echo alive").strip() == "alive"


def kill_all_but_init(runtime: OciRuntime, sid: str) -> None:
    """SIGKILL every process of the sandbox except init, until none is left."""
    init = init_pid(runtime, sid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        procs = cgroup_value(group(runtime, sid), ("pids", "cgroup.procs"), "cgroup.procs").split()
        victims = [int(p) for p in procs if int(p) != init]
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    raise AssertionError("fork bomb survived")


def test_disk_cap_gives_enospc(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox(disk=1)
    res = sh(runtime, box.sandbox_id, "dd if=/dev/zero of=/home/daytona/big bs=1M count=1500",
             timeout=120)  # fmt: skip
    assert res.exit_code != 0
    assert b"No space left on device" in res.stderr
    ok(runtime, box.sandbox_id, "rm /home/daytona/big")
    assert ok(runtime, box.sandbox_id, "echo fine > /tmp/x && cat /tmp/x").strip() == "fine"


def test_cpu_quota_holds(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox(cpu=1)
    sid = box.sandbox_id
    before = runtime.stats(sid).cpu_usage_ns
    start = time.monotonic()
    loop = "timeout 3 sh -c 'while :; do :; done'"
    ok(runtime, sid, f"{loop} & {loop}; wait")
    wall = time.monotonic() - start
    used = (runtime.stats(sid).cpu_usage_ns - before) / 1e9
    assert used / wall < 1.3, (used, wall)
    assert used / wall > 0.5, (used, wall)


# Opens terminals (up to argv[1]) and holds them for argv[2] seconds; prints how many.
HOLD_TERMINALS = """
import os, sys, time
held = []
try:
    while len(held) < int(sys.argv[1]):
        held.append(os.openpty())
except OSError:
    pass
print(len(held), flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold(runtime: OciRuntime, sandbox_id: str, script: str, args: str) -> str:
    """Start ``script`` (with ``args``) in the background as the sandbox user; once it
    has taken what it holds, what it printed (it keeps holding it)."""
    quoted = script.replace("'", "'\\''")
    ok(runtime, sandbox_id, f"nohup python3 -c '{quoted}' {args} > /tmp/held 2>&1 &",
       user="daytona")  # fmt: skip
    deadline = time.monotonic() + 60
    while not (held := ok(runtime, sandbox_id, "cat /tmp/held").strip()):
        assert time.monotonic() < deadline, "the holder printed nothing"
        time.sleep(0.2)
    return held


def _host_can(probe: str) -> bool:
    """Whether the host's root gets what ``probe`` (``python3 -c '...'``) asks for."""
    done = subprocess.run(["python3", "-c", probe.split("'")[1]], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    return done.stdout.strip() == "True"


def test_sandboxes_holding_their_terminals_leave_others_theirs(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """A sandbox may hold PTY_MAX terminals (its devpts' own max). Every devpts but
    the host's draws on one host-wide pool (``kernel.pty.max`` less the host's
    reserve, 3072 by default): a few sandboxes holding theirs must not leave
    another sandbox (of any organization) without a terminal."""
    hogs = [make_sandbox().sandbox_id for _ in range(3)]
    try:
        for sid in hogs:
            held = _hold(runtime, sid, HOLD_TERMINALS, f"{spec.PTY_MAX} 120")
            assert int(held) > spec.PTY_MAX // 2  # (they ran)
        victim = make_sandbox().sandbox_id
        res = sh(runtime, victim, "python3 -c 'import os; os.openpty(); print(\"got one\")'",
                 user="daytona")  # fmt: skip
        assert res.stdout == b"got one\n", res
    finally:
        for sid in hogs:
            kill_all_but_init(runtime, sid)


# Takes inotify instances (up to argv[1]), each watching 250 files (of 2500: a
# kernel adds a watch of an inode in a time that grows with those it has), up to
# argv[2] watches in all; holds them for argv[3] seconds; prints the two counts.
HOLD_INOTIFY = """
import ctypes, os, sys, tempfile, time
libc = ctypes.CDLL(None, use_errno=True)
files = tempfile.mkdtemp()
for i in range(2500):
    open(os.path.join(files, str(i)), "w").close()
names = [os.path.join(files, str(i)).encode() for i in range(2500)]
instances = watches = 0
while instances < int(sys.argv[1]):
    fd = libc.inotify_init1(0)
    if fd < 0:
        break
    instances += 1
    for name in names[instances % 10 * 250:][:250]:
        if watches >= int(sys.argv[2]) or libc.inotify_add_watch(fd, name, 2) < 0:
            break
        watches += 1
print(instances, watches, flush=True)
time.sleep(float(sys.argv[3]))
"""
INOTIFY_ONE = ("python3 -c 'import ctypes; libc = ctypes.CDLL(None); fd = libc.inotify_init1(0); "
               "print(fd >= 0 and libc.inotify_add_watch(fd, b\"/tmp\", 2) >= 0)'")


def test_a_sandbox_holding_inotify_watches_leaves_others_theirs(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """A sandbox's inotify instances and watches are charged, past its own user
    namespaces, to the host uid that made them (root), against the host's per-user
    limits (128 instances, some 100,000 watches by default): a sandbox holding
    many (a file watcher on a large tree) must leave other sandboxes, and the
    host's root, theirs."""
    hog = make_sandbox().sandbox_id
    try:
        instances, watches = map(int, _hold(runtime, hog, HOLD_INOTIFY, "1000 250000 120").split())
        victim = make_sandbox().sandbox_id
        assert ok(runtime, victim, INOTIFY_ONE, user="daytona").strip() == "True"
        assert _host_can(INOTIFY_ONE)
        assert (instances, watches) == (1000, 250_000)  # (more than the defaults allow)
    finally:
        kill_all_but_init(runtime, hog)


# Queues real-time signals to itself (blocked) up to argv[1], holds them for argv[2]
# seconds; prints how many it queued.
HOLD_SIGNALS = """
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
info = ctypes.create_string_buffer(128)  # siginfo: signo, errno, code SI_QUEUE
ctypes.memmove(info, (ctypes.c_int * 3)(signal.SIGRTMIN, 0, -1), 12)
queued = 0
while queued < int(sys.argv[1]) and libc.syscall(
        {"x86_64": 129, "aarch64": 138}[os.uname().machine], os.getpid(), signal.SIGRTMIN,
        info) == 0:
    queued += 1
print(queued, flush=True)
time.sleep(float(sys.argv[2]))
"""
TIMER = ("python3 -c 'import ctypes; t = ctypes.c_void_p(); "
         "print(ctypes.CDLL(None).timer_create(1, None, ctypes.byref(t)) == 0)'")


def test_a_sandbox_queueing_signals_leaves_others_their_timers(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """Queued signals (a POSIX timer holds one) are charged, past the sandbox's user
    namespaces, to the host uid owning them (root, before each sandbox had an owner
    of its own: one count with every other sandbox's and root's own): a sandbox
    queueing all its RLIMIT_SIGPENDING allows must leave the other sandboxes and the
    host's root their timers."""
    hog = make_sandbox().sandbox_id
    try:
        assert int(_hold(runtime, hog, HOLD_SIGNALS, "1000000 120")) > 1000  # (it queued)
        victim = make_sandbox().sandbox_id
        assert ok(runtime, victim, TIMER, user="daytona").strip() == "True"
        assert _host_can(TIMER)
    finally:
        kill_all_but_init(runtime, hog)


# Makes POSIX message queues (of the default size: 10 messages of 8 KiB) until refused
# or argv[1] of them, holds them for argv[2] seconds; prints how many it made and
# the errno that stopped it.
HOLD_MQUEUES = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
made = 0
while made < int(sys.argv[1]) and libc.mq_open(
        f"/hog{made}".encode(), os.O_CREAT | os.O_RDWR, 0o600, None) >= 0:
    made += 1
print(made, ctypes.get_errno(), flush=True)
time.sleep(float(sys.argv[2]))
"""
MQUEUE_ONE = ("python3 -c 'import ctypes, os; libc = ctypes.CDLL(None); "
              "name = f\"/cove-probe-{os.getpid()}\".encode(); "
              "print(libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None) >= 0); "
              "libc.mq_unlink(name)'")


def test_a_sandbox_filling_its_message_queues_leaves_others_theirs(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """POSIX message queues are charged, past a sandbox's user namespaces, to the host
    uid owning its namespace, against RLIMIT_MSGQUEUE (800 KiB: nine queues of the
    default size). Owned by root, every sandbox's queues and root's own drew on one
    count, and one sandbox's nine left no other sandbox, nor the host's root, a queue
    to open. Each sandbox's namespace has an owner of its own."""
    hog = make_sandbox().sandbox_id
    try:
        made, errno = map(int, _hold(runtime, hog, HOLD_MQUEUES, "1000 120").split())
        assert (errno, 0 < made < 1000) == (24, True)  # EMFILE: it took all it may
        victim = make_sandbox().sandbox_id
        assert ok(runtime, victim, MQUEUE_ONE, user="daytona").strip() == "True"
        assert ok(runtime, victim, MQUEUE_ONE).strip() == "True"  # (as its root)
        assert _host_can(MQUEUE_ONE)
    finally:
        kill_all_but_init(runtime, hog)


# Sets up kernel AIO contexts for up to argv[1] events in all (as many as it can),
# holds them for argv[2] seconds; prints how many events it got.
HOLD_AIO = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
io_setup = {"x86_64": 206, "aarch64": 0}[os.uname().machine]
got, size = 0, 4096
while size >= 1 and got < int(sys.argv[1]):
    ctx = ctypes.c_ulong(0)
    if libc.syscall(io_setup, size, ctypes.byref(ctx)) == 0:
        got += size
    else:
        size //= 2
print(got, flush=True)
time.sleep(float(sys.argv[2]))
"""
AIO_ONE = ("python3 -c 'import ctypes, os; ctx = ctypes.c_ulong(0); "
           "print(ctypes.CDLL(None).syscall({\"x86_64\": 206, \"aarch64\": 0}"
           "[os.uname().machine], 128, ctypes.byref(ctx)) == 0)'")


def test_a_sandbox_holding_aio_contexts_leaves_others_theirs(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """Kernel AIO events (``io_setup``: MySQL's InnoDB, libaio) are counted host-wide
    against ``fs.aio-max-nr`` (65536 by default): a sandbox holding more than that
    must leave other sandboxes, and the host, theirs (its rings are its memory)."""
    hog = make_sandbox().sandbox_id
    try:
        got = int(_hold(runtime, hog, HOLD_AIO, "80000 120"))
        victim = make_sandbox().sandbox_id
        assert ok(runtime, victim, AIO_ONE, user="daytona").strip() == "True"
        assert _host_can(AIO_ONE)
        assert got >= 80000  # (more than the default)
    finally:
        kill_all_but_init(runtime, hog)
