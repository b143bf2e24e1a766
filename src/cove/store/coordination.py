"""Coordination of API replicas on PostgreSQL (see :mod:`cove.core.coordination`).

- **A sandbox's lock** is a session-level advisory lock keyed by a hash of its id,
  held on a connection of its own for the operation's length. The connection is
  not left in a transaction meanwhile (the lock outlives the transaction that took
  it), and a replica that dies loses its connections, so its locks are released at
  once. Taking it polls ``pg_try_advisory_lock`` (the event loop never blocks on a
  lock another replica holds), and at most ``LOCK_CONNECTIONS`` operations hold
  one at a time (more wait their turn in memory, never on the connection pool);
  an operation that takes another sandbox's lock while it holds one (a delete
  removing its linked sandboxes) does not wait for a turn, so they cannot all
  wait on each other.
- **Other locks** (:meth:`PgCoordination.lock`, e.g. an organization's quota
  admissions) are the same, keyed by two 32-bit keys (a hash of the kind, a hash of
  the name): PostgreSQL keeps that key space apart from the 64-bit keys of the
  sandboxes' locks, so they never collide with one. Two names sharing a hash only
  wait for each other.
- **Leases** (table ``leases``), renewed every third of ``COVE_LEASE_SECONDS`` and
  dated by the database's clock (the hosts' clocks may differ): ``jobs`` names
  the replica that runs timers, the reconciler and the warm-pool keeper;
  ``replica:<id>`` says a replica is alive. A replica that dies stops renewing, and
  another takes ``jobs`` over once it expired; one that stops cleanly gives its
  leases up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy import Connection, TextClause, create_engine, text
from sqlalchemy.engine import make_url

from cove.core.coordination import LockBusy
from cove.core.periodic import every

log = logging.getLogger(__name__)
_holding: contextvars.ContextVar[bool] = contextvars.ContextVar("holding", default=False)
LOCK_CONNECTIONS = 32  # operations holding a sandbox's lock at once, per replica
JOBS = "jobs"
_TRY = text("SELECT pg_try_advisory_lock(:k)")
_UNLOCK = text("SELECT pg_advisory_unlock(:k)")
_TRY2 = text("SELECT pg_try_advisory_lock(:k, :n)")
_UNLOCK2 = text("SELECT pg_advisory_unlock(:k, :n)")
Key = tuple[int] | tuple[int, int]
_CLAIM = text(
    "INSERT INTO leases (name, holder, expires_at)"
    " VALUES (:name, :me, now() + make_interval(secs => :ttl))"
    " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,"
    " expires_at = EXCLUDED.expires_at"
    " WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()"
    " RETURNING holder"
)
_ALIVE = text("SELECT holder FROM leases WHERE name LIKE 'replica:%' AND expires_at > now()")
_EXPIRED = text("DELETE FROM leases WHERE expires_at < now() - interval '1 hour'")
_RELEASE = text("DELETE FROM leases WHERE holder = :me")


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _key32(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


def pair_key(kind: str, name: str) -> tuple[int, int]:
    """Two signed 32-bit advisory-lock keys for lock ``name`` of ``kind`` (a key space
    apart from :func:`lock_key`'s)."""
    return _key32(kind), _key32(name)


class PgCoordination:
    """Implements :class:`cove.core.coordination.Coordination` on PostgreSQL.

    Args:
        url: the database's SQLAlchemy URL (its own connections are made).
        lease_seconds: how long a lease lasts without renewal.
    """

    def __init__(self, url: str, lease_seconds: float) -> None:
        self.replica_id = uuid.uuid4().hex
        # Overflow unbounded: the semaphore bounds the first lock of each operation,
        # and a nested one must never wait (blocking) on the pool.
        self._engine = create_engine(make_url(url), pool_size=LOCK_CONNECTIONS,
                                     max_overflow=-1, pool_pre_ping=True)  # fmt: skip
        self._slots = asyncio.Semaphore(LOCK_CONNECTIONS)
        self._ttl = lease_seconds
        self._leader_until = 0.0  # monotonic time until which ``jobs`` is surely ours

    # ---- sandbox locks ---------------------------------------------------

    def sandbox_lock(self, sandbox_id: str, *, wait: bool = True
                     ) -> AbstractAsyncContextManager[None]:  # fmt: skip
        return self._held((lock_key(f"sandbox:{sandbox_id}"),), wait)

    def lock(self, kind: str, name: str, *, wait: bool = True
             ) -> AbstractAsyncContextManager[None]:  # fmt: skip
        return self._held(pair_key(kind, name), wait)

    @asynccontextmanager
    async def _held(self, key: Key, wait: bool) -> AsyncIterator[None]:
        nested = _holding.get()
        async with contextlib.nullcontext() if nested else self._slots:
            token = _holding.set(True)  # tasks this operation starts inherit it
            try:
                async with self._connected(key, wait):
                    yield
            finally:
                _holding.reset(token)

    @asynccontextmanager
    async def _connected(self, key: Key, wait: bool) -> AsyncIterator[None]:
        conn = self._engine.connect()
        clean = False  # else the connection is closed: what it held is released
        try:
            if not await self._take(conn, key, wait):
                clean = True
                raise LockBusy("another replica holds the lock")
            try:
                yield
            finally:
                conn.execute(*_statement(_UNLOCK, _UNLOCK2, key))
                conn.commit()
                clean = True
        finally:
            if not clean:
                conn.invalidate()
            conn.close()

    async def _take(self, conn: Connection, key: Key, wait: bool) -> bool:
        delay = 0.005
        while True:
            got = conn.execute(*_statement(_TRY, _TRY2, key)).scalar()
            conn.commit()  # the lock is the session's: no transaction stays open
            if got or not wait:
                return bool(got)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    # ---- leases ------------------------------------------------------------

    @property
    def leader(self) -> bool:
        return time.monotonic() < self._leader_until

    def alive(self) -> set[str]:
        with self._engine.begin() as conn:
            return {holder for (holder,) in conn.execute(_ALIVE)}

    def renew(self) -> None:
        """Renew this replica's lease, and take or renew ``jobs`` if it is free or ours."""
        started = time.monotonic()
        params = {"me": self.replica_id, "ttl": self._ttl}
        with self._engine.begin() as conn:
            conn.execute(_CLAIM, {**params, "name": f"replica:{self.replica_id}"})
            ours = conn.execute(_CLAIM, {**params, "name": JOBS}).first() is not None
            if ours:
                conn.execute(_EXPIRED)
        was = self.leader
        # Ours until a little before the database lets another take it over.
        self._leader_until = started + self._ttl * 0.8 if ours else 0.0
        if ours != was:
            log.info("replica %s %s the once-only jobs", self.replica_id,
                     "runs" if ours else "no longer runs")  # fmt: skip

    async def run(self) -> None:
        def lost() -> None:  # the database is away: lead no more until renewed
            self._leader_until = 0.0

        await every(self._ttl / 3, self.renew, "renewing the replica's leases", on_error=lost)

    async def close(self) -> None:
        self._leader_until = 0.0
        try:
            with self._engine.begin() as conn:
                conn.execute(_RELEASE, {"me": self.replica_id})
        finally:
            self._engine.dispose()


def _statement(one: TextClause, two: TextClause, key: Key) -> tuple[TextClause, dict[str, int]]:
    """The statement taking or releasing ``key`` (one 64-bit key, or two 32-bit ones)."""
    if len(key) == 1:
        return one, {"k": key[0]}
    return two, {"k": key[0], "n": key[1]}
