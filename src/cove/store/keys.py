"""SQL implementation of :class:`cove.core.ports.KeyStore`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from cove.core.sandbox import utcnow
from cove.store.models import ApiKeyRow, OrganizationRow
from cove.store.sql import SqlStore


@dataclass(frozen=True)
class KeyInfo:
    """An API key as an operator sees it: never its value (only its hash is kept)."""

    id: str
    name: str
    organization: str
    created_at: str


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

    def list_keys(self, organization: str | None = None) -> list[KeyInfo]:
        """The keys (never their values), oldest first; of one organization (by name)."""
        query = (select(ApiKeyRow, OrganizationRow.name)
                 .join(OrganizationRow, OrganizationRow.id == ApiKeyRow.organization_id)
                 .order_by(ApiKeyRow.created_at, ApiKeyRow.id))  # fmt: skip
        if organization is not None:
            query = query.where(OrganizationRow.name == organization)
        with self.session() as s:
            return [KeyInfo(id=row.id, name=row.name, organization=org,
                            created_at=row.created_at.isoformat())
                    for row, org in s.execute(query).all()]  # fmt: skip

    def delete_key(self, key_id: str) -> bool:
        """Forget a key: it no longer authenticates. False when there was none."""
        with self.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                return False
            s.delete(row)
            return True
