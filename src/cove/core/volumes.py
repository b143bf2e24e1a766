"""Volumes: named directories an organization's sandboxes mount and share.

A volume belongs to one organization, which alone can see and mount it. Its
data outlives every sandbox that mounted it; it can only be deleted while no
sandbox (in any state but destroyed) mounts it.

Its data lives on a runner, made when a sandbox first mounts it: its ``home`` is
that runner (or a volumes dir several runners share), and every later sandbox that
mounts it is placed there (see :func:`cove.core.fleet.place`). On one host the home
is the embedded runner from the start.
"""

from __future__ import annotations

import builtins
import posixpath
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cove.core.ports import Runner, SandboxStore, VolumeBind
from cove.core.sandbox import utcnow
from cove.errors import BadRequest, Conflict, CoveError
from cove.schemas.sandbox import VolumeMount

# Container paths a volume may not cover: the runtime's own mounts (nor anything below
# them), the system's directories and the files Cove mounts into every sandbox.
RESERVED = ("/proc", "/sys", "/dev")
SYSTEM = frozenset({
    "/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/run", "/sbin", "/usr",
    "/var", "/var/run", "/var/lib", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
})  # fmt: skip
READY, DELETING = "ready", "deleting"  # a volume's states (Daytona's names)


@dataclass
class Volume:
    id: str
    organization_id: str
    name: str
    state: str = READY
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    last_used_at: datetime | None = None
    # Where its data is: a runner's id, or the id of a volumes dir runners share; None
    # until a sandbox first mounts it (then placement records the runner it chose).
    home: str | None = None


class VolumeStore(Protocol):
    """Persistence of volume records."""

    def add(self, volume: Volume) -> None:
        """Raises Conflict when the name is taken in the organization."""

    def get(self, organization_id: str, id_or_name: str) -> Volume:
        """Raises NotFound."""

    def save(self, volume: Volume) -> None: ...

    def remove(self, volume_id: str) -> None: ...

    def list(self, organization_id: str) -> list[Volume]: ...


class VolumeService:
    """Create, find, delete volumes, and turn mount requests into binds.

    Args:
        store: the volume records.
        runner: the runner(s) holding volume data (``delete_volume``).
        sandboxes: the sandbox records (which mount a volume).
        home: the home of a new volume (the one host's runner), or None where the
            runner a sandbox mounting it is first placed on becomes its home.
    """

    def __init__(self, *, store: VolumeStore, runner: Runner, sandboxes: SandboxStore,
                 home: str | None = None) -> None:  # fmt: skip
        self.store = store
        self.runner = runner
        self.sandboxes = sandboxes
        self.home = home
        # Admits one more volume of the organization while its record is stored; raises
        # when it may make no more (its quota). None: no limit.
        self.admit_new: Callable[[str], AbstractAsyncContextManager[None]] | None = None

    def list(self, organization_id: str) -> list[Volume]:
        return self.store.list(organization_id)

    def get(self, organization_id: str, id_or_name: str) -> Volume:
        return self.store.get(organization_id, id_or_name)

    async def create(self, organization_id: str, name: str) -> Volume:
        """Raises Conflict when the name is taken, BadRequest when it is not a plain name,
        QuotaExceeded above the organization's volume quota."""
        _check_name(name)
        admitted = self.admit_new(organization_id) if self.admit_new else nullcontext()
        async with admitted:
            volume = Volume(id=str(uuid.uuid4()), organization_id=organization_id, name=name,
                            home=self.home)  # its data: made where it is first mounted
            self.store.add(volume)
        return volume

    async def delete(self, organization_id: str, id_or_name: str) -> None:
        """Delete the volume's data (on the runner holding it), then its record.

        Raises:
            NotFound: no such volume in the organization.
            Conflict: a sandbox mounts it.
            Unavailable: the runner holding its data does not answer (nothing deleted).
        """
        volume = self.store.get(organization_id, id_or_name)
        users = [sb.id for sb in self.sandboxes.all() if _mounts(sb.volumes, volume.id)]
        if users:
            raise Conflict(f"Volume {volume.name} is in use by sandbox(es) {', '.join(users)}")
        # Marked with no wait after the check: a create finds it ``deleting`` from now on
        # (see :meth:`check`), else it would mount it while its data goes, and the data
        # would be made again where it boots, with no volume naming it.
        volume.state, volume.updated_at = DELETING, utcnow()
        self.store.save(volume)
        try:
            await self.runner.delete_volume(volume.id)
        except CoveError:
            volume.state = READY  # nothing deleted: usable again
            self.store.save(volume)
            raise
        self.store.remove(volume.id)

    def resolve(
        self, organization_id: str, mounts: builtins.list[VolumeMount]
    ) -> builtins.list[VolumeBind]:
        """The binds for a create request's ``volumes``; each volume must be the org's.

        Raises:
            NotFound: a volume does not exist in this organization.
            BadRequest: a mount path or subpath is not allowed.
        """
        binds: builtins.list[VolumeBind] = []
        for m in mounts:
            volume = _ready(self.store.get(organization_id, m.volume_id))
            bind = VolumeBind(volume.id, mount_path(m.mount_path), subpath(m.subpath))
            if any(b.mount_path == bind.mount_path for b in binds):
                raise BadRequest(f"two volumes are mounted at {bind.mount_path}")
            binds.append(bind)
            volume.last_used_at = utcnow()
            self.store.save(volume)
        return binds


    def check(self, organization_id: str, binds: builtins.list[VolumeBind]) -> None:
        """Raise when a volume of ``binds`` was deleted, or its delete began, since they
        were resolved. Call it with no wait before the sandbox that mounts them is
        stored: a delete checking for its users after that sees it.

        Raises:
            NotFound: a volume is gone. BadRequest: it is being deleted.
        """
        for bind in binds:
            _ready(self.store.get(organization_id, bind.volume_id))


def _ready(volume: Volume) -> Volume:
    """``volume``, if no delete of it began.

    Raises:
        BadRequest: it is being deleted.
    """
    if volume.state != READY:
        raise BadRequest(f"Volume {volume.name} is {volume.state}")
    return volume


def _mounts(binds: list[VolumeBind], volume_id: str) -> bool:
    return any(b.volume_id == volume_id for b in binds)


def _check_name(name: str) -> None:
    ok = name and len(name) <= 255 and all(c.isalnum() or c in "-_." for c in name)
    if not ok or name.startswith("."):
        raise BadRequest("volume name may only contain letters, digits, '-', '_' and '.'")


def mount_path(path: str) -> str:
    """A normalized absolute container path that is not ``/`` nor under a reserved one."""
    if not path.startswith("/") or "\0" in path:
        raise BadRequest(f"mount path must be absolute: {path!r}")
    if ".." in path.split("/"):
        raise BadRequest(f"mount path may not contain '..': {path!r}")
    norm = posixpath.normpath(path)
    if norm == "/" or norm.startswith("//") or norm in SYSTEM:
        raise BadRequest(f"a volume cannot be mounted at {path!r}, a system directory")
    if any(norm == r or norm.startswith(r + "/") for r in RESERVED):
        raise BadRequest(f"a volume cannot be mounted under {norm.split('/')[1]!r}")
    return norm


def subpath(path: str | None) -> str:
    """A normalized relative path inside a volume ('' for the whole volume)."""
    if not path:
        return ""
    if path.startswith("/") or "\0" in path or ".." in path.split("/"):
        raise BadRequest(f"subpath must stay inside the volume: {path!r}")
    norm = posixpath.normpath(path)
    return "" if norm == "." else norm
