"""Snapshots: read-only root filesystems sandboxes are created from.

The default snapshot (``settings.default_snapshot``) and the ones the operator
made public (``settings.public_snapshots``, placed on the host by hand) are
general: every organization sees them, and their records are not stored. Any
other snapshot belongs to one organization and is made from a sandbox's file
system or from an image the host can resolve locally. Its files live under the
runtime's snapshot directory named by the snapshot's id (its ``ref``), so names
never collide between organizations or servers sharing that directory.
Sandboxes created from a user snapshot record that ref as their ``snapshot``.
Whatever else lies in that directory (another organization's snapshots) is
never usable: a snapshot is found only among the general ones and the caller's.

Building is synchronous: the record is only added once the files are
complete, so a failed build leaves nothing behind and is reported at once.
"""

from __future__ import annotations

import builtins
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from cove.core import validation
from cove.core.ports import ImageConfig, Runner, SandboxStore
from cove.core.sandbox import SandboxState, utcnow
from cove.errors import BadRequest, Conflict, CoveError, InvalidState, NotFound

if TYPE_CHECKING:
    from cove.core.ops import SandboxOps

S = SandboxState


@dataclass
class Snapshot:
    id: str
    organization_id: str | None  # None: general (the default or a public one)
    name: str
    state: str = "active"
    general: bool = False
    image_name: str | None = None
    source_sandbox_id: str | None = None
    error_reason: str | None = None
    size: int | None = None
    cpu: int = 1
    memory: int = 1
    disk: int = 3
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    last_used_at: datetime | None = None
    digest: str | None = None  # pulled from a registry: the image's manifest digest
    image_config: dict[str, Any] | None = None  # and its config (see ports.ImageConfig)


class SnapshotStore(Protocol):
    def add(self, snapshot: Snapshot) -> None:
        """Raises Conflict when the name is taken in the organization."""

    def get(self, organization_id: str, id_or_name: str) -> Snapshot:
        """Raises NotFound."""

    def save(self, snapshot: Snapshot) -> None: ...

    def remove(self, snapshot_id: str) -> None: ...

    def list(self, organization_id: str) -> list[Snapshot]: ...

    def all_pulling(self) -> builtins.list[Snapshot]:
        """Snapshots of every organization in state ``pulling`` or ``building``."""


