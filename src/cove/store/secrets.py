"""SQL implementation of :class:`cove.core.secrets.SecretStore` (values encrypted)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError

from cove.core.secrets import Secret, Sort
from cove.errors import Conflict, NotFound
from cove.store.models import SandboxSecretRow, SecretRow
from cove.store.secretbox import SecretBox
from cove.store.sql import SqlStore, _aware

_FIELDS = "id organization_id name description placeholder created_at updated_at".split()
_SORT = {"name": SecretRow.name, "createdAt": SecretRow.created_at,
         "updatedAt": SecretRow.updated_at}  # fmt: skip


class SqlSecretStore(SqlStore):
    def __init__(self, engine: Engine, box: SecretBox) -> None:
        super().__init__(engine)
        self._box = box

    def add(self, secret: Secret, value: str) -> None:
        row = _to_row(secret, SecretRow())
        row.ciphertext = self._seal(secret, value)
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError as exc:
            raise Conflict(f"Secret with name {secret.name} already exists") from exc

    def get(self, organization_id: str, secret_id: str) -> Secret:
        with self.session() as s:
            return _to_entity(_owned(s.get(SecretRow, secret_id), organization_id, secret_id))

    def by_names(self, organization_id: str, names: Sequence[str]) -> dict[str, Secret]:
        query = select(SecretRow).where(SecretRow.organization_id == organization_id,
                                        SecretRow.name.in_(list(names)))  # fmt: skip
        with self.session() as s:
            return {row.name: _to_entity(row) for row in s.scalars(query)}

    def save(self, secret: Secret, value: str | None) -> None:
        with self.session() as s:
            row = _owned(s.get(SecretRow, secret.id), secret.organization_id, secret.id)
            _to_row(secret, row)
            if value is not None:
                row.ciphertext = self._seal(secret, value)

    def remove(self, secret_id: str) -> None:
        with self.session() as s:
            s.execute(delete(SandboxSecretRow).where(SandboxSecretRow.secret_id == secret_id))
            row = s.get(SecretRow, secret_id)
            if row is not None:
                s.delete(row)

    def page(
        self, organization_id: str, *, name: str | None, sort: Sort, descending: bool,
        offset: int, limit: int,
    ) -> tuple[builtins.list[Secret], int]:  # fmt: skip
        where = [SecretRow.organization_id == organization_id]
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(func.lower(SecretRow.name).like(f"%{escaped.lower()}%", escape="\\"))
        column = _SORT[sort]
        order = (column.desc(), SecretRow.id.desc()) if descending else (column, SecretRow.id)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(SecretRow).where(*where)) or 0
            rows = s.scalars(select(SecretRow).where(*where).order_by(*order)
                             .offset(offset).limit(limit))  # fmt: skip
            return [_to_entity(r) for r in rows], total

    def value(self, organization_id: str, secret_id: str) -> str:
        with self.session() as s:
            row = _owned(s.get(SecretRow, secret_id), organization_id, secret_id)
            return self._box.open(row.ciphertext, secret_id=row.id,
                                  organization_id=row.organization_id)  # fmt: skip

    def mounts(self, sandbox_id: str) -> dict[str, Secret]:
        query = (select(SandboxSecretRow.env_name, SecretRow)
                 .join(SecretRow, SecretRow.id == SandboxSecretRow.secret_id)
                 .where(SandboxSecretRow.sandbox_id == sandbox_id))  # fmt: skip
        with self.session() as s:
            return {env: _to_entity(row) for env, row in s.execute(query).tuples()}

    def set_mounts(self, sandbox_id: str, mounts: Mapping[str, str]) -> None:
        with self.session() as s:
            s.execute(delete(SandboxSecretRow).where(SandboxSecretRow.sandbox_id == sandbox_id))
            s.add_all(SandboxSecretRow(sandbox_id=sandbox_id, env_name=env, secret_id=secret_id)
                      for env, secret_id in mounts.items())  # fmt: skip

    def _seal(self, secret: Secret, value: str) -> bytes:
        return self._box.seal(value, secret_id=secret.id, organization_id=secret.organization_id)


def _owned(row: SecretRow | None, organization_id: str, secret_id: str) -> SecretRow:
    if row is None or row.organization_id != organization_id:
        raise NotFound(f"Secret with ID {secret_id} not found")
    return row


def _to_row(secret: Secret, row: SecretRow) -> SecretRow:
    for name in _FIELDS:
        setattr(row, name, getattr(secret, name))
    row.hosts = list(secret.hosts)
    return row


def _to_entity(row: SecretRow) -> Secret:
    secret = Secret(**{name: getattr(row, name) for name in _FIELDS}, hosts=list(row.hosts))
    secret.created_at = _aware(secret.created_at)
    secret.updated_at = _aware(secret.updated_at)
    return secret
