"""SQL implementation of :class:`cove.core.ssh_access.SshAccessStore`."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Select, delete, select

from cove.core.sandbox import utcnow
from cove.core.ssh_access import SshAccess
from cove.store.models import ApiKeyRow, SshAccessRow
from cove.store.sql import SqlStore, _aware


def _with_key(query: Select) -> Select:
    """``query`` (of grants) with the id and expiry of the key that asked for each
    (both None when the grant has no key, or its key was deleted)."""
    return query.add_columns(ApiKeyRow.id, ApiKeyRow.expires_at).outerjoin(
        ApiKeyRow, ApiKeyRow.id == SshAccessRow.key_id)


def _key_works(key_id: str | None, found: str | None, expires_at: datetime | None,
               now: datetime) -> bool:  # fmt: skip
    """Whether the grant's key still works (a grant without a key: COVE_API_KEY's)."""
    if key_id is None:
        return True
    return found is not None and (expires_at is None or _aware(expires_at) > now)


class SqlSshAccessStore(SqlStore):
    def add(self, access: SshAccess, token_hash: str) -> None:
        with self.session() as s:
            s.add(SshAccessRow(
                id=access.id, sandbox_id=access.sandbox_id,
                organization_id=access.organization_id, token_hash=token_hash,
                expires_at=access.expires_at, created_at=access.created_at,
                updated_at=access.updated_at, key_id=access.key_id))  # fmt: skip

    def remove(self, sandbox_id: str, token_hash: str | None = None) -> list[str]:
        query = delete(SshAccessRow).where(SshAccessRow.sandbox_id == sandbox_id)
        if token_hash is not None:
            query = query.where(SshAccessRow.token_hash == token_hash)
        with self.session() as s:
            return list(s.scalars(query.returning(SshAccessRow.id)))

    def existing(self, ids: Collection[str]) -> set[str]:
        query = _with_key(select(SshAccessRow.id, SshAccessRow.key_id)
                          .where(SshAccessRow.id.in_(list(ids))))  # fmt: skip
        now = utcnow()
        with self.session() as s:
            return {grant for grant, key_id, found, expires_at in s.execute(query)
                    if _key_works(key_id, found, expires_at, now)}  # fmt: skip

    def find(self, token_hash: str) -> SshAccess | None:
        query = _with_key(select(SshAccessRow).where(SshAccessRow.token_hash == token_hash))
        with self.session() as s:
            found = s.execute(query).first()
            if found is None:
                return None
            row, key, expires_at = found
            if not _key_works(row.key_id, key, expires_at, utcnow()):
                return None
            return SshAccess(id=row.id, sandbox_id=row.sandbox_id,
                             organization_id=row.organization_id,
                             expires_at=_aware(row.expires_at), created_at=_aware(row.created_at),
                             updated_at=_aware(row.updated_at), key_id=row.key_id)  # fmt: skip
