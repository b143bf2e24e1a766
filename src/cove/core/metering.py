"""Per-second usage metering: what each sandbox held, and for how long.

Nothing is written every second. A sandbox's usage is a list of periods, each with
the vCPUs, GiB of memory and GiB of disk it held (see :func:`cove.core.quotas.charge`:
CPU and memory while it runs, disk until it is archived) between two instants; a
period is closed and the next opened only when a lifecycle change alters what it
holds (start, stop, archive, resize, delete), at the sandbox's own
``state_changed_at``. Usage over any range is computed to the second from them.

Open periods are marked alive every ``heartbeat`` seconds (one UPDATE for all). After a
crash, :meth:`Meter.recover` asks the runner: a sandbox that kept running continues
its period; one that died with the server ends it at its last mark (and keeps its disk
period if its files are still there); records changed while the meter could not write
are caught up from their state.

A change's rows are not written on the request that made it (a create, a stop): the
meter notes the change in memory, and a worker thread writes the changes noted within
``WRITE_DELAY`` in one transaction, in their order (not at once: the caller's next
request, say the first command after a create, would share the CPU with the write).
Queries, the heartbeat and the server's stop write what is pending first. A failed
write stays pending and is tried again at the next change or heartbeat; a server killed
before a write lands loses nothing either, as :meth:`Meter.recover` catches the record
up from the sandbox's state at the next start.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cove.core.periodic import every
from cove.core.ports import ContainerStatus, EventSink, Runner
from cove.core.quotas import NOTHING, Charge, charge
from cove.core.sandbox import Sandbox, SandboxState, utcnow

log = logging.getLogger(__name__)
# Chart resolutions: the first that cuts the range into at most MAX_POINTS buckets.
RESOLUTIONS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
MAX_POINTS = 200
# The most changes waiting to be written (the database away for long): past it, the
# oldest are dropped, and the next start's recovery catches their records up.
PENDING_LIMIT = 100_000
WRITE_DELAY = 0.25  # seconds from a change to the write of those noted meanwhile


@dataclass(frozen=True)
class Period:
    """What one sandbox held from ``start_at`` to ``end_at`` (None: still holds it)."""

    sandbox_id: str
    organization_id: str
    held: Charge
    start_at: datetime
    end_at: datetime | None = None
    seen_at: datetime | None = None  # last mark that it was still held


@dataclass(frozen=True)
class Prices:
    """USD per vCPU-second, per GiB-second of memory and of disk beyond ``free_disk``."""

    cpu: float
    memory: float
    disk: float
    free_disk: int = 0

    def of(self, held: Charge, seconds: float) -> tuple[float, float, float]:
        """The price of holding ``held`` for ``seconds``: of its CPU, memory and disk."""
        return (held.cpu * self.cpu * seconds, held.memory * self.memory * seconds,
                max(0, held.disk - self.free_disk) * self.disk * seconds)  # fmt: skip


@dataclass
class Totals:
    """Usage summed over a range: vCPU-, GiB-of-memory- and GiB-of-disk-seconds."""

    cpu_seconds: float = 0.0
    ram_gib_seconds: float = 0.0
    disk_gib_seconds: float = 0.0
    cpu_price: float = 0.0
    ram_price: float = 0.0
    disk_price: float = 0.0
    first_start: datetime | None = None
    last_end: datetime | None = None

    @property
    def price(self) -> float:
        return self.cpu_price + self.ram_price + self.disk_price

    def add(self, held: Charge, start: datetime, end: datetime, prices: Prices) -> None:
        seconds = (end - start).total_seconds()
        self.cpu_seconds += held.cpu * seconds
        self.ram_gib_seconds += held.memory * seconds
        self.disk_gib_seconds += held.disk * seconds
        cpu, ram, disk = prices.of(held, seconds)
        self.cpu_price, self.ram_price, self.disk_price = (
            self.cpu_price + cpu, self.ram_price + ram, self.disk_price + disk)
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.last_end = end if self.last_end is None else max(self.last_end, end)


# A change of what a sandbox holds: its id, when, and the period it opens (None: none).
Change = tuple[str, datetime, "Period | None"]


class UsageStore(Protocol):
    """Durable usage periods."""

    def switch_all(self, changes: Sequence[Change]) -> None:
        """In one transaction, for each change in order: end the sandbox's open period
        (if any) at its time (not before its start), and open its period (if any)."""

    def open_periods(self) -> list[Period]:
        """Every open period (of every organization)."""

    def periods(self, organization_id: str, start: datetime, end: datetime,
                sandbox_id: str | None = None) -> list[Period]:  # fmt: skip
        """The organization's periods overlapping [start, end), oldest first."""

    def mark_seen(self, at: datetime) -> int:
        """Mark every open period as held at ``at``; how many there are."""


