"""Images from registries: pulled into snapshots of the organization, once.

``create(image="python:3.12")`` (a one-line Dockerfile ``FROM python:3.12``), a
Dockerfile whose ``FROM`` is no snapshot, and ``POST /snapshots`` with an
``imageName`` all end here. The reference is normalized (``docker.io/library/
python:3.12``); an organization that already has an active snapshot of it uses
that one (a second create pulls nothing). Otherwise it is pulled with the
organization's credentials for its registry (core.registries) and registered
as a snapshot only once complete: a failed pull leaves no snapshot and no files.
Layers are cached on the runner, so pulling the same image again (another
organization, another tag of it) fetches no layer twice.

A sandbox waits in ``pulling_snapshot`` meanwhile (progress in its build log);
a snapshot made through ``POST /snapshots`` is ``pulling`` until ``active`` or
``error`` (with the reason).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence

from cove.core import imageref, validation
from cove.core.buildlog import BuildLog
from cove.core.builds import ImageBuilder, build_and_boot
from cove.core.config import registry_listed
from cove.core.coordination import KeyedLocks, KeyedSlots
from cove.core.dockerfile import BuildPlan
from cove.core.ops import SandboxOps
from cove.core.ports import PulledImage, Runner
from cove.core.registries import RegistryService
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.core.snapshots import Snapshot, SnapshotService, image_config
from cove.errors import BadRequest, Conflict, CoveError

S = SandboxState
log = logging.getLogger(__name__)
Progress = Callable[[str], None]


class PullFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImageService:
    """Snapshots of registry images, one pull per image and organization at a time, and
    at most ``max_pulls`` of an organization's at once (0: no limit; more wait in
    line, see :meth:`_pull`)."""

    def __init__(
        self, *, snapshots: SnapshotService, registries: RegistryService, runner: Runner,
        allowed: Sequence[str] = (), max_pulls: int = 0,
    ) -> None:  # fmt: skip
        self.allowed = list(allowed)
        self.snapshots = snapshots
        self.registries = registries
        self.runner = runner
        self._locks: KeyedLocks[tuple[str, str]] = KeyedLocks()
        self._pulling: KeyedSlots[str] = KeyedSlots(max_pulls)  # by organization
        self._tasks: dict[str, asyncio.Task[None]] = {}  # pulls of POST /snapshots, by id
        snapshots.removed_hooks.append(self._removed)

    def reference(self, image: str) -> imageref.ImageRef:
        """``image`` parsed and normalized, from a registry pulls may use.

        Raises:
            BadRequest: not a valid reference, or its registry is not allowed.
        """
        ref = imageref.parse(image)
        if self.allowed and not registry_listed(ref.registry, self.allowed):
            raise BadRequest(f"Image '{image}': pulling from {ref.registry} is not allowed "
                             f"on this server (allowed: {', '.join(self.allowed)})")  # fmt: skip
        return ref

    def is_registry_image(self, image: str) -> bool:
        """Whether ``image`` is pulled from a registry (not a local OCI layout)."""
        return not image.startswith("oci:") and not self.runner.has_local_image(image)

    async def snapshot_for(
        self, organization_id: str, image: str, progress: Progress | None = None
    ) -> Snapshot:
        """The organization's active snapshot of ``image``, pulled now unless it exists.

        Raises:
            BadRequest: not a valid reference. PullFailed: the pull failed (the
                reason says why); nothing is left of it.
        """
        ref = self.reference(image)
        say = progress or (lambda _line: None)
        async with self._locks.hold((organization_id, str(ref))):
            found = self.find(organization_id, ref)
            if found is not None:
                say(f"Using snapshot {found.name} of {ref} (already pulled)")
                return found
            async with self.snapshots.admitted(organization_id):
                snap = self._new(organization_id, ref, image)
                await self._pull(snap, ref, say)
                return await self.snapshots.register(snap)

    def find(self, organization_id: str, ref: imageref.ImageRef) -> Snapshot | None:
        """The organization's active snapshot pulled from ``ref``, if any."""
        for snap in self.snapshots.store.list(organization_id):
            if snap.state == "active" and snap.digest and snap.image_name:
                try:
                    same = imageref.parse(snap.image_name) == ref
                except CoveError:
                    continue
                if same:
                    return snap
        return None

    async def create_snapshot(self, organization_id: str, name: str, image: str,
                              entrypoint: list[str] | None = None) -> Snapshot:  # fmt: skip
        """``POST /snapshots``: a local image is imported at once; a registry image is
        recorded ``pulling`` and pulled in the background (``active`` or ``error``).
        ``entrypoint`` replaces the image's ENTRYPOINT and CMD.

        Raises:
            BadRequest: an invalid reference or local image. Conflict: the name is taken.
        """
        if not self.is_registry_image(image):
            return await self.snapshots.create_from_image(organization_id, name, image, entrypoint)
        ref = self.reference(image)
        async with self.snapshots.admitted(organization_id):
            snap = self.snapshots.new(organization_id, name, image_name=image)
            snap.state = "pulling"
            self.snapshots.store.add(snap)
        task = asyncio.create_task(self._pull_recorded(snap, ref, entrypoint))
        self._tasks[snap.id] = task
        task.add_done_callback(lambda _task: self._tasks.pop(snap.id, None))
        return snap

    async def _removed(self, snapshot_id: str) -> None:
        """A snapshot deleted while ``pulling`` takes its pull with it (its download is
        stopped, what it made removed) before the delete returns: else the pull ran on,
        for as long as its registry (the tenant's) liked, no longer counted by the
        snapshot quota, and a tenant creating and deleting snapshots ran any number of
        pulls at once."""
        task = self._tasks.get(snapshot_id)
        if task is not None:
            task.cancel()
            await asyncio.wait({task})

    async def _pull_recorded(self, snap: Snapshot, ref: imageref.ImageRef,
                             entrypoint: list[str] | None = None) -> None:  # fmt: skip
        try:
            await self._pull(snap, ref, lambda line: log.debug("pull %s: %s", snap.id, line))
            if entrypoint and snap.image_config is not None:
                snap.image_config = {**snap.image_config, "entrypoint": entrypoint, "cmd": []}
        except PullFailed as exc:
            snap.state, snap.error_reason = "error", exc.reason
        except Exception as exc:  # noqa: BLE001 - never leave it pulling
            log.exception("pull of snapshot %s crashed", snap.id)
            snap.state, snap.error_reason = "error", f"pulling {ref} failed: {exc}"
        else:
            snap.state = "active"
        snap.updated_at = utcnow()
        try:
            self.snapshots.store.save(snap)
        except CoveError:  # deleted meanwhile: its files must go too
            await self.runner.remove_snapshot(snap.id)

    async def _pull(self, snap: Snapshot, ref: imageref.ImageRef, say: Progress) -> None:
        """Pull ``ref`` into ``snap``'s files, once fewer than ``max_pulls`` of its
        organization's run: a pull lasts as long as its registry (the tenant's) likes,
        and the runner's pulls run a few at once (PULL_WORKERS), so an organization's
        slow registry would keep every other organization's pulls waiting in line."""
        org = snap.organization_id or ""
        auth = self.registries.auth_for(org, ref)
        async with self._pulling.hold(org):
            try:
                pulled = await self.runner.pull_image(snap.id, str(ref), auth, say)
            except CoveError as exc:
                raise PullFailed(exc.message) from exc
        try:
            validation.check_image_config(pulled.config)
        except CoveError as exc:  # its files go: no snapshot is kept
            await self.runner.remove_snapshot(snap.id)
            raise PullFailed(f"{ref} cannot be used: {exc.message}") from exc
        _fill(snap, pulled)

    def _new(self, organization_id: str, ref: imageref.ImageRef, image: str) -> Snapshot:
        name = snapshot_name(ref)
        try:
            return self.snapshots.new(organization_id, name, image_name=image)
        except Conflict:  # a snapshot of another image has that name
            digest = hashlib.sha256(str(ref).encode()).hexdigest()[:8]
            return self.snapshots.new(organization_id, f"{name}-{digest}", image_name=image)

    async def drain(self) -> None:
        """Wait for the pulls of ``POST /snapshots`` in flight (server shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def snapshot_name(ref: imageref.ImageRef) -> str:
    """The name of a pulled image's snapshot: its reference with ``/`` and ``@`` as ``_``."""
    name = str(ref).replace("/", "_").replace("@", "_")
    if len(name) > 200:
        name = f"{name[:180]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return name


