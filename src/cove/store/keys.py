"""SQL implementation of :class:`cove.core.ports.KeyStore`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from cove.core.keys import LEGACY_MASK, ApiKey, Organization
from cove.core.permissions import Permission
from cove.core.sandbox import utcnow
from cove.store.models import ApiKeyRow, OrganizationRow
from cove.store.sql import SqlStore, _aware


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

    def organization(self, organization_id: str) -> Organization | None:
        with self.session() as s:
            row = s.get(OrganizationRow, organization_id)
            return None if row is None else _organization(row)

    def organizations(self) -> list[Organization]:
        with self.session() as s:
            rows = s.scalars(select(OrganizationRow).order_by(OrganizationRow.created_at))
            return [_organization(row) for row in rows]

    def add_key(self, key: ApiKey, key_hash: str) -> None:
        permissions = None if key.permissions is None else sorted(key.permissions)
        with self.session() as s:
            s.add(ApiKeyRow(
                id=key.id, organization_id=key.organization_id, name=key.name,
                key_hash=key_hash, created_at=key.created_at, permissions=permissions,
                expires_at=key.expires_at, masked=key.mask, created_by=key.created_by,
            ))  # fmt: skip

    def key_for(self, key_hash: str) -> ApiKey | None:
        with self.session() as s:
            row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash)).first()
            return None if row is None else _key(row)

    def key(self, key_id: str) -> ApiKey | None:
        with self.session() as s:
            row = s.get(ApiKeyRow, key_id)
            return None if row is None else _key(row)

    def list_keys(self, organization_id: str | None = None) -> list[ApiKey]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if organization_id is not None:
            query = query.where(ApiKeyRow.organization_id == organization_id)
        with self.session() as s:
            return [_key(row) for row in s.scalars(query)]

    def delete_key(self, key_id: str) -> bool:
        with self.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                return False
            s.delete(row)
            return True

    def touch_keys(self, stamps: Mapping[str, datetime]) -> None:
        if not stamps:
            return
        table = cast("Table", ApiKeyRow.__table__)
        newer = (update(table)
                 .where(table.c.id == bindparam("kid"),
                        or_(table.c.last_used_at.is_(None),
                            table.c.last_used_at < bindparam("at")))
                 .values(last_used_at=bindparam("at")))  # fmt: skip
        with self.session() as s:
            s.connection().execute(newer, [{"kid": k, "at": v} for k, v in stamps.items()])

    def count_keys(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(ApiKeyRow)) or 0


def _organization(row: OrganizationRow) -> Organization:
    return Organization(id=row.id, name=row.name, created_at=_aware(row.created_at))


def _key(row: ApiKeyRow) -> ApiKey:
    permissions = (None if row.permissions is None
                   else frozenset(Permission(p) for p in row.permissions
                                  if p in Permission._value2member_map_))  # fmt: skip
    return ApiKey(
        id=row.id, organization_id=row.organization_id, name=row.name,
        permissions=permissions, mask=row.masked or LEGACY_MASK,
        created_at=_aware(row.created_at),
        expires_at=_aware(row.expires_at) if row.expires_at else None,
        last_used_at=_aware(row.last_used_at) if row.last_used_at else None,
        created_by=row.created_by,
    )  # fmt: skip
