"""``POST /api/snapshots`` with ``buildInfo``: a snapshot built from a Dockerfile
(and its uploaded contexts) in the background.

The snapshot is ``building`` at once (its base image pulled first if it is no
snapshot), then ``active``, or ``build_failed`` with the reason and no files.
The build's log (:class:`BuildLog`, capped, in the database) is streamed by
``GET /api/snapshots/{id}/build-logs``. A snapshot of a Dockerfile and context
built before (for a sandbox or another snapshot of the organization) is copied,
not built again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from cove.core import dockerfile
from cove.core.buildlog import BuildLog, BuildLogs
from cove.core.builds import INTERRUPTED, BuildFailed, ImageBuilder, remove_left_worker
from cove.core.config import Settings
from cove.core.contexts import ContextStore
from cove.core.coordination import Coordination
from cove.core.images import ImageService, PullFailed
from cove.core.sandbox import utcnow
from cove.core.snapshots import Snapshot, SnapshotService
from cove.errors import BadRequest, CoveError, NotFound, QuotaExceeded

log = logging.getLogger(__name__)


def log_key(snapshot_id: str) -> str:
    """The key of a snapshot's build log."""
    return f"snapshot:{snapshot_id}"


class SnapshotBuilds:
    """Builds snapshots from Dockerfiles (their logs in :class:`BuildLogs`), and fails
    those a replica that is gone left ``building``."""

    def __init__(
        self, *, settings: Settings, snapshots: SnapshotService, builder: ImageBuilder | None,
        images: ImageService | None, contexts: ContextStore, logs: BuildLogs | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.snapshots = snapshots
        self.builder = builder
        self.images = images
        self.contexts = contexts
        self.logs = logs or BuildLogs()
        snapshots.removed_hooks.append(self._removed)
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(
        self, organization_id: str, name: str, text: str, context_hashes: Sequence[str]
    ) -> Snapshot:
        """Record snapshot ``name`` as ``building`` and build it in the background.

        Raises:
            BadRequest: an invalid Dockerfile, a context not uploaded by this
                organization, or a base image that is neither a snapshot nor pullable.
            Conflict: the name is taken.
            QuotaExceeded: the organization's snapshot quota, or COVE_MAX_BUILDS of its
                snapshots are being built.
        """
        if self.builder is None:
            raise BadRequest("Building images from Dockerfiles is not supported by this server")
        # (in a thread: a Dockerfile of a request body's size takes a second or two to parse)
        plan = await asyncio.to_thread(dockerfile.parse, text, context_hashes)
        for context_hash in plan.context_hashes:  # maybe in the shared store: a thread
            await asyncio.to_thread(self.contexts.context, organization_id, context_hash)
        base, pull = self._base(organization_id, plan.base)
        async with self.snapshots.admitted(organization_id):
            self._admit_build(organization_id)
            snap = self.snapshots.new(organization_id, name)
            snap.state = "building"
            self.snapshots.store.add(snap)
        out = self.logs.start(log_key(snap.id))
        task = asyncio.create_task(self._build(snap, plan, base, pull, out))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return snap

    def _admit_build(self, organization_id: str) -> None:
        """Whether the organization may start one more build (called where its snapshot
        admission holds its lock, across replicas too).

        A build runs its steps in a build sandbox of the default resources that no
        sandbox quota counts (it is not the organization's sandbox), for up to
        RUN_TIMEOUT a step: without a bound, an organization limited to a few CPUs
        could run as many as it likes at once.

        Raises:
            QuotaExceeded: ``max_builds`` of its snapshots are being built.
        """
        most = self.settings.max_builds
        building = sum(s.state == "building" for s in self.snapshots.store.list(organization_id))
        if most and building >= most:
            raise QuotaExceeded(f"{building} snapshots of this organization are being "
                                "built, the most at once (COVE_MAX_BUILDS): wait for one "
                                "to end")  # fmt: skip

    async def _removed(self, snapshot_id: str) -> None:
        """A deleted snapshot's log goes, and its build under way (on any replica) ends:
        its build sandbox is removed (the step running there fails; a build yet to start
        one finds its log gone, see :meth:`BuildLog.discarded`). Else a step would run
        on, for up to RUN_TIMEOUT, in a build sandbox no snapshot counts any longer: one
        more with each create and delete."""
        key = log_key(snapshot_id)
        info = self.logs.store.info(key)
        self.logs.discard(key)
        if info is not None and not info.done and info.worker is not None:
            await remove_left_worker(self.snapshots.runner, info.worker)

    def build_log(self, organization_id: str, id_or_name: str) -> BuildLog:
        """The log of one of the organization's snapshot builds.

        Raises:
            NotFound: no such snapshot, or it was not built from a Dockerfile.
        """
        snap = self.snapshots.get(organization_id, id_or_name)
        found = self.logs.get(log_key(snap.id))
        if found is None:
            raise NotFound(f"Snapshot {snap.name} has no build logs")
        return found

    async def fail_orphaned(self, alive: set[str]) -> int:
        """End the snapshot builds whose replica is gone (none of ``alive``): each is
        ``build_failed`` with the reason, at the end of its log too, and what it left
        on the runner is removed. Returns how many."""
        building = {snap.id: snap for snap in self.snapshots.store.all_pulling()}
        ended = 0
        for info in self.logs.orphaned(alive):
            kind, _, snapshot_id = info.key.partition(":")
            if kind != "snapshot":
                continue
            snap = building.get(snapshot_id)
            if snap is not None:  # its state first: a reader of the log's end sees it
                log.warning("build of snapshot %s failed: %s", snap.id, INTERRUPTED)
                snap.state, snap.error_reason = "build_failed", INTERRUPTED
                snap.updated_at = utcnow()
                await self._save(snap)
                ended += 1
            worker = self.logs.end(info.key, INTERRUPTED)
            if worker is not None:
                await remove_left_worker(self.snapshots.runner, worker)
        return ended

    async def watch(self, coordination: Coordination, interval: float) -> None:
        """Every ``interval`` seconds on the jobs' replica: :meth:`fail_orphaned`."""
        while True:
            await asyncio.sleep(interval)
            try:
                if coordination.leader:
                    await self.fail_orphaned(coordination.alive())
            except Exception:  # noqa: BLE001 - the watch must outlive any one failure
                log.exception("ending orphaned snapshot builds failed")

    def _base(self, organization_id: str, image: str) -> tuple[str, bool]:
        """The base snapshot's ref, or the image to pull (True)."""
        try:
            return self.snapshots.ref_for(organization_id, image), False
        except NotFound:
            pass
        if self.images is None or not self.images.is_registry_image(image):
            raise BadRequest(f"Image '{image}' is neither a snapshot nor a pullable image")
        return str(self.images.reference(image)), True

    async def _build(
        self, snap: Snapshot, plan: dockerfile.BuildPlan, base: str, pull: bool, out: BuildLog
    ) -> None:
        org = snap.organization_id or ""
        assert self.builder is not None
        try:
            if pull:
                assert self.images is not None
                base = (await self.images.snapshot_for(org, base, out.append)).id
            await self.builder.build(org, plan, base, out, target=snap)
            snap.state, snap.error_reason = "active", None
        except (BuildFailed, PullFailed) as exc:
            snap.state, snap.error_reason = "build_failed", exc.reason
        except Exception as exc:  # noqa: BLE001 - never leave it building
            log.exception("build of snapshot %s crashed", snap.id)
            snap.state, snap.error_reason = "build_failed", f"build failed: {exc}"
        if snap.error_reason:
            await out.write(snap.error_reason)
        await out.close()
        snap.updated_at = utcnow()
        await self._save(snap)

    async def _save(self, snap: Snapshot) -> None:
        try:
            self.snapshots.store.save(snap)
        except CoveError:  # deleted meanwhile: its files must go too
            await self.snapshots.runner.remove_snapshot(snap.id)
            return
        if snap.state != "active":
            await self.snapshots.runner.remove_snapshot(snap.id)

