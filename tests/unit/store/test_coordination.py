"""Two API replicas' coordination on a real PostgreSQL: a sandbox's lock excludes the
other replica, the once-only jobs have one leader, and a dead replica's lease
passes to another."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from cove.core.coordination import LockBusy
from cove.store.coordination import PgCoordination
from cove.store.migrate import upgrade
from cove.store.sql import make_engine


@pytest.fixture
def url(postgres_url: str) -> Iterator[str]:
    engine = make_engine(postgres_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM leases"))
    engine.dispose()
    yield postgres_url


async def test_a_sandbox_lock_excludes_the_other_replica(url: str) -> None:
    a, b = PgCoordination(url, 15), PgCoordination(url, 15)
    try:
        order: list[str] = []
        async with a.sandbox_lock("s1"):
            with pytest.raises(LockBusy):
                async with b.sandbox_lock("s1", wait=False):
                    pass
            async with b.sandbox_lock("s2", wait=False):  # another sandbox: free
                pass

            async def second() -> None:
                async with b.sandbox_lock("s1"):
                    order.append("b")

            waiting = asyncio.ensure_future(second())
            await asyncio.sleep(0.2)
            assert not waiting.done()
            order.append("a")
        await asyncio.wait_for(waiting, 10)
        assert order == ["a", "b"]
        async with b.sandbox_lock("s1", wait=False):  # released by both
            pass
    finally:
        await a.close()
        await b.close()


async def test_a_lock_is_released_when_the_operation_fails(url: str) -> None:
    a, b = PgCoordination(url, 15), PgCoordination(url, 15)
    try:
        with pytest.raises(RuntimeError):
            async with a.sandbox_lock("s1"):
                raise RuntimeError("boom")
        async with b.sandbox_lock("s1", wait=False):
            pass
    finally:
        await a.close()
        await b.close()


async def test_one_leader_and_a_dead_ones_lease_passes_on(url: str) -> None:
    a, b = PgCoordination(url, 1), PgCoordination(url, 1)
    try:
        a.renew()
        b.renew()
        assert a.leader and not b.leader
        assert a.alive() == {a.replica_id, b.replica_id}
        # a dies (stops renewing): b takes over once the lease expired, never before
        deadline = time.monotonic() + 10
        while not b.leader:
            assert time.monotonic() < deadline
            b.renew()
            await asyncio.sleep(0.1)
        assert b.alive() == {b.replica_id}
        a.renew()
        assert not a.leader  # it came back: b keeps the jobs
    finally:
        await a.close()
        await b.close()


async def test_a_clean_stop_hands_the_jobs_over_at_once(url: str) -> None:
    a, b = PgCoordination(url, 60), PgCoordination(url, 60)
    try:
        a.renew()
        b.renew()
        assert a.leader and not b.leader
        await a.close()
        b.renew()
        assert b.leader and b.alive() == {b.replica_id}
    finally:
        await b.close()


async def test_nested_locks_never_wait_for_a_turn(url: str) -> None:
    """Every turn taken by an operation that takes another sandbox's lock inside
    (a delete removing its linked sandboxes) would deadlock if the inner lock waited."""
    a = PgCoordination(url, 15)
    a._slots = asyncio.Semaphore(2)  # noqa: SLF001 - two turns only
    try:
        async def outer(n: int) -> None:
            async with a.sandbox_lock(f"outer-{n}"):
                await asyncio.sleep(0.05)
                inner = asyncio.ensure_future(_inner(a, n))  # as ops.spawn does
                await inner

        await asyncio.wait_for(asyncio.gather(*(outer(n) for n in range(4))), 30)
    finally:
        await a.close()


async def _inner(a: PgCoordination, n: int) -> None:
    async with a.sandbox_lock(f"inner-{n}"):
        pass
