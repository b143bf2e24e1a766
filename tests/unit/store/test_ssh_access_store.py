"""SSH access grants, on SQLite and PostgreSQL, and the service over them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine

from cove.core.keys import ApiKey
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, utcnow
from cove.core.ssh_access import SshAccessService
from cove.errors import BadRequest, NotFound
from cove.store.keys import SqlKeyStore
from cove.store.sql import SqlSandboxStore
from cove.store.ssh_access import SqlSshAccessStore


def _service(db: Engine) -> tuple[SshAccessService, str, str]:
    keys = SqlKeyStore(db)
    org, other = keys.ensure_organization("o"), keys.ensure_organization("p")
    sandboxes = SqlSandboxStore(db)
    for n, owner in ((1, org), (2, org), (3, other)):
        sandboxes.add(Sandbox(id=f"id-{n}", organization_id=owner, name=f"name-{n}",
                              snapshot="s", user="daytona", resources=Resources(1, 1, 1)))
    return SshAccessService(SqlSshAccessStore(db), sandboxes), org, other


def test_grants_live_by_hash_until_revoked_or_expired(db: Engine) -> None:
    ssh, org, other = _service(db)
    revoked: list[list[str]] = []
    ssh.revoked_hooks.append(revoked.append)
    first, token = ssh.create(org, "name-1", 5)
    assert ssh.check(token) == first and first.expires_at - first.created_at == timedelta(minutes=5)
    assert first.expires_at.tzinfo is not None
    assert ssh.validate(org, token) == "id-1" and ssh.validate(other, token) is None
    second, token2 = ssh.create(org, "id-1", None)  # replaces the first
    assert revoked == [[first.id]] and ssh.check(token) is None and ssh.check(token2) == second
    _, token3 = ssh.create(org, "name-2", 1)
    ssh.revoke(org, "name-1", "not-a-token")  # nothing of that sandbox matches
    assert ssh.check(token2) is not None
    ssh.revoke(org, "name-2", token2)  # another sandbox's token: untouched
    assert ssh.check(token2) is not None
    ssh.revoke(org, "name-1", token2)
    assert ssh.check(token2) is None and ssh.check(token3) is not None
    ssh.forget("id-2")
    assert ssh.check(token3) is None
    _, short = ssh.create(org, "name-1", 1e-6)
    assert ssh.check(short) is None  # expired already


def test_refusals(db: Engine) -> None:
    ssh, org, _ = _service(db)
    with pytest.raises(NotFound):
        ssh.create(org, "name-3", 5)  # another organization's sandbox
    with pytest.raises(NotFound):
        ssh.revoke(org, "id-3", None)
    for minutes in (0, -1, 366 * 24 * 60):
        with pytest.raises(BadRequest):
            ssh.create(org, "name-1", minutes)
    off = SshAccessService(ssh._store, ssh._sandboxes, enabled=False)  # noqa: SLF001
    with pytest.raises(NotFound):
        off.create(org, "name-3", 5)  # the sandbox is looked up first
    with pytest.raises(BadRequest, match="COVE_SSH_PORT=0"):
        off.create(org, "name-1", 5)
    assert ssh.check("") is None and ssh.check("a" * 33) is None and ssh.check("a-" * 16) is None


def test_a_grant_revoked_through_another_replica_is_swept_here(db: Engine) -> None:
    here, org, _ = _service(db)
    there = SshAccessService(SqlSshAccessStore(db), SqlSandboxStore(db))  # another replica
    closed: list[list[str]] = []
    here.revoked_hooks.append(closed.append)
    kept, _ = here.create(org, "name-1", 5)
    gone, _ = here.create(org, "name-2", 5)
    here.sweep([kept.id, gone.id])
    assert closed == []  # both still granted
    there.revoke(org, "name-2", None)
    here.sweep([kept.id, gone.id])
    assert closed == [[gone.id]]
    here.sweep([])
    assert closed == [[gone.id]]


def _key(db: Engine, org: str, name: str, expires_at: datetime | None = None) -> str:
    key = ApiKey(id=f"key-{name}", organization_id=org, name=name, permissions=None,
                 mask="cove_****", created_at=utcnow(), expires_at=expires_at)  # fmt: skip
    SqlKeyStore(db).add_key(key, f"hash-{name}")
    return key.id


def test_a_grant_ends_with_the_key_that_asked_for_it(db: Engine) -> None:
    """Revoked or expired, the key takes its tokens with it: they open nothing, and
    the sweep closes their connections (here and on every replica)."""
    ssh, org, _ = _service(db)
    closed: list[list[str]] = []
    ssh.revoked_hooks.append(closed.append)
    revoked_key = _key(db, org, "revoked")
    expiring_key = _key(db, org, "expiring", utcnow() + timedelta(seconds=1))
    by_revoked, revoked_token = ssh.create(org, "name-1", 5, revoked_key)
    by_expiring, expiring_token = ssh.create(org, "name-2", 5, expiring_key)
    assert by_revoked.key_id == revoked_key
    assert ssh.check(revoked_token) == by_revoked and ssh.check(expiring_token) == by_expiring
    sandboxes = SqlSandboxStore(db)
    sandboxes.add(Sandbox(id="id-4", organization_id=org, name="name-4", snapshot="s",
                          user="daytona", resources=Resources(1, 1, 1)))  # fmt: skip
    operators, operators_token = ssh.create(org, "name-4", 5)  # COVE_API_KEY's: no key
    grants = [by_revoked.id, by_expiring.id, operators.id]
    ssh.sweep(grants)
    assert closed == []

    assert SqlKeyStore(db).delete_key(revoked_key)
    assert ssh.check(revoked_token) is None and ssh.validate(org, revoked_token) is None
    ssh.sweep(grants)
    assert closed == [[by_revoked.id]]

    grants.remove(by_revoked.id)  # (the gateway forgets a grant it closed)
    time.sleep(1.1)  # the other key expires
    assert ssh.check(expiring_token) is None
    ssh.sweep(grants)
    assert closed[-1] == [by_expiring.id]
    assert ssh.check(operators_token) == operators  # untouched throughout
