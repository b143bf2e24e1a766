"""A sandbox's root file system and user namespaces on the host, up and down.

Up (every start)::

    disk/        the disk image, loop-mounted by descriptor: nosuid, nodev, noexec
    ns/user      the sandbox's user namespace: its ids 0..65535 and the agent's
                 65536 on its host range (runner/host/idrange.py)
    ns/workload  the workload's namespace, nested in it: ids 0..65535 only
    mnt/lower    the snapshot, idmapped with the sandbox's range, read-only
    mnt/disk     disk/, idmapped likewise
    bundle/rootfs
                 overlayfs of mnt/lower under mnt/disk/upper, mounted by root of
                 ns/user (cove-nsexec), so what the sandbox writes lands on the
                 image with its own ids and overlay's metadata in user.* xattrs

Down removes all of it, deepest first. Every step is idempotent, so a start
after a crash picks up what is already there.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.hostfiles import walk_tree
from cove.runner.host import disk, idrange, mountapi, mounts
from cove.runner.host.idrange import IdRange
from cove.runner.host.proc import run
from cove.runner.layout import Metadata, SandboxPaths

# In the sandbox's network namespace: ports below 1024 and ping need no
# capability (the workload has none over the network namespace, which its
# user namespace does not own), as in Docker.
NET_SYSCTLS = ("net.ipv4.ip_unprivileged_port_start=0",
               f"net.ipv4.ping_group_range=0 {idrange.SIZE - 1}")  # fmt: skip
_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")


def mount_disk(paths: SandboxPaths) -> None:
    """The disk image at ``disk/`` (the host's view), unless mounted already."""
    if not mounts.is_mounted(paths.disk):
        disk.mount(paths.image, paths.disk)


def make_namespaces(nsexec: Path, paths: SandboxPaths, ids: IdRange) -> bool:
    """The sandbox's user namespace, the workload's nested one and the sandbox's
    network namespace (owned by the first; loopback only), unless made already.

    Returns:
        Whether the network namespace is new (and needs its wiring).
    """
    wanted = (
        (paths.userns, ["userns", str(paths.userns), ids.outer_map, str(ids.owner)]),
        (paths.workns, ["childns", str(paths.userns), str(paths.workns),
                        str(idrange.AGENT_UID), ids.inner_map]),
        (paths.netns, ["netns", str(paths.userns), str(paths.netns), *NET_SYSCTLS]),
    )  # fmt: skip
    made = {path for path, _step in wanted if mounts.is_mounted(path)}
    steps: list[str] = []
    for path, step in wanted:
        if path not in made:
            placeholder(path)
            steps += [*step, ";"]
    if steps:
        run([str(nsexec), *steps], timeout=30)
    return paths.netns not in made


def mount_layers(nsexec: Path, paths: SandboxPaths, meta: Metadata) -> None:
    """Idmapped lower and disk, then the overlay at ``bundle/rootfs``.

    Raises:
        RuntimeBackendError: a layer is missing or a mount failed.
    """
    if mounts.is_mounted(paths.rootfs):
        return
    if meta.layer_xattrs != "user":
        convert_layer(paths.upper)
    for d in (paths.upper, paths.work, paths.lower, paths.mapped_disk, paths.rootfs):
        d.mkdir(parents=True, exist_ok=True)
    with _userns(paths) as userns:
        if not mounts.is_mounted(paths.lower):
            flags = mountapi.ATTR_RDONLY | mountapi.ATTR_NOSUID | mountapi.ATTR_NODEV
            mountapi.bind(Path(meta.lower), paths.lower, userns=userns, flags=flags)
        if not mounts.is_mounted(paths.mapped_disk):  # (the host's view is noexec)
            flags = mountapi.ATTR_NOSUID | mountapi.ATTR_NODEV
            mountapi.bind(paths.disk, paths.mapped_disk, userns=userns, flags=flags,
                          clear=mountapi.ATTR_NOEXEC)  # fmt: skip
    mapped = paths.mapped_disk
    run([str(nsexec), "overlay", str(paths.userns), str(paths.rootfs), str(paths.lower),
         str(mapped / "upper"), str(mapped / "work")], timeout=30)  # fmt: skip


def stage_binds(paths: SandboxPaths, sources: Sequence[int]) -> list[Path]:
    """Attach each directory descriptor (a volume) idmapped at ``mnt/vol-<n>``."""
    staged = []
    with _userns(paths) as userns:
        for n, fd in enumerate(sources):
            target = paths.mnt / f"vol-{n}"
            target.mkdir(parents=True, exist_ok=True)
            if not mounts.is_mounted(target):
                flags = mountapi.ATTR_NOSUID | mountapi.ATTR_NODEV
                mountapi.bind(fd, target, userns=userns, flags=flags)
            staged.append(target)
    return staged


def unmount_all(paths: SandboxPaths, *, reused: bool = True) -> None:
    """Take everything of :func:`mount_disk`, :func:`make_namespaces` and
    :func:`mount_layers` down (idempotent; the first failure is raised last).

    When the disk image is ``reused`` (mounted, checked or copied again; not when the
    sandbox is destroyed), wait until no other mount namespace holds its file system
    (``disk.wait_released``)."""
    errors: list[RuntimeBackendError] = []
    targets = [paths.rootfs, *sorted(_mounted_below(paths.mnt), reverse=True),
               paths.netns, paths.workns, paths.userns, paths.disk]  # fmt: skip
    device = os.stat(paths.disk).st_dev if mounts.is_mounted(paths.disk) else None
    for target in targets:
        try:
            mounts.unmount(target)
        except RuntimeBackendError as exc:
            errors.append(exc)
    for path in (paths.netns, paths.workns, paths.userns):
        path.unlink(missing_ok=True)
    if device is not None and reused and not errors:
        try:
            disk.wait_released(device, paths.image)
        except RuntimeBackendError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def convert_layer(upper: Path) -> None:
    """Turn a writable layer's trusted.overlay.opaque marks into user.overlay.opaque
    (layers written before sandboxes ran in user namespaces, and every layer a runner
    restores without its metadata: one a drain moved here).

    The tree is the sandbox's, nested as deep as it liked (see ``walk_tree``); what
    lies deeper than a path can name (PATH_MAX) is left as it is: no snapshot has a
    directory there, so no opaque mark could hide anything of one.
    """
    if not upper.is_dir():
        return
    for entry in walk_tree(upper):
        if entry.is_dir(follow_symlinks=False):
            path = entry.path
            try:
                value = os.getxattr(path, _OPAQUE[0], follow_symlinks=False)
            except OSError as exc:
                if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.ENAMETOOLONG):
                    continue
                raise RuntimeBackendError(f"cannot read {path}: {exc.strerror}") from exc
            os.setxattr(path, _OPAQUE[1], value, follow_symlinks=False)
            os.removexattr(path, _OPAQUE[0], follow_symlinks=False)


def placeholder(path: Path) -> None:
    """An empty file at ``path`` (and its directory), for a namespace to be bound on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)


def _mounted_below(directory: Path) -> list[Path]:
    """The mounts in ``directory`` (``mnt/``: lower, disk, vol-<n>; nothing is
    mounted deeper), found without reading the host's whole mount table."""
    try:
        entries = [directory / name for name in os.listdir(directory)]
    except OSError:
        return []
    return [p for p in entries if mounts.is_mounted(p)]


class _userns:
    """The sandbox's user namespace, opened (for idmapped mounts)."""

    def __init__(self, paths: SandboxPaths) -> None:
        self._path = paths.userns
        self._fd = -1

    def __enter__(self) -> int:
        try:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeBackendError(f"no user namespace at {self._path}") from exc
        return self._fd

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)