def default_user(snap: Snapshot) -> str | None:
    """The user a sandbox of a pulled image runs as when none is asked for: the image's
    User (its name or uid, without the group), else root; None for other snapshots."""
    if snap.image_config is None:
        return None
    user = str(snap.image_config.get("user") or "").partition(":")[0]
    return user or "root"


def _fill(snap: Snapshot, pulled: PulledImage) -> None:
    snap.size, snap.digest = pulled.size, pulled.digest
    snap.image_config = image_config(pulled.config)
    snap.updated_at = utcnow()


async def pull_and_boot(
    ops: SandboxOps, images: ImageService, builder: ImageBuilder | None, sandbox: Sandbox,
    image: str, plan: BuildPlan | None, out: BuildLog, *, keep_user: bool,
) -> Sandbox:  # fmt: skip
    """Pull the sandbox's image, build its Dockerfile's steps over it (if any), then boot
    it: ``pending_build`` → ``pulling_snapshot`` (→ ``building_snapshot``) → ``starting``
    → ``started``, or ``build_failed`` with the reason. ``keep_user``: the sandbox's
    user was asked for; else it is the image's."""
    try:
        await ops.set_state(sandbox, S.PULLING_SNAPSHOT)
        try:
            snap = await images.snapshot_for(sandbox.organization_id, image, out.append)
        except PullFailed as exc:
            await out.write(exc.reason)
            return await ops.build_failed(sandbox, exc.reason)
        except Exception as exc:  # noqa: BLE001 - never leave it pulling
            log.exception("pull for sandbox %s crashed", sandbox.id)
            return await ops.build_failed(sandbox, f"pulling {image} failed: {exc}")
        sandbox.snapshot = snap.id
        if not keep_user:
            sandbox.user = default_user(snap) or sandbox.user
        if plan is not None and plan.steps and builder is not None:
            return await build_and_boot(ops, builder, sandbox, plan, out)
        await ops.set_state(sandbox, S.STARTING)
        await out.write("Starting the sandbox")
        return await ops.boot(sandbox)
    finally:
        await out.close()
