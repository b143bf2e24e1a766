"""The OCI runtime configuration (config.json) of a sandbox, as a pure function."""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cove.core.config import Settings
from cove.core.ports import ContainerSpec
from cove.runner.host import cgtree
from cove.runner.oci import seccomp

GIB = 1024**3
CPU_PERIOD = 100_000
COVE_DIR = "/dev/.cove"  # what the host binds for init and the agent, below
INIT_PATH = f"{COVE_DIR}/init"
# The mount points in COVE_DIR of everything the host binds there (cove-init, the
# agent's runtime and package; on gVisor the agent's channel and seccomp filter):
# name -> a directory (else a file). COVE_DIR itself is a read-only bind of a host
# directory holding just these (``initbin.ensure_cove_dir``), not a directory of
# the sandbox's /dev, which its root could rename and replace: the agent runs
# COVE_DIR/init for every command, and init starts the agent from COVE_DIR/py.
COVE_ENTRIES = {
    "init": False, "py": True, "pkg": True, "pkg/toolbox": True, "chan": True,
    "seccomp.bpf": False,
}  # fmt: skip
OOM_SCORE_ADJ = 500  # sandboxes are killed before the host's own processes
NOFILE_MAX = 1_048_576
PTY_MAX = 1024  # terminals one sandbox may open (the host's limit is shared)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What init and the toolbox agent may do in the sandbox's outer user namespace:
# act on the sandbox's files for the user (the workload runs in a nested
# namespace and gets its capabilities from the agent, see WORKLOAD_CAPABILITIES).
AGENT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
)  # fmt: skip
# Root of the sandbox's workload: Docker's default set without CAP_NET_RAW (raw
# and packet sockets), CAP_MKNOD (device nodes) and CAP_AUDIT_WRITE (kernel audit
# log). They are capabilities in the workload's own user namespace only, which
# owns no other namespace: they act on the sandbox's own files and processes.
# Binding ports below 1024 needs no capability (ip_unprivileged_port_start=0 in
# the sandbox's network namespace), nor does ping (ping_group_range).
WORKLOAD_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_SETFCAP",
)  # fmt: skip
CAPABILITY_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10, "CAP_SYS_CHROOT": 18, "CAP_SETFCAP": 31,
}  # fmt: skip
MASKED_PATHS = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
    # Block devices name the host's loop devices and their backing files, which
    # are other sandboxes' disk images.
    "/proc/partitions", "/proc/diskstats", "/sys/block", "/sys/class/block", "/sys/dev/block",
    "/sys/devices/virtual/block", "/sys/class/bdi", "/sys/devices/virtual/bdi", "/sys/fs/ext4",
    "/sys/kernel/debug", "/sys/kernel/tracing",
)  # fmt: skip
READONLY_PATHS = (
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip
NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")
GO_FD = 3  # the first descriptor init gets: the runtime's go (see init.c)


@dataclass(frozen=True)
class HostParts:
    """What the host prepared for one sandbox's container.

    Attributes:
        init_binary: Host path of the compiled cove-init, bind-mounted read-only.
        cove_dir: Host directory of the mount points of COVE_DIR (COVE_ENTRIES),
            bind-mounted read-only there.
        etc_dir: Directory holding the sandbox's ``hostname``, ``hosts`` (and
            ``resolv.conf`` with a network), seen with the sandbox's ids.
        userns: The sandbox's outer user namespace (an nsfs file) to join.
        agent_uid: The uid init runs as in that namespace.
        group: The sandbox's cgroup group (``runner/host/cgroups.py``).
        netns: A network namespace file to join; None: a new one, loopback only.
        resolv: Bind ``etc_dir/resolv.conf`` (the sandbox has a network).
        service: Command line init runs and restarts (the toolbox agent).
        listen_fd: The agent's listening socket as init numbers it, when the agent
            may exit idle (init then starts it again on the next connection).
        ro_binds: Read-only binds, container path -> host path (host-owned files).
        binds: Read-write binds (volumes), container path -> staged mount point.
    """

    init_binary: Path
    cove_dir: Path
    etc_dir: Path
    userns: Path
    agent_uid: int
    group: str
    netns: Path | None = None
    resolv: bool = False
    service: Sequence[str] = ()
    listen_fd: int | None = None
    ro_binds: Mapping[str, Path] = field(default_factory=dict)
    binds: Sequence[tuple[str, Path]] = ()


def build(
    spec: ContainerSpec,
    settings: Settings,
    parts: HostParts,
    *,
    nofile_hard: int,
    machine: str | None = None,
) -> dict[str, Any]:
    """The config.json of a sandbox's container.

    Args:
        spec: What to run.
        settings: Server settings (``pids_limit``).
        parts: What the host prepared (namespaces, mounts, the agent).
        nofile_hard: The caller's hard RLIMIT_NOFILE (root here may not raise it).
        machine: Host architecture for seccomp (the current one when None).

    Returns:
        A JSON-ready dict; the bundle's rootfs is ``<bundle>/rootfs``.
    """
    process = _process(spec, nofile_hard, parts.service, parts.listen_fd)
    process["user"] = {"uid": parts.agent_uid, "gid": parts.agent_uid}
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": False},
        "hostname": spec.hostname,
        "mounts": _mounts(parts),
        "linux": {
            "cgroupsPath": cgtree.work_path(parts.group),
            "namespaces": _namespaces(parts.userns, parts.netns),
            "resources": resources(spec.resources.cpu, spec.resources.memory, settings),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp.profile(machine),
            "rootfsPropagation": "rprivate",
        },
    }


