"""Signed preview tokens expired early, in the database (several API replicas)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select

from cove.store.models import RevokedTokenRow
from cove.store.sql import SqlStore


class SqlRevocations(SqlStore):
    """Implements :class:`cove.core.previews.Revocations`; a row is dropped once its
    token would have expired anyway."""

    def add(self, token_hash: str, expires: int) -> None:
        at = datetime.fromtimestamp(expires, UTC)
        with self.session() as s:
            s.execute(delete(RevokedTokenRow).where(
                RevokedTokenRow.expires_at < datetime.now(UTC)))  # fmt: skip
            if s.get(RevokedTokenRow, token_hash) is None:
                s.add(RevokedTokenRow(token_hash=token_hash, expires_at=at))

    def has(self, token_hash: str) -> bool:
        query = select(RevokedTokenRow.token_hash).where(
            RevokedTokenRow.token_hash == token_hash)  # fmt: skip
        with self.session() as s:
            return s.scalars(query).first() is not None
