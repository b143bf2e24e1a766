"""SQL implementation of :class:`cove.core.registries.RegistryStore`."""

from __future__ import annotations

import builtins

from sqlalchemy import select

from cove.core.registries import DockerRegistry
from cove.errors import NotFound
from cove.store.models import DockerRegistryRow
from cove.store.sql import SqlStore, _aware

_FIELDS = (
    "id organization_id name url username password project is_default created_at updated_at"
).split()


class SqlRegistryStore(SqlStore):
    def add(self, registry: DockerRegistry) -> None:
        with self.session() as s:
            s.add(_to_row(registry, DockerRegistryRow()))

    def get(self, organization_id: str, registry_id: str) -> DockerRegistry:
        with self.session() as s:
            row = s.get(DockerRegistryRow, registry_id)
            if row is None or row.organization_id != organization_id:
                raise NotFound(f"Registry with ID {registry_id} not found")
            return _to_entity(row)

    def save(self, registry: DockerRegistry) -> None:
        with self.session() as s:
            row = s.get(DockerRegistryRow, registry.id)
            if row is None:
                raise NotFound(f"Registry with ID {registry.id} not found")
            _to_row(registry, row)

    def remove(self, registry_id: str) -> None:
        with self.session() as s:
            row = s.get(DockerRegistryRow, registry_id)
            if row is not None:
                s.delete(row)

    def list(self, organization_id: str) -> list[DockerRegistry]:
        query = select(DockerRegistryRow).where(
            DockerRegistryRow.organization_id == organization_id
        )
        with self.session() as s:
            rows = s.scalars(query.order_by(DockerRegistryRow.created_at))
            return [_to_entity(r) for r in rows]

    def all(self) -> builtins.list[DockerRegistry]:
        with self.session() as s:
            rows = s.scalars(select(DockerRegistryRow).order_by(DockerRegistryRow.created_at))
            return [_to_entity(r) for r in rows]


def _to_row(registry: DockerRegistry, row: DockerRegistryRow) -> DockerRegistryRow:
    for name in _FIELDS:
        setattr(row, name, getattr(registry, name))
    return row


def _to_entity(row: DockerRegistryRow) -> DockerRegistry:
    registry = DockerRegistry(**{name: getattr(row, name) for name in _FIELDS})
    registry.created_at = _aware(registry.created_at)
    registry.updated_at = _aware(registry.updated_at)
    return registry