def resources(cpu: int, memory: int, settings: Settings) -> dict[str, Any]:
    """The OCI ``linux.resources`` for ``cpu`` vCPUs and ``memory`` GiB (no swap)."""
    limit = memory * GIB
    return {
        "devices": [{"allow": False, "access": "rwm"}],
        "cpu": {"quota": cpu * CPU_PERIOD, "period": CPU_PERIOD},
        "memory": {"limit": limit, "swap": limit},
        "pids": {"limit": settings.pids_limit},
    }


def nofile_hard() -> int:
    """This process's hard RLIMIT_NOFILE (what a container may get without CAP_SYS_RESOURCE)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return NOFILE_MAX if hard == resource.RLIM_INFINITY else hard


def init_env(spec: ContainerSpec) -> dict[str, str]:
    """Environment of the init process: defaults, overridden by ``spec.env``."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "HOSTNAME": spec.hostname, "LANG": "C.UTF-8"}
    env.update(spec.env)
    return env


# Variables the dynamic loader or libc act on: init hands them to its agent renamed
# (COVE_HELD_<name>), and so must a pre-started agent (the list of init.c).
LOADER_VARS = (
    "LD_", "GCONV_PATH=", "GETCONF_DIR=", "GLIBC_TUNABLES=", "HOSTALIASES=", "LOCALDOMAIN=",
    "LOCPATH=", "MALLOC_", "NIS_PATH=", "NLSPATH=", "RESOLV_HOST_CONF=", "RES_OPTIONS=",
    "TMPDIR=", "TZDIR=",
)  # fmt: skip


def held_env(entries: Sequence[str]) -> dict[str, str]:
    """The agent's environment from init's ``NAME=VALUE`` entries (as init.c's
    ``hold_loader_vars``)."""
    env: dict[str, str] = {}
    for entry in entries:
        if entry.startswith(LOADER_VARS):
            entry = f"COVE_HELD_{entry}"
        name, _, value = entry.partition("=")
        env[name] = value
    return env


def _process(spec: ContainerSpec, nofile_hard: int, service: Sequence[str],
             listen_fd: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Init, as the agent uid: its capabilities are ambient so they survive the exec
    of init and of the agent (a non-root uid loses permitted ones at exec)."""
    lazy = ["--listen-fd", str(listen_fd)] if listen_fd is not None and service else []
    args = [INIT_PATH, "--go-fd", str(GO_FD), *lazy, *(["--", *service] if service else [])]
    caps = list(AGENT_CAPABILITIES)
    nofile = min(NOFILE_MAX, nofile_hard)
    return {
        "terminal": False,
        "args": args,
        "env": [f"{k}={v}" for k, v in init_env(spec).items()],
        "cwd": "/",
        "capabilities": dict.fromkeys(
            ("bounding", "effective", "permitted", "inheritable", "ambient"), caps
        ),
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": nofile, "hard": nofile}],
        "noNewPrivileges": True,
        "oomScoreAdj": OOM_SCORE_ADJ,
    }


def _namespaces(userns: Path, netns: Path | None) -> list[dict[str, str]]:
    """The sandbox's own namespaces; its user (and network) namespace made by the host."""
    entries = [{"type": "user", "path": str(userns)}]
    for ns in NAMESPACES:
        joined = ns == "network" and netns is not None
        entries.append({"type": ns, "path": str(netns)} if joined else {"type": ns})
    return entries


def _mounts(parts: HostParts) -> list[dict[str, Any]]:
    def bind(src: Path, dst: str, *opts: str) -> dict[str, Any]:
        return {"destination": dst, "type": "bind", "source": str(src), "options": ["bind", *opts]}

    etc = parts.etc_dir
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5",
                     f"max={PTY_MAX}"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        bind(parts.cove_dir, COVE_DIR, "ro", "nosuid", "nodev"),
        bind(parts.init_binary, INIT_PATH, "ro", "nosuid", "nodev"),
        bind(etc / "hostname", "/etc/hostname", "rw", "nosuid", "nodev"),
        bind(etc / "hosts", "/etc/hosts", "rw", "nosuid", "nodev"),
        *([bind(etc / "resolv.conf", "/etc/resolv.conf", "rw", "nosuid", "nodev")]
          if parts.resolv else []),
        *(bind(src, dst, "ro", "nosuid", "nodev") for dst, src in sorted(parts.ro_binds.items())),
        *(bind(src, dst, "rw", "nosuid", "nodev") for dst, src in parts.binds),
    ]  # fmt: skip