class SnapshotService:
    """List, find, build and delete snapshots."""

    def __init__(
        self, *, store: SnapshotStore, runner: Runner, sandboxes: SandboxStore,
        default_name: str, public: Sequence[str] = (), started: datetime | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.runner = runner
        self.sandboxes = sandboxes
        when = started or utcnow()
        self.general = {
            name: Snapshot(id=name, organization_id=None, name=name, general=True,
                           created_at=when, updated_at=when)
            for name in dict.fromkeys([default_name, *public])
        }  # fmt: skip
        self.default = self.general[default_name]
        # Holds one more snapshot of the organization while its record is made and
        # stored; raises when it may make no more (its quota). None: no limit.
        self.admit_new: Callable[[str], AbstractAsyncContextManager[None]] | None = None
        # Awaited with a deleted snapshot's id (its build log goes with it, and its build
        # under way ends).
        self.removed_hooks: list[Callable[[str], Awaitable[None]]] = []

    def admitted(self, organization_id: str) -> AbstractAsyncContextManager[None]:
        """The organization's snapshot quota admits one more snapshot until the block
        ends: make and store its record inside it.

        Raises:
            QuotaExceeded: the organization may make no more snapshots.
        """
        if self.admit_new is None:
            return nullcontext()
        return self.admit_new(organization_id)

    def list(self, organization_id: str) -> list[Snapshot]:
        """The general snapshots present on this host, then the organization's."""
        general = [s for s in self.general.values() if self._present(s)]
        return [*general, *self.store.list(organization_id)]

    def _present(self, snap: Snapshot) -> bool:
        return snap is self.default or self.runner.has_snapshot(snap.id)

    def page(
        self, organization_id: str, page: int, limit: int
    ) -> tuple[builtins.list[Snapshot], int, int]:
        """Items of page ``page`` (from 1), the total, and the number of pages."""
        every = self.list(organization_id)
        pages = max(1, math.ceil(len(every) / limit))
        return every[(page - 1) * limit : page * limit], len(every), pages

    def get(self, organization_id: str, id_or_name: str) -> Snapshot:
        """A general snapshot or one of the organization's.

        Raises:
            NotFound: neither (another organization's snapshot is not found either).
        """
        general = self.general.get(id_or_name)
        if general is not None and self._present(general):
            return general
        return self.store.get(organization_id, id_or_name)

    def ref_for(self, organization_id: str, id_or_name: str) -> str:
        """The runtime's name for the snapshot a sandbox is created from (see
        :meth:`usable`).

        Raises:
            NotFound: no such snapshot for this organization.
            BadRequest: it is not active.
        """
        return self.usable(organization_id, id_or_name).id

    def usable(self, organization_id: str, id_or_name: str) -> Snapshot:
        """The snapshot a sandbox is created from: only a general one present on this
        host, or one of the organization's (its use recorded); its ``id`` is the
        runtime's name for it.

        Raises:
            NotFound: no such snapshot for this organization.
            BadRequest: it is not active.
        """
        snap = self.get(organization_id, id_or_name)
        if snap.general:
            if not self.runner.has_snapshot(snap.id):
                raise NotFound(f"Snapshot with ID or name {id_or_name} not found")
            return snap
        if snap.state != "active":
            raise BadRequest(f"Snapshot {snap.name} is {snap.state}")
        snap.last_used_at = utcnow()
        self.store.save(snap)
        return snap

    async def create_from_image(
        self, organization_id: str, name: str, image: str,
        entrypoint: builtins.list[str] | None = None,
    ) -> Snapshot:  # fmt: skip
        """Build a snapshot from an image resolvable on this host (a local OCI layout),
        keeping its config (env, workdir, user, entrypoint: ``entrypoint`` replaces its
        ENTRYPOINT and CMD), as for a pulled image.

        Raises:
            Conflict: the name is taken. BadRequest: the image cannot be used.
        """
        async with self.admitted(organization_id):
            snap = self._new(organization_id, name, image_name=image)
            try:
                imported = await self.runner.import_image(snap.id, image)
            except CoveError as exc:
                raise BadRequest(f"Snapshot {name} cannot be built: {exc.message}") from exc
            try:
                validation.check_image_config(imported.config)
            except CoveError as exc:  # its files go: no snapshot is kept
                await self.runner.remove_snapshot(snap.id)
                raise BadRequest(f"Snapshot {name} cannot be built: {exc.message}") from exc
            snap.size, snap.image_config = imported.size, image_config(imported.config)
            if entrypoint:
                snap.image_config = {**snap.image_config, "entrypoint": entrypoint, "cmd": []}
            return await self._added(snap)

    async def create_from_sandbox(
        self, ops: SandboxOps, organization_id: str, id_or_name: str, name: str
    ) -> Snapshot:
        """Copy a started or stopped sandbox's file system into a new snapshot; the
        sandbox is ``snapshotting`` meanwhile and goes back to where it was."""
        sandbox = ops.store.get(organization_id, id_or_name)
        # The quota is admitted under the sandbox's lock, as everywhere (a sandbox's
        # lock, then an organization's): never the other way round.
        return await ops.run(sandbox.id, partial(self._capture, ops, organization_id,
                                                 sandbox.id, name))  # fmt: skip

    async def _capture(
        self, ops: SandboxOps, organization_id: str, sandbox_id: str, name: str
    ) -> Snapshot:
        async with self.admitted(organization_id):
            current = ops.store.get_by_id(sandbox_id)
            snap = self._new(organization_id, name, source_sandbox_id=sandbox_id)
            resources = current.resources
            snap.cpu, snap.memory, snap.disk = resources.cpu, resources.memory, resources.disk
            before = current.state
            if before not in (S.STARTED, S.STOPPED):
                raise InvalidState(f"Sandbox {sandbox_id} is {before}; cannot snapshot it")
            await ops.set_state(current, S.SNAPSHOTTING)
            try:
                snap.size = await self.runner.capture(sandbox_id, snap.id)
            except CoveError as exc:
                raise BadRequest(f"Snapshot {name} failed: {exc.message}") from exc
            finally:
                await ops.set_state(current, before)
            return await self._added(snap)

    async def create_from_build(
        self, organization_id: str, name: str, build_sandbox_id: str,
        config: ImageConfig | None = None, snap: Snapshot | None = None,
        digest: str | None = None,
    ) -> Snapshot:  # fmt: skip
        """Capture a Dockerfile build's sandbox as snapshot ``name`` (see core.builds),
        with image config ``config``; ``snap``: its record, already stored (``building``).

        Raises:
            Conflict: the name is taken. RuntimeBackendError: the copy failed.
        """
        if snap is not None:
            snap.size = await self.runner.capture(build_sandbox_id, snap.id, config)
            snap.image_config, snap.digest = _config_dict(config), digest
            return snap
        async with self.admitted(organization_id):
            snap = self._new(organization_id, name, source_sandbox_id=None)
            snap.size = await self.runner.capture(build_sandbox_id, snap.id, config)
            snap.image_config, snap.digest = _config_dict(config), digest
            return await self._added(snap)

    async def clone_for_build(
        self, snap: Snapshot, source_ref: str, config: ImageConfig, digest: str
    ) -> Snapshot:
        """Give the stored ``building`` record ``snap`` the files of snapshot
        ``source_ref`` (an earlier build of the same plan).

        Raises:
            RuntimeBackendError: the copy failed.
        """
        snap.size = await self.runner.clone_snapshot(source_ref, snap.id, config)
        snap.image_config, snap.digest = _config_dict(config), digest
        return snap

    def activate(self, organization_id: str, id_or_name: str) -> Snapshot:
        snap = self.get(organization_id, id_or_name)
        if not snap.general and snap.state == "inactive":
            snap.state, snap.updated_at = "active", utcnow()
            self.store.save(snap)
        return snap

    async def delete(self, organization_id: str, id_or_name: str) -> None:
        """Raises NotFound, BadRequest (a general one), Conflict (sandboxes use it)."""
        snap = self.get(organization_id, id_or_name)
        if snap.general:
            raise BadRequest(f"The general snapshot {snap.name} cannot be deleted")
        users = [sb for sb in self.sandboxes.all() if sb.snapshot == snap.id]
        if users:  # name only the caller's own sandboxes
            own = [sb.id for sb in users if sb.organization_id == organization_id]
            if not own and all(not sb.organization_id for sb in users):
                raise Conflict(f"Snapshot {snap.name} is kept warm by a warm pool: delete the "
                               "pool first (its sandboxes are then destroyed)")
            raise Conflict(f"Snapshot {snap.name} is used by sandbox(es) {', '.join(own)}")
        await self.runner.remove_snapshot(snap.id)
        self.store.remove(snap.id)
        for hook in self.removed_hooks:
            await hook(snap.id)

    def new(self, organization_id: str, name: str, **fields: str | None) -> Snapshot:
        """A new snapshot record of the organization (not stored yet; make it inside
        :meth:`admitted`, and store it before that ends).

        Raises:
            BadRequest: an invalid name. Conflict: the name is taken.
        """
        return self._new(organization_id, name, **fields)

    async def register(self, snap: Snapshot) -> Snapshot:
        """Store a snapshot whose files are complete (they are removed if that fails)."""
        return await self._added(snap)

    def fail_interrupted(self) -> int:
        """Mark snapshots left ``pulling`` (``building``) by a server that stopped as
        ``error`` (``build_failed``): their work ended with it; returns how many."""
        stale = self.store.all_pulling()
        for snap in stale:
            if snap.state == "building":
                snap.state, snap.error_reason = "build_failed", (
                    "the build was interrupted by a server restart; create it again")
                snap.updated_at = utcnow()
                self.store.save(snap)
                continue
            snap.state, snap.error_reason = "error", "the pull was interrupted by a server restart"
            snap.updated_at = utcnow()
            self.store.save(snap)
        return len(stale)

    def _new(self, organization_id: str, name: str, **fields: str | None) -> Snapshot:
        if not name or not all(c.isalnum() or c in "-_.:" for c in name):
            raise BadRequest("snapshot name may only contain letters, digits, '-', '_', '.', ':'")
        if name in self.general:
            raise Conflict(f"Snapshot with name '{name}' already exists")
        try:
            self.get(organization_id, name)
        except NotFound:
            return Snapshot(id=str(uuid.uuid4()), organization_id=organization_id, name=name,
                            **fields)  # type: ignore[arg-type]  # fmt: skip
        raise Conflict(f"Snapshot with name '{name}' already exists")

    async def _added(self, snap: Snapshot) -> Snapshot:
        try:
            self.store.add(snap)
        except CoveError:
            await self.runner.remove_snapshot(snap.id)
            raise
        return snap


def _config_dict(config: ImageConfig | None) -> dict[str, Any] | None:
    """A built image's config as the snapshot record keeps it (None: none set)."""
    if config is None:
        return None
    return {"env": dict(config.env), "workdir": config.workdir, "user": config.user,
            "entrypoint": list(config.entrypoint), "cmd": list(config.cmd),
            "labels": dict(config.labels)}  # fmt: skip


def image_config(config: ImageConfig) -> dict[str, Any]:
    """An image's config as a snapshot records it (``Snapshot.image_config``)."""
    recorded = asdict(config)
    recorded["env"] = dict(config.env)
    return recorded
