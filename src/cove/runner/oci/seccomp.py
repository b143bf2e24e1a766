"""The seccomp profile of sandboxes: an allow-list, everything else refused.

A system call that is not listed fails with ENOSYS (``defaultErrnoRet``), as if
the kernel did not have it: calls added to Linux later stay closed, and probes
such as ``clone3`` make libc fall back to an older call (``clone``, whose flags
can be inspected). The known-dangerous calls fail with EPERM instead: mounting
(and the new mount API), ``pivot_root``, namespace creation (``unshare``,
``clone`` with a CLONE_NEW* flag), kernel modules, kexec, BPF, perf, the kernel
keyring, userfaultfd, io_uring, file handles (the "shocker" escape), swap,
reboot, the kernel log, accounting, clock changes, raw port I/O, quotas, the
LDT, obsolete calls, and privileged calls such as ``sethostname``.

Some calls are allowed only with certain arguments:

- ``socket``: AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK; any other family
  (AF_VSOCK reaches the hypervisor from any network namespace, AF_PACKET,
  AF_ALG, ...) fails with EAFNOSUPPORT. ``socketpair``: AF_UNIX only.
- ``setns``: only ``nstype == CLONE_NEWUSER`` (the toolbox agent moves the
  processes it starts into a nested user namespace); any other nstype, 0
  included, fails with EPERM.
- ``personality``: only PER_LINUX, PER_LINUX32, UNAME26 and the 0xffffffff
  query; the address-space flags (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...)
  fail with EPERM, other values with ENOSYS.
- ``socketcall``, the 32-bit x86 multiplexer, fails with EPERM: its arguments
  are in memory where seccomp cannot see the family (libseccomp would allow
  it for any family). 32-bit programs must use the direct socket calls.

Comparisons see all 64 bits of an argument, so a value padded with high bits
matches no allow rule. The refusals are written as rules that never overlap an
allow rule (libseccomp's evaluation order then cannot matter); libseccomp
takes one comparison per argument in a rule and ORs the rules of a call.
crun skips names its libseccomp does not know and rules whose action is the
default one (the explicit ``clone3`` rule only documents it).

``ptrace`` stays allowed: since Linux 4.8 seccomp is re-checked after a tracer
changes a system call, so it cannot be used to bypass this filter; the pid
namespace limits it to the sandbox's own processes, and CAP_SYS_PTRACE is not
granted. Debuggers and ``strace`` keep working.
"""

from __future__ import annotations

import errno
import platform
from typing import Any

ALLOWED = (
    # files and descriptors
    "_llseek", "access", "arm_fadvise64_64", "arm_sync_file_range", "chdir", "chmod",
    "chown", "chown32", "chroot", "close", "close_range", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32",
    "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock",
    "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd",
    "getdents", "getdents64", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "ioctl", "lchown", "lchown32", "lgetxattr",
    "link", "linkat", "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr",
    "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open",
    "openat", "openat2", "pipe", "pipe2", "pread64", "preadv", "preadv2", "pwrite64",
    "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
    "removexattr", "rename", "renameat", "renameat2", "rmdir", "sendfile",
    "sendfile64", "setxattr", "splice", "stat", "stat64", "statfs", "statfs64",
    "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "tee", "truncate", "truncate64", "umask", "unlink", "unlinkat", "utime",
    "utimensat", "utimensat_time64", "utimes", "vmsplice", "write", "writev",
    # waiting for events
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "eventfd", "eventfd2", "_newselect", "poll", "ppoll", "ppoll_time64",
    "pselect6", "pselect6_time64", "select", "signalfd", "signalfd4",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "io_cancel", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "io_setup", "io_submit",
    # memory
    "brk", "cachestat", "get_mempolicy", "madvise", "map_shadow_stack", "mbind",
    "membarrier", "memfd_create", "migrate_pages", "mincore", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "move_pages", "mprotect", "mremap", "msync",
    "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "remap_file_pages", "set_mempolicy", "set_mempolicy_home_node",
    # processes, threads and scheduling
    "arch_prctl", "breakpoint", "cacheflush", "capget", "capset", "execve",
    "execveat", "exit", "exit_group", "fork", "futex", "futex_requeue",
    "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "get_robust_list",
    "get_thread_area", "get_tls", "getcpu", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrandom", "getrlimit", "getrusage", "getsid",
    "gettid", "ioprio_get", "ioprio_set", "kcmp", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "nice", "pidfd_getfd",
    "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64", "process_madvise",
    "process_mrelease", "process_vm_readv", "process_vm_writev", "ptrace",
    "restart_syscall", "rseq", "sched_get_priority_max", "sched_get_priority_min",
    "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
    "set_robust_list", "set_thread_area", "set_tid_address", "set_tls", "setpgid",
    "setpriority", "setrlimit", "setsid", "sysinfo", "times", "tgkill", "tkill",
    "ugetrlimit", "uname", "vfork", "wait4", "waitid", "waitpid",
    # credentials (capabilities decide what may change)
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
    "getgroups", "getgroups32", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getuid", "getuid32", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setregid",
    "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32",
    "setreuid", "setreuid32", "setuid", "setuid32",
    # signals and time
    "alarm", "clock_getres", "clock_getres_time64", "clock_gettime",
    "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "getitimer",
    "gettimeofday", "nanosleep", "pause", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "setitimer",
    "sigaction", "sigaltstack", "signal", "sigpending", "sigprocmask", "sigreturn",
    "sigsuspend", "time", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    # sockets (socket and socketpair: see below) and System V / POSIX IPC
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname",
    "getsockopt", "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64",
    "recvmsg", "send", "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown",
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
    "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
)  # fmt: skip

