"""SQLAlchemy implementations of the stores (SQLite in WAL mode, or PostgreSQL)."""

from __future__ import annotations

import builtins
import collections
import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Table,
    Update,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cove.core.ports import Resources, VolumeBind
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import BadRequest, Conflict, NotFound
from cove.hostfiles import private_dir, private_file, tighten
from cove.store import due
from cove.store.models import SandboxRow

SANDBOXES = cast("Table", SandboxRow.__table__)
REMEMBER_REMOVED = 10_000  # removed records whose version is kept (far beyond any cache's life)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys, and its
    files mode 0600 (its ``-wal`` and ``-shm`` inherit the database file's mode)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            db = Path(path)
            private_dir(db.parent)
            private_file(db)
            tighten(db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class SqlStore:
    """Base of the SQL stores: one session per call, committed at the end."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A transaction for Core statements alone: a fraction of an ORM session's cost
        (the hot paths: a warm pool's claim, a usage period)."""
        with self._engine.begin() as conn:
            yield conn


class SqlSandboxStore(SqlStore):
    """Implements :class:`cove.core.ports.SandboxStore`."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._versions: dict[str, int] = {}
        self._changes = 0
        self._removed: collections.deque[str] = collections.deque()

    def changes(self) -> int:
        return self._changes

    def version(self, sandbox_id: str) -> int:
        return self._versions.get(sandbox_id, 0)

    @contextmanager
    def _changing(self, sandbox_id: str) -> Iterator[None]:
        """Around a write: the record's version changes before and after it, so a
        reader that cached it while the write was under way holds an old version."""
        self._bump(sandbox_id)
        try:
            yield
        finally:
            self._bump(sandbox_id)

    def _bump(self, sandbox_id: str) -> None:
        self._changes += 1  # unique across ids: a removed record's number is never reused
        self._versions[sandbox_id] = self._changes

    def add(self, sandbox: Sandbox) -> None:
        try:
            with self._changing(sandbox.id), self.connection() as conn:
                conn.execute(insert_row(), _values(sandbox))
        except IntegrityError as exc:
            raise Conflict(f"Sandbox with name '{sandbox.name}' already exists") from exc

    def get(self, organization_id: str, id_or_name: str) -> Sandbox:
        with self.session() as s:
            row = s.scalars(
                select(SandboxRow).where(
                    SandboxRow.organization_id == organization_id,
                    (SandboxRow.id == id_or_name) | (SandboxRow.name == id_or_name),
                )
            ).first()
            if row is None:
                raise NotFound(f"Sandbox with ID or name {id_or_name} not found")
            return _to_entity(row)

    def get_by_id(self, sandbox_id: str) -> Sandbox:
        with self.session() as s:
            row = s.scalars(select(SandboxRow).where(SandboxRow.id == sandbox_id)).first()
            if row is None:
                raise NotFound(f"Sandbox with ID {sandbox_id} not found")
            return _to_entity(row)

    def save(self, sandbox: Sandbox) -> None:
        try:
            with self._changing(sandbox.id), self.connection() as conn:
                done = conn.execute(update_row(), {**_values(sandbox), "where_id": sandbox.id})
        except IntegrityError as exc:
            raise Conflict(f"Sandbox with name '{sandbox.name}' already exists") from exc
        if done.rowcount != 1:
            raise NotFound(f"Sandbox with ID {sandbox.id} not found")

    def touch(self, stamps: Mapping[str, datetime]) -> None:
        if not stamps:
            return
        table = SANDBOXES
        newer = (update(table)
                 .where(table.c.id == bindparam("sid"), table.c.last_activity_at < bindparam("at"))
                 .values(last_activity_at=bindparam("at")))  # fmt: skip
        with self.session() as s:
            s.connection().execute(newer, [{"sid": k, "at": v} for k, v in stamps.items()])

    def remove(self, sandbox_id: str) -> None:
        self._removed.append(sandbox_id)  # its version is kept a while, then forgotten
        if len(self._removed) > REMEMBER_REMOVED:
            self._versions.pop(self._removed.popleft(), None)
        with self._changing(sandbox_id), self.session() as s:
            row = s.scalars(select(SandboxRow).where(SandboxRow.id == sandbox_id)).first()
            if row is not None:
                s.delete(row)

    def list(
        self,
        organization_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        states: Sequence[SandboxState] | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[builtins.list[Sandbox], str | None]:
        query = select(SandboxRow).where(SandboxRow.organization_id == organization_id)
        if states:
            query = query.where(SandboxRow.state.in_([str(st) for st in states]))
        if cursor:
            query = query.where(SandboxRow.seq > _parse_cursor(cursor))
        page: list[SandboxRow] = []
        more = False
        with self.session() as s:
            for row in s.scalars(query.order_by(SandboxRow.seq)):
                if labels and any(row.labels.get(k) != v for k, v in labels.items()):
                    continue
                if len(page) == limit:
                    more = True
                    break
                page.append(row)
            items = [_to_entity(row) for row in page]
            next_cursor = str(page[-1].seq) if more and page else None
        return items, next_cursor

    def all(self) -> builtins.list[Sandbox]:
        with self.session() as s:
            return [_to_entity(row) for row in s.scalars(select(SandboxRow))]

    def timers_due(self, now: datetime, minute: float) -> builtins.list[Sandbox]:
        query = select(SandboxRow).where(due.timers_due(now, minute)).order_by(SandboxRow.seq)
        with self.session() as s:
            return [_to_entity(row) for row in s.scalars(query)]


def _parse_cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError as exc:
        raise BadRequest(f"invalid cursor '{cursor}'") from exc


_PLAIN = (
    "id organization_id name snapshot user target isolation error_reason recoverable env labels "
    "public "
    "network_block_all network_allow_list domain_allow_list auto_stop_interval "
    "auto_archive_interval auto_delete_interval created_at updated_at last_activity_at "
    "state_changed_at linked_sandbox_id linked_sandbox_name auto_pause_interval auto_destroy_at "
    "warm_pool_id"
).split()


# The columns a record writes: all but ``seq`` and ``runner_id`` (see ``_values``).
_COLUMNS = (*_PLAIN, "state", "cpu", "memory", "disk", "volumes", "runtime_env")


# A record's writes are the hot path of every create (a warm pool's claim writes one,
# a cold start two or three): their statements are built once, each column a bound
# parameter of its column's type. Built per call, a statement of ~35 columns cost
# more than its execution (the values coerced, its cache key made: 0.57 ms against
# 0.19 for the write itself on SQLite).
@functools.cache
def insert_row() -> Insert:
    """INSERT of a whole record (parameters: ``_values``)."""
    return insert(SANDBOXES).values(_bound_columns())


@functools.cache
def update_row(*, unclaimed: bool = False) -> Update:
    """UPDATE of a whole record (parameters: ``_values`` and ``where_id``); with
    ``unclaimed``, only of a row of no organization whose ``warm_pool_id`` is the
    ``where_token`` parameter (a warm pool's sandbox a claim took)."""
    table = SANDBOXES
    where = [table.c.id == bindparam("where_id")]
    if unclaimed:
        where += [table.c.organization_id.is_(None),
                  table.c.warm_pool_id == bindparam("where_token")]  # fmt: skip
    return update(table).where(*where).values(_bound_columns())


def _bound_columns() -> dict[str, Any]:
    return {name: bindparam(name, type_=SANDBOXES.c[name].type) for name in _COLUMNS}


def _values(sandbox: Sandbox) -> dict[str, Any]:
    """The columns of ``sandbox``'s row (``_COLUMNS``: all but ``seq`` and ``runner_id``)."""
    values = {name: getattr(sandbox, name) for name in _PLAIN}
    values["organization_id"] = sandbox.organization_id or None  # "": a warm pool's, no one's
    values["state"] = str(sandbox.state)
    values["cpu"] = sandbox.resources.cpu
    values["memory"] = sandbox.resources.memory
    values["disk"] = sandbox.resources.disk
    values["volumes"] = [asdict(v) for v in sandbox.volumes]
    values["runtime_env"] = None if sandbox.runtime_env is None else dict(sandbox.runtime_env)
    return values


def _to_entity(row: SandboxRow) -> Sandbox:
    fields = {name: getattr(row, name) for name in _PLAIN}
    fields["organization_id"] = row.organization_id or ""
    for name in ("created_at", "updated_at", "last_activity_at", "state_changed_at"):
        fields[name] = _aware(fields[name])
    if fields["auto_destroy_at"] is not None:
        fields["auto_destroy_at"] = _aware(fields["auto_destroy_at"])
    fields["env"] = dict(row.env)
    fields["labels"] = dict(row.labels)
    fields["volumes"] = [VolumeBind(**v) for v in row.volumes or []]
    fields["runtime_env"] = None if row.runtime_env is None else dict(row.runtime_env)
    return Sandbox(
        state=SandboxState(row.state),
        resources=Resources(cpu=row.cpu, memory=row.memory, disk=row.disk),
        **fields,
    )


def _aware(value: datetime) -> datetime:
    """SQLite drops the time zone; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
