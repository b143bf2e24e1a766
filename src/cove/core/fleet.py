"""Several runners behind one API: the registry's language, placement, and the
fleet's keeper (heartbeats, a runner's loss and return, drains).

A runner is ``ready`` (takes new sandboxes), ``cordoned`` (keeps serving its
sandboxes, takes no new one) or ``draining`` (its sandboxes are archived to the
shared object store and leave it); the heartbeat adds ``unreachable``. The
sandboxes of a runner that stops answering become ``error`` (recoverable, "runner
X unreachable") and come back to what the runner has when it answers again.
"""

from __future__ import annotations

import asyncio
import builtins
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol

from cove.core.periodic import every
from cove.core.ports import Capacity, ContainerStatus, Resources
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.errors import CoveError, NotFound, Unavailable

if TYPE_CHECKING:
    from cove.core.lifecycle import LifecycleService

S = SandboxState
log = logging.getLogger(__name__)
GiB = 1024**3
LOCAL = "local"  # the id of the embedded runner (and of COVE_RUNNER_URL's)
# The home of a volume whose data was moved off its runner (a drain) into the shared
# archive store: the runner its next sandbox is placed on brings it back.
IN_ARCHIVE = "archive"


class RunnerState(enum.StrEnum):
    READY = "ready"
    CORDONED = "cordoned"
    DRAINING = "draining"
    UNREACHABLE = "unreachable"  # shown only: the heartbeat's verdict


@dataclass(frozen=True)
class RunnerInfo:
    """One registered runner and what it last reported."""

    id: str
    name: str
    url: str | None  # None: the embedded runner of ``cove serve``
    state: RunnerState  # the operator's: ready, cordoned or draining
    reachable: bool
    capacity: Capacity
    last_heartbeat: datetime | None
    created_at: datetime

    @property
    def shown_state(self) -> RunnerState:
        return self.state if self.reachable else RunnerState.UNREACHABLE


@dataclass(frozen=True)
class Allocation:
    """What the sandboxes placed on a runner were given (cores, GiB, GiB, count)."""

    cpu: int = 0
    memory: int = 0
    disk: int = 0
    sandboxes: int = 0


class RunnerStore(Protocol):
    """The runners registry and each sandbox's runner."""

    def list(self) -> builtins.list[RunnerInfo]: ...

    def get(self, id_or_name: str) -> RunnerInfo:
        """Raises NotFound."""

    def add(self, name: str, url: str) -> RunnerInfo:
        """Raises Conflict: the name or URL is registered."""

    def set_url(self, runner_id: str, url: str | None) -> None: ...

    def set_state(self, runner_id: str, state: RunnerState) -> None: ...

    def set_reachable(self, runner_id: str, reachable: bool) -> None: ...

    def heartbeat(self, runner_id: str, capacity: Capacity, at: datetime) -> None: ...

    def remove(self, runner_id: str) -> None:
        """Raises Conflict: sandboxes are still on it."""

    def runner_of(self, sandbox_id: str) -> str | None:
        """The id of the runner the sandbox is on (None: none, or no such sandbox)."""

    def assign(self, sandbox_id: str, runner_id: str | None) -> bool:
        """Record the sandbox's runner; False: the sandbox has no record."""

    def sandboxes_on(self, runner_id: str) -> builtins.list[str]: ...

    def allocations(self) -> dict[str, Allocation]:
        """Per runner id: what its live sandboxes hold (cores and memory of the ones
        that may run, disk and count of all)."""

    def volume_homes(self, volume_ids: builtins.list[str]) -> dict[str, VolumeHome]:
        """Where the data of each of the volumes is (a volume not found is left out)."""

    def bind_volumes(self, volume_ids: builtins.list[str], home: str) -> None:
        """Record ``home`` (a runner's id, or a shared volumes dir's) as the home of
        each of the volumes that has none yet (or is IN_ARCHIVE); the others keep theirs."""

    def volumes_on(self, runner_id: str) -> dict[str, str]:
        """The volumes whose data is on the runner's own volumes dir: id -> name."""

    def move_volume(self, volume_id: str, home: str, to: str | None) -> bool:
        """Record ``to`` as the volume's home if it is ``home``; whether it was."""


@dataclass(frozen=True)
class VolumeHome:
    """Where a volume's data is (for placement and its errors)."""

    name: str
    home: str | None  # a runner's id, a shared volumes dir's id, or None: nowhere yet


@dataclass(frozen=True)
class Constraint:
    """Which runners a sandbox may go to (``fits``), and why when none of them takes
    new sandboxes now (``why``: the error's message)."""

    fits: Callable[[RunnerInfo], bool]
    why: str


