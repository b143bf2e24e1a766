"""Secrets on SQLite and PostgreSQL: encrypted at rest, scoped to their organization,
paged, and mounted in sandboxes until either is deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from cove.core.ports import Resources
from cove.core.sandbox import Sandbox
from cove.core.secrets import SecretService
from cove.errors import Conflict, CoveError, NotFound
from cove.store.keys import SqlKeyStore
from cove.store.secretbox import SecretBox
from cove.store.secrets import SqlSecretStore
from cove.store.sql import SqlSandboxStore

VALUE = "sk-very-secret-value-0123456789"


@pytest.fixture
def service(db: Engine, tmp_path: Path) -> SecretService:
    return SecretService(SqlSecretStore(db, SecretBox.in_dir(tmp_path)))


def _orgs(db: Engine) -> tuple[str, str]:
    keys = SqlKeyStore(db)
    return keys.ensure_organization("a"), keys.ensure_organization("b")


def test_values_are_encrypted_and_scoped(db: Engine, service: SecretService,
                                         tmp_path: Path) -> None:  # fmt: skip
    org, other = _orgs(db)
    made = service.create(org, name="api-key", value=VALUE, hosts=["api.example.com"])
    with db.connect() as conn:
        raw = conn.execute(text("SELECT * FROM secrets")).one()
    assert VALUE.encode() not in b"".join(
        v if isinstance(v, bytes) else str(v).encode() for v in raw)
    assert (tmp_path / "secrets.key").stat().st_mode & 0o777 == 0o600
    assert service.store.value(org, made.id) == VALUE
    got = service.get(org, made.id)
    assert (got.name, got.hosts, got.placeholder) == ("api-key", ["api.example.com"],
                                                      made.placeholder)  # fmt: skip
    assert VALUE not in repr(got)
    for call in (lambda: service.get(other, made.id), lambda: service.store.value(other, made.id),
                 lambda: service.update(other, made.id, value="x"),
                 lambda: service.delete(other, made.id)):  # fmt: skip
        with pytest.raises(NotFound):
            call()
    assert service.list(other).items == [] and service.store.by_names(other, ["api-key"]) == {}
    with pytest.raises(Conflict):
        service.create(org, name="api-key", value="v")
    assert service.create(other, name="api-key", value="v").id != made.id  # names per org


def test_a_ciphertext_is_bound_to_its_row_and_key(db: Engine, service: SecretService,
                                                  tmp_path: Path) -> None:  # fmt: skip
    org, _ = _orgs(db)
    a = service.create(org, name="a", value=VALUE)
    b = service.create(org, name="b", value="other")
    with db.begin() as conn:
        sealed = conn.execute(text("SELECT ciphertext FROM secrets WHERE id = :i"),
                              {"i": a.id}).scalar_one()  # fmt: skip
        conn.execute(text("UPDATE secrets SET ciphertext = :c WHERE id = :i"),
                     {"c": sealed, "i": b.id})  # fmt: skip
    with pytest.raises(CoveError):
        service.store.value(org, b.id)
    other_key = SqlSecretStore(db, SecretBox(b"k" * 32))
    with pytest.raises(CoveError):
        other_key.value(org, a.id)


def test_update_keeps_what_is_not_sent(db: Engine, service: SecretService) -> None:
    org, _ = _orgs(db)
    made = service.create(org, name="s", value=VALUE, description="d", hosts=["a.test"])
    service.update(org, made.id, hosts=["*.b.test"])
    got = service.get(org, made.id)
    assert (got.description, got.hosts) == ("d", ["*.b.test"])
    assert service.store.value(org, made.id) == VALUE
    service.update(org, made.id, value="new")
    assert service.store.value(org, made.id) == "new"
    assert service.get(org, made.id).placeholder == made.placeholder


def test_pages_sort_and_filter(db: Engine, service: SecretService) -> None:
    org, other = _orgs(db)
    for name in ("beta", "alpha", "gamma_x", "delta"):
        service.create(org, name=name, value="v")
    service.create(other, name="alphabet", value="v")
    first = service.list(org, limit=3, sort="name", order="asc")
    assert [s.name for s in first.items] == ["alpha", "beta", "delta"] and first.total == 4
    rest = service.list(org, limit=3, sort="name", order="asc", cursor=first.next_cursor)
    assert [s.name for s in rest.items] == ["gamma_x"] and rest.next_cursor is None
    assert [s.name for s in service.list(org, name="ALP").items] == ["alpha"]
    assert [s.name for s in service.list(org, name="_").items] == ["gamma_x"]  # not a wildcard
    assert service.list(org).items[0].name == "delta"  # newest first by default


def test_mounts_follow_sandbox_and_secret(db: Engine, service: SecretService) -> None:
    org, other = _orgs(db)
    sandboxes = SqlSandboxStore(db)
    for n in (1, 2):
        sandboxes.add(Sandbox(id=f"sb{n}", organization_id=org, name=f"n{n}", snapshot="s",
                              user="u", resources=Resources(1, 1, 1)))  # fmt: skip
    a = service.create(org, name="a", value=VALUE)
    b = service.create(org, name="b", value="v2")
    service.mount("sb1", service.resolve(org, [{"A": "a"}, {"B": "b"}], {}))
    assert service.env("sb1") == {"A": a.placeholder, "B": b.placeholder}
    assert service.env("sb2") == {}  # not visible to another sandbox
    with pytest.raises(NotFound):  # another organization's names resolve to nothing
        service.resolve(other, [{"A": "a"}], {})
    service.delete(org, b.id)
    assert service.env("sb1") == {"A": a.placeholder}
    sandboxes.remove("sb1")
    assert service.store.mounts("sb1") == {}


def test_a_sandbox_made_without_secrets_reads_none_for_its_first_calls(
        db: Engine, service: SecretService) -> None:  # fmt: skip
    org, _ = _orgs(db)
    SqlSandboxStore(db).add(Sandbox(id="sb1", organization_id=org, name="n1", snapshot="s",
                                    user="u", resources=Resources(1, 1, 1)))  # fmt: skip
    service.none_mounted("sb1")
    service.store.mounts = lambda _id: pytest.fail("read")  # type: ignore[method-assign]
    assert service.env("sb1") == {}
