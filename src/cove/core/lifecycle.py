"""The lifecycle service: the only place where sandboxes change state.

Operations on one sandbox are serialized by a per-sandbox lock. Each runs as a
task owned by the service and shielded from the caller, so a client that hangs
up mid-request never leaves a sandbox half-way: the operation finishes, and
the state says how it ended. A failed operation leaves the sandbox in
``error`` with the reason, never silently ``started``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TypeVar

from cove.core import dockerfile, validation
from cove.core.buildlog import BuildLog
from cove.core.builds import ImageBuilder, build_and_boot
from cove.core.config import Settings
from cove.core.ports import (
    ContainerSpec,
    ContainerStatus,
    EventSink,
    NetworkPolicy,
    Runtime,
    SandboxStore,
    VolumeBind,
)
from cove.core.sandbox import Sandbox, SandboxState, transition, utcnow
from cove.core.snapshots import SnapshotService
from cove.core.volumes import VolumeService
from cove.errors import BadRequest, CoveError, InvalidState, NotFound
from cove.schemas.sandbox import SandboxCreate, SandboxResize

S = SandboxState
T = TypeVar("T")
log = logging.getLogger(__name__)


class LifecycleService:
    """Create, start, stop, archive, resize and destroy sandboxes.

    Args:
        settings: server configuration (defaults, limits).
        store: where sandbox records live.
        runtime: the isolation backend.
        events: where state changes are announced.
    """

    def __init__(
        self, *, settings: Settings, store: SandboxStore, runtime: Runtime, events: EventSink,
        volumes: VolumeService | None = None, snapshots: SnapshotService | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.events = events
        self.volumes = volumes
        self.snapshots = snapshots
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self.builder = (
            ImageBuilder(settings=settings, runtime=runtime, snapshots=snapshots)
            if snapshots is not None else None
        )  # fmt: skip
        self._build_logs: dict[str, BuildLog] = {}

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
        """Validate, record and boot a new sandbox; returns it ``started`` or ``error``,
        or ``pending_build`` when its Dockerfile must be built first (in the background).

        Raises:
            BadRequest: invalid input (nothing is created).
            QuotaExceeded: resources above the limits (nothing is created).
            Conflict: the name is taken in this organization.
        """
        plan = self._build_plan(request)
        sandbox = self._new_sandbox(organization_id, request)
        if plan is not None:
            sandbox.state = S.PENDING_BUILD
            sandbox.env = {**plan.env, **sandbox.env}
        self.store.add(sandbox)
        await self.events.sandbox_created(sandbox)
        if plan is None:
            return await self._run(sandbox.id, lambda: self._boot(sandbox))
        assert self.builder is not None  # _build_plan checked it
        out = self._build_logs[sandbox.id] = BuildLog()
        builder = self.builder
        self._task(sandbox.id, lambda: build_and_boot(self, builder, sandbox, plan, out))
        return sandbox

    def build_log(self, organization_id: str, id_or_name: str) -> BuildLog:
        """The build log of a sandbox created from a Dockerfile.

        Raises:
            NotFound: no such sandbox, or it was not built (this server run).
        """
        sandbox = self.get(organization_id, id_or_name)
        found = self._build_logs.get(sandbox.id)
        if found is None:
            raise NotFound(f"Sandbox {sandbox.id} has no build logs")
        return found

    def building(self, sandbox_id: str) -> bool:
        """Whether this server is building the sandbox's snapshot right now."""
        found = self._build_logs.get(sandbox_id)
        return found is not None and not found.done

    def _build_plan(self, req: SandboxCreate) -> dockerfile.BuildPlan | None:
        """The Dockerfile to build, or None when there is nothing to build."""
        if req.build_info is None:
            return None
        plan = dockerfile.parse(req.build_info.dockerfile_content)
        if not plan.steps:
            return None
        if self.builder is None:
            raise BadRequest("Building images from Dockerfiles is not supported by this server")
        return plan

    def _new_sandbox(self, organization_id: str, req: SandboxCreate) -> Sandbox:
        snapshot = self._resolve_snapshot(organization_id, req)
        resources = validation.requested_resources(req, self.settings)
        validation.check_labels(req.labels)
        tier = validation.isolation(req.labels, self.settings, self.runtime.has_isolation)
        validation.network_policy(
            req.network_block_all, req.network_allow_list, req.domain_allow_list, self.settings
        )
        binds = self._volume_binds(organization_id, req)
        sandbox_id = str(uuid.uuid4())
        s = self.settings
        return Sandbox(
            id=sandbox_id,
            organization_id=organization_id,
            name=req.name or sandbox_id,
            snapshot=snapshot,
            user=req.user or "daytona",
            resources=resources,
            env=dict(req.env),
            labels=dict(req.labels),
            isolation=tier,
            public=req.public,
            target=req.target or "local",
            network_block_all=req.network_block_all,
            network_allow_list=req.network_allow_list,
            domain_allow_list=req.domain_allow_list,
            auto_stop_interval=_pick(req.auto_stop_interval, s.default_auto_stop_interval),
            auto_archive_interval=_pick(
                req.auto_archive_interval, s.default_auto_archive_interval
            ),
            auto_delete_interval=_pick(req.auto_delete_interval, s.default_auto_delete_interval),
            volumes=binds,
        )

    def _volume_binds(self, organization_id: str, req: SandboxCreate) -> list[VolumeBind]:
        if not req.volumes:
            return []
        if self.volumes is None:
            raise BadRequest("Volumes are not supported by this server")
        return self.volumes.resolve(organization_id, req.volumes)

    def _resolve_snapshot(self, organization_id: str, req: SandboxCreate) -> str:
        """The runtime ref of the snapshot (or Dockerfile base image) asked for. Only a
        general snapshot or one of the caller's organization qualifies: another
        organization's, though on this host, is answered as if it did not exist."""
        if req.build_info is not None:
            image = dockerfile.parse(req.build_info.dockerfile_content).base
            ref = self._usable_snapshot(organization_id, image)
            if ref is None:
                raise BadRequest(
                    f"Image '{image}' cannot be provided: this server has no registry access "
                    f"and no local snapshot of that name (available: "
                    f"{', '.join(self._general_snapshots())})"
                )
            return ref
        name = req.snapshot or self.settings.default_snapshot
        ref = self._usable_snapshot(organization_id, name)
        if ref is None:
            raise BadRequest(f"Snapshot '{name}' not found")
        return ref

    def _usable_snapshot(self, organization_id: str, id_or_name: str) -> str | None:
        if self.snapshots is not None:
            try:
                return self.snapshots.ref_for(organization_id, id_or_name)
            except NotFound:
                return None
        general = id_or_name in self._general_snapshots()
        return id_or_name if general and self.runtime.has_snapshot(id_or_name) else None

    def _general_snapshots(self) -> list[str]:
        """The snapshots every organization may use."""
        return list(dict.fromkeys([self.settings.default_snapshot,
                                   *self.settings.public_snapshots]))  # fmt: skip

    async def _boot(self, sandbox: Sandbox) -> Sandbox:
        spec = self._spec(sandbox)
        try:
            await asyncio.to_thread(self.runtime.create, spec)
            await asyncio.to_thread(self.runtime.start, spec)
        except CoveError as exc:
            await self._cleanup_quietly(sandbox.id)
            return await self._fail(sandbox, f"create failed: {exc.message}", recoverable=True)
        return await self._set_state(sandbox, S.STARTED)

    async def _through(
        self, sandbox: Sandbox, via: SandboxState, to: SandboxState, what: str,
        *steps: Callable[[], object],
    ) -> Sandbox:
        """Go to ``via``, run the runtime ``steps`` in order (in worker threads), then
        to ``to``; a failing step leaves the sandbox in ``error`` (recoverable)."""
        await self._set_state(sandbox, via)
        try:
            for step in steps:
                await asyncio.to_thread(step)
        except CoveError as exc:
            return await self._fail(sandbox, f"{what} failed: {exc.message}", recoverable=True)
        return await self._set_state(sandbox, to)

    # ---- start / stop --------------------------------------------------

    async def start(self, organization_id: str, id_or_name: str) -> Sandbox:
        return await self._on(organization_id, id_or_name, self._start)

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
        spec = self._spec(sandbox)
        return await self._through(
            sandbox, S.STARTING, S.STARTED, "start", partial(self.runtime.start, spec)
        )

    async def _restore_and_start(self, sandbox: Sandbox) -> Sandbox:
        spec = self._spec(sandbox)
        return await self._through(
            sandbox, S.RESTORING, S.STARTED, "restore",
            partial(self.runtime.restore, spec), partial(self.runtime.start, spec),
        )

    async def stop(self, organization_id: str, id_or_name: str, *, force: bool = False) -> Sandbox:
        return await self._on(
            organization_id, id_or_name, lambda sandbox_id: self._stop(sandbox_id, force=force)
        )

    async def _stop(self, sandbox_id: str, *, force: bool) -> Sandbox:
        sandbox = self.store.get_by_id(sandbox_id)
        if sandbox.state in (S.STOPPED, S.ARCHIVED):
            return sandbox
        if sandbox.state not in (S.STARTED, S.PAUSED):  # the runtime thaws a paused one
            raise InvalidState(f"Sandbox {sandbox.id} is {sandbox.state}; cannot stop it")
        stop = partial(self.runtime.stop, sandbox.id, force=force)
        sandbox = await self._through(sandbox, S.STOPPING, S.STOPPED, "stop", stop)
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
        await self._set_state(sandbox, S.PAUSING)
        try:
            await asyncio.to_thread(self.runtime.pause, sandbox.id)
        except CoveError as exc:
            await self._set_state(sandbox, S.STARTED)  # still running, as it was
            raise InvalidState(f"pause failed: {exc.message}") from exc
        return await self._set_state(sandbox, S.PAUSED)

    async def _resume(self, sandbox: Sandbox) -> Sandbox:
        resume = partial(self.runtime.resume, sandbox.id)
        return await self._through(sandbox, S.RESUMING, S.STARTED, "resume", resume)

    # ---- archive / recover / resize -----------------------------------

    async def archive(self, organization_id: str, id_or_name: str) -> Sandbox:
        """Pack a sandbox's files into the archive store; a started one is stopped first."""
        return await self._on(organization_id, id_or_name, self._archive)

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
        archive = partial(self.runtime.archive, sandbox.id)
        return await self._through(sandbox, S.ARCHIVING, S.ARCHIVED, "archive", archive)

    async def recover(self, organization_id: str, id_or_name: str) -> Sandbox:
        """Bring an ``error`` sandbox back to ``started``; on any other state, act as start."""
        return await self._on(organization_id, id_or_name, self._recover)

    async def _recover(self, sandbox_id: str) -> Sandbox:
        sandbox = self.store.get_by_id(sandbox_id)
        if sandbox.state is not S.ERROR:
            return await self._start(sandbox_id)
        status = await asyncio.to_thread(self.runtime.status, sandbox.id)
        if status is ContainerStatus.ARCHIVED:
            return await self._restore_and_start(sandbox)
        await self._cleanup_quietly(sandbox.id, destroy=False)
        spec = self._spec(sandbox)
        steps = [partial(self.runtime.start, spec)]
        if status is ContainerStatus.ABSENT:
            steps.insert(0, partial(self.runtime.create, spec))
        return await self._through(sandbox, S.STARTING, S.STARTED, "recover", *steps)

    async def resize(
        self, organization_id: str, id_or_name: str, request: SandboxResize
    ) -> Sandbox:
        """Change resources: a started sandbox may grow CPU and memory; anything else
        needs it stopped (or archived).

        Raises:
            QuotaExceeded: above the limits.
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
        await self._set_state(sandbox, S.RESIZING)
        try:
            await asyncio.to_thread(self.runtime.resize, sandbox.id, new, live=live)
        except CoveError as exc:
            await self._set_state(sandbox, before)
            raise BadRequest(f"resize failed: {exc.message}") from exc
        sandbox.resources = new
        return await self._set_state(sandbox, before)

    # ---- destroy -------------------------------------------------------

    async def destroy(self, organization_id: str, id_or_name: str) -> Sandbox:
        return await self._on(organization_id, id_or_name, self._destroy)

    async def _destroy(self, sandbox_id: str) -> Sandbox:
        sandbox = self.store.get_by_id(sandbox_id)
        if sandbox.state is not S.DESTROYING:
            await self._set_state(sandbox, S.DESTROYING)
        try:
            await asyncio.to_thread(self.runtime.destroy, sandbox.id)
        except CoveError as exc:
            return await self._fail(sandbox, f"delete failed: {exc.message}", recoverable=False)
        old = sandbox.state
        transition(sandbox, S.DESTROYED)
        self.store.remove(sandbox.id)
        self._locks.pop(sandbox.id, None)
        self._build_logs.pop(sandbox.id, None)
        await self.events.sandbox_state_updated(sandbox, old)
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
            current.updated_at = utcnow()
            self.store.save(current)
            return current

        return await self._run(sandbox.id, apply)

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
                await asyncio.to_thread(self.runtime.set_network, current.id, policy)
            for key, value in fields.items():
                setattr(current, key, value)
            current.updated_at = utcnow()
            self.store.save(current)
            return current

        return await self._run(sandbox.id, apply)

    def touch(self, organization_id: str, id_or_name: str) -> None:
        """Record user activity (resets the auto-stop timer)."""
        sandbox = self.get(organization_id, id_or_name)
        sandbox.last_activity_at = utcnow()
        self.store.save(sandbox)

    # ---- plumbing ------------------------------------------------------

    def _spec(self, sandbox: Sandbox) -> ContainerSpec:
        return ContainerSpec(
            sandbox_id=sandbox.id,
            hostname=sandbox.name,
            snapshot=sandbox.snapshot,
            resources=sandbox.resources,
            env=dict(sandbox.env),
            user=sandbox.user,
            network=self._network(sandbox),
            volumes=tuple(sandbox.volumes),
            isolation=sandbox.isolation,
        )

    def _network(self, sandbox: Sandbox) -> NetworkPolicy:
        return validation.network_policy(
            sandbox.network_block_all, sandbox.network_allow_list, sandbox.domain_allow_list
        )

    async def _on(
        self, organization_id: str, id_or_name: str, op: Callable[[str], Awaitable[T]]
    ) -> T:
        """Run ``op(sandbox_id)`` on the caller's sandbox, under its lock."""
        sandbox = self.get(organization_id, id_or_name)
        return await self._run(sandbox.id, lambda: op(sandbox.id))

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    async def _run(self, sandbox_id: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` under the sandbox's lock in a task the caller cannot cancel."""
        return await asyncio.shield(self._task(sandbox_id, op))

    def _task(self, sandbox_id: str, op: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Start ``op`` under the sandbox's lock in a task the service owns."""

        async def locked() -> T:
            async with self._lock(sandbox_id):
                return await op()

        task = asyncio.ensure_future(locked())
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]
        return task

    async def drain(self) -> None:
        """Wait for every operation under way (server shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _set_state(self, sandbox: Sandbox, new: SandboxState) -> Sandbox:
        old = sandbox.state
        transition(sandbox, new)
        if new is S.STARTED and old is not S.RESIZING:
            sandbox.last_activity_at = sandbox.updated_at  # a fresh start is activity
        self.store.save(sandbox)
        await self.events.sandbox_state_updated(sandbox, old)
        return sandbox

    async def _fail(self, sandbox: Sandbox, reason: str, *, recoverable: bool) -> Sandbox:
        log.warning("sandbox %s failed: %s", sandbox.id, reason)
        old = sandbox.state
        transition(sandbox, S.ERROR, reason=reason)
        sandbox.recoverable = recoverable
        self.store.save(sandbox)
        await self.events.sandbox_state_updated(sandbox, old)
        return sandbox

    async def _build_failed(self, sandbox: Sandbox, reason: str) -> Sandbox:
        log.warning("build of sandbox %s failed: %s", sandbox.id, reason)
        old = sandbox.state
        transition(sandbox, S.BUILD_FAILED, reason=reason)
        self.store.save(sandbox)
        await self.events.sandbox_state_updated(sandbox, old)
        return sandbox

    async def _cleanup_quietly(self, sandbox_id: str, *, destroy: bool = True) -> None:
        """Best-effort removal of runtime leftovers after a failure."""
        op = self.runtime.destroy if destroy else self.runtime.stop
        try:
            await asyncio.to_thread(op, sandbox_id)
        except CoveError as exc:
            log.error("cleanup of sandbox %s failed: %s", sandbox_id, exc.message)


def _or(value: str | None, current: str | None) -> str | None:
    """A new allow-list value: None keeps ``current``, "" clears it."""
    if value is None:
        return current
    return value or None


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value