def place(runners: list[RunnerInfo], allocations: Mapping[str, Allocation],
          resources: Resources, snapshot: str, has_snapshot: Callable[[str], bool],
          fetches: Callable[[str], bool], constraint: Constraint | None = None
          ) -> RunnerInfo:  # fmt: skip
    """The runner a new sandbox goes to: among the ready, reachable ones that fit the
    ``constraint`` (the runner holding its volumes' data) and have its snapshot (else
    that can fetch it from the store the runners share), the one left with the most
    free capacity (the least free of CPU, memory, disk and sandbox slots, as
    fractions; then their mean; then the fewest sandboxes).

    Args:
        snapshot: the sandbox's snapshot (its ref).
        has_snapshot: whether runner id has it (its rootfs).
        fetches: whether runner id fetches snapshots it lacks from the shared store.
        constraint: the runners it must go to, if any (see :func:`volume_constraint`).

    Raises:
        Unavailable: no runner takes sandboxes (all cordoned, draining, unreachable
            or full), none of those the constraint allows does (its ``why``), or
            none of those has the snapshot or can fetch it.
    """
    candidates = hosts(runners, snapshot, has_snapshot, fetches, constraint)

    def free(r: RunnerInfo) -> tuple[float, float, int]:
        cap, used = r.capacity, allocations.get(r.id, Allocation())
        fractions = []
        if cap.cpu:
            fractions.append((cap.cpu - used.cpu - resources.cpu) / cap.cpu)
        if cap.memory:
            left = min(cap.memory - (used.memory + resources.memory) * GiB,
                       cap.memory_free - resources.memory * GiB)  # fmt: skip
            fractions.append(left / cap.memory)
        if cap.disk:
            fractions.append((cap.disk_free - resources.disk * GiB) / cap.disk)
        if cap.max_sandboxes:
            fractions.append((cap.max_sandboxes - used.sandboxes - 1) / cap.max_sandboxes)
        mean = sum(fractions) / len(fractions) if fractions else 0.0
        return (min(fractions, default=0.0), mean, -used.sandboxes)

    return max(candidates, key=free)


def hosts(runners: list[RunnerInfo], snapshot: str, has_snapshot: Callable[[str], bool],
          fetches: Callable[[str], bool], constraint: Constraint | None = None
          ) -> list[RunnerInfo]:  # fmt: skip
    """The runners a new sandbox of ``snapshot`` may go to (see :func:`place`).

    Raises:
        Unavailable: none.
    """
    usable = [r for r in runners if r.state is RunnerState.READY and r.reachable
              and not (r.capacity.max_sandboxes and r.capacity.sandboxes
                       >= r.capacity.max_sandboxes)]  # fmt: skip
    if not usable:
        raise Unavailable("no runner takes new sandboxes now (all are cordoned, draining, "
                          "unreachable or full)")  # fmt: skip
    if constraint is not None:
        usable = [r for r in usable if constraint.fits(r)]
        if not usable:
            raise Unavailable(constraint.why)
    found = [r for r in usable if has_snapshot(r.id)] or [r for r in usable if fetches(r.id)]
    if not found:
        raise Unavailable(
            f"no runner that holds snapshot {snapshot} takes new sandboxes now (they are "
            "cordoned, draining, unreachable or full), and the runners share no snapshot "
            "store to fetch it from (COVE_ARCHIVE_S3_BUCKET)")
    return found


def volume_constraint(homes: Iterable[VolumeHome], runners: Mapping[str, RunnerInfo],
                      store_of: Callable[[str], str | None]) -> Constraint | None:  # fmt: skip
    """Where a sandbox mounting volumes with these homes may go: the runner holding
    each one's data in its own volumes dir, or any runner of the shared volumes dir
    holding it (``store_of``: runner id -> the shared dir's id, or None). None when no
    volume has data on a runner (none yet, or moved to the archive store): placement
    chooses, then records its choice."""
    bound = [h for h in homes if h.home not in (None, IN_ARCHIVE)]
    if not bound:
        return None

    def fits(runner: RunnerInfo) -> bool:
        return all(h.home in (runner.id, store_of(runner.id)) for h in bound)

    return Constraint(fits, _why(bound, runners, store_of))


