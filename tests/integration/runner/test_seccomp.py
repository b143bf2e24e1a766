"""The seccomp allow-list in a real sandbox: ordinary work runs, escapes fail.

Raw system calls are made with Python's ctypes inside the sandbox, as root and
as the sandbox user. Several attacks would succeed without the filter on this
host (AF_VSOCK and AF_PACKET sockets, user namespaces, keyctl, userfaultfd,
io_uring, personality), others are also refused by missing capabilities:
the errno tells which layer refused.
"""

from __future__ import annotations

import ctypes
import errno
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cove.runner.oci import seccomp
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import both_tiers, inside_as_host, ok, sh, tier_of

pytestmark = pytest.mark.integration
tier = both_tiers  # every test here runs on both isolation tiers
USERS = ("root", "daytona")
ARCH = platform.machine()
U64 = 0xFFFFFFFFFFFFFFFF
AT_FDCWD = -100

# name: (x86_64, aarch64) system call numbers
NR = {
    "socket": (41, 198), "socketpair": (53, 199), "unshare": (272, 97), "clone": (56, 220),
    "setns": (308, 268), "mount": (165, 40), "fsopen": (430, 430), "open_tree": (428, 428),
    "bpf": (321, 280), "keyctl": (250, 219), "add_key": (248, 217), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "perf_event_open": (298, 241), "kexec_load": (246, 104),
    "init_module": (175, 105), "open_by_handle_at": (304, 265), "personality": (135, 92),
    "ioperm": (173, None), "syslog": (103, 116), "fanotify_init": (300, 262),
    "getrandom": (318, 278), "memfd_create": (319, 279), "statx": (332, 291),
    "close_range": (436, 436), "rseq": (334, 293), "epoll_create1": (291, 20),
    "eventfd2": (290, 19), "timerfd_create": (283, 85), "signalfd4": (289, 74),
    "prctl": (157, 167), "sched_getaffinity": (204, 123), "sched_setscheduler": (144, 119),
    "sched_getattr": (315, 275), "sched_yield": (24, 124), "membarrier": (324, 283),
    "copy_file_range": (326, 285), "faccessat2": (439, 439), "openat2": (437, 437),
    "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    "process_madvise": (440, 440), "landlock_create_ruleset": (444, 444), "io_setup": (206, 0),
    "mlock": (149, 228), "kcmp": (312, 272), "cachestat": (451, 451), "fchmodat2": (452, 452),
}  # fmt: skip
NOT_A_SYSCALL = 1023
WORKLOADS = Path(__file__).parent / "workloads"

# Runs calls given as JSON [[label, nr, [args]]] and prints {label: errno or 0}.
# Arguments: ints; "buf" (a zeroed 256-byte buffer); "fd:PATH" (opened read-only);
# "file"/"rfd" (path of / fd to a scratch file), "wfd" (another one, writable);
# "pid"; "pidfd"; "s:TEXT".
PROBE = r"""
import ctypes, json, os, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
scratch, target = tempfile.NamedTemporaryFile(), tempfile.NamedTemporaryFile()
scratch.write(b"scratch"); scratch.flush()
keep = []
def arg(a):
    if isinstance(a, int):
        return ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF)
    if a == "buf":
        keep.append(ctypes.create_string_buffer(256)); return keep[-1]
    if a.startswith("fd:"):
        return ctypes.c_ulong(os.open(a[3:], os.O_RDONLY))
    if a.startswith("s:"):
        return ctypes.c_char_p(a[2:].encode())
    return {"file": lambda: ctypes.c_char_p(scratch.name.encode()),
            "rfd": lambda: ctypes.c_ulong(os.open(scratch.name, os.O_RDONLY)),
            "wfd": lambda: ctypes.c_ulong(os.open(target.name, os.O_WRONLY)),
            "pid": lambda: ctypes.c_ulong(os.getpid()),
            "pidfd": lambda: ctypes.c_ulong(pidfd())}[a]()
def pidfd():
    try:
        return os.pidfd_open(os.getpid())
    except OSError:  # (gVisor has no pidfds)
        return 0xFFFFFFFF
out = {}
for label, nr, args in json.loads(sys.argv[1]):
    ctypes.set_errno(0)
    res = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    if res == 0 and label.startswith("clone"):
        os._exit(0)  # a child that should not exist
    out[label] = ctypes.get_errno() if res == -1 else 0
print(json.dumps(out))
"""


