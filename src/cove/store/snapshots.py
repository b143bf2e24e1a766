"""SQL implementation of :class:`cove.core.snapshots.SnapshotStore`."""

from __future__ import annotations

import builtins

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cove.core.snapshots import Snapshot
from cove.errors import Conflict, NotFound
from cove.store.models import SnapshotRow
from cove.store.sql import SqlStore, _aware

_FIELDS = (
    "id organization_id name state image_name source_sandbox_id error_reason size cpu memory "
    "disk created_at updated_at last_used_at digest image_config"
).split()


class SqlSnapshotStore(SqlStore):
    def add(self, snapshot: Snapshot) -> None:
        try:
            with self.session() as s:
                s.add(_to_row(snapshot, SnapshotRow()))
        except IntegrityError as exc:
            raise Conflict(f"Snapshot with name '{snapshot.name}' already exists") from exc

    def get(self, organization_id: str, id_or_name: str) -> Snapshot:
        with self.session() as s:
            row = s.scalars(
                select(SnapshotRow).where(
                    SnapshotRow.organization_id == organization_id,
                    (SnapshotRow.id == id_or_name) | (SnapshotRow.name == id_or_name),
                )
            ).first()
            if row is None:
                raise NotFound(f"Snapshot with ID or name {id_or_name} not found")
            return _to_entity(row)

    def save(self, snapshot: Snapshot) -> None:
        with self.session() as s:
            row = s.get(SnapshotRow, snapshot.id)
            if row is None:
                raise NotFound(f"Snapshot with ID {snapshot.id} not found")
            _to_row(snapshot, row)

    def remove(self, snapshot_id: str) -> None:
        with self.session() as s:
            row = s.get(SnapshotRow, snapshot_id)
            if row is not None:
                s.delete(row)

    def list(self, organization_id: str) -> list[Snapshot]:
        query = select(SnapshotRow).where(SnapshotRow.organization_id == organization_id)
        with self.session() as s:
            return [_to_entity(r) for r in s.scalars(query.order_by(SnapshotRow.created_at))]


    def all_pulling(self) -> builtins.list[Snapshot]:
        query = select(SnapshotRow).where(SnapshotRow.state.in_(("pulling", "building")))
        with self.session() as s:
            return [_to_entity(r) for r in s.scalars(query)]


def _to_row(snapshot: Snapshot, row: SnapshotRow) -> SnapshotRow:
    for name in _FIELDS:
        setattr(row, name, getattr(snapshot, name))
    return row


def _to_entity(row: SnapshotRow) -> Snapshot:
    snap = Snapshot(**{name: getattr(row, name) for name in _FIELDS})
    snap.created_at = _aware(snap.created_at)
    snap.updated_at = _aware(snap.updated_at)
    if snap.last_used_at is not None:
        snap.last_used_at = _aware(snap.last_used_at)
    return snap
