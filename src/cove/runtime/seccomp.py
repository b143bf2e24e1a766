"""The seccomp profile of sandboxes: allow by default, refuse what breaks isolation.

Refused with EPERM: (un)mounting and the new mount API, namespace creation and
joining (``unshare``, ``setns``, ``clone`` with a CLONE_NEW* flag), kernel
modules, kexec, BPF, perf, the kernel keyring, swap, reboot, the kernel log,
accounting, clock changes, file handles (the "shocker" escape), userfaultfd,
io_uring, raw port I/O, quotas and obsolete system calls. ``clone3`` answers
ENOSYS so that libc falls back to ``clone``, whose flags can be inspected.

``ptrace`` stays allowed: since Linux 4.8 seccomp is re-checked after a tracer
changes a system call, so it cannot be used to bypass this filter; the pid
namespace limits it to the sandbox's own processes, and CAP_SYS_PTRACE is not
granted. Debuggers and ``strace`` inside a sandbox keep working.
"""

from __future__ import annotations

import errno
import platform
from typing import Any

DENIED = (
    "acct", "add_key", "adjtimex", "bpf", "clock_adjtime", "clock_settime",
    "clock_settime64", "create_module", "delete_module", "finit_module", "fsconfig",
    "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module", "io_uring_enter",
    "io_uring_register", "io_uring_setup", "ioperm", "iopl", "kexec_file_load",
    "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
    "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree",
    "perf_event_open", "pivot_root", "query_module", "quotactl", "quotactl_fd",
    "reboot", "request_key", "settimeofday", "stime", "swapoff", "swapon",
    "_sysctl", "syslog", "umount", "umount2", "unshare", "uselib", "userfaultfd",
    "ustat", "vm86", "vm86old",
)  # fmt: skip

# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACE_FLAGS = (
    0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
)  # fmt: skip

ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def profile(machine: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a host architecture.

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
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES[arch],
        "syscalls": _rules(),
    }


def _rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"names": sorted(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
        # setns only into a user namespace: the agent's way into the workload's
        {"names": ["setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
         "args": [{"index": 1, "value": 0x10000000, "op": "SCMP_CMP_NE"}]},
    ]
    for flag in CLONE_NAMESPACE_FLAGS:
        arg = {"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}
        rules.append(
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM, "args": [arg]}
        )
    return rules
