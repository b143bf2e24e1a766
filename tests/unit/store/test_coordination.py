"""Two API replicas' coordination on a real PostgreSQL: a sandbox's lock excludes the
other replica, so does an organization's (its quota admissions: two replicas never
both pass a quota of sandboxes, snapshots or volumes that fits one), the once-only
jobs have one leader, and a dead replica's lease passes to another."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cove.core.config import Settings
from cove.core.coordination import LockBusy
from cove.core.ports import Resources
from cove.core.quotas import Holding, QuotaService, charge
from cove.core.sandbox import SandboxState as S
from cove.errors import OrganizationQuotaExceeded, QuotaExceeded
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


async def test_an_organizations_lock_excludes_the_other_replica(url: str) -> None:
    a, b = PgCoordination(url, 15), PgCoordination(url, 15)
    try:
        async with a.lock("organization", "o1"):
            with pytest.raises(LockBusy):
                async with b.lock("organization", "o1", wait=False):
                    pass
            async with b.lock("organization", "o2", wait=False):  # another organization
                pass
            async with b.lock("organization-snapshots", "o1", wait=False):  # another kind
                pass
            async with b.sandbox_lock("o1", wait=False):  # a sandbox's: another key space
                pass
            with a._engine.connect() as conn:  # noqa: SLF001 - what PostgreSQL holds
                held = conn.execute(text(
                    "SELECT objsubid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())")).scalars().all()  # fmt: skip
            assert held == [2]  # two 32-bit keys: never one of the sandboxes' 64-bit keys
        async with b.lock("organization", "o1", wait=False):  # released
            pass
    finally:
        await a.close()
        await b.close()


class SharedQuotas:
    """One database's quota rows, read by both replicas' services."""

    def __init__(self) -> None:
        self.rows: list[Holding] = []
        self.snapshots = 0
        self.volumes = 0

    def holdings(self, organization_id: str) -> list[Holding]:
        return list(self.rows)

    def snapshot_usage(self, organization_id: str) -> tuple[int, int]:
        return self.snapshots, 0

    def volume_count(self, organization_id: str) -> int:
        return self.volumes

    def quota_overrides(self, organization_id: str) -> dict[str, int | None]:
        return {}

    def set_quota_overrides(self, organization_id: str, fields: dict[str, int | None]) -> None:
        raise NotImplementedError


def _replica(url: str, store: SharedQuotas, settings: Settings) -> QuotaService:
    service = QuotaService(settings=settings, store=store)
    service.coordination = PgCoordination(url, 15)
    return service


async def test_two_replicas_never_both_pass_an_organizations_quota(
    url: str, tmp_path: Path
) -> None:
    store = SharedQuotas()
    settings = Settings(data_dir=tmp_path, runtime="fake", quota_cpu=1, quota_snapshots=1,
                        quota_volumes=1)  # fmt: skip
    replicas = [_replica(url, store, settings), _replica(url, store, settings)]
    one = Resources(1, 1, 1)
    passed: list[str] = []

    async def create(n: int) -> None:
        service = replicas[n % 2]  # each replica has its own in-process lock and pending
        async with service.admit("o", f"s{n}", charge(S.CREATING, one), one, new=True):
            await asyncio.sleep(0.02)  # the insert, while the other replica checks
            store.rows.append(Holding(f"s{n}", S.CREATING, one))
            passed.append(f"s{n}")

    async def snapshot(n: int) -> None:
        async with replicas[n % 2].admit_snapshot("o"):
            await asyncio.sleep(0.02)  # the capture, then the record is stored
            store.snapshots += 1
            passed.append(f"snap{n}")

    async def volume(n: int) -> None:
        async with replicas[n % 2].admit_volume("o"):
            await asyncio.sleep(0.02)  # the other replica checks before the record is stored
            store.volumes += 1
            passed.append(f"vol{n}")

    try:
        results = await asyncio.gather(*(create(n) for n in range(6)), return_exceptions=True)
        assert len(passed) == 1, results
        assert sum(isinstance(r, OrganizationQuotaExceeded) for r in results) == 5
        passed.clear()
        results = await asyncio.gather(*(snapshot(n) for n in range(6)),
                                       return_exceptions=True)  # fmt: skip
        assert len(passed) == 1, results
        assert sum(isinstance(r, QuotaExceeded) for r in results) == 5
        passed.clear()
        results = await asyncio.gather(*(volume(n) for n in range(6)), return_exceptions=True)
        assert len(passed) == 1, results
        assert sum(isinstance(r, QuotaExceeded) for r in results) == 5
    finally:
        for service in replicas:
            await service.coordination.close()


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
