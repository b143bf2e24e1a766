"""What several API replicas rely on in the domain (the fake runtime; the PostgreSQL
side is in tests/unit/store/test_coordination.py): an operation that must not wait
skips a busy sandbox, a timer is judged again under the sandbox's lock, only the
jobs' leader runs the jobs, and the pool keeper leaves a live replica's claim alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from cove.core.coordination import LocalCoordination, LockBusy
from cove.core.lifecycle import LifecycleService
from cove.core.pool import OPERATOR_POOL
from cove.core.reconcile import reconcile
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.core.timers import fire_due
from cove.runner.fake import FakeRuntime
from cove.schemas.sandbox import SandboxCreate
from cove.store.pools import SqlPoolStore
from tests.unit.core.test_pool import keeper, pooled, waiting  # noqa: F401

S = SandboxState


class Follower(LocalCoordination):
    """A replica that does not hold the jobs' lease, beside the live ``others``."""

    def __init__(self, others: set[str] | None = None) -> None:
        super().__init__()
        self.others = others or set()
        self.is_leader = False

    @property
    def leader(self) -> bool:
        return self.is_leader

    def alive(self) -> set[str]:
        return {self.replica_id, *self.others}


class Held(LocalCoordination):
    """Another replica holds every sandbox's lock."""

    @asynccontextmanager
    async def _busy(self, wait: bool) -> AsyncIterator[None]:
        if not wait:
            raise LockBusy("held elsewhere")
        yield

    def sandbox_lock(self, sandbox_id: str, *, wait: bool = True
                     ) -> AbstractAsyncContextManager[None]:  # fmt: skip
        return self._busy(wait)


async def _create(service: LifecycleService, org: str, **fields: object):
    return await service.create(organization_id=org, request=SandboxCreate(**fields))


async def test_an_operation_that_must_not_wait_skips_a_busy_sandbox(
    lifecycle: LifecycleService, org: str
) -> None:
    sb = await _create(lifecycle, org)
    release = asyncio.Event()
    holding = lifecycle.ops.spawn(sb.id, release.wait)
    await asyncio.sleep(0)
    with pytest.raises(LockBusy):
        await lifecycle.ops.run(sb.id, asyncio.sleep, wait=False)  # type: ignore[arg-type]
    release.set()
    await holding
    lifecycle.ops.coordination = Held()  # now another replica holds it
    with pytest.raises(LockBusy):
        await lifecycle.ops.run(sb.id, lambda: asyncio.sleep(0), wait=False)
    await reconcile(lifecycle, remove_orphans=False, wait=False)  # skips it, no error
    assert lifecycle.get(org, sb.id).state is S.STARTED


async def test_a_timer_no_longer_due_under_the_lock_does_not_fire(
    lifecycle: LifecycleService, org: str
) -> None:
    sb = await _create(lifecycle, org, auto_stop_interval=1)

    def touched(sandbox_id: str) -> Sandbox:  # activity through another replica, seen
        lifecycle.store.touch({sb.id: utcnow() + timedelta(minutes=1)})  # once locked
        return real(sandbox_id)

    real = lifecycle.store.get_by_id
    lifecycle.store.get_by_id = touched  # type: ignore[method-assign]
    try:
        assert await fire_due(lifecycle, minute=0.0) == []
    finally:
        del lifecycle.store.get_by_id
    assert lifecycle.get(org, sb.id).state is S.STARTED


async def test_only_the_leader_runs_timers_and_the_watch(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    from cove.core import reconcile as reconciler
    from cove.core import timers

    follower = lifecycle.ops.coordination = Follower()
    sb = await _create(lifecycle, org, auto_stop_interval=1)
    lifecycle.settings = lifecycle.settings.model_copy(update={"minute_seconds": 0.0})
    runs = [asyncio.ensure_future(timers.run_timers(lifecycle, 0.0)),
            asyncio.ensure_future(reconciler.watch(lifecycle, interval=0.01))]  # fmt: skip
    try:
        runtime.boxes.pop(sb.id)  # its container died: the watch would say so
        await asyncio.sleep(0.2)
        assert lifecycle.get(org, sb.id).state is S.STARTED  # a follower did nothing
        follower.is_leader = True
        for _ in range(200):
            if lifecycle.get(org, sb.id).state is not S.STARTED:
                break
            await asyncio.sleep(0.02)
        assert lifecycle.get(org, sb.id).state is not S.STARTED
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)


async def test_the_keeper_leaves_a_live_replicas_claim_alone(
    pooled: LifecycleService, engine: Engine  # noqa: F811
) -> None:
    await keeper(pooled).keep()
    first, second, *_ = sorted(waiting(pooled))
    other = "b" * 32
    pooled.ops.coordination = Follower({other})
    pooled.ops.coordination.is_leader = True  # type: ignore[attr-defined]
    store = SqlPoolStore(engine)
    store.take(f"claim:{other}:x", pool_id=OPERATOR_POOL, sandbox_id=first)  # live: kept
    store.take(f"claim:{'c' * 32}:y", pool_id=OPERATOR_POOL, sandbox_id=second)  # dead one's
    await keeper(pooled).keep()
    ids = {sb.id for sb in pooled.store.all()}
    assert first in ids and second not in ids
