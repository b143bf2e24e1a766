"""SQL implementation of :class:`cove.core.ports.KeyStore`."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from cove.core.sandbox import utcnow
from cove.store.models import ApiKeyRow, OrganizationRow
from cove.store.sql import SqlStore


class SqlKeyStore(SqlStore):
    def ensure_organization(self, name: str) -> str:
        with self.session() as s:
            org = s.scalars(select(OrganizationRow).where(OrganizationRow.name == name)).first()
            if org is not None:
                return org.id
        try:
            with self.session() as s:
                org_id = str(uuid.uuid4())
                s.add(OrganizationRow(id=org_id, name=name, created_at=utcnow()))
                return org_id
        except IntegrityError:  # created concurrently by another process
            return self.ensure_organization(name)

    def add_key(self, *, organization_id: str, name: str, key_hash: str) -> None:
        with self.session() as s:
            s.add(
                ApiKeyRow(
                    id=str(uuid.uuid4()),
                    organization_id=organization_id,
                    name=name,
                    key_hash=key_hash,
                    created_at=utcnow(),
                )
            )

    def organization_for(self, key_hash: str) -> str | None:
        with self.session() as s:
            return s.scalars(
                select(ApiKeyRow.organization_id).where(ApiKeyRow.key_hash == key_hash)
            ).first()

    def remove_key(self, key_hash: str) -> bool:
        with self.session() as s:
            row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash)).first()
            if row is None:
                return False
            s.delete(row)
            return True

    def count_keys(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(ApiKeyRow)) or 0
