"""Quotas and usage periods on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from cove.core.metering import Period
from cove.core.ports import Resources
from cove.core.quotas import Charge
from cove.core.sandbox import Sandbox, SandboxState
from cove.store.keys import SqlKeyStore
from cove.store.sql import SqlSandboxStore
from cove.store.usage import SqlQuotaStore, SqlUsageStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_quota_overrides_and_holdings(db: Engine) -> None:
    org = SqlKeyStore(db).ensure_organization("q")
    other = SqlKeyStore(db).ensure_organization("other")
    quotas = SqlQuotaStore(db)
    assert quotas.quota_overrides(org) == {}
    quotas.set_quota_overrides(org, {"cpu": 4, "volumes": 2})
    quotas.set_quota_overrides(org, {"cpu": None, "disk": 9})
    found = quotas.quota_overrides(org)
    assert (found["cpu"], found["volumes"], found["disk"], found["memory"]) == (None, 2, 9, None)
    sandboxes = SqlSandboxStore(db)
    for i, owner in enumerate((org, org, other)):
        sandboxes.add(Sandbox(id=f"s{i}", organization_id=owner, name=f"s{i}", snapshot="x",
                              user="daytona", resources=Resources(i + 1, 1, 3),
                              state=SandboxState.STOPPED))  # fmt: skip
    held = sorted((h.sandbox_id, h.state, h.resources.cpu) for h in quotas.holdings(org))
    assert held == [("s0", SandboxState.STOPPED, 1), ("s1", SandboxState.STOPPED, 2)]
    assert quotas.snapshot_usage(org) == (0, 0) and quotas.volume_count(org) == 0


def test_periods_open_close_query_and_mark(db: Engine) -> None:
    usage = SqlUsageStore(db)
    compute, disk = Charge(2, 4, 10), Charge(disk=10)
    usage.switch_all([("a", T0, Period("a", "org", compute, T0, seen_at=T0))])
    usage.switch_all([  # (several in one transaction, in order)
        ("a", T0 + timedelta(seconds=60), Period("a", "org", disk, T0 + timedelta(seconds=60))),
        ("b", T0, Period("b", "org2", compute, T0)),
        ("b", T0 - timedelta(seconds=5), None),  # never ends before it started
    ])
    assert [(p.sandbox_id, p.held) for p in usage.open_periods()] == [("a", disk)]
    found = usage.periods("org", T0 + timedelta(seconds=30), T0 + timedelta(days=1))
    assert [(p.held, p.start_at, p.end_at) for p in found] == [
        (compute, T0, T0 + timedelta(seconds=60)), (disk, T0 + timedelta(seconds=60), None)]
    assert usage.periods("org", T0 + timedelta(seconds=61), T0 + timedelta(days=1),
                         sandbox_id="zz") == []  # fmt: skip
    assert [p.end_at for p in usage.periods("org2", T0 - timedelta(1), T0 + timedelta(1))] == [T0]
    assert usage.mark_seen(T0 + timedelta(hours=1)) == 1
    assert usage.open_periods()[0].seen_at == T0 + timedelta(hours=1)
