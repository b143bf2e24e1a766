"""The OCI runtime configuration (config.json) of a sandbox, as a pure function."""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cove.core.config import Settings
from cove.core.ports import ContainerSpec
from cove.runtime import cgroups, seccomp

GIB = 1024**3
CPU_PERIOD = 100_000
INIT_PATH = "/dev/.cove/init"
OOM_SCORE_ADJ = 500  # sandboxes are killed before the host's own processes
NOFILE_MAX = 1_048_576
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capability set.
CAPABILITIES = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
)  # fmt: skip
MASKED_PATHS = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = (
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip
NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")


def build(
    spec: ContainerSpec,
    settings: Settings,
    *,
    init_binary: Path,
    etc_dir: Path,
    nofile_hard: int,
    service: Sequence[str] = (),
    ro_binds: Mapping[str, Path] | None = None,
    machine: str | None = None,
    netns: Path | None = None,
) -> dict[str, Any]:
    """The config.json of a sandbox's container.

    Args:
        spec: What to run.
        settings: Server settings (``pids_limit``).
        init_binary: Host path of the compiled cove-init, bind-mounted read-only.
        etc_dir: Host directory holding this sandbox's ``hostname`` and ``hosts``.
        nofile_hard: The caller's hard RLIMIT_NOFILE (root here may not raise it).
        service: Command line that init runs and restarts (the toolbox agent).
        ro_binds: Extra read-only bind mounts, container path → host path.
        machine: Host architecture for seccomp (the current one when None).
        netns: A network namespace file to join (with ``etc_dir/resolv.conf``);
            None gives the container a new one with loopback only.

    Returns:
        A JSON-ready dict; the bundle's rootfs is ``<bundle>/rootfs``.
    """
    return {
        "ociVersion": "1.0.2",
        "process": _process(spec, nofile_hard, service),
        "root": {"path": "rootfs", "readonly": False},
        "hostname": spec.hostname,
        "mounts": _mounts(init_binary, etc_dir, ro_binds or {}, resolv=netns is not None),
        "linux": {
            "cgroupsPath": cgroups.cgroup_path(spec.sandbox_id),
            "namespaces": _namespaces(netns),
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


def exec_env(
    meta_env: Mapping[str, str], hostname: str, user: str, home: str,
    extra: Mapping[str, str] | None,
) -> dict[str, str]:  # fmt: skip
    """Environment of an exec'd process: defaults, then the sandbox's env, then ``extra``."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, "LANG": "C.UTF-8",
           "HOME": home, "USER": user, "LOGNAME": user}  # fmt: skip
    env.update(meta_env)
    env.update(extra or {})
    return env


def exec_process(
    argv: Sequence[str],
    *,
    uid: int,
    gid: int,
    groups: Sequence[int],
    env: Mapping[str, str],
    cwd: str,
    nofile_hard: int,
) -> dict[str, Any]:
    """The process.json of ``crun exec``: same hardening as the init process.

    A non-root user ends up with no effective capability (execve clears them).
    """
    proc = _process_base(list(argv), env, cwd, nofile_hard)
    proc["user"] = {"uid": uid, "gid": gid, "additionalGids": list(groups)}
    return proc


def _process(spec: ContainerSpec, nofile_hard: int, service: Sequence[str]) -> dict[str, Any]:
    args = [INIT_PATH, "--", *service] if service else [INIT_PATH]
    return _process_base(args, init_env(spec), "/", nofile_hard)


def _process_base(
    args: list[str], env: Mapping[str, str], cwd: str, nofile_hard: int
) -> dict[str, Any]:
    caps = list(CAPABILITIES)
    nofile = min(NOFILE_MAX, nofile_hard)
    return {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            "inheritable": [],
            "ambient": [],
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": nofile, "hard": nofile}],
        "noNewPrivileges": True,
        "oomScoreAdj": OOM_SCORE_ADJ,
    }


def _namespaces(netns: Path | None) -> list[dict[str, str]]:
    joined = {"network": str(netns)} if netns is not None else {}
    return [{"type": ns, "path": joined[ns]} if ns in joined else {"type": ns} for ns in NAMESPACES]


def _mounts(
    init_binary: Path, etc_dir: Path, ro_binds: Mapping[str, Path], *, resolv: bool = False
) -> list[dict[str, Any]]:
    def bind(src: Path, dst: str, *opts: str) -> dict[str, Any]:
        return {"destination": dst, "type": "bind", "source": str(src), "options": ["bind", *opts]}

    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        bind(init_binary, INIT_PATH, "ro", "nosuid", "nodev"),
        bind(etc_dir / "hostname", "/etc/hostname", "rw", "nosuid", "nodev"),
        bind(etc_dir / "hosts", "/etc/hosts", "rw", "nosuid", "nodev"),
        *([bind(etc_dir / "resolv.conf", "/etc/resolv.conf", "rw", "nosuid", "nodev")]
          if resolv else []),
        *(bind(src, dst, "ro", "nosuid", "nodev") for dst, src in sorted(ro_binds.items())),
    ]  # fmt: skip
