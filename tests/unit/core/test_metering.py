"""Usage periods from lifecycle changes, per-second totals, charts and crash recovery."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from cove.core import metering
from cove.core.metering import Meter, Period, Prices
from cove.core.ports import ContainerStatus, Resources
from cove.core.quotas import Charge
from cove.core.sandbox import Sandbox, SandboxState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRICES = Prices(cpu=0.000014, memory=0.0000045, disk=0.00000003, free_disk=5)


class MemoryUsage:
    def __init__(self) -> None:
        self.rows: list[Period] = []

    def switch(self, sandbox_id: str, at: datetime, period: Period | None) -> None:
        self.rows = [dataclasses.replace(p, end_at=max(at, p.start_at))
                     if p.sandbox_id == sandbox_id and p.end_at is None else p
                     for p in self.rows]  # fmt: skip
        if period is not None:
            self.rows.append(period)

    def switch_all(self, changes: list[tuple[str, datetime, Period | None]]) -> None:
        rows = list(self.rows)
        try:
            for change in changes:
                self.switch(*change)
        except Exception:
            self.rows = rows  # (one transaction)
            raise

    def open_periods(self) -> list[Period]:
        return [p for p in self.rows if p.end_at is None]

    def periods(self, organization_id: str, start: datetime, end: datetime,
                sandbox_id: str | None = None) -> list[Period]:  # fmt: skip
        return [p for p in self.rows if p.organization_id == organization_id
                and p.start_at < end and (p.end_at is None or p.end_at > start)
                and sandbox_id in (None, p.sandbox_id)]  # fmt: skip

    def mark_seen(self, at: datetime) -> int:
        self.rows = [dataclasses.replace(p, seen_at=at) if p.end_at is None else p
                     for p in self.rows]  # fmt: skip
        return len(self.open_periods())


def _sandbox(state: SandboxState, at: datetime, **kw: object) -> Sandbox:
    fields = {"id": "sb", "organization_id": "org", "name": "sb", "snapshot": "s",
              "user": "daytona", "resources": Resources(cpu=2, memory=4, disk=10), **kw}
    return Sandbox(state=state, state_changed_at=at, **fields)  # type: ignore[arg-type]


def test_a_lifecycle_makes_one_row_per_change_of_what_is_held() -> None:
    store = MemoryUsage()
    meter = Meter(store, PRICES)
    for state, second in [(SandboxState.CREATING, 0), (SandboxState.STARTED, 1),
                          (SandboxState.STOPPING, 100), (SandboxState.STOPPED, 101),
                          (SandboxState.ARCHIVING, 200), (SandboxState.ARCHIVED, 300),
                          (SandboxState.RESTORING, 400), (SandboxState.STARTED, 401)]:
        meter.observe(_sandbox(state, T0 + timedelta(seconds=second)))
    assert [(p.held, p.start_at, p.end_at) for p in store.rows] == [
        (Charge(2, 4, 10), T0, T0 + timedelta(seconds=101)),
        (Charge(disk=10), T0 + timedelta(seconds=101), T0 + timedelta(seconds=300)),
        (Charge(2, 4, 10), T0 + timedelta(seconds=400), None),
    ]
    assert meter.writes == 5  # 3 opened, 2 closed


def test_totals_are_allocated_times_seconds_clipped_to_the_range() -> None:
    store = MemoryUsage()
    meter = Meter(store, PRICES)
    meter.observe(_sandbox(SandboxState.STARTED, T0))
    meter.observe(_sandbox(SandboxState.STOPPED, T0 + timedelta(seconds=100)))
    meter.observe(_sandbox(SandboxState.DESTROYED, T0 + timedelta(seconds=200)))
    periods = meter.periods("org", T0 + timedelta(seconds=50), T0 + timedelta(seconds=150))
    totals = meter.totals(periods, T0 + timedelta(seconds=150))
    assert (totals.cpu_seconds, totals.ram_gib_seconds, totals.disk_gib_seconds) == (
        100, 200, 1000)
    # price: 2 vCPU x 50 s, 4 GiB x 50 s, and disk beyond the free 5 GiB for 100 s
    assert abs(totals.price - (100 * 0.000014 + 200 * 0.0000045 + 5 * 100 * 0.00000003)) < 1e-12
    assert meter.periods("other", T0, T0 + timedelta(days=1)) == []
    chart = meter.chart(periods, T0, T0 + timedelta(seconds=300))
    assert [round(t.cpu_seconds) for _, t in chart] == [20, 80, 0, 0, 0]  # minutes
    assert sum(t.disk_gib_seconds for _, t in chart) == 1000


def test_a_pooled_sandbox_is_nobodys_and_a_resize_starts_a_new_period() -> None:
    store = MemoryUsage()
    meter = Meter(store, PRICES)
    meter.observe(_sandbox(SandboxState.STARTED, T0, organization_id=""))
    assert store.rows == []
    meter.observe(_sandbox(SandboxState.STARTED, T0))
    meter.observe(_sandbox(SandboxState.RESIZING, T0 + timedelta(seconds=5)))
    bigger = Resources(cpu=4, memory=4, disk=10)
    meter.observe(_sandbox(SandboxState.STARTED, T0 + timedelta(seconds=6), resources=bigger))
    assert [(p.held.cpu, p.end_at) for p in store.rows] == [
        (2, T0 + timedelta(seconds=6)), (4, None)]


def test_recovery_after_a_crash() -> None:
    store = MemoryUsage()
    meter = Meter(store, PRICES)
    kept = _sandbox(SandboxState.STARTED, T0, id="kept")
    died = _sandbox(SandboxState.STARTED, T0, id="died")
    gone = _sandbox(SandboxState.STOPPED, T0, id="gone")
    missed = _sandbox(SandboxState.STARTED, T0 + timedelta(seconds=3), id="missed")
    for sb in (kept, died, gone):
        meter.observe(sb)
    store.mark_seen(T0 + timedelta(seconds=30))
    statuses = {"kept": ContainerStatus.RUNNING, "died": ContainerStatus.STOPPED,
                "gone": ContainerStatus.ABSENT, "missed": ContainerStatus.RUNNING}

    class Runner:
        async def status(self, sandbox_id: str) -> ContainerStatus:
            return statuses[sandbox_id]

    after = Meter(store, PRICES)  # a new server process
    asyncio.run(after.recover(Runner(), [kept, died, gone, missed]))  # type: ignore[arg-type]
    by = {sid: [(p.held, p.start_at, p.end_at) for p in store.rows if p.sandbox_id == sid]
          for sid in statuses}  # fmt: skip
    seen = T0 + timedelta(seconds=30)
    assert by["kept"] == [(Charge(2, 4, 10), T0, None)]
    assert by["died"] == [(Charge(2, 4, 10), T0, seen), (Charge(disk=10), seen, None)]
    assert by["gone"] == [(Charge(disk=10), T0, seen)]
    assert by["missed"] == [(Charge(2, 4, 10), T0 + timedelta(seconds=3), None)]


def test_a_failed_write_loses_nothing() -> None:
    store = MemoryUsage()
    meter = Meter(store, PRICES)
    meter.observe(_sandbox(SandboxState.STARTED, T0))
    real, calls = store.switch, []

    def failing(*args: object) -> None:
        calls.append(args)
        raise OSError("database is locked")

    store.switch = failing  # type: ignore[method-assign]
    try:
        meter.observe(_sandbox(SandboxState.STOPPED, T0 + timedelta(seconds=10)))
    except OSError:
        pass
    store.switch = real  # type: ignore[method-assign]
    meter.observe(_sandbox(SandboxState.STOPPED, T0 + timedelta(seconds=10)))  # retried
    meter.observe(_sandbox(SandboxState.STARTED, T0 + timedelta(seconds=20)))
    assert [(p.held.cpu, p.start_at, p.end_at) for p in store.rows] == [
        (2, T0, T0 + timedelta(seconds=10)),
        (0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)),
        (2, T0 + timedelta(seconds=20), None)]
    assert calls


def test_changes_are_written_after_the_request_in_their_order() -> None:
    store = MemoryUsage()
    meter = Meter(store, PRICES)
    t10, t20 = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)

    async def lifecycle() -> list[Period]:
        meter.observe(_sandbox(SandboxState.STARTED, T0))
        meter.observe(_sandbox(SandboxState.STOPPED, t10))
        meter.observe(_sandbox(SandboxState.STARTED, t20))
        assert store.rows == []  # the request that made them did not wait for a write
        return meter.periods("org", T0, t20 + timedelta(seconds=5))  # writes what waits

    periods = asyncio.run(lifecycle())
    assert [(p.held.cpu, p.start_at, p.end_at) for p in periods] == [
        (2, T0, t10), (0, t10, t20), (2, t20, None)]
    assert [(p.held.cpu, p.start_at, p.end_at) for p in store.rows] == [
        (2, T0, t10), (0, t10, t20), (2, t20, None)]


def test_a_failed_background_write_is_tried_again() -> None:
    store = MemoryUsage()
    meter = Meter(store, PRICES)
    real = store.switch
    t10 = T0 + timedelta(seconds=10)

    def failing(*args: object) -> None:
        raise OSError("database is locked")

    async def lifecycle() -> None:
        store.switch = failing  # type: ignore[method-assign]
        meter.observe(_sandbox(SandboxState.STARTED, T0))  # nothing raised to the request
        for _ in range(60):  # (the worker thread tried and failed, after WRITE_DELAY)
            await asyncio.sleep(0.01)
        assert store.rows == []
        store.switch = real  # type: ignore[method-assign]
        meter.observe(_sandbox(SandboxState.STOPPED, t10))
        for _ in range(300):
            if len(store.rows) == 2:
                break
            await asyncio.sleep(0.01)

    asyncio.run(lifecycle())
    assert [(p.held.cpu, p.start_at, p.end_at) for p in store.rows] == [
        (2, T0, t10), (0, t10, None)]


def test_the_heartbeat_writes_what_waits() -> None:
    store = MemoryUsage()
    meter = Meter(store, PRICES)

    async def change() -> None:
        meter.observe(_sandbox(SandboxState.STARTED, T0))
        assert store.rows == []
        meter.mark()  # (before the writer ran: this call does not yield)
        assert [(p.held.cpu, p.start_at) for p in store.rows] == [(2, T0)]
        assert store.rows[0].seen_at is not None and store.rows[0].seen_at > T0

    asyncio.run(change())


def test_recovery_of_changes_the_crash_kept_from_being_written() -> None:
    # Started just before a kill -9: their records say so, no period was written yet.
    store = MemoryUsage()
    t3 = T0 + timedelta(seconds=3)
    runs, died, gone = (_sandbox(SandboxState.STARTED, t3, id=i) for i in ("runs", "died", "gone"))
    statuses = {"runs": ContainerStatus.RUNNING, "died": ContainerStatus.STOPPED,
                "gone": ContainerStatus.ABSENT}

    class Runner:
        async def status(self, sandbox_id: str) -> ContainerStatus:
            return statuses[sandbox_id]

    meter = Meter(store, PRICES)
    asyncio.run(meter.recover(Runner(), [runs, died, gone]))  # type: ignore[arg-type]
    by = {sid: [(p.held, p.start_at, p.end_at) for p in store.rows if p.sandbox_id == sid]
          for sid in statuses}  # fmt: skip
    assert by["runs"] == [(Charge(2, 4, 10), t3, None)]
    assert by["died"] == [(Charge(disk=10), t3, None)]  # its CPU not counted past its start
    assert by["gone"] == []


def test_changes_wait_in_a_bounded_queue_while_the_database_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metering, "PENDING_LIMIT", 3)
    store = MemoryUsage()
    meter = Meter(store, PRICES)

    def away(*args: object) -> None:
        raise OSError("database is away")

    store.switch = away  # type: ignore[method-assign]

    async def churn() -> None:  # (in a loop: changes only wait, nothing raises)
        for i in range(10):
            state = SandboxState.STARTED if i % 2 == 0 else SandboxState.STOPPED
            meter.observe(_sandbox(state, T0 + timedelta(seconds=i)))

    asyncio.run(churn())
    assert len(meter._pending) == 3  # noqa: SLF001 - the newest three, the rest dropped
    del store.switch  # (back)
    meter.mark()
    assert [(p.held.cpu, p.start_at) for p in store.rows] == [  # changes 7, 8 and 9
        (0, T0 + timedelta(seconds=7)), (2, T0 + timedelta(seconds=8)),
        (0, T0 + timedelta(seconds=9))]
