"""The host's cgroup layout, and the cgroup directories of sandboxes.

Every sandbox lives in a *group*: the cgroup ``<parent>/<sandbox id>``
(``Settings.cgroup_parent``, ``cove`` by default; see ``runner/host/cgtree.py`` for
what is inside). On a cgroup v2 host that is ``/sys/fs/cgroup/<group>``; with
cgroup v1 (and on a hybrid host, where crun is made to see only the v1
hierarchies) it is ``/sys/fs/cgroup/<hierarchy>/<group>`` in every hierarchy.
Functions here take the group, a path relative to a hierarchy's root.
"""

from __future__ import annotations

import enum
import errno
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cove.core.ports import ContainerStats
from cove.errors import RuntimeBackendError
from cove.runner.host import mounts

ROOT = Path("/sys/fs/cgroup")
_creations = threading.Lock()
_creating = 0
UNIFIED = ROOT / "unified"


class CgroupMode(enum.Enum):
    """How cgroups are mounted on this host."""

    UNIFIED = "v2"
    LEGACY = "v1"
    HYBRID = "hybrid"  # v1 controllers plus cgroup2 at /sys/fs/cgroup/unified


@functools.cache
def mode() -> CgroupMode:
    """Detect the host's cgroup layout (read once per process)."""
    table = {m.point: m.fstype for m in mounts.mount_table()}
    if table.get(str(ROOT)) == "cgroup2":
        return CgroupMode.UNIFIED
    if table.get(str(UNIFIED)) == "cgroup2":
        return CgroupMode.HYBRID
    return CgroupMode.LEGACY


def group_of(parent: str, sandbox_id: str) -> str:
    """The group of a sandbox under ``parent``."""
    return f"{parent.strip('/')}/{sandbox_id}"


@functools.cache
def _v1_hierarchies() -> dict[str, Path]:
    """Controller (or ``name=...``) → mount point of every v1 hierarchy (read once per
    process, as the mode: the mount table grows with every sandbox)."""
    found: dict[str, Path] = {}
    for m in mounts.mount_table():
        if m.fstype != "cgroup" or not m.point.startswith(f"{ROOT}/"):
            continue
        for opt in m.options:
            found.setdefault(opt, Path(m.point))
    return found


def hierarchy_roots() -> list[Path]:
    """Mount points crun creates sandbox cgroups in (one for v2)."""
    if mode() is CgroupMode.UNIFIED:
        return [ROOT]
    return sorted(set(_v1_hierarchies().values()))


def hierarchy(controller: str) -> Path:
    """Mount point of the hierarchy holding ``controller`` (the v2 root on a v2 host)."""
    if mode() is CgroupMode.UNIFIED:
        return ROOT
    return _v1_hierarchies().get(controller, ROOT / controller)


def controller_dir(group: str, controller: str) -> Path:
    """The directory holding ``controller``'s files for a sandbox.

    Args:
        group: The sandbox's group.
        controller: A v1 controller name such as ``memory``, ``cpu``, ``cpuacct``,
            ``pids``; ignored on a v2 host.
    """
    return hierarchy(controller) / group


def sandbox_dirs(group: str) -> list[Path]:
    """Every existing cgroup directory of one sandbox."""
    dirs = [root / group for root in hierarchy_roots()]
    return [d for d in dirs if d.is_dir()]


def remove(group: str) -> None:
    """Remove a sandbox's (empty) cgroups, deepest first, in every hierarchy; then
    the ``cove`` parents left empty. Busy directories (a process still in them) stay.
    """
    roots = hierarchy_roots()
    if mode() is CgroupMode.HYBRID:
        roots.append(UNIFIED)
    for root in roots:
        _rmtree(root / group)
    remove_empty_parents(group.rsplit("/", 1)[0])


def _rmtree(path: Path) -> None:
    try:
        children = [p for p in path.iterdir() if p.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return
    for child in children:
        _rmtree(child)
    _rmdir(path)


def remove_empty_parents(parent: str) -> None:
    """Remove the ``parent`` cgroup in every hierarchy where it no longer has a child.

    Skipped while a container is being created in this process: crun creates
    the parent and then the child, and must not find the parent gone between.
    """
    roots = hierarchy_roots()
    if mode() is CgroupMode.HYBRID:
        roots.append(UNIFIED)
    with _creations:
        if _creating:
            return
        for root in roots:
            directory = root / parent
            try:
                if not any(p.is_dir() for p in directory.iterdir()):
                    _rmdir(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed meanwhile (or never made)


@contextmanager
def creating() -> Iterator[None]:
    """Mark a container creation in progress (see :func:`remove_empty_parents`)."""
    global _creating
    with _creations:
        _creating += 1
    try:
        yield
    finally:
        with _creations:
            _creating -= 1


def _rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
            raise RuntimeBackendError(f"rmdir {path}: {exc.strerror}") from exc


def stats(group: str) -> ContainerStats:
    """CPU time, memory in use (without inactive page cache) and task count.

    Raises:
        RuntimeBackendError: the sandbox has no cgroup (it is not running).
    """
    try:
        if mode() is CgroupMode.UNIFIED:
            return _stats_v2(controller_dir(group, ""))
        return _stats_v1(group)
    except (OSError, ValueError) as exc:
        raise RuntimeBackendError(f"no cgroup stats for {group}: {exc}") from exc


def _keyed(path: Path) -> dict[str, int]:
    pairs = (line.split() for line in path.read_text().splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2}


def _int(path: Path) -> int:
    return int(path.read_text().split()[0])


def _stats_v2(d: Path) -> ContainerStats:
    cpu = _keyed(d / "cpu.stat")["usage_usec"] * 1000
    memstat = _keyed(d / "memory.stat")
    mem = _int(d / "memory.current") - memstat.get("inactive_file", 0)
    return ContainerStats(cpu_usage_ns=cpu, memory_bytes=max(mem, 0), pids=_int(d / "pids.current"),
                          cache_bytes=memstat.get("file", 0))  # fmt: skip


def _stats_v1(group: str) -> ContainerStats:
    cpu = _int(controller_dir(group, "cpuacct") / "cpuacct.usage")
    memdir = controller_dir(group, "memory")
    memstat = _keyed(memdir / "memory.stat")
    mem = _int(memdir / "memory.usage_in_bytes") - memstat.get("total_inactive_file", 0)
    pids = _int(controller_dir(group, "pids") / "pids.current")
    return ContainerStats(cpu_usage_ns=cpu, memory_bytes=max(mem, 0), pids=pids,
                          cache_bytes=memstat.get("total_cache", 0))