def _nr(call: str | int) -> int | None:
    """The number of a named call on this host (None: it has no such call)."""
    return call if isinstance(call, int) else NR[call][0 if ARCH == "x86_64" else 1]


def probe(runtime: OciRuntime, sandbox_id: str, user: str, calls: list) -> dict[str, int]:
    """Make raw system calls in the sandbox: {label: errno, 0 on success}."""
    todo = [[label, _nr(call), args] for label, call, args, *_ in calls if _nr(call) is not None]
    script = f"python3 -c {shlex.quote(PROBE)} {shlex.quote(json.dumps(todo))}"
    return json.loads(ok(runtime, sandbox_id, script, user=user))


ATTACKS = [  # label, call, arguments, errno
    ("socket(AF_VSOCK)", "socket", [40, 1, 0], errno.EAFNOSUPPORT),
    ("socket(AF_VSOCK | 1 << 32)", "socket", [40 | 1 << 32, 1, 0], errno.EAFNOSUPPORT),
    ("socket(AF_PACKET)", "socket", [17, 3, 0x300], errno.EAFNOSUPPORT),
    ("socket(AF_ALG)", "socket", [38, 5, 0], errno.EAFNOSUPPORT),
    ("socketpair(AF_INET)", "socketpair", [2, 1, 0, "buf"], errno.EAFNOSUPPORT),
    ("unshare(CLONE_NEWUSER)", "unshare", [0x10000000], errno.EPERM),
    ("unshare(CLONE_NEWNET)", "unshare", [0x40000000], errno.EPERM),
    ("clone(CLONE_NEWUSER)", "clone", [0x10000000 | 17, 0, 0, 0, 0], errno.EPERM),
    ("setns(net, 0)", "setns", ["fd:/proc/self/ns/net", 0], errno.EPERM),
    ("setns(net, CLONE_NEWNET)", "setns", ["fd:/proc/self/ns/net", 0x40000000], errno.EPERM),
    ("mount", "mount", ["s:none", "s:/mnt", "s:tmpfs", 0, 0], errno.EPERM),
    ("fsopen", "fsopen", ["s:tmpfs", 0], errno.EPERM),
    ("open_tree", "open_tree", [AT_FDCWD, "s:/", 1], errno.EPERM),
    ("bpf", "bpf", [0, "buf", 72], errno.EPERM),
    ("keyctl", "keyctl", [0, -3, 1], errno.EPERM),
    ("add_key", "add_key", ["s:user", "s:k", "buf", 4, -3], errno.EPERM),
    ("userfaultfd", "userfaultfd", [1], errno.EPERM),
    ("io_uring_setup", "io_uring_setup", [1, "buf"], errno.EPERM),
    ("perf_event_open", "perf_event_open", ["buf", 0, -1, -1, 0], errno.EPERM),
    ("kexec_load", "kexec_load", [0, 0, 0, 0], errno.EPERM),
    ("init_module", "init_module", ["buf", 16, "s:"], errno.EPERM),
    ("open_by_handle_at", "open_by_handle_at", [AT_FDCWD, "buf", 0], errno.EPERM),
    ("personality(ADDR_NO_RANDOMIZE)", "personality", [0x0040000], errno.EPERM),
    ("personality(READ_IMPLIES_EXEC)", "personality", [0x0400000], errno.EPERM),
    ("ioperm", "ioperm", [0x80, 1, 1], errno.EPERM),
    ("syslog", "syslog", [10, 0, 0], errno.EPERM),
    ("fanotify_init (not on the list)", "fanotify_init", [0, 0], errno.ENOSYS),
    ("no such system call", NOT_A_SYSCALL, [], errno.ENOSYS),
]
MODERN = [  # label, call, arguments: they answer as they do on the host
    ("getrandom", "getrandom", ["buf", 16, 0]),
    ("memfd_create", "memfd_create", ["s:m", 0]),
    ("statx", "statx", [AT_FDCWD, "s:/", 0, 0x7FF, "buf"]),
    ("close_range", "close_range", [1000, 1010, 0]),
    ("rseq", "rseq", ["buf", 32, 0, 0]),
    ("epoll_create1", "epoll_create1", [0]),
    ("eventfd2", "eventfd2", [0, 0]),
    ("timerfd_create", "timerfd_create", [1, 0]),
    ("signalfd4", "signalfd4", [-1, "buf", 8, 0]),
    ("prctl(PR_SET_NAME)", "prctl", [15, "s:probe", 0, 0, 0]),
    ("sched_getaffinity", "sched_getaffinity", [0, 128, "buf"]),
    ("sched_setscheduler(SCHED_BATCH)", "sched_setscheduler", [0, 3, "buf"]),
    ("sched_getattr", "sched_getattr", [0, "buf", 56, 0]),
    ("sched_yield", "sched_yield", []),
    ("membarrier(QUERY)", "membarrier", [0, 0, 0]),
    ("copy_file_range", "copy_file_range", ["rfd", 0, "wfd", 0, 4, 0]),
    ("faccessat2", "faccessat2", [AT_FDCWD, "s:/", 4, 0]),
    ("openat2", "openat2", [AT_FDCWD, "s:/", "buf", 24]),
    ("pidfd_open", "pidfd_open", ["pid", 0]),
    ("pidfd_send_signal", "pidfd_send_signal", ["pidfd", 0, 0, 0]),
    ("pidfd_getfd", "pidfd_getfd", ["pidfd", 0, 0]),
    ("process_madvise", "process_madvise", ["pidfd", "buf", 0, 20, 0]),
    ("landlock_create_ruleset(VERSION)", "landlock_create_ruleset", [0, 0, 1]),
    ("io_setup", "io_setup", [1, "buf"]),
    ("mlock", "mlock", ["buf", 16]),
    ("kcmp", "kcmp", ["pid", "pid", 0, 0, 0]),
    ("cachestat", "cachestat", ["wfd", "buf", "buf", 0]),
    ("fchmodat2", "fchmodat2", [AT_FDCWD, "file", 0o600, 0]),
]


