"""SQL implementations of :class:`cove.core.quotas.QuotaStore` (quotas and what they
are checked against) and :class:`cove.core.metering.UsageStore` (usage periods)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, case, func, insert, literal, select, update

from cove.core.metering import Change, Period
from cove.core.ports import Resources
from cove.core.quotas import QUOTA_FIELDS, Charge, Holding
from cove.core.sandbox import SandboxState, utcnow
from cove.store.models import (
    OrganizationQuotaRow,
    SandboxRow,
    SnapshotRow,
    UsagePeriodRow,
    VolumeRow,
)
from cove.store.sql import SqlStore, _aware


class SqlQuotaStore(SqlStore):
    def holdings(self, organization_id: str) -> list[Holding]:
        query = select(SandboxRow.id, SandboxRow.state, SandboxRow.cpu, SandboxRow.memory,
                       SandboxRow.disk).where(SandboxRow.organization_id == organization_id)
        with self.connection() as conn:  # (checked at every create: no ORM session)
            return [Holding(sid, SandboxState(state), Resources(cpu, memory, disk))
                    for sid, state, cpu, memory, disk in conn.execute(query)]  # fmt: skip

    def snapshot_usage(self, organization_id: str) -> tuple[int, int]:
        query = select(func.count(), func.coalesce(func.sum(SnapshotRow.size), 0)).where(
            SnapshotRow.organization_id == organization_id)  # fmt: skip
        with self.session() as s:
            count, size = s.execute(query).one()
            return int(count), int(size or 0)

    def volume_count(self, organization_id: str) -> int:
        query = select(func.count()).where(VolumeRow.organization_id == organization_id)
        with self.session() as s:
            return int(s.execute(query).scalar_one())

    def quota_overrides(self, organization_id: str) -> dict[str, int | None]:
        with self.connection() as conn:
            row = conn.execute(_overrides(), {"org": organization_id}).first()
        return {} if row is None else dict(zip(QUOTA_FIELDS, row, strict=True))

    def set_quota_overrides(self, organization_id: str, fields: dict[str, int | None]) -> None:
        with self.session() as s:
            row = s.get(OrganizationQuotaRow, organization_id)
            if row is None:
                row = OrganizationQuotaRow(organization_id=organization_id)
                s.add(row)
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = utcnow()


class SqlUsageStore(SqlStore):
    def switch_all(self, changes: Sequence[Change]) -> None:
        row = UsagePeriodRow
        # Writes only: on SQLite the transaction takes the write lock at once (waiting
        # its turn), instead of failing to upgrade a read made before another's commit.
        with self.connection() as conn:
            for sandbox_id, at, period in changes:
                end = case((row.start_at > literal(at, row.start_at.type), row.start_at),
                           else_=literal(at, row.start_at.type))  # fmt: skip
                close = update(row).where(row.sandbox_id == sandbox_id, row.end_at.is_(None))
                conn.execute(close.values(end_at=end))
                if period is not None:
                    conn.execute(insert(row).values(
                        sandbox_id=period.sandbox_id, organization_id=period.organization_id,
                        cpu=period.held.cpu, memory=period.held.memory, disk=period.held.disk,
                        start_at=period.start_at, end_at=None,
                        seen_at=period.seen_at or period.start_at,
                    ))  # fmt: skip

    def open_periods(self) -> list[Period]:
        query = select(UsagePeriodRow).where(UsagePeriodRow.end_at.is_(None))
        with self.session() as s:
            return [_period(row) for row in s.scalars(query)]

    def periods(self, organization_id: str, start: datetime, end: datetime,
                sandbox_id: str | None = None) -> list[Period]:  # fmt: skip
        row = UsagePeriodRow
        query = select(row.sandbox_id, row.organization_id, row.cpu, row.memory, row.disk,
                       row.start_at, row.end_at, row.seen_at).where(
            row.organization_id == organization_id, row.start_at < end,
            row.end_at.is_(None) | (row.end_at > start),
        )  # fmt: skip
        if sandbox_id is not None:
            query = query.where(row.sandbox_id == sandbox_id)
        with self.session() as s:  # columns, not entities: thousands of rows stay cheap
            return [Period(sid, org, Charge(cpu, memory, disk), _aware(begin),
                           _aware(finish) if finish else None, _aware(seen))
                    for sid, org, cpu, memory, disk, begin, finish, seen
                    in s.execute(query.order_by(row.start_at, row.id))]  # fmt: skip

    def mark_seen(self, at: datetime) -> int:
        query = update(UsagePeriodRow).where(UsagePeriodRow.end_at.is_(None)).values(seen_at=at)
        with self.session() as s:
            return int(s.execute(query).rowcount)  # type: ignore[attr-defined]


def _period(row: UsagePeriodRow) -> Period:
    return Period(
        sandbox_id=row.sandbox_id, organization_id=row.organization_id,
        held=Charge(row.cpu, row.memory, row.disk), start_at=_aware(row.start_at),
        end_at=_aware(row.end_at) if row.end_at else None, seen_at=_aware(row.seen_at),
    )  # fmt: skip


@functools.cache
def _overrides() -> Select[Any]:
    """An organization's quota overrides (parameter ``org``): read by every create, built
    once."""
    table = OrganizationQuotaRow.__table__
    return select(*(table.c[name] for name in QUOTA_FIELDS)).where(
        table.c.organization_id == bindparam("org"))  # fmt: skip