def _why(bound: list[VolumeHome], runners: Mapping[str, RunnerInfo],
         store_of: Callable[[str], str | None]) -> str:  # fmt: skip
    """Why no runner takes a sandbox mounting the ``bound`` volumes now."""
    if len({h.home for h in bound}) > 1:
        return (f"volumes {', '.join(h.name for h in bound)} keep their data on different "
                f"runners: one sandbox cannot mount them together")  # fmt: skip
    volume, home = bound[0].name, bound[0].home
    runner = runners.get(home or "")
    if runner is not None:
        state = runner.shown_state if runner.shown_state is not RunnerState.READY else "full"
        return (f"volume {volume} keeps its data on runner {runner.name}, which takes no "
                f"new sandboxes now ({state}); uncordon it, or see docs/deployment.md for "
                f"moving a volume")  # fmt: skip
    sharing = sorted(r.name for r in runners.values() if store_of(r.id) == home)
    if sharing:
        return (f"volume {volume} keeps its data in the volumes dir shared by runners "
                f"{', '.join(sharing)}, none of which takes new sandboxes now")  # fmt: skip
    return (f"volume {volume} keeps its data on a runner (or a shared volumes dir) that "
            f"no registered runner answers for now")  # fmt: skip


class Member(Protocol):
    """What the keeper asks of one runner besides the Runner port."""

    async def capacity(self) -> Capacity: ...

    async def status(self, sandbox_id: str) -> ContainerStatus: ...


class Releaser(Protocol):
    async def release(self, sandbox_id: str) -> None:
        """Take an archived sandbox off its runner, its archive kept."""

    async def archive_volume(self, volume_id: str, runner_id: str) -> int:
        """Move a volume's data off runner ``runner_id`` into the shared archive store."""


# Where a sandbox whose runner came back ends up, by what the runner has.
_BACK: dict[ContainerStatus, SandboxState] = {
    ContainerStatus.RUNNING: S.STARTED,
    ContainerStatus.PAUSED: S.PAUSED,
    ContainerStatus.STOPPED: S.STOPPED,
    ContainerStatus.ARCHIVED: S.ARCHIVED,
}
# States in which a sandbox has nothing on its runner that its loss could take.
_NOT_ON_HOST = {S.ARCHIVED, S.ERROR, S.DESTROYED, S.BUILD_FAILED}


def lost_reason(name: str) -> str:
    return f"runner {name} unreachable"