@pytest.mark.parametrize("user", USERS)
def test_ordinary_work_runs(runtime: OciRuntime, make_sandbox: SandboxFactory, user: str) -> None:
    """Python, Node.js and everyday tools (see workloads/) under the filter."""
    box = make_sandbox()
    for name, interpreter, done in (
        ("work.py", "python3", "python ok"), ("work.js", "node", "node ok"),
        ("tools.sh", "bash", "jobs ok\r\ntools ok"),
    ):  # fmt: skip
        text = (WORKLOADS / name).read_text()
        script = f"cd $(mktemp -d) && cat > {name} <<'END_OF_WORK'\n{text}END_OF_WORK\n"
        res = sh(runtime, box.sandbox_id, script + f"{interpreter} {name}", user=user, timeout=300)
        assert res.exit_code == 0, (name, res.stdout, res.stderr)
        assert done in res.stdout.decode(), (name, res.stdout)


@pytest.mark.parametrize("user", USERS)
def test_attacks_fail_with_the_expected_errno(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    box = make_sandbox()
    got = probe(runtime, box.sandbox_id, user, ATTACKS)
    want = {lbl: err for lbl, call, _, err in ATTACKS if _nr(call) is not None}
    assert {lbl: errno.errorcode.get(e, e) for lbl, e in got.items()} == {
        lbl: errno.errorcode[e] for lbl, e in want.items()
    }


@pytest.mark.parametrize("user", USERS)
def test_modern_system_calls_are_allowed(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    box = make_sandbox()
    got = probe(runtime, box.sandbox_id, user, MODERN)
    todo = [[label, _nr(call), args] for label, call, args in MODERN]
    if tier_of(runtime, box.sandbox_id) == "gvisor":
        # The kernel is gVisor's, which lacks some of these (pidfds...): the filter
        # must answer as gVisor does without it (runsc exec runs outside the filter).
        script = f"python3 -c {shlex.quote(PROBE)} {shlex.quote(json.dumps(todo))}"
        unfiltered = inside_as_host(runtime, box.sandbox_id, script)
        assert got == json.loads(unfiltered)
        return
    host = subprocess.run([sys.executable, "-c", PROBE, json.dumps(todo)], capture_output=True)
    assert host.returncode == 0, host.stderr
    assert got == json.loads(host.stdout)
    assert errno.ENOSYS not in got.values()
    assert errno.EPERM not in got.values()


def test_joining_a_user_namespace_passes_the_filter(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox()
    calls = [("setns(user, CLONE_NEWUSER)", "setns", ["fd:/proc/self/ns/user", 0x10000000])]
    # The kernel itself refuses to re-enter the caller's own namespace.
    assert probe(runtime, box.sandbox_id, "daytona", calls) == {calls[0][0]: errno.EINVAL}


# 32-bit x86 system calls from a 64-bit process: ``int 0x80`` on an executable
# page below 4 GiB (the i386 ABI sees 32-bit pointers). Prints the results of
# direct socket(2) calls and of socketcall(SYS_SOCKET, ...), which libseccomp
# cannot filter by family and the profile therefore refuses.
INT80 = r"""
import ctypes, json, mmap, struct
code = bytes.fromhex("53 89f8 89f3 4989c8 89d1 4489c2 cd80 5b c3")
page = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40,  # MAP_32BIT
                 prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
base = ctypes.addressof(ctypes.c_char.from_buffer(page))
call = ctypes.CFUNCTYPE(ctypes.c_int, *[ctypes.c_long] * 4)(base)
def socketcall(family):
    ctypes.memmove(base + 2048, struct.pack("<3I", family, 1, 0), 12)
    return call(102, 1, base + 2048, 0)
print(json.dumps({"getpid": call(20, 0, 0, 0) > 0, "socket(AF_INET)": call(359, 2, 1, 0) >= 0,
                  "socket(AF_VSOCK)": call(359, 40, 1, 0), "socketcall(AF_VSOCK)": socketcall(40),
                  "socketcall(AF_INET)": socketcall(2)}))
"""


@pytest.mark.skipif(ARCH != "x86_64", reason="the i386 ABI exists on x86_64 only")
@pytest.mark.parametrize("user", USERS)
def test_32bit_socket_calls_are_filtered_too(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    box = make_sandbox()
    got = json.loads(ok(runtime, box.sandbox_id, f"python3 -c {shlex.quote(INT80)}", user=user))
    if tier_of(runtime, box.sandbox_id) == "gvisor":  # gVisor has no 32-bit system calls
        assert got == {"getpid": False, "socket(AF_INET)": False, "socket(AF_VSOCK)": -errno.ENOSYS,
                       "socketcall(AF_VSOCK)": -errno.ENOSYS, "socketcall(AF_INET)": -errno.ENOSYS}
        return
    assert got == {
        "getpid": True, "socket(AF_INET)": True, "socket(AF_VSOCK)": -errno.EAFNOSUPPORT,
        "socketcall(AF_VSOCK)": -errno.EPERM, "socketcall(AF_INET)": -errno.EPERM,
    }  # fmt: skip


def test_every_name_is_known_to_libseccomp() -> None:
    """crun skips names its libseccomp cannot resolve, with only a warning."""
    lib = ctypes.CDLL("libseccomp.so.2")
    names = {n for rule in seccomp.profile()["syscalls"] for n in rule["names"]}
    unknown = sorted(n for n in names if lib.seccomp_syscall_resolve_name(n.encode()) == -1)
    assert unknown == []
