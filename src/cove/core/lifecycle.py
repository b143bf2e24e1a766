"""The lifecycle service: what a client asks of its sandboxes.

Every operation runs through :class:`cove.core.ops.SandboxOps` (the sandbox's
lock, a task the caller cannot cancel, checked and announced state changes);
creation is in :mod:`cove.core.create`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from functools import partial
from typing import TypeVar

from cove.core import validation
from cove.core.buildlog import BuildLog
from cove.core.builds import INTERRUPTED, remove_left_worker
from cove.core.config import Settings
from cove.core.create import Creator, log_key
from cove.core.images import ImageService
from cove.core.ops import SandboxOps, container_spec, network_policy
from cove.core.pool import OwnedOnly, PoolKeeper, PoolStore
from cove.core.ports import ContainerStatus, EventSink, Resources, Runner, SandboxStore
from cove.core.quotas import charge
from cove.core.sandbox import Sandbox, SandboxState, archive_minutes, utcnow
from cove.core.snapshots import SnapshotService
from cove.core.telemetry import timed
from cove.core.volumes import VolumeService
from cove.errors import BadRequest, CoveError, InvalidState, NotFound
from cove.schemas.sandbox import SandboxCreate, SandboxResize

S = SandboxState
BUILDING = frozenset({S.PENDING_BUILD, S.PULLING_SNAPSHOT, S.BUILDING_SNAPSHOT})
T = TypeVar("T")
log = logging.getLogger(__name__)


class LifecycleService:
    """Create, start, stop, archive, resize and destroy sandboxes.

    Args:
        settings: server configuration (defaults, limits).
        store: where sandbox records live.
        runner: where sandboxes run.
        events: where state changes are announced.
    """

    def __init__(
        self, *, settings: Settings, store: SandboxStore, runner: Runner, events: EventSink,
        volumes: VolumeService | None = None, snapshots: SnapshotService | None = None,
        images: ImageService | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.runner = runner
        self.events = events = OwnedOnly(events)  # pooled sandboxes are no one's news
        self.ops = SandboxOps(
            store=store, runner=runner, events=events, minute_seconds=settings.minute_seconds
        )
        self.creator = Creator(settings=settings, ops=self.ops, volumes=volumes,
                               snapshots=snapshots)  # fmt: skip
        self.creator.images = images
        self.pool: PoolKeeper | None = None  # warm pools (None: none kept)

    def use_pools(self, store: PoolStore) -> PoolKeeper:
        """Keep warm pools (their definitions and claims in ``store``)."""
        creator = self.creator
        self.pool = creator.pool = PoolKeeper(
            settings=self.settings, ops=self.ops, store=store,
            default_ref=lambda: creator._usable_snapshot("", self.settings.default_snapshot),
        )  # fmt: skip
        return self.pool

    async def keep_pools(self) -> None:
        """Keep the warm pools filled until cancelled (nothing without pools)."""
        if self.pool is not None:
            await self.pool.run()

    @property
    def volumes(self) -> VolumeService | None:
        return self.creator.volumes

    @volumes.setter
    def volumes(self, service: VolumeService | None) -> None:
        self.creator.volumes = service

    @property
    def snapshots(self) -> SnapshotService | None:
        return self.creator.snapshots

    @snapshots.setter
    def snapshots(self, service: SnapshotService | None) -> None:
        self.creator.use_snapshots(service)

    # ---- queries -------------------------------------------------------

    def get(self, organization_id: str, id_or_name: str) -> Sandbox:
        return self.store.get(organization_id, id_or_name)

    def list(
        self,
        organization_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        states: Sequence[str] | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[list[Sandbox], str | None]:
        """A page of the organization's sandboxes matching every label and any state."""
        known = [S(st) for st in states or () if st in S._value2member_map_]
        if states and not known:
            return [], None
        return self.store.list(
            organization_id, labels=labels, states=known or None, cursor=cursor, limit=limit
        )

    # ---- create --------------------------------------------------------

    async def create(self, *, organization_id: str, request: SandboxCreate) -> Sandbox:
        """Validate, record and boot a new sandbox (see :class:`cove.core.create.Creator`)."""
        with timed(self.ops.recorder, "create"):
            return await self.creator.create(organization_id, request)

    def build_log(self, organization_id: str, id_or_name: str) -> BuildLog:
        """The build log of a sandbox created from a Dockerfile.

        Raises:
            NotFound: no such sandbox, or it was not built from a Dockerfile.
        """
        return self.creator.build_log(self.get(organization_id, id_or_name).id)

    def building(self, sandbox_id: str) -> bool:
        """Whether this replica is building the sandbox's snapshot right now."""
        return self.creator.building(sandbox_id)

    def orphaned_build(self, sandbox_id: str) -> bool:
        """Whether the sandbox's build was left by a replica that is gone."""
        info = self.creator.logs.store.info(log_key(sandbox_id))
        return (info is not None and not info.done and not self.building(sandbox_id)
                and info.replica not in self.ops.coordination.alive())  # fmt: skip

    async def end_orphaned_logs(self) -> None:
        """End the build logs a replica that is gone left unfinished after its build (it
        died booting the sandbox): their readers end too. Those of sandboxes still
        building are the reconciler's (:meth:`end_build`, under the sandbox's lock)."""
        logs = self.creator.logs
        for info in logs.orphaned(self.ops.coordination.alive()):
            kind, _, sandbox_id = info.key.partition(":")
            if kind != "sandbox":
                continue
            try:
                if self.store.get_by_id(sandbox_id).state in BUILDING:
                    continue
            except NotFound:
                logs.discard(info.key)
                continue
            worker = logs.end(info.key, "the API replica that ran this build stopped")
            if worker is not None:
                await remove_left_worker(self.runner, worker)

    async def end_build(self, sandbox: Sandbox) -> None:
        """Fail a build no replica runs (:data:`INTERRUPTED`), at the end of its log too,
        and remove what it left on the runner (under the sandbox's lock)."""
        await self.ops.build_failed(sandbox, INTERRUPTED)
        worker = self.creator.logs.end(log_key(sandbox.id), INTERRUPTED)
        if worker is not None:
            await remove_left_worker(self.runner, worker)

    # ---- start / stop --------------------------------------------------

    async def start(self, organization_id: str, id_or_name: str) -> Sandbox:
        return await self._on(organization_id, id_or_name, self._start, "start")

    async def _start(self, sandbox_id: str) -> Sandbox:
        sandbox = self.store.get_by_id(sandbox_id)
        if sandbox.state is S.STARTED:
            return sandbox
        if sandbox.state is S.ARCHIVED:
            return await self._restore_and_start(sandbox)
        if sandbox.state is S.PAUSED:
            return await self._resume(sandbox)
        if sandbox.state is not S.STOPPED:
            raise InvalidState(f"Sandbox {sandbox.id} is {sandbox.state}; cannot start it")
        spec = container_spec(sandbox)
        return await self.ops.through(
            sandbox, S.STARTING, S.STARTED, "start", partial(self.runner.start, spec),
            admitted=self.admit(sandbox, S.STARTING),
        )

    async def _restore_and_start(self, sandbox: Sandbox) -> Sandbox:
        spec = container_spec(sandbox)
        with timed(self.ops.recorder, "restore"):
            return await self.ops.through(
                sandbox, S.RESTORING, S.STARTED, "restore",
                partial(self.runner.restore, spec), partial(self.runner.start, spec),
                admitted=self.admit(sandbox, S.RESTORING),
            )

    def admit(self, sandbox: Sandbox, state: SandboxState, resources: Resources | None = None,
              *, new: bool = False) -> AbstractAsyncContextManager[None]:  # fmt: skip
        """The organization's quota admits ``sandbox`` in ``state`` (with ``resources``;
        ``new``: one more sandbox) while the change is made (see
        :class:`cove.core.quotas.QuotaService`)."""
        quotas = self.creator.quotas
        if quotas is None or not sandbox.organization_id:
            return nullcontext()
        resources = resources or sandbox.resources
        return quotas.admit(sandbox.organization_id, sandbox.id, charge(state, resources),
                            resources, new=new)  # fmt: skip

    async def stop(self, organization_id: str, id_or_name: str, *, force: bool = False) -> Sandbox:
        return await self._on(
            organization_id, id_or_name, lambda sandbox_id: self._stop(sandbox_id, force=force),
            "stop",
        )

    async def _stop(self, sandbox_id: str, *, force: bool) -> Sandbox:
        sandbox = self.store.get_by_id(sandbox_id)
        if sandbox.state in (S.STOPPED, S.ARCHIVED):
            return sandbox
        if sandbox.state not in (S.STARTED, S.PAUSED):  # the runtime thaws a paused one
            raise InvalidState(f"Sandbox {sandbox.id} is {sandbox.state}; cannot stop it")
        stop = partial(self.runner.stop, sandbox.id, force=force)
        sandbox = await self.ops.through(sandbox, S.STOPPING, S.STOPPED, "stop", stop)
        if sandbox.state is S.STOPPED and sandbox.auto_delete_interval == 0:
            return await self._destroy(sandbox.id)
        return sandbox

    # ---- pause / resume -----------------------------------------------

    async def pause(self, organization_id: str, id_or_name: str) -> Sandbox:
        """Freeze every process of a started sandbox; ``start`` resumes it.

        Raises:
            InvalidState: it is not started (or paused already: then it is returned).
        """
        return await self._on(organization_id, id_or_name, self._pause)

    async def _pause(self, sandbox_id: str) -> Sandbox:
        sandbox = self.store.get_by_id(sandbox_id)
        if sandbox.state is S.PAUSED:
            return sandbox
        if sandbox.state is not S.STARTED:
            raise InvalidState(f"Sandbox {sandbox.id} is {sandbox.state}; cannot pause it")
        await self.ops.set_state(sandbox, S.PAUSING)
        try:
            await self.runner.pause(sandbox.id)
        except CoveError as exc:
            await self.ops.set_state(sandbox, S.STARTED)  # still running, as it was
            raise InvalidState(f"pause failed: {exc.message}") from exc
        return await self.ops.set_state(sandbox, S.PAUSED)

    async def _resume(self, sandbox: Sandbox) -> Sandbox:
        resume = partial(self.runner.resume, sandbox.id)
        return await self.ops.through(sandbox, S.RESUMING, S.STARTED, "resume", resume,
                                      admitted=self.admit(sandbox, S.RESUMING))  # fmt: skip

    # ---- archive / recover / resize -----------------------------------

    async def archive(self, organization_id: str, id_or_name: str) -> Sandbox:
        """Pack a sandbox's files into the archive store; a started one is stopped first."""
        return await self._on(organization_id, id_or_name, self._archive, "archive")

    async def _archive(self, sandbox_id: str) -> Sandbox:
        sandbox = self.store.get_by_id(sandbox_id)
        if sandbox.state is S.ARCHIVED:
            return sandbox
        if sandbox.state in (S.STARTED, S.PAUSED):
            sandbox = await self._stop(sandbox_id, force=False)
            if sandbox.state is not S.STOPPED:
                return sandbox
        if sandbox.state is not S.STOPPED:
            raise InvalidState(f"Sandbox {sandbox.id} is {sandbox.state}; cannot archive it")
        archive = partial(self.runner.archive, sandbox.id)
        return await self.ops.through(sandbox, S.ARCHIVING, S.ARCHIVED, "archive", archive)

    async def recover(self, organization_id: str, id_or_name: str) -> Sandbox:
        """Bring an ``error`` sandbox back to ``started``; on any other state, act as start."""
        return await self._on(organization_id, id_or_name, self._recover)

    async def _recover(self, sandbox_id: str) -> Sandbox:
        sandbox = self.store.get_by_id(sandbox_id)
        if sandbox.state is not S.ERROR:
            return await self._start(sandbox_id)
        status = await self.runner.status(sandbox.id)
        if status is ContainerStatus.ARCHIVED:
            return await self._restore_and_start(sandbox)
        await self.ops.clean_up(sandbox.id, destroy=False)
        spec = container_spec(sandbox)
        steps = [partial(self.runner.start, spec)]
        if status is ContainerStatus.ABSENT:
            steps.insert(0, partial(self.runner.create, spec))
        return await self.ops.through(sandbox, S.STARTING, S.STARTED, "recover", *steps,
                                      admitted=self.admit(sandbox, S.STARTING))  # fmt: skip

    async def resize(
        self, organization_id: str, id_or_name: str, request: SandboxResize
    ) -> Sandbox:
        """Change resources: a started sandbox may grow CPU and memory; anything else
        needs it stopped (or archived).

        Raises:
            QuotaExceeded: above the limits.
            OrganizationQuotaExceeded: above the organization's quota.
            BadRequest: a change that needs the sandbox stopped.
        """
        return await self._on(
            organization_id, id_or_name, lambda sandbox_id: self._resize(sandbox_id, request)
        )

    async def _resize(self, sandbox_id: str, request: SandboxResize) -> Sandbox:
        sandbox = self.store.get_by_id(sandbox_id)
        new = validation.resized(sandbox.resources, request, self.settings)
        if new == sandbox.resources:
            return sandbox
        live = sandbox.state is S.STARTED
        if live:
            validation.check_live_resize(sandbox.resources, new)
        elif sandbox.state not in (S.STOPPED, S.ARCHIVED):
            raise InvalidState(f"Sandbox {sandbox.id} is {sandbox.state}; cannot resize it")
        before = sandbox.state
        async with self.admit(sandbox, before, new):
            await self.ops.set_state(sandbox, S.RESIZING)
            try:
                await self.runner.resize(sandbox.id, new, live=live)
            except CoveError as exc:
                await self.ops.set_state(sandbox, before)
                raise BadRequest(f"resize failed: {exc.message}") from exc
            sandbox.resources = new
            return await self.ops.set_state(sandbox, before)

    # ---- destroy -------------------------------------------------------

    async def destroy(self, organization_id: str, id_or_name: str) -> Sandbox:
        return await self._on(organization_id, id_or_name, self._destroy, "delete")

    async def _destroy(self, sandbox_id: str) -> Sandbox:
        sandbox = await self.ops.remove(self.store.get_by_id(sandbox_id))
        if sandbox.state is SandboxState.DESTROYED:
            self.creator.forget(sandbox_id)
        return sandbox

    # ---- settings on a live record --------------------------------------

    async def update(
        self, organization_id: str, id_or_name: str, **fields: object
    ) -> Sandbox:
        """Change plain fields (labels, intervals, public) of a sandbox."""
        sandbox = self.get(organization_id, id_or_name)

        async def apply() -> Sandbox:
            current = self.store.get_by_id(sandbox.id)
            if "labels" in fields:
                validation.check_labels(fields["labels"])  # type: ignore[arg-type]
                validation.check_isolation_label(
                    fields["labels"], current.isolation)  # type: ignore[arg-type]
            for key, value in fields.items():
                setattr(current, key, value)
            current.auto_archive_interval = archive_minutes(current.auto_archive_interval)
            current.updated_at = utcnow()
            self.store.save(current)
            return current

        return await self.ops.run(sandbox.id, apply)

    async def update_network(
        self, organization_id: str, id_or_name: str, *,
        block_all: bool | None, allow_list: str | None, domain_list: str | None,
    ) -> Sandbox:  # fmt: skip
        """Change a sandbox's firewall; a started sandbox gets it at once.

        ``None`` leaves a field as it is; an allow-list implies not blocking all;
        ``block_all=False`` alone clears the allow-lists. Raises BadRequest (nothing changes) on an
        invalid field, RuntimeBackendError when the rules could not be installed.
        """
        sandbox = self.get(organization_id, id_or_name)

        async def apply() -> Sandbox:
            current = self.store.get_by_id(sandbox.id)
            block = current.network_block_all if block_all is None else block_all
            allow, domains = current.network_allow_list, current.domain_allow_list
            if allow_list is not None or domain_list is not None:
                block = bool(block_all)  # an allow-list implies not blocking all
                allow, domains = _or(allow_list, allow), _or(domain_list, domains)
            elif block_all is False:
                allow = domains = None  # general access again, as Daytona's SDK documents
            fields = {
                "network_block_all": block, "network_allow_list": allow,
                "domain_allow_list": domains,
            }  # fmt: skip
            policy = validation.network_policy(
                fields["network_block_all"], fields["network_allow_list"],  # type: ignore[arg-type]
                fields["domain_allow_list"], self.settings,  # type: ignore[arg-type]
            )  # fmt: skip
            if current.state in (S.STARTED, S.PAUSED):
                await self.runner.set_network(current.id, network_policy(current, policy))
            for key, value in fields.items():
                setattr(current, key, value)
            current.updated_at = utcnow()
            self.store.save(current)
            return current

        return await self.ops.run(sandbox.id, apply)

    def touch(self, organization_id: str, id_or_name: str) -> None:
        """Record user activity (resets the auto-stop timer)."""
        self.ops.touch(self.get(organization_id, id_or_name))

    async def act_if(self, sandbox_id: str, action: str, check: Callable[[Sandbox], bool]
                     ) -> Sandbox | None:  # fmt: skip
        """Run ``action`` (stop, pause, archive or delete) on the sandbox if ``check``
        accepts its record as read under its lock; None when it did not."""
        inner: dict[str, Callable[[str], Awaitable[Sandbox]]] = {
            "stop": lambda sandbox_id: self._stop(sandbox_id, force=False),
            "pause": self._pause, "archive": self._archive, "delete": self._destroy,
        }  # fmt: skip

        async def checked() -> Sandbox | None:
            if not check(self.store.get_by_id(sandbox_id)):
                return None
            with timed(self.ops.recorder, action):
                return await inner[action](sandbox_id)

        return await self.ops.run(sandbox_id, checked)

    # ---- plumbing ------------------------------------------------------

    async def _on(
        self, organization_id: str, id_or_name: str, op: Callable[[str], Awaitable[T]],
        operation: str | None = None,
    ) -> T:
        """Run ``op(sandbox_id)`` on the caller's sandbox, under its lock (timed as
        ``operation``, if named)."""
        sandbox = self.get(organization_id, id_or_name)
        if operation is None:
            return await self.ops.run(sandbox.id, lambda: op(sandbox.id))

        async def measured() -> T:
            with timed(self.ops.recorder, operation):
                return await op(sandbox.id)

        return await self.ops.run(sandbox.id, measured)

    async def drain(self) -> None:
        """Wait for every operation under way (server shutdown)."""
        await self.ops.drain()
        if self.creator.images is not None:
            await self.creator.images.drain()


def _or(value: str | None, current: str | None) -> str | None:
    """A new allow-list value: None keeps ``current``, "" clears it."""
    if value is None:
        return current
    return value or None
