"""SQL implementation of :class:`cove.core.pool.PoolStore`: warm pools and the claims
on their sandboxes (rows of ``sandboxes`` without an organization)."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Collection
from typing import Any, cast

from sqlalchemy import Select, Update, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from cove.core.pool import WarmPool
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import Conflict, NotFound
from cove.store.models import SandboxRow, WarmPoolRow
from cove.store.sql import SANDBOXES, SqlStore, _aware, _to_entity, _values, update_row

CANDIDATES = 8  # takes tried per claim (other replicas may take the sandbox first)


class SqlPoolStore(SqlStore):
    """Warm pools (per organization) and their unclaimed sandboxes."""

    # ---- pools ----------------------------------------------------------

    def add(self, pool: WarmPool) -> None:
        try:
            with self.session() as s:
                s.add(_pool_row(pool, WarmPoolRow()))
        except IntegrityError as exc:
            raise Conflict(
                f"A warm pool for snapshot {pool.snapshot} in {pool.target} already exists"
            ) from exc

    def get(self, organization_id: str, pool_id: str) -> WarmPool:
        with self.session() as s:
            row = s.get(WarmPoolRow, pool_id)
            if row is None or row.organization_id != organization_id:
                raise NotFound(f"Warm pool {pool_id} not found")
            return _pool(row)

    def save(self, pool: WarmPool) -> None:
        with self.session() as s:
            row = s.get(WarmPoolRow, pool.id)
            if row is None:
                raise NotFound(f"Warm pool {pool.id} not found")
            _pool_row(pool, row)

    def remove(self, pool_id: str) -> None:
        with self.session() as s:
            row = s.get(WarmPoolRow, pool_id)
            if row is not None:
                s.delete(row)

    def list(self, organization_id: str | None = None) -> builtins.list[WarmPool]:
        """The organization's pools (None: every organization's)."""
        query = select(WarmPoolRow).order_by(WarmPoolRow.created_at)
        if organization_id is not None:
            query = query.where(WarmPoolRow.organization_id == organization_id)
        with self.session() as s:
            return [_pool(row) for row in s.scalars(query)]

    # ---- unclaimed sandboxes ---------------------------------------------

    def unowned(self) -> builtins.list[Sandbox]:
        """Every sandbox of no organization: pooled, or being claimed or discarded."""
        table = SANDBOXES  # rows, not ORM entities: the keeper reads them after every claim
        query = select(table).where(table.c.organization_id.is_(None)).order_by(table.c.seq)
        with self.connection() as conn:
            return [_to_entity(cast("SandboxRow", row)) for row in conn.execute(query)]

    def take(self, token: str, *, pool_id: str, sandbox_id: str | None = None,
             started: bool = True, runners: Collection[str] | None = None
             ) -> str | None:  # fmt: skip
        """Mark one sandbox waiting in ``pool_id`` (``sandbox_id`` if given; a started one
        unless ``started`` is False) as taken by ``token``, in one conditional UPDATE:
        two takers never get the same sandbox. Returns its id (None: none left)."""
        take, left = _take_statements(started=started, by_id=sandbox_id is not None,
                                      on_runners=runners is not None)  # fmt: skip
        params: dict[str, Any] = {"token": token, "pool_id": pool_id, "sandbox_id": sandbox_id}
        if runners is not None:
            params["runners"] = list(runners)
        for _ in range(CANDIDATES):
            with self.connection() as conn:
                taken = conn.execute(take, params).scalar()
                if taken is not None:
                    return taken
                if not conn.execute(left, params).first():
                    return None
        return None

    def adopt(self, sandbox: Sandbox, token: str) -> None:
        """Write ``sandbox`` (now of an organization) over the pooled row ``token`` took.

        Raises:
            NotFound: the row is gone or not taken by ``token``.
            Conflict: the organization has a sandbox of that name.
        """
        values = {**_values(sandbox), "where_id": sandbox.id, "where_token": token}
        try:
            with self.connection() as conn:
                done = conn.execute(update_row(unclaimed=True), values)
        except IntegrityError as exc:
            raise Conflict(f"Sandbox with name '{sandbox.name}' already exists") from exc
        if done.rowcount != 1:
            raise NotFound(f"Sandbox with ID {sandbox.id} not found")


def _pool_row(pool: WarmPool, row: WarmPoolRow) -> WarmPoolRow:
    for name in ("id", "organization_id", "snapshot", "target", "size", "isolation", "user",
                 "error_reason", "created_at", "updated_at"):  # fmt: skip
        setattr(row, name, getattr(pool, name))
    row.cpu, row.memory, row.disk = (pool.resources.cpu, pool.resources.memory,
                                     pool.resources.disk)  # fmt: skip
    return row


def _pool(row: WarmPoolRow) -> WarmPool:
    return WarmPool(
        id=row.id, organization_id=row.organization_id, snapshot=row.snapshot,
        target=row.target, size=row.size, isolation=row.isolation, user=row.user,
        resources=Resources(cpu=row.cpu, memory=row.memory, disk=row.disk),
        error_reason=row.error_reason, created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )  # fmt: skip


@functools.cache
def _take_statements(*, started: bool, by_id: bool, on_runners: bool) -> tuple[Update, Select[Any]]:
    """The statements of a take (built once per kind; parameters ``token``, ``pool_id``,
    ``sandbox_id``, ``runners``): the UPDATE that marks the oldest sandbox waiting in the
    pool as the token's, and the query of whether any waits at all."""
    table = SANDBOXES
    waiting = [table.c.organization_id.is_(None), table.c.warm_pool_id == bindparam("pool_id")]
    if started:
        waiting.append(table.c.state == str(SandboxState.STARTED))
    if by_id:
        waiting.append(table.c.id == bindparam("sandbox_id"))
    if on_runners:
        waiting.append(table.c.runner_id.in_(bindparam("runners", expanding=True)))
    # The oldest waiting one, in the UPDATE itself (its conditions checked again on
    # the row it writes): one statement, one transaction. Another replica's claim
    # that wrote the row first (PostgreSQL) leaves no row updated: the next is tried.
    first = (select(table.c.id).where(*waiting).order_by(table.c.seq).limit(1)
             .with_for_update(skip_locked=True).scalar_subquery().correlate(None))  # fmt: skip
    take = (update(table).where(table.c.id == first, *waiting)
            .values(warm_pool_id=bindparam("token")).returning(table.c.id))  # fmt: skip
    return take, select(table.c.id).where(*waiting).limit(1)