class Fleet:
    """Keeps the registry true: pings every runner each ``interval`` seconds, marks a
    runner silent for ``lost_after`` seconds unreachable (its sandboxes ``error``) and
    brings them back when it answers, and drains the runners being drained; on the
    replica holding the ``jobs`` lease only (one host: always).

    Args:
        lifecycle: the lifecycle service (its runner is the routing one).
        store: the registry.
        members: the runners by id, kept current by ``sync`` (the routing runner's).
        sync: called each round first: connects runners added since, drops removed ones.
    """

    def __init__(self, *, lifecycle: LifecycleService, store: RunnerStore,
                 members: Callable[[], Mapping[str, Member]],
                 sync: Callable[[], Awaitable[None]], releaser: Releaser,
                 interval: float, lost_after: float) -> None:  # fmt: skip
        self.lifecycle, self.store, self.members, self.sync = lifecycle, store, members, sync
        self.releaser = releaser
        self.interval, self.lost_after = interval, lost_after
        self._answered: dict[str, float] = {}  # runner id: monotonic time of its last answer
        self._drains: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        await every(self.interval, self.beat, "runner heartbeat round")

    async def beat(self) -> None:
        """One round: ping every runner, act on losses, returns and drains.

        With several API replicas only the one running the once-only jobs does (two
        keepers would both fail and settle each sandbox, and both drain a runner);
        the others only follow the registry it keeps (reachability, capacity, and
        the runners added or removed since)."""
        await self.sync()
        if not self.lifecycle.ops.coordination.leader:
            self._answered.clear()  # should it lead later, a runner's silence counts anew
            return
        members = self.members()
        runners = {r.id: r for r in self.store.list()}
        await asyncio.gather(*(self._ping(runners[rid], m) for rid, m in members.items()
                               if rid in runners))  # fmt: skip
        for runner in self.store.list():
            if (runner.state is RunnerState.DRAINING and runner.reachable
                    and runner.id not in self._drains):  # fmt: skip
                task = asyncio.create_task(self._drain(runner))
                self._drains[runner.id] = task
                task.add_done_callback(partial(self._drained, runner.id))

    def _drained(self, runner_id: str, _task: object) -> None:
        self._drains.pop(runner_id, None)

    async def _ping(self, runner: RunnerInfo, member: Member) -> None:
        now = time.monotonic()
        try:
            capacity = await asyncio.wait_for(member.capacity(), max(self.lost_after, 5.0))
        except (CoveError, TimeoutError) as exc:
            since = self._answered.setdefault(runner.id, now)
            if runner.reachable and now - since >= self.lost_after:
                log.warning("runner %s lost: %s", runner.name, exc)
                await self._lost(runner)
            return
        self._answered[runner.id] = now
        self.store.heartbeat(runner.id, capacity, utcnow())
        if not runner.reachable:
            log.info("runner %s answers again", runner.name)
            self.store.set_reachable(runner.id, True)
            await self.sync()
            await self._back(runner, member)

    async def _lost(self, runner: RunnerInfo) -> None:
        """Mark the runner unreachable and the sandboxes it holds ``error``."""
        self.store.set_reachable(runner.id, False)
        await self.sync()  # no call goes there any more, no sandbox is placed there
        reason = lost_reason(runner.name)
        for sandbox_id in self.store.sandboxes_on(runner.id):
            await self._on(sandbox_id, lambda sb: self._fail(sb, reason))

    async def _fail(self, sandbox: Sandbox, reason: str) -> None:
        if sandbox.state not in _NOT_ON_HOST:
            await self.lifecycle.ops.fail(sandbox, reason, recoverable=True)

    async def _back(self, runner: RunnerInfo, member: Member) -> None:
        """Give the sandboxes its loss put in ``error`` what the runner has of them."""
        reason = lost_reason(runner.name)
        for sandbox_id in self.store.sandboxes_on(runner.id):

            async def settle(sandbox: Sandbox) -> None:
                if sandbox.state is not S.ERROR or sandbox.error_reason != reason:
                    return
                status = await member.status(sandbox.id)
                if status in _BACK:
                    await self.lifecycle.ops.set_state(sandbox, _BACK[status])
                else:
                    await self.lifecycle.ops.fail(
                        sandbox, f"its files were lost with runner {runner.name}",
                        recoverable=False)  # fmt: skip

            await self._on(sandbox_id, settle)

    async def _on(self, sandbox_id: str, act: Callable[[Sandbox], Awaitable[None]]) -> None:
        ops = self.lifecycle.ops

        async def locked() -> None:
            try:
                await act(ops.store.get_by_id(sandbox_id))
            except NotFound:
                pass

        try:
            await ops.run(sandbox_id, locked)
        except CoveError as exc:
            log.error("sandbox %s: %s", sandbox_id, exc.message)

    async def _drain(self, runner: RunnerInfo) -> None:
        """Archive every sandbox of the runner to the shared store and take it off the
        runner (a later start restores it on another); unclaimed warm-pool sandboxes
        are deleted."""
        lifecycle = self.lifecycle
        for sandbox_id in self.store.sandboxes_on(runner.id):
            try:
                if self.store.get(runner.id).state is not RunnerState.DRAINING:
                    return  # uncordoned (or removed) meanwhile
                if self.store.runner_of(sandbox_id) != runner.id:
                    continue  # moved off since (another replica's drain, a restore)
                sandbox = lifecycle.store.get_by_id(sandbox_id)
                if not sandbox.organization_id:  # waiting in a warm pool
                    await lifecycle.ops.run(sandbox_id, partial(lifecycle.ops.remove, sandbox))
                    continue
                if sandbox.state is not S.ARCHIVED:
                    sandbox = await lifecycle.archive(sandbox.organization_id, sandbox_id)
                if sandbox.state is S.ARCHIVED:
                    await lifecycle.ops.run(sandbox_id, partial(self.releaser.release,
                                                                sandbox_id))  # fmt: skip
                    log.info("runner %s: sandbox %s archived off it", runner.name, sandbox_id)
                else:
                    log.warning("runner %s: sandbox %s is %s, not drained", runner.name,
                                sandbox_id, sandbox.state)  # fmt: skip
            except NotFound:
                continue
            except CoveError as exc:
                log.error("draining sandbox %s off runner %s: %s", sandbox_id, runner.name,
                          exc.message)  # fmt: skip
        await self._drain_volumes(runner)

    async def _drain_volumes(self, runner: RunnerInfo) -> None:
        """Once no sandbox is left on the runner: move the data of the volumes kept in
        its own volumes dir to the shared archive store; each comes back on the runner
        its next sandbox is placed on (a runner without a shared store keeps them)."""
        if self.store.sandboxes_on(runner.id):
            return  # some were not drained (the log says why): they may mount them
        for volume_id, name in self.store.volumes_on(runner.id).items():
            if self.store.get(runner.id).state is not RunnerState.DRAINING:
                return
            try:
                await self.releaser.archive_volume(volume_id, runner.id)
            except CoveError as exc:
                log.error("runner %s: volume %s not moved off it: %s", runner.name, name,
                          exc.message)  # fmt: skip
                continue
            self.store.move_volume(volume_id, runner.id, IN_ARCHIVE)
            log.info("runner %s: volume %s moved to the archive store", runner.name, name)
