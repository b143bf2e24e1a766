"""Where a sandbox's files live on the host, and its small metadata record.

``<data_dir>/sandboxes/<id>/``::

    sandbox.json   lower rootfs path and isolation tier (fixed at create),
                   hostname, env, user
    ids.json       the sandbox's host id range (runner/host/idrange.py)
    net.json       its network address lease (runner/host/network.py)
    firewall       "on" while its nft rules may exist, "off" once removed
    disk.img       sparse ext4 image: the writable layer, capped at ``disk`` GiB
    disk/          its mount point while running (the host's view, nosuid, nodev,
                   noexec): upper/ work/ etc/ init.log
    mnt/           while running: the layers as the sandbox's ids see them
                   (idmapped mounts): lower/ (the snapshot, read-only), disk/,
                   vol-<n>/ (volumes)
    ns/            while running: nsfs files of its user namespaces (user,
                   workload); ``netns`` is its network namespace
    agent.sock     while running: the listening socket its toolbox agent accepts on
    chan/          gVisor tier: the agent's directory (only it may enter), where it
                   binds agent.sock itself
    bundle/        config.json and rootfs/ (the overlay mount point)

Files on the disk image carry the sandbox's own ids (0 for its root), so they
do not depend on the host range it runs with.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cove.errors import RuntimeBackendError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Metadata:
    """What a sandbox keeps about itself between calls."""

    lower: str
    hostname: str
    user: str = "daytona"
    env: dict[str, str] = field(default_factory=dict)
    # Which xattrs the writable layer's overlay metadata (opaque directories)
    # uses: "user" since sandboxes run in user namespaces; "trusted" for layers
    # written before, converted at their next start.
    layer_xattrs: str = "trusted"
    # The isolation tier the sandbox was created with: "crun" or "gvisor".
    isolation: str = "crun"


@dataclass(frozen=True)
class SandboxPaths:
    """Paths of one sandbox."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path, sandbox_id: str) -> SandboxPaths:
        """Paths of ``sandbox_id`` under ``data_dir``; refuses ids that are not plain names."""
        if not _ID.match(sandbox_id):
            raise RuntimeBackendError(f"invalid sandbox id {sandbox_id!r}")
        return cls(sandboxes_dir(data_dir) / sandbox_id)

    @property
    def data_dir(self) -> Path:
        """The server's data dir."""
        return self.root.parents[1]

    @property
    def metadata(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def image(self) -> Path:
        return self.root / "disk.img"

    @property
    def disk(self) -> Path:
        return self.root / "disk"

    @property
    def upper(self) -> Path:
        return self.disk / "upper"

    @property
    def work(self) -> Path:
        return self.disk / "work"

    @property
    def etc(self) -> Path:
        return self.disk / "etc"

    @property
    def log(self) -> Path:
        return self.disk / "init.log"

    @property
    def mnt(self) -> Path:
        return self.root / "mnt"

    @property
    def lower(self) -> Path:
        """The snapshot, idmapped, read-only."""
        return self.mnt / "lower"

    @property
    def mapped_disk(self) -> Path:
        """The disk image's file system, idmapped."""
        return self.mnt / "disk"

    @property
    def userns(self) -> Path:
        return self.root / "ns" / "user"

    @property
    def workns(self) -> Path:
        """The nested user namespace of the sandbox's workload."""
        return self.root / "ns" / "workload"

    @property
    def netns(self) -> Path:
        return self.root / "netns"

    @property
    def agent_socket(self) -> Path:
        return self.root / "agent.sock"

    @property
    def chan(self) -> Path:
        """gVisor tier: the directory the agent binds its socket in."""
        return self.root / "chan"

    @property
    def chan_socket(self) -> Path:
        return self.chan / "agent.sock"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    def read_metadata(self) -> Metadata:
        """The stored metadata. Raises RuntimeBackendError when absent or unreadable."""
        try:
            return Metadata(**json.loads(self.metadata.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise RuntimeBackendError(f"sandbox {self.root.name} has no metadata") from exc

    def write_metadata(self, meta: Metadata) -> None:
        """Store ``meta`` atomically."""
        tmp = self.metadata.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(asdict(meta), indent=2))
            os.replace(tmp, self.metadata)
        except OSError as exc:
            raise RuntimeBackendError(f"cannot write {self.metadata}: {exc}") from exc


def sandboxes_dir(data_dir: Path) -> Path:
    """Directory holding every sandbox's directory."""
    return data_dir / "sandboxes"


def archive_path(archive_dir: Path, sandbox_id: str) -> Path:
    """The archive file of a sandbox."""
    return archive_dir / f"{sandbox_id}.tar.zst"


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path``."""
    try:
        path.write_text(json.dumps(data))
    except OSError as exc:
        raise RuntimeBackendError(f"cannot write {path}: {exc}") from exc


def remove_file(path: Path) -> None:
    """Delete ``path`` if it exists."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot remove {path}: {exc}") from exc