class Meter:
    """Turns lifecycle changes into usage periods and answers usage queries.

    Args:
        store: where periods are kept.
        prices: what usage costs.
        heartbeat: seconds between marks of the open periods.
    """

    def __init__(self, store: UsageStore, prices: Prices, heartbeat: float = 30.0) -> None:
        self.store = store
        self.prices = prices
        self.heartbeat = heartbeat
        self._open = {p.sandbox_id: p for p in store.open_periods()}
        self.writes = 0  # rows written or updated for lifecycle changes (overhead figure)
        # Changes not written yet, oldest first: (sandbox id, when, the period it opens).
        self._pending: collections.deque[Change] = collections.deque()
        self._writing = threading.Lock()  # one writer at a time, in order
        self._writer: asyncio.TimerHandle | asyncio.Future[None] | None = None  # (pending)

    # ---- recording -----------------------------------------------------

    def observe(self, sandbox: Sandbox) -> None:
        """Record what ``sandbox`` holds from its last state change on (a no-op when it
        holds what its open period says; a warm pool's unclaimed sandbox holds nothing)."""
        if not sandbox.organization_id:
            return
        current = self._open.get(sandbox.id)
        before = current.held if current else NOTHING
        held = NOTHING if sandbox.state is SandboxState.DESTROYED else charge(
            sandbox.state, sandbox.resources, before=before)
        if held == before:  # it holds what it held (nothing, or its open period's)
            return
        self._switch(sandbox.id, sandbox.organization_id, held, sandbox.state_changed_at)

    def _switch(self, sandbox_id: str, organization_id: str, held: Charge,
                at: datetime) -> None:  # fmt: skip
        current = self._open.get(sandbox_id)
        if current is None and held == NOTHING:
            return
        period = None if held == NOTHING else Period(sandbox_id, organization_id, held, at,
                                                     seen_at=at)  # fmt: skip
        if len(self._pending) >= PENDING_LIMIT:
            with self._writing:  # (not while a write takes a batch from the front)
                dropped = self._pending.popleft()
            log.error("usage: %d changes wait to be written; dropped sandbox %s's of %s "
                      "(recovered at the next start)", PENDING_LIMIT, dropped[0], dropped[1])
        self._pending.append((sandbox_id, at, period))
        self.writes += (current is not None) + (period is not None)
        self._open.pop(sandbox_id, None)
        if period is not None:
            self._open[sandbox_id] = period
        self._write_soon()

    def _write_soon(self) -> None:
        """Write the pending changes in a worker thread within ``WRITE_DELAY`` (at once,
        when no event loop runs: a failure then raises to the caller, the change kept
        for a retry)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._writer is None:
            self._writer = loop.call_later(WRITE_DELAY, self._start_writing, loop)

    def _start_writing(self, loop: asyncio.AbstractEventLoop) -> None:
        self._writer = loop.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        try:
            await asyncio.to_thread(self.flush)
        except Exception:  # noqa: BLE001 - kept: the next change or heartbeat retries
            log.exception("usage: writing periods failed (tried again at the next change)")
            return
        finally:
            self._writer = None  # (also when cancelled: a later loop starts another)
        if self._pending:  # (changes noted while the thread wrote)
            self._write_soon()

    def flush(self) -> None:
        """Write the pending changes in one transaction, in order. A failure raises;
        they stay pending."""
        with self._writing:
            batch = list(self._pending)
            if batch:
                self.store.switch_all(batch)
                for _ in batch:  # (changes noted meanwhile stay)
                    self._pending.popleft()

    async def recover(self, runner: Runner, sandboxes: Iterable[Sandbox]) -> None:
        """After a restart (a crash too): end the periods of sandboxes that died with
        the server at their last mark, then catch up records the meter missed."""
        settled = set()  # what the runner says wins over the (older) record
        recorded = set(self._open)
        for period in list(self._open.values()):
            try:
                status = await runner.status(period.sandbox_id)
            except Exception:  # noqa: BLE001 - the runner is away: keep what is recorded
                log.warning("usage: status of sandbox %s unknown", period.sandbox_id)
                continue
            since = period.seen_at or period.start_at
            if status in (ContainerStatus.ABSENT, ContainerStatus.ARCHIVED):
                self._switch(period.sandbox_id, period.organization_id, NOTHING, since)
                settled.add(period.sandbox_id)
            elif period.held.cpu and status is ContainerStatus.STOPPED:
                self._switch(period.sandbox_id, period.organization_id,
                             Charge(disk=period.held.disk), since)  # fmt: skip
                settled.add(period.sandbox_id)
        known = set()
        for sandbox in sandboxes:
            known.add(sandbox.id)
            if sandbox.id in settled:
                continue
            if sandbox.id not in recorded and await self._died_unrecorded(runner, sandbox):
                continue
            self.observe(sandbox)  # reconciliation brings its record in line
        for sandbox_id, period in list(self._open.items()):
            if sandbox_id not in known:  # its record is gone: it was deleted
                self._switch(sandbox_id, period.organization_id, NOTHING,
                             period.seen_at or period.start_at)  # fmt: skip
        self.flush()  # (written before the server serves)

    async def _died_unrecorded(self, runner: Runner, sandbox: Sandbox) -> bool:
        """Whether ``sandbox``, whose record says it runs but whose period was never
        written (the server died within ``WRITE_DELAY`` of its start), does not run:
        then it held only its disk (if its files are there) from its start on, as one
        that died before its first mark (see :meth:`recover`)."""
        if not sandbox.organization_id or not charge(sandbox.state, sandbox.resources).cpu:
            return False
        try:
            status = await runner.status(sandbox.id)
        except Exception:  # noqa: BLE001 - the runner is away: its record it is
            return False
        if status in (ContainerStatus.RUNNING, ContainerStatus.PAUSED):
            return False
        if status is ContainerStatus.STOPPED:
            self._switch(sandbox.id, sandbox.organization_id,
                         charge(SandboxState.STOPPED, sandbox.resources),
                         sandbox.state_changed_at)  # fmt: skip
        return True

    def mark(self) -> None:
        """Write what is pending, and record that the open periods are still held now."""
        self.flush()
        if self._open:
            self.store.mark_seen(utcnow())

    async def run(self) -> None:
        """Mark the open periods every ``heartbeat`` seconds until cancelled."""
        await every(self.heartbeat, self.mark, "usage: marking open periods", wait_first=True)

    # ---- queries -------------------------------------------------------

    def periods(self, organization_id: str, start: datetime, end: datetime,
                sandbox_id: str | None = None) -> list[Period]:  # fmt: skip
        """The periods overlapping [start, end), clipped to it (an open one ends now,
        at most)."""
        try:
            self.flush()  # (what the caller just did shows)
        except Exception:  # noqa: BLE001 - answered from what is written
            log.exception("usage: writing periods failed")
        now = utcnow()
        out = []
        for p in self.store.periods(organization_id, start, end, sandbox_id):
            s, e = max(p.start_at, start), min(p.end_at or now, end)
            if e > s:
                out.append(Period(p.sandbox_id, p.organization_id, p.held, s,
                                  min(p.end_at, end) if p.end_at else None))  # fmt: skip
        return out

    def totals(self, periods: Iterable[Period], end: datetime) -> Totals:
        out = Totals()
        for p in periods:
            out.add(p.held, p.start_at, _end(p, end), self.prices)
        return out

    def by_sandbox(self, periods: Iterable[Period], end: datetime) -> dict[str, Totals]:
        out: dict[str, Totals] = {}
        for p in periods:
            out.setdefault(p.sandbox_id, Totals()).add(p.held, p.start_at, _end(p, end),
                                                       self.prices)  # fmt: skip
        return out

    def chart(self, periods: Sequence[Period], start: datetime,
              end: datetime) -> list[tuple[datetime, Totals]]:  # fmt: skip
        """Usage per bucket of [start, end); buckets of the first resolution that makes
        at most MAX_POINTS of them, aligned to it."""
        span = max(1.0, (end - start).total_seconds())
        step = next((r for r in RESOLUTIONS if span / r <= MAX_POINTS),
                    math.ceil(span / MAX_POINTS))  # fmt: skip
        first = datetime.fromtimestamp(start.timestamp() // step * step, tz=start.tzinfo)
        buckets: list[tuple[datetime, Totals]] = []
        at = first
        while at < end:
            buckets.append((at, Totals()))
            at += timedelta(seconds=step)
        for p in periods:
            p_end = _end(p, end)
            index = int((p.start_at - first).total_seconds() // step)
            while index < len(buckets) and buckets[index][0] < p_end:
                b_start = buckets[index][0]
                s = max(p.start_at, b_start)
                e = min(p_end, b_start + timedelta(seconds=step))
                if e > s:
                    buckets[index][1].add(p.held, s, e, self.prices)
                index += 1
        return buckets


def _end(period: Period, end: datetime) -> datetime:
    """Where a clipped period ends: its end, or (open) ``end`` but never past now."""
    return period.end_at or min(end, utcnow())


class MeteredEvents:
    """An EventSink that records each announced change in the meter, then passes it on
    (every state change of a sandbox is announced: see :class:`cove.core.ops.SandboxOps`)."""

    def __init__(self, meter: Meter, inner: EventSink) -> None:
        self.meter = meter
        self.inner = inner

    async def sandbox_created(self, sandbox: Sandbox) -> None:
        self._observe(sandbox)
        await self.inner.sandbox_created(sandbox)

    async def sandbox_state_updated(self, sandbox: Sandbox, old_state: SandboxState) -> None:
        self._observe(sandbox)
        await self.inner.sandbox_state_updated(sandbox, old_state)

    def _observe(self, sandbox: Sandbox) -> None:
        try:
            self.meter.observe(sandbox)
        except Exception:  # noqa: BLE001 - recover() catches the record up at the next start
            log.exception("usage: recording sandbox %s failed", sandbox.id)
