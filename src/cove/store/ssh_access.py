"""SQL implementation of :class:`cove.core.ssh_access.SshAccessStore`."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete, select

from cove.core.ssh_access import SshAccess
from cove.store.models import SshAccessRow
from cove.store.sql import SqlStore, _aware


class SqlSshAccessStore(SqlStore):
    def add(self, access: SshAccess, token_hash: str) -> None:
        with self.session() as s:
            s.add(SshAccessRow(
                id=access.id, sandbox_id=access.sandbox_id,
                organization_id=access.organization_id, token_hash=token_hash,
                expires_at=access.expires_at, created_at=access.created_at,
                updated_at=access.updated_at))  # fmt: skip

    def remove(self, sandbox_id: str, token_hash: str | None = None) -> list[str]:
        query = delete(SshAccessRow).where(SshAccessRow.sandbox_id == sandbox_id)
        if token_hash is not None:
            query = query.where(SshAccessRow.token_hash == token_hash)
        with self.session() as s:
            return list(s.scalars(query.returning(SshAccessRow.id)))

    def existing(self, ids: Collection[str]) -> set[str]:
        query = select(SshAccessRow.id).where(SshAccessRow.id.in_(list(ids)))
        with self.session() as s:
            return set(s.scalars(query))

    def find(self, token_hash: str) -> SshAccess | None:
        with self.session() as s:
            row = s.scalars(
                select(SshAccessRow).where(SshAccessRow.token_hash == token_hash)
            ).first()
            if row is None:
                return None
            return SshAccess(id=row.id, sandbox_id=row.sandbox_id,
                             organization_id=row.organization_id,
                             expires_at=_aware(row.expires_at), created_at=_aware(row.created_at),
                             updated_at=_aware(row.updated_at))  # fmt: skip
