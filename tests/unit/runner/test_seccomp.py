"""The seccomp allow-list, checked by evaluating its rules as a 64-bit filter does."""

from __future__ import annotations

import errno
from collections import Counter
from typing import Any

import pytest

from cove.runner.oci import seccomp

U64 = 0xFFFFFFFFFFFFFFFF
ALLOW = "allow"
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_ALG, AF_VSOCK = 1, 2, 10, 16, 17, 38, 40
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS = 0x10000000, 0x40000000, 0x00020000
SIGCHLD = 17
THREAD_FLAGS = 0x3D0F00  # what glibc's pthread_create passes to clone
DANGEROUS = (
    "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr", "unshare", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "create_module", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff",
    "reboot", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog",
    "iopl", "ioperm", "quotactl", "quotactl_fd", "lookup_dcookie", "vm86", "vm86old", "uselib",
    "nfsservctl", "modify_ldt", "socketcall",
)  # fmt: skip
NEEDED = (
    "read", "write", "openat", "close", "mmap", "execve", "futex", "rseq", "set_robust_list",
    "getrandom", "memfd_create", "statx", "close_range", "epoll_pwait", "eventfd2",
    "timerfd_create", "signalfd4", "prctl", "sched_setaffinity", "membarrier",
    "copy_file_range", "faccessat2", "openat2", "pidfd_open", "pidfd_send_signal",
    "pidfd_getfd", "process_madvise", "landlock_create_ruleset", "landlock_restrict_self",
    "inotify_add_watch", "wait4", "ptrace", "io_setup", "flock", "accept4", "seccomp",
)  # fmt: skip


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return seccomp.profile("x86_64")


def _matches(arg: dict[str, Any], args: tuple[int, ...]) -> bool:
    value, datum = args[arg["index"]] & U64, arg["value"]
    op = arg["op"].removeprefix("SCMP_CMP_")
    if op == "MASKED_EQ":
        return value & datum == arg["valueTwo"]
    return {"EQ": value == datum, "NE": value != datum, "GT": value > datum,
            "GE": value >= datum, "LT": value < datum, "LE": value <= datum}[op]  # fmt: skip


def decide(profile: dict[str, Any], name: str, *args: int) -> str | int:
    """What the filter does with a call: ALLOW or an errno. Rules whose
    arguments all match must agree, so libseccomp's rule order cannot matter."""
    padded = args + (0,) * (6 - len(args))
    found = {
        ALLOW if rule["action"] == "SCMP_ACT_ALLOW" else rule["errnoRet"]
        for rule in profile["syscalls"]
        if name in rule["names"] and all(_matches(a, padded) for a in rule.get("args", []))
    }
    assert len(found) <= 1, (name, args, found)
    return found.pop() if found else profile["defaultErrnoRet"]


def test_unknown_calls_fail_with_enosys(profile: dict[str, Any]) -> None:
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == errno.ENOSYS
    assert decide(profile, "clone3") == errno.ENOSYS
    assert decide(profile, "sysfs") == errno.ENOSYS
    assert decide(profile, "a_syscall_from_the_future") == errno.ENOSYS


def test_architectures() -> None:
    assert seccomp.profile("x86_64")["architectures"] == [
        "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"
    ]  # fmt: skip
    assert seccomp.profile("amd64")["architectures"][0] == "SCMP_ARCH_X86_64"
    assert seccomp.profile("aarch64")["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert seccomp.profile("arm64")["architectures"][0] == "SCMP_ARCH_AARCH64"
    with pytest.raises(ValueError):
        seccomp.profile("riscv64")


def test_each_name_in_one_unconditional_rule(profile: dict[str, Any]) -> None:
    plain = Counter(n for r in profile["syscalls"] if "args" not in r for n in r["names"])
    assert [n for n, count in plain.items() if count > 1] == []
    with_args = {n for r in profile["syscalls"] if "args" in r for n in r["names"]}
    assert with_args == {"clone", "socket", "socketpair", "setns", "personality"}
    assert not with_args & set(plain)
    for rule in profile["syscalls"]:
        assert len(rule.get("args", [])) <= 1, rule  # crun would OR several


def test_dangerous_calls_fail_with_eperm(profile: dict[str, Any]) -> None:
    rules = profile["syscalls"]
    allowed = {n for r in rules if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    for name in DANGEROUS:
        assert name not in allowed, name
        assert decide(profile, name) == errno.EPERM, name


def test_ordinary_calls_are_allowed(profile: dict[str, Any]) -> None:
    for name in NEEDED:
        assert decide(profile, name) == ALLOW, name


def test_socket_families(profile: dict[str, Any]) -> None:
    for family in range(0, 64):
        want = ALLOW if family in (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK) else errno.EAFNOSUPPORT
        assert decide(profile, "socket", family, 1, 0) == want, family
    for family in (AF_VSOCK | 1 << 32, AF_INET | 1 << 32, 1 << 63, U64, -AF_VSOCK, 0xFFFFFFFF):
        assert decide(profile, "socket", family, 1, 0) == errno.EAFNOSUPPORT, hex(family & U64)
    assert decide(profile, "socketpair", AF_UNIX, 1, 0, 0) == ALLOW
    for family in (0, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_VSOCK, AF_UNIX | 1 << 32):
        assert decide(profile, "socketpair", family, 1, 0, 0) == errno.EAFNOSUPPORT, family


def test_setns_only_into_a_user_namespace(profile: dict[str, Any]) -> None:
    assert decide(profile, "setns", 3, CLONE_NEWUSER) == ALLOW
    for nstype in (0, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUSER | CLONE_NEWNET,
                   CLONE_NEWUSER | 1 << 32, CLONE_NEWUSER - 1, CLONE_NEWUSER + 1, U64):  # fmt: skip
        assert decide(profile, "setns", 3, nstype) == errno.EPERM, hex(nstype)


def test_clone_refuses_namespace_flags(profile: dict[str, Any]) -> None:
    assert decide(profile, "clone", SIGCHLD) == ALLOW
    assert decide(profile, "clone", THREAD_FLAGS) == ALLOW
    for flag in seccomp.CLONE_NAMESPACE_FLAGS:
        assert decide(profile, "clone", SIGCHLD | flag) == errno.EPERM, hex(flag)
        assert decide(profile, "clone", THREAD_FLAGS | flag | 1 << 40) == errno.EPERM, hex(flag)


def test_personality(profile: dict[str, Any]) -> None:
    for value in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert decide(profile, "personality", value) == ALLOW, hex(value)
    for flag in range(18, 28):  # ADDR_NO_RANDOMIZE .. ADDR_LIMIT_3GB
        assert decide(profile, "personality", 1 << flag) == errno.EPERM, flag
        assert decide(profile, "personality", 8 | 1 << flag) == errno.EPERM, flag
    for value in (1 << 32, 0x400000 | 1 << 32, 0xFFFFFFFF | 1 << 32):
        assert decide(profile, "personality", value) == errno.EPERM, hex(value)
    for value in (0x1, 0x80000000, 0xFFFFFFFE, 0x80400000):
        assert decide(profile, "personality", value) != ALLOW, hex(value)


def test_aarch64_profile_has_the_same_rules() -> None:
    assert seccomp.profile("aarch64")["syscalls"] == seccomp.profile("x86_64")["syscalls"]
