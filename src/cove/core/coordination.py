"""What several API replicas on one database agree on: who operates on a sandbox
now, and which replica runs the jobs that must run once (timers, the reconciler,
the warm-pool keeper), and what else must be serialized across them (an
organization's quota admissions: :meth:`Coordination.lock`).

One host (SQLite) needs neither: the in-process lock of each sandbox serializes
its operations, and the one server runs every job. :class:`LocalCoordination` is
that. On PostgreSQL, :mod:`cove.store.coordination` implements the same seam with
advisory locks (per sandbox) and a lease in a table (the jobs' leader).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Generic, Protocol, TypeVar

from cove.errors import Busy

K = TypeVar("K", bound=Hashable)


class LockBusy(Busy):
    """Another replica holds the lock now (raised only when not waiting)."""


class Coordination(Protocol):
    """The replicas' shared locks and the jobs' leadership."""

    replica_id: str

    def sandbox_lock(self, sandbox_id: str, *, wait: bool = True
                     ) -> AbstractAsyncContextManager[None]:  # fmt: skip
        """Hold the sandbox's lock across replicas (taken inside the in-process one).

        Raises:
            LockBusy: ``wait`` is False and another replica holds it.
        """

    def lock(self, kind: str, name: str, *, wait: bool = True
             ) -> AbstractAsyncContextManager[None]:  # fmt: skip
        """Hold lock ``name`` of ``kind`` (e.g. ``organization``: an organization's quota
        admissions) across replicas; never the same lock as a sandbox's.

        Raises:
            LockBusy: ``wait`` is False and another replica holds it.
        """

    @property
    def leader(self) -> bool:
        """Whether this replica runs the once-only jobs now."""

    def alive(self) -> set[str]:
        """The ids of the replicas whose lease runs (this one's among them)."""

    def renew(self) -> None:
        """Renew this replica's leases now (and take the jobs' if it is free)."""

    async def run(self) -> None:
        """Renew this replica's leases until cancelled."""

    async def close(self) -> None:
        """Give up the leases (a clean shutdown: another replica takes over at once)."""


class LocalCoordination:
    """One server alone: no lock beyond the in-process one, always the leader."""

    def __init__(self) -> None:
        self.replica_id = uuid.uuid4().hex

    @asynccontextmanager
    async def _nothing(self) -> AsyncIterator[None]:
        yield

    def sandbox_lock(self, sandbox_id: str, *, wait: bool = True
                     ) -> AbstractAsyncContextManager[None]:  # fmt: skip
        return self._nothing()

    def lock(self, kind: str, name: str, *, wait: bool = True
             ) -> AbstractAsyncContextManager[None]:  # fmt: skip
        return self._nothing()

    @property
    def leader(self) -> bool:
        return True

    def alive(self) -> set[str]:
        return {self.replica_id}

    def renew(self) -> None:
        return None

    async def run(self) -> None:
        return None

    async def close(self) -> None:
        return None


def alone(coordination: Coordination) -> bool:
    """Whether no other replica is alive (then what operations left on the runner or
    in the database is no one's: this replica may clean it up)."""
    return coordination.alive() <= {coordination.replica_id}


class KeyedLocks(Generic[K]):
    """In-process locks by key, each kept only while it is held or awaited: keys a
    tenant makes up (an image reference, a Dockerfile's digest) would otherwise stay
    in memory for as long as the server runs, one more with each request."""

    def __init__(self) -> None:
        self._locks: dict[K, tuple[asyncio.Lock, int]] = {}  # key -> (lock, its users)

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold ``key``'s lock (waiting for whoever holds it) for the block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class KeyedSlots(Generic[K]):
    """In-process semaphores of ``size`` slots by key (0: no limit), each kept only
    while it is held or awaited (as :class:`KeyedLocks`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots: dict[K, tuple[asyncio.Semaphore, int]] = {}  # key -> (slots, users)

    def __len__(self) -> int:
        return len(self._slots)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold one of ``key``'s slots (waiting for one to be free) for the block."""
        if not self.size:
            yield
            return
        slots, users = self._slots.get(key, (asyncio.Semaphore(self.size), 0))
        self._slots[key] = (slots, users + 1)
        try:
            async with slots:
                yield
        finally:
            slots, users = self._slots[key]
            if users == 1:
                del self._slots[key]
            else:
                self._slots[key] = (slots, users - 1)
