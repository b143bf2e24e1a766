"""Creating sandboxes: input checked, snapshot, volumes and tier resolved, then booted
(or built from a Dockerfile first, in the background).

Only a general snapshot (the default, or one the operator made public) or one of
the caller's organization can be booted; another organization's, though on this
host, is answered as if it did not exist.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext

from cove.core import dockerfile, links, validation
from cove.core.buildlog import BuildLog, BuildLogs
from cove.core.builds import ImageBuilder, build_and_boot
from cove.core.config import Settings
from cove.core.contexts import ContextStore
from cove.core.images import ImageService, default_user, pull_and_boot
from cove.core.intervals import expiry
from cove.core.ops import SandboxOps
from cove.core.pool import PoolKeeper
from cove.core.ports import VolumeBind
from cove.core.quotas import QuotaService, charge
from cove.core.sandbox import Sandbox, SandboxState, archive_minutes
from cove.core.secrets import SecretService
from cove.core.snapshots import SnapshotService
from cove.core.volumes import VolumeService
from cove.errors import BadRequest, NotFound
from cove.schemas.sandbox import SandboxCreate

S = SandboxState


class Creator:
    """Makes new sandboxes; keeps the build logs of those built from a Dockerfile."""

    def __init__(
        self, *, settings: Settings, ops: SandboxOps, volumes: VolumeService | None,
        snapshots: SnapshotService | None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.ops = ops
        self.volumes = volumes
        # the build logs (in the database: any replica follows them; see use_build_logs)
        self.logs = BuildLogs()
        shutil.rmtree(settings.data_dir / "build-logs", ignore_errors=True)  # of old versions
        self.images: ImageService | None = None  # registry images (None: not pulled)
        self.contexts: ContextStore | None = None  # uploaded build contexts (None: none)
        self.secrets: SecretService | None = None  # the organizations' secrets (None: none)
        self.pool: PoolKeeper | None = None  # warm pools (None: every create boots)
        self.quotas: QuotaService | None = None  # organization quotas (None: no limits)
        # Told of each sandbox a create booted, as stored (the toolbox's record cache:
        # the sandbox's first toolbox call reads nothing).
        self.booted: Callable[[Sandbox], None] = lambda _sandbox: None
        self.use_snapshots(snapshots)

    def use_snapshots(self, snapshots: SnapshotService | None) -> None:
        """Where snapshots are found (and Dockerfiles built); None: the host's only."""
        self.snapshots = snapshots
        self.builder = (
            ImageBuilder(settings=self.settings, runner=self.ops.runner, snapshots=snapshots,
                         contexts=self.contexts)
            if snapshots is not None else None
        )  # fmt: skip

    def use_build_logs(self, logs: BuildLogs) -> None:
        """Where the build logs live (the database every replica reads)."""
        self.logs = logs

    def use_contexts(self, contexts: ContextStore) -> None:
        """Where COPY/ADD find the uploaded build contexts."""
        self.contexts = contexts
        if self.builder is not None:
            self.builder.contexts = contexts

    async def create(self, organization_id: str, request: SandboxCreate) -> Sandbox:
        """Validate, record and boot a new sandbox; returns it ``started`` or ``error``,
        or ``pending_build`` when its Dockerfile must be built first (in the background).

        Raises:
            BadRequest: invalid input (nothing is created).
            QuotaExceeded: resources above the limits (nothing is created).
            OrganizationQuotaExceeded: above the organization's quota (nothing is created).
            Conflict: the name is taken in this organization.
            Unavailable: no runner taking new sandboxes has its snapshot or can fetch it,
                or holds the data of the volumes it mounts.
            NotFound: it was deleted (by the name asked for) before it booted: it was not.
        """
        # (in a thread: a context is looked for in the shared store, over the network;
        # most creates build nothing, and skip the thread's hand-over)
        plan = None if request.build_info is None else await asyncio.to_thread(
            self._build_plan, organization_id, request)  # fmt: skip
        sandbox, pull = self._new_sandbox(organization_id, request)
        mounts = self._secret_mounts(organization_id, request)
        if pull is None:  # (a pulled image is pulled by every runner)
            await self.ops.runner.admits(sandbox.snapshot, [b.volume_id for b in sandbox.volumes])
        async with self._admit(sandbox):
            if plan is None and pull is None and not mounts and self.pool is not None:
                claimed = await self.pool.claim(sandbox)  # a warm pool's, made into this one
                if claimed is not None:
                    if self.secrets is not None:
                        self.secrets.none_mounted(claimed.id)
                    return claimed
            if plan is not None or pull is not None:
                sandbox.state = S.PENDING_BUILD
                sandbox.env = {**(plan.env if plan else {}), **sandbox.env}
                if plan is not None and plan.user and request.user is None:  # USER, unless asked
                    sandbox.user = plan.user.partition(":")[0]
            if sandbox.volumes and self.volumes is not None:  # none deleted in the wait
                self.volumes.check(organization_id, sandbox.volumes)
            self.ops.store.add(sandbox)
        if self.secrets is not None:
            if mounts:
                self.secrets.mount(sandbox.id, mounts)
            else:
                self.secrets.none_mounted(sandbox.id)
        await self.ops.events.sandbox_created(sandbox)
        if plan is None and pull is None:
            booted = await self.ops.run(sandbox.id, lambda: self.ops.boot(sandbox))
            if booted.state is S.STARTED:
                self.booted(booted)
            return booted
        out = self.logs.start(log_key(sandbox.id))
        builder = self.builder
        if pull is not None:
            images, keep = self.images, request.user is not None or bool(plan and plan.user)
            assert images is not None  # _resolve_snapshot checked it
            self.ops.spawn(sandbox.id, lambda: pull_and_boot(
                self.ops, images, builder, sandbox, pull, plan, out, keep_user=keep))
            return sandbox
        assert builder is not None and plan is not None  # _build_plan checked it
        self.ops.spawn(sandbox.id, lambda: build_and_boot(self.ops, builder, sandbox, plan, out))
        return sandbox

    def _admit(self, sandbox: Sandbox) -> AbstractAsyncContextManager[None]:
        """The organization's quota admits the new sandbox while it is stored."""
        if self.quotas is None:
            return nullcontext()
        return self.quotas.admit(sandbox.organization_id, sandbox.id,
                                 charge(S.CREATING, sandbox.resources), sandbox.resources,
                                 new=True)  # fmt: skip

    def build_log(self, sandbox_id: str) -> BuildLog:
        """The build log of a sandbox created from a Dockerfile.

        Raises:
            NotFound: it was not built.
        """
        found = self.logs.get(log_key(sandbox_id))
        if found is None:
            raise NotFound(f"Sandbox {sandbox_id} has no build logs")
        return found

    def building(self, sandbox_id: str) -> bool:
        """Whether this replica is building the sandbox's snapshot right now."""
        return self.logs.building(log_key(sandbox_id))

    def forget(self, sandbox_id: str) -> None:
        self.logs.discard(log_key(sandbox_id))

    def _build_plan(
        self, organization_id: str, req: SandboxCreate
    ) -> dockerfile.BuildPlan | None:
        """The Dockerfile to build, or None when there is nothing to build."""
        if req.build_info is None:
            return None
        plan = dockerfile.parse(req.build_info.dockerfile_content,
                                req.build_info.context_hashes or ())  # fmt: skip
        if not plan.steps:
            return None
        if self.builder is None:
            raise BadRequest("Building images from Dockerfiles is not supported by this server")
        for context_hash in plan.context_hashes:  # uploaded by this organization: else a 400
            if self.contexts is None:
                raise BadRequest("this server keeps no build contexts")
            self.contexts.context(organization_id, context_hash)
        return plan

    def _new_sandbox(self, organization_id: str, req: SandboxCreate) -> tuple[Sandbox, str | None]:
        """The new sandbox's record, and the registry image to pull first (or None)."""
        snapshot, pull, image_user = self._resolve_snapshot(organization_id, req)
        s = self.settings
        resources = validation.requested_resources(req, s)
        validation.check_labels(req.labels)
        tier = validation.isolation(req.labels, s, self.ops.runner.has_isolation)
        validation.network_policy(
            req.network_block_all, req.network_allow_list, req.domain_allow_list, s
        )
        binds = self._volume_binds(organization_id, req)
        auto_delete = _pick(req.auto_delete_interval, s.default_auto_delete_interval)
        auto_stop, auto_pause = _stop_or_pause(req, s.default_auto_stop_interval, auto_delete)
        owner = links.owner_of(self.ops.store, organization_id, req.linked_sandbox, auto_delete)
        sandbox_id = str(uuid.uuid4())
        return Sandbox(
            id=sandbox_id,
            organization_id=organization_id,
            name=req.name or sandbox_id,
            snapshot=snapshot,
            user=req.user or image_user or "daytona",
            resources=resources,
            env=dict(req.env),
            labels=dict(req.labels),
            isolation=tier,
            public=req.public,
            target=req.target or "local",
            network_block_all=req.network_block_all,
            network_allow_list=req.network_allow_list,
            domain_allow_list=req.domain_allow_list,
            auto_stop_interval=auto_stop,
            auto_pause_interval=auto_pause,
            auto_destroy_at=expiry(req.ttl_minutes or 0, s.minute_seconds),
            auto_archive_interval=archive_minutes(
                _pick(req.auto_archive_interval, s.default_auto_archive_interval)),
            auto_delete_interval=auto_delete,
            volumes=binds,
            linked_sandbox_id=owner.id if owner else None,
            linked_sandbox_name=owner.name if owner else None,
        ), pull

    def _secret_mounts(self, organization_id: str, req: SandboxCreate) -> dict[str, str]:
        """The secrets asked for, resolved in the organization (env var -> secret id)."""
        if not req.secrets:
            return {}
        if self.secrets is None:
            raise BadRequest("Secrets are not supported by this server")
        return self.secrets.resolve(organization_id, req.secrets, req.env)

    def _volume_binds(self, organization_id: str, req: SandboxCreate) -> list[VolumeBind]:
        if not req.volumes:
            return []
        if self.volumes is None:
            raise BadRequest("Volumes are not supported by this server")
        return self.volumes.resolve(organization_id, req.volumes)

    def _resolve_snapshot(self, organization_id: str, req: SandboxCreate
                          ) -> tuple[str, str | None, str | None]:  # fmt: skip
        """The runtime ref of the snapshot (or Dockerfile base image) asked for; or, for
        an image that is no snapshot, its normalized reference twice (it is pulled).
        Last, the user of the image the snapshot was pulled from (None: not pulled)."""
        if req.build_info is not None:
            info = req.build_info
            image = dockerfile.parse(info.dockerfile_content, info.context_hashes or ()).base
            found = self._usable(organization_id, image)
            if found is not None:
                return found[0], None, found[1]
            if self.images is None or not self.images.is_registry_image(image):
                raise BadRequest(
                    f"Image '{image}' cannot be provided: this server pulls no images "
                    f"and has no local snapshot of that name (available: "
                    f"{', '.join(self._general_snapshots())})"
                )
            pull = str(self.images.reference(image))
            return pull, pull, self._image_user(organization_id, pull)
        name = req.snapshot or self.settings.default_snapshot
        found = self._usable(organization_id, name)
        if found is None:
            raise BadRequest(f"Snapshot '{name}' not found")
        return found[0], None, found[1]

    def _image_user(self, organization_id: str, ref: str) -> str | None:
        """The user of the image a snapshot was pulled from (None: not pulled)."""
        if self.snapshots is None:
            return None
        try:
            snap = self.snapshots.get(organization_id, ref)
        except NotFound:
            return None
        return default_user(snap)

    def _usable_snapshot(self, organization_id: str, id_or_name: str) -> str | None:
        found = self._usable(organization_id, id_or_name)
        return None if found is None else found[0]

    def _usable(self, organization_id: str, id_or_name: str) -> tuple[str, str | None] | None:
        """The runtime ref of the snapshot a sandbox may be created from, and the user of
        the image it was pulled from (None: not pulled); None: there is none such."""
        if self.snapshots is not None:
            try:
                snap = self.snapshots.usable(organization_id, id_or_name)
            except NotFound:
                return None
            return snap.id, default_user(snap)
        general = id_or_name in self._general_snapshots()
        return (id_or_name, None) if general and self.ops.runner.has_snapshot(id_or_name) else None

    def _general_snapshots(self) -> list[str]:
        """The snapshots every organization may use."""
        return list(dict.fromkeys([self.settings.default_snapshot,
                                   *self.settings.public_snapshots]))  # fmt: skip


def log_key(sandbox_id: str) -> str:
    """The key of a sandbox's build log."""
    return f"sandbox:{sandbox_id}"


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


def _stop_or_pause(req: SandboxCreate, default_stop: int, auto_delete: int) -> tuple[int, int]:
    """The auto-stop and auto-pause intervals: at most one of them is non-zero."""
    pause = req.auto_pause_interval or 0
    if not pause:
        return _pick(req.auto_stop_interval, default_stop), 0
    if req.auto_stop_interval:
        raise BadRequest("at most one of autoStopInterval and autoPauseInterval may be non-zero")
    if auto_delete == 0:
        raise BadRequest("autoPauseInterval is not allowed for ephemeral sandboxes")
    return 0, pause