REFUSED = (
    "acct", "add_key", "adjtimex", "bpf", "clock_adjtime", "clock_adjtime64",
    "clock_settime", "clock_settime64", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms",
    "init_module", "io_uring_enter", "io_uring_register", "io_uring_setup", "ioperm",
    "iopl", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "modify_ldt", "mount", "mount_setattr", "move_mount", "name_to_handle_at",
    "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
    "query_module", "quotactl", "quotactl_fd", "reboot", "request_key",
    "setdomainname", "sethostname", "settimeofday", "socketcall", "stime", "swapoff",
    "swapon", "_sysctl", "syslog", "umount", "umount2", "unshare", "uselib",
    "userfaultfd", "ustat", "vhangup", "vm86", "vm86old",
)  # fmt: skip

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
SOCKET_FAMILIES = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
SOCKETPAIR_FAMILIES = (AF_UNIX,)
CLONE_NEWUSER = 0x10000000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACE_FLAGS = (
    0x00020000, 0x02000000, 0x04000000, 0x08000000, CLONE_NEWUSER, 0x20000000, 0x40000000,
)  # fmt: skip
# PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32 | UNAME26, and the query
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
# ADDR_NO_RANDOMIZE (0x40000) up to ADDR_LIMIT_3GB (0x8000000)
PERSONALITY_FLAGS = tuple(1 << bit for bit in range(18, 28))
U64 = 0xFFFFFFFFFFFFFFFF

ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def profile(machine: str | None = None) -> dict[str, Any]:
    """The complete OCI ``linux.seccomp`` object for a host architecture.

    Args:
        machine: ``platform.machine()`` value (``x86_64`` or ``aarch64``);
            the current host's when None.

    Returns:
        A JSON-ready dict for config.json.

    Raises:
        ValueError: the architecture is not supported.
    """
    machine = machine or platform.machine()
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)
    if arch not in ARCHITECTURES:
        raise ValueError(f"no seccomp profile for architecture {machine}")
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.ENOSYS,
        "architectures": ARCHITECTURES[arch],
        "syscalls": _rules(),
    }


def _rules() -> list[dict[str, Any]]:
    ns_mask = sum(CLONE_NAMESPACE_FLAGS)
    return [
        _rule(sorted(ALLOWED), "SCMP_ACT_ALLOW"),
        _rule(sorted(REFUSED), errno.EPERM),
        _rule(["clone3"], errno.ENOSYS),
        _rule(["clone"], "SCMP_ACT_ALLOW", _masked(0, ns_mask, 0)),
        *(_rule(["clone"], errno.EPERM, _masked(0, flag, flag)) for flag in CLONE_NAMESPACE_FLAGS),
        *_only("socket", 0, SOCKET_FAMILIES, errno.EAFNOSUPPORT),
        *_only("socketpair", 0, SOCKETPAIR_FAMILIES, errno.EAFNOSUPPORT),
        *_only("setns", 1, (CLONE_NEWUSER,), errno.EPERM),
        *_personality(),
    ]


def _personality() -> list[dict[str, Any]]:
    """Allow PERSONALITIES; EPERM for a flag of PERSONALITY_FLAGS (the rules
    require bit 31 clear, so they never match the query) or high bits."""
    high = U64 ^ 0x7FFFFFFF  # bits 31 to 63 must be clear
    name = ["personality"]
    rules = [_rule(name, "SCMP_ACT_ALLOW", _cmp(0, "EQ", v)) for v in PERSONALITIES]
    rules += [_rule(name, errno.EPERM, _masked(0, high | f, f)) for f in PERSONALITY_FLAGS]
    rules.append(_rule(name, errno.EPERM, _cmp(0, "GT", 0xFFFFFFFF)))
    return rules


def _only(name: str, index: int, values: tuple[int, ...], refuse: int) -> list[dict[str, Any]]:
    """Allow ``name`` when argument ``index`` is one of ``values``; fail with
    ``refuse`` for every other 64-bit value (the rules of a call are OR-ed)."""
    rules = [_rule([name], "SCMP_ACT_ALLOW", _cmp(index, "EQ", v)) for v in values]
    for start, stop in _gaps(values):
        for low, size in _blocks(start, stop):
            rules.append(_rule([name], refuse, _masked(index, U64 ^ (size - 1), low)))
    rules.append(_rule([name], refuse, _cmp(index, "GT", max(values))))
    return rules


def _gaps(values: tuple[int, ...]) -> list[tuple[int, int]]:
    """The half-open ranges below ``max(values)`` that hold none of them."""
    gaps, start = [], 0
    for value in sorted(values):
        if value > start:
            gaps.append((start, value))
        start = value + 1
    return gaps


def _blocks(start: int, stop: int) -> list[tuple[int, int]]:
    """[start, stop) as aligned power-of-two blocks (start, size), like CIDR."""
    blocks = []
    while start < stop:
        size = start & -start if start else 1 << (stop.bit_length() - 1)
        while start + size > stop:
            size //= 2
        blocks.append((start, size))
        start += size
    return blocks


def _rule(names: list[str], action: str | int, arg: dict[str, Any] | None = None) -> dict[str, Any]:
    """One OCI rule: ``action`` is an OCI action name or an errno value."""
    rule: dict[str, Any] = {"names": names}
    if isinstance(action, int):
        rule.update(action="SCMP_ACT_ERRNO", errnoRet=action)
    else:
        rule["action"] = action
    if arg is not None:
        rule["args"] = [arg]
    return rule


def _cmp(index: int, op: str, value: int) -> dict[str, Any]:
    return {"index": index, "value": value, "op": f"SCMP_CMP_{op}"}


def _masked(index: int, mask: int, value: int) -> dict[str, Any]:
    """``(arg & mask) == value``."""
    return {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}
