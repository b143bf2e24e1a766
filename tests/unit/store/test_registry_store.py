"""Registry credentials and pulled-image snapshots on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from cove.core.registries import DockerRegistry
from cove.core.snapshots import Snapshot
from cove.errors import NotFound
from cove.store.keys import SqlKeyStore
from cove.store.registries import SqlRegistryStore
from cove.store.snapshots import SqlSnapshotStore


def test_registry_round_trip_and_scoping(db: Engine) -> None:
    keys, store = SqlKeyStore(db), SqlRegistryStore(db)
    org, other = keys.ensure_organization("a"), keys.ensure_organization("b")
    reg = DockerRegistry(id="r1", organization_id=org, name="n", url="ghcr.io", username="u",
                         password="pw", project="team")  # fmt: skip
    store.add(reg)
    got = store.get(org, "r1")
    assert (got.url, got.username, got.password, got.project) == ("ghcr.io", "u", "pw", "team")
    assert got.created_at.tzinfo is not None and not got.is_default
    with pytest.raises(NotFound):
        store.get(other, "r1")
    assert store.list(other) == []
    got.is_default = True
    store.save(got)
    assert store.list(org)[0].is_default
    store.remove("r1")
    assert store.list(org) == []


def test_pulled_snapshot_keeps_digest_and_config(db: Engine) -> None:
    org = SqlKeyStore(db).ensure_organization("a")
    store = SqlSnapshotStore(db)
    config = {"env": {"A": "1"}, "workdir": "/app", "user": "app", "entrypoint": [], "cmd": ["sh"]}
    store.add(Snapshot(id="s1", organization_id=org, name="py", state="pulling",
                       digest="sha256:" + "0" * 64, image_config=config))  # fmt: skip
    assert [s.id for s in store.all_pulling()] == ["s1"]
    got = store.get(org, "py")
    assert got.digest == "sha256:" + "0" * 64 and got.image_config == config
