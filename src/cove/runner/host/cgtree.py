"""The cgroups of one sandbox, and the part of them its agent is trusted with.

Layout (``<group>`` is ``cove/<id>``, see ``runner/host/cgroups.py``)::

    /<group>             the sandbox as a whole; its init and agent live here for
                         memory and pids (v1), or in /cove/<id>/agent (v2)
    /<group>/work        crun's ``cgroupsPath``, with the sandbox's cpu, memory and
                         pids limits: every process of the workload is in it, and
                         it is the root of the workload's cgroup namespace
    .../c<n>             one cgroup per command the agent starts (in the "kill"
                         hierarchy), so a timeout or a kill reaches every process
                         the command started, however it forked or setsid-ed

The parent allows ``AGENT_MEMORY`` more memory and ``AGENT_PIDS`` more tasks than
the workload's limits, so a workload that exhausts its memory or pids is
OOM-killed or refused inside ``work`` and never takes the agent down with it.

Kill hierarchy: cgroup2 (``cgroup.kill``): the unified mount of a hybrid host
(there the per-command cgroups sit under /<group>, which crun leaves alone), or
the only hierarchy of a v2 host; on a pure v1 host, the freezer (freeze, kill
every task, thaw).

The agent runs as the sandbox's agent uid, which the workload cannot become;
the cgroup directories and ``cgroup.procs`` files it needs are chowned to it
and handed over as directory descriptors (nothing of it is mounted in the
sandbox). The workload cannot write them: their owner is not mapped in its
user namespace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import cgroups
from cove.runner.host.cgroups import CgroupMode

AGENT_MEMORY = 256 * 1024**2
AGENT_PIDS = 64
WORK = "work"
# v1 hierarchies where the agent sits above the workload (its own headroom).
SPLIT = ("memory", "pids")
_OWNED_FILES = ("cgroup.procs", "tasks", "cgroup.threads", "cgroup.subtree_control")


@dataclass
class Delegation:
    """Descriptors of the cgroup directories handed to the agent."""

    join: list[int] = field(default_factory=list)  # each new process writes itself here
    kill_root: int = -1  # per-command cgroups are made here
    kill_mode: str = "kill"  # "kill" (cgroup.kill) or "freezer"

    @property
    def fds(self) -> list[int]:
        return [*self.join, self.kill_root]

    def close(self) -> None:
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.join, self.kill_root = [], -1


def work_path(group: str) -> str:
    """crun's ``cgroupsPath`` of the sandbox."""
    return f"/{group}/{WORK}"


def unified_join(group: str) -> str | None:
    """On a hybrid host, the cgroup2 path crun's wrapper joins before it runs crun."""
    if cgroups.mode() is CgroupMode.HYBRID:
        return f"/{group}"
    return None


def prepare(group: str, *, memory: int, pids: int, agent_uid: int) -> Delegation:
    """Make the sandbox's cgroup tree before crun runs and open what the agent gets.

    Args:
        group: The sandbox's group.
        memory: The workload's memory limit in bytes (the parent gets AGENT_MEMORY more).
        pids: The workload's task limit (the parent gets AGENT_PIDS more).
        agent_uid: Host uid of the sandbox's agent.

    Raises:
        RuntimeBackendError: a cgroup could not be made or delegated.
    """
    delegation = Delegation()
    try:
        if cgroups.mode() is CgroupMode.UNIFIED:
            root = cgroups.ROOT / group
            _mkdir(root / WORK)
            _delegate(root, agent_uid)
            delegation.kill_root = _delegate(root / WORK, agent_uid)
            return delegation
        for name in SPLIT:
            parent = cgroups.hierarchy(name) / group
            _mkdir(parent / WORK)
            _limit_v1(name, parent, memory=memory, pids=pids)
            delegation.join.append(_delegate(parent / WORK, agent_uid))
        if cgroups.mode() is CgroupMode.HYBRID:
            unified = cgroups.UNIFIED / group
            _mkdir(unified)
            delegation.kill_root = _delegate(unified, agent_uid)
        else:
            freezer = cgroups.hierarchy("freezer") / group / WORK
            _mkdir(freezer)
            delegation.kill_root = _delegate(freezer, agent_uid)
            delegation.kill_mode = "freezer"
        return delegation
    except BaseException:
        delegation.close()
        raise


def settle(group: str, init_pid: int, agent_uid: int) -> None:
    """After crun started the container (before its agent starts): move init above
    the workload's limits, and take back what crun may have chowned to the sandbox.

    Raises:
        RuntimeBackendError: init could not be moved.
    """
    if cgroups.mode() is CgroupMode.UNIFIED:
        root = cgroups.ROOT / group
        _mkdir(root / "agent")
        _move(root / "agent", init_pid)
        _delegate(root / WORK, agent_uid, keep_open=False)
        return
    for name in SPLIT:
        _move(cgroups.hierarchy(name) / group, init_pid)


def join_like(group: str, init_pid: int, pid: int) -> None:
    """Move ``pid`` into every cgroup the sandbox's init (``init_pid``, which still
    waits for its go: nothing of the sandbox has run) is in.

    Raises:
        RuntimeBackendError: init's cgroups cannot be read, one lies outside the
            sandbox's group, or the move failed.
    """
    try:
        lines = Path(f"/proc/{init_pid}/cgroup").read_text().splitlines()
    except OSError as exc:
        raise RuntimeBackendError(f"cannot read the cgroups of {init_pid}: {exc}") from exc
    hybrid = cgroups.mode() is CgroupMode.HYBRID
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        parts = path.strip("/").split("/")
        if ".." in parts or not (path == f"/{group}" or path.startswith(f"/{group}/")):
            if hid != "0" and not controllers.startswith("name="):
                raise RuntimeBackendError(f"init {init_pid} is in cgroup {path} of {controllers}")
            continue  # (crun places init only in the controllers' hierarchies)
        if hid == "0":
            root = cgroups.UNIFIED if hybrid else cgroups.ROOT
        else:
            root = cgroups.hierarchy(controllers.split(",")[0])
        _move(root / path.lstrip("/"), pid)


def set_limits(group: str, *, memory: int, pids: int) -> None:
    """New workload limits (after a resize): the parent's headroom follows them."""
    if cgroups.mode() is CgroupMode.UNIFIED:
        return  # the agent's leaf has its own limits; the parent has none
    for name in SPLIT:
        _limit_v1(name, cgroups.hierarchy(name) / group, memory=memory, pids=pids)


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot create cgroup {path}: {exc.strerror}") from exc


def _limit_v1(name: str, parent: Path, *, memory: int, pids: int) -> None:
    target, value = ((parent / "memory.limit_in_bytes", memory + AGENT_MEMORY) if name == "memory"
                     else (parent / "pids.max", pids + AGENT_PIDS))  # fmt: skip
    _write(target, str(value))


def _delegate(path: Path, uid: int, *, keep_open: bool = True) -> int:
    """Chown a cgroup directory and its membership files to ``uid``; open it."""
    try:
        os.chown(path, uid, uid)
        for name in _OWNED_FILES:
            try:
                os.chown(path / name, uid, uid)
            except FileNotFoundError:
                pass
        if not keep_open:
            return -1
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot delegate cgroup {path}: {exc.strerror}") from exc


def _move(path: Path, pid: int) -> None:
    _write(path / "cgroup.procs", str(pid))


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot write {path}: {exc.strerror}") from exc
