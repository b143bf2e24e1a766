"""The SQL stores behave the same on SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from cove.core.keys import ApiKey
from cove.core.permissions import ALL, Permission
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import BadRequest, Conflict, NotFound
from cove.store.keys import SqlKeyStore
from cove.store.sql import SqlSandboxStore


def _sandbox(org: str, n: int, **kw: object) -> Sandbox:
    return Sandbox(id=f"id-{n}", organization_id=org, name=f"name-{n}", snapshot="s",
                   user="daytona", resources=Resources(1, 2, 3), **kw)


def test_round_trip_keeps_every_field(db: Engine) -> None:
    org = SqlKeyStore(db).ensure_organization("o")
    store = SqlSandboxStore(db)
    sb = _sandbox(org, 1, labels={"a": "ü"}, env={"X": "1"}, runtime_env={"Y": "2"}, public=True,
                  network_allow_list="10.0.0.0/8", auto_delete_interval=0,
                  state=SandboxState.ERROR, error_reason="why", recoverable=True)
    store.add(sb)
    got = store.get(org, "name-1")
    assert got == sb
    assert got.created_at.tzinfo is not None and got.created_at == sb.created_at
    got.resources = Resources(4, 8, 10)
    got.last_activity_at = datetime(2030, 1, 1, tzinfo=UTC)
    store.save(got)
    assert store.get_by_id("id-1") == got


def test_names_are_unique_per_organization_only(db: Engine) -> None:
    keys = SqlKeyStore(db)
    a, b = keys.ensure_organization("a"), keys.ensure_organization("b")
    store = SqlSandboxStore(db)
    store.add(_sandbox(a, 1))
    with pytest.raises(Conflict):
        store.add(Sandbox(**{**_sandbox(a, 2).__dict__, "name": "name-1"}))
    store.add(Sandbox(**{**_sandbox(b, 3).__dict__, "name": "name-1"}))
    with pytest.raises(NotFound):
        store.get(b, "id-1")
    assert store.get(b, "name-1").id == "id-3"


def test_list_pages_filters_and_removes(db: Engine) -> None:
    org = SqlKeyStore(db).ensure_organization("o")
    store = SqlSandboxStore(db)
    for n in range(5):
        store.add(_sandbox(org, n, labels={"k": "v" if n % 2 == 0 else "w"}))
    page, cursor = store.list(org, labels={"k": "v"}, limit=2)
    assert [s.id for s in page] == ["id-0", "id-2"] and cursor
    page, cursor = store.list(org, labels={"k": "v"}, limit=2, cursor=cursor)
    assert [s.id for s in page] == ["id-4"] and cursor is None
    store.remove("id-0")
    assert [s.id for s in store.list(org, states=[SandboxState.CREATING])[0]] == [
        "id-1", "id-2", "id-3", "id-4"]
    with pytest.raises(BadRequest):
        store.list(org, cursor="abc")


def test_keys_store_only_hashes(db: Engine) -> None:
    keys = SqlKeyStore(db)
    org = keys.ensure_organization("o")
    assert keys.ensure_organization("o") == org
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    key = ApiKey(id="k1", organization_id=org, name="k", created_at=at, mask="cove_***abc",
                 permissions=frozenset({Permission.WRITE_SANDBOXES}),
                 expires_at=at + timedelta(days=1), created_by="k0")  # fmt: skip
    keys.add_key(key, "ab" * 32)
    assert keys.key_for("ab" * 32) == key
    assert keys.key_for("cd" * 32) is None
    assert keys.count_keys() == 1
    operator = replace(key, id="k2", name="admin", permissions=None, expires_at=None)
    keys.add_key(operator, "ef" * 32)
    assert keys.key_for("ef" * 32) == operator and operator.held == ALL
    assert keys.list_keys(org) == [key, operator] and keys.list_keys("nobody") == []
    assert [o.name for o in keys.organizations()] == ["o"]
    assert keys.organization(org).name == "o" and keys.organization("nobody") is None


def test_key_use_is_stamped_in_batches_and_never_back(db: Engine) -> None:
    keys = SqlKeyStore(db)
    org = keys.ensure_organization("o")
    at = datetime(2026, 1, 2, tzinfo=UTC)
    keys.add_key(ApiKey(id="k1", organization_id=org, name="k", created_at=at, mask="m",
                        permissions=None), "ab" * 32)  # fmt: skip
    keys.touch_keys({"k1": at + timedelta(minutes=5), "gone": at})
    assert keys.key_for("ab" * 32).last_used_at == at + timedelta(minutes=5)
    keys.touch_keys({"k1": at + timedelta(minutes=1)})  # an older stamp
    assert keys.key_for("ab" * 32).last_used_at == at + timedelta(minutes=5)
    assert keys.delete_key("k1") and not keys.delete_key("k1")
    assert keys.key_for("ab" * 32) is None


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    from cove.store.sql import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_timers_due_reads_only_the_due_rows(db: Engine) -> None:
    """The SQL filter agrees with core.timers.due() on every case of its own test,
    on SQLite and PostgreSQL, and returns nothing else."""
    from tests.unit.core.test_timers import CASES, T0

    org = SqlKeyStore(db).ensure_organization("o")
    store = SqlSandboxStore(db)
    for n, (box, _expected) in enumerate(CASES):
        row = replace(box, id=f"id-{n}", name=f"name-{n}", organization_id=org)
        store.add(row)
    due_ids = {sb.id for sb in store.timers_due(T0, 60.0)}
    expected = {f"id-{n}" for n, (_box, action) in enumerate(CASES) if action is not None}
    assert expected and due_ids == expected
    assert store.timers_due(T0 - timedelta(days=400), 60.0) == []  # nothing due back then


def test_keys_made_before_0010_hold_every_permission(tmp_path) -> None:
    """Migration 0010 keeps existing keys working as they did: all permissions, no
    expiry, a mask that reveals nothing of them."""
    from alembic import command

    from cove.store.migrate import alembic_config, upgrade
    from cove.store.sql import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config(str(engine.url))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0009")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO organizations VALUES ('o1', 'old', "
                                "'2026-01-01 00:00:00')"))
        connection.execute(text("INSERT INTO api_keys VALUES ('k1', 'o1', 'admin', :h, "
                                "'2026-01-01 00:00:00')"), {"h": "ab" * 32})  # fmt: skip
    upgrade(engine)
    key = SqlKeyStore(engine).key_for("ab" * 32)
    assert key is not None and key.permissions is None and key.held == ALL
    assert key.expires_at is None and key.mask == "cove_" + "*" * 20


def test_the_migrations_make_the_schema_the_models_describe(tmp_path) -> None:
    """Every column, index and table of the models comes from a migration (a column
    added to a model without one would exist in tests' fresh schemas only)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from cove.store.migrate import upgrade
    from cove.store.models import Base
    from cove.store.sql import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
