"""Make the records match what is really on the host.

Runs when the server starts (after a clean exit, a crash or ``kill -9``) and
periodically while it runs. Running sandboxes are adopted as they are; a
sandbox whose container died is reported ``stopped`` (its files are intact) or
``error`` (they are gone), never ``started``; operations a crash interrupted
are finished or rolled back; leftovers nobody owns are removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import timedelta
from functools import partial

from cove.core.coordination import LockBusy
from cove.core.lifecycle import BUILDING, LifecycleService
from cove.core.ops import container_spec
from cove.core.periodic import every
from cove.core.ports import ContainerStatus
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.errors import CoveError, NotFound, Unavailable

S = SandboxState
C = ContainerStatus
log = logging.getLogger(__name__)

# A record a create (or build) has just written, before it holds the sandbox's lock:
# the periodic watch leaves it alone this long.
_BEGUN = frozenset({S.CREATING, S.PENDING_BUILD, S.PULLING_SNAPSHOT, S.BUILDING_SNAPSHOT})
_BEGIN = timedelta(seconds=60)

# Where a sandbox whose host status is known ends up, by recorded state.
_AT_REST: dict[ContainerStatus, SandboxState] = {
    C.RUNNING: S.STARTED,
    C.PAUSED: S.PAUSED,
    C.STOPPED: S.STOPPED,
    C.ARCHIVED: S.ARCHIVED,
}


async def reconcile(service: LifecycleService, *, remove_orphans: bool = True,
                    wait: bool = True) -> None:  # fmt: skip
    """Reconcile every sandbox record with the host.

    Args:
        service: the lifecycle service (store, runner, operations).
        remove_orphans: at server start: also remove what operations the previous
            server process was running left (half-written archives, capture mounts
            and work dirs), remove sandboxes no record names (build sandboxes
            among them), and archive again the sandboxes whose archive it interrupted.
        wait: wait for operations under way (else skip their sandboxes this time).
    """
    sandboxes = service.store.all()
    if remove_orphans:
        await _logged(service.runner.remove_stale_work(), "removing stale snapshot work")
    interrupted: list[Sandbox] = []
    for sandbox in sandboxes:
        if service.building(sandbox.id):
            continue  # its build holds the lock; do not wait for it
        if remove_orphans and sandbox.state is S.ARCHIVING:
            interrupted.append(sandbox)
        one = partial(_reconcile_one, service, sandbox.id, tidy=remove_orphans)
        try:
            await service.ops.run(sandbox.id, one, wait=wait)
        except LockBusy:  # an operation (here or on another replica) holds it
            log.debug("sandbox %s is busy: reconciled next time", sandbox.id)
        except NotFound:  # deleted since the list was read: an expected race
            log.debug("sandbox %s was deleted while reconciling", sandbox.id)
        except Unavailable as exc:  # its runner is lost: cove.core.fleet handles that
            log.debug("sandbox %s not reconciled: %s", sandbox.id, exc.message)
        except CoveError as exc:
            log.error("reconciling sandbox %s failed: %s", sandbox.id, exc.message)
    if remove_orphans:
        await _remove_orphans(service, {sb.id for sb in sandboxes})
    await _logged(service.end_orphaned_logs(), "ending orphaned build logs")
    for sandbox in interrupted:  # in the background: archiving may take long
        asyncio.ensure_future(_logged(_archive_again(service, sandbox), "archiving again"))


async def _archive_again(service: LifecycleService, sandbox: Sandbox) -> None:
    """Archive a sandbox whose archive a server restart interrupted (it was rolled
    back to ``stopped``), as its client or timer asked."""
    current = service.store.get_by_id(sandbox.id)
    if current.state is S.STOPPED:
        log.info("sandbox %s: archiving again after a restart", sandbox.id)
        await service.archive(sandbox.organization_id, sandbox.id)


async def _logged(work: Awaitable[None], what: str) -> None:
    try:
        await work
    except NotFound:
        pass  # deleted meanwhile
    except CoveError as exc:
        log.error("%s failed: %s", what, exc.message)


async def _reconcile_one(service: LifecycleService, sandbox_id: str, *, tidy: bool = False
                         ) -> None:  # fmt: skip
    sandbox = service.store.get_by_id(sandbox_id)
    runner = service.runner
    if (not tidy and sandbox.state in _BEGUN and utcnow() - sandbox.state_changed_at < _BEGIN
            and not service.orphaned_build(sandbox.id)):  # fmt: skip
        return  # just recorded: its creator (maybe another replica) takes its lock next
    if sandbox.state is S.DESTROYING:
        await service.ops.remove(sandbox)  # (under its lock already)
        return
    if sandbox.state in BUILDING:
        if not service.building(sandbox.id):  # its replica is gone (it held the lock)
            await service.end_build(sandbox)
        return
    if sandbox.state is S.BUILD_FAILED:
        return
    if sandbox.state is S.CREATING:
        await runner.destroy(sandbox.id)
        reason = "creation was interrupted by a server restart"
        await service.ops.fail(sandbox, reason, recoverable=True)
        return
    if tidy:
        await runner.tidy(sandbox.id)
    status = await runner.status(sandbox.id)
    if sandbox.state is S.SNAPSHOTTING and status == C.PAUSED:
        await runner.resume(sandbox.id)  # the interrupted capture had frozen it
        status = await runner.status(sandbox.id)
    if sandbox.state is S.STOPPING or (
        sandbox.state is S.STOPPED and status in (C.RUNNING, C.PAUSED)
    ):
        await runner.stop(sandbox.id, force=True)
        status = await runner.status(sandbox.id)
    elif status not in (C.RUNNING, C.PAUSED):
        # Nothing runs: clear what a dead container or interrupted start left mounted.
        await runner.stop(sandbox.id, force=True)
    await _settle(service, sandbox, status)


async def _settle(service: LifecycleService, sandbox: Sandbox, status: ContainerStatus) -> None:
    if status is C.ABSENT:
        if sandbox.state is not S.ERROR:
            reason = "the sandbox's files are missing on the host"
            await service.ops.fail(sandbox, reason, recoverable=False)
        return
    target = _AT_REST[status]
    if sandbox.state is S.ERROR or sandbox.state is target:
        return
    if sandbox.state is S.ARCHIVED and status is not C.ARCHIVED:
        await service.ops.fail(sandbox, "the sandbox's archive is missing", recoverable=True)
        return
    log.info("sandbox %s: %s -> %s (host says %s)", sandbox.id, sandbox.state, target, status)
    await service.ops.set_state(sandbox, target)


async def _remove_orphans(service: LifecycleService, known: set[str]) -> None:
    orphans = await service.runner.list_ids()
    for sandbox_id in orphans - known:
        log.warning("removing leftovers of unknown sandbox %s", sandbox_id)
        await service.ops.clean_up(sandbox_id)


async def restore_networks(service: LifecycleService) -> None:
    """Re-apply every started sandbox's firewall and re-attach its DNS forwarder
    (rules and interfaces outlive the server; its listeners do not)."""
    for sandbox in service.store.all():
        if sandbox.state not in (S.STARTED, S.PAUSED):
            continue
        try:
            policy = container_spec(sandbox).network
            await service.runner.set_network(sandbox.id, policy)
        except CoveError as exc:
            log.error("restoring the network of sandbox %s failed: %s", sandbox.id, exc.message)


async def watch(service: LifecycleService, *, interval: float = 5.0) -> None:
    """Reconcile every ``interval`` seconds while the server runs, so a sandbox
    whose container dies (say its init was OOM-killed) is reported within seconds.
    Sandboxes an operation holds are left for the next round; with several API
    replicas, only the one running the once-only jobs watches."""
    async def step() -> None:
        if service.ops.coordination.leader:
            await reconcile(service, remove_orphans=False, wait=False)

    await every(interval, step, "periodic reconciliation", wait_first=True)
