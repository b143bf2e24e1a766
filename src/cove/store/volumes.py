"""SQL implementation of :class:`cove.core.volumes.VolumeStore`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cove.core.volumes import Volume
from cove.errors import Conflict, NotFound
from cove.store.models import VolumeRow
from cove.store.sql import SqlStore, _aware

_FIELDS = "id organization_id name state created_at updated_at last_used_at".split()
# ``home`` is written at add only: afterwards the runners' placement sets it (once:
# see SqlRunnerStore.bind_volumes), and a save of a record read before must not undo it.


class SqlVolumeStore(SqlStore):
    def add(self, volume: Volume) -> None:
        try:
            with self.session() as s:
                s.add(_to_row(volume, VolumeRow(home=volume.home)))
        except IntegrityError as exc:
            raise Conflict(f"Volume with name '{volume.name}' already exists") from exc

    def get(self, organization_id: str, id_or_name: str) -> Volume:
        with self.session() as s:
            row = s.scalars(
                select(VolumeRow).where(
                    VolumeRow.organization_id == organization_id,
                    (VolumeRow.id == id_or_name) | (VolumeRow.name == id_or_name),
                )
            ).first()
            if row is None:
                raise NotFound(f"Volume with ID or name {id_or_name} not found")
            return _to_entity(row)

    def save(self, volume: Volume) -> None:
        with self.session() as s:
            row = s.get(VolumeRow, volume.id)
            if row is None:
                raise NotFound(f"Volume with ID {volume.id} not found")
            _to_row(volume, row)

    def remove(self, volume_id: str) -> None:
        with self.session() as s:
            row = s.get(VolumeRow, volume_id)
            if row is not None:
                s.delete(row)

    def list(self, organization_id: str) -> list[Volume]:
        query = select(VolumeRow).where(VolumeRow.organization_id == organization_id)
        with self.session() as s:
            return [_to_entity(r) for r in s.scalars(query.order_by(VolumeRow.created_at))]


def _to_row(volume: Volume, row: VolumeRow) -> VolumeRow:
    for name in _FIELDS:
        setattr(row, name, getattr(volume, name))
    return row


def _to_entity(row: VolumeRow) -> Volume:
    volume = Volume(**{name: getattr(row, name) for name in _FIELDS}, home=row.home)
    volume.created_at = _aware(volume.created_at)
    volume.updated_at = _aware(volume.updated_at)
    if volume.last_used_at is not None:
        volume.last_used_at = _aware(volume.last_used_at)
    return volume
