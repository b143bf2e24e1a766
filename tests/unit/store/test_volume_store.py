"""The volume store and sandbox volume binds, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from cove.core.ports import Resources, VolumeBind
from cove.core.sandbox import Sandbox
from cove.core.volumes import Volume
from cove.errors import Conflict, NotFound
from cove.store.keys import SqlKeyStore
from cove.store.sql import SqlSandboxStore
from cove.store.volumes import SqlVolumeStore


def test_volume_round_trip_and_scoping(db: Engine) -> None:
    keys = SqlKeyStore(db)
    a, b = keys.ensure_organization("a"), keys.ensure_organization("b")
    store = SqlVolumeStore(db)
    vol = Volume(id="v1", organization_id=a, name="data")
    store.add(vol)
    assert store.get(a, "data") == vol == store.get(a, "v1")
    with pytest.raises(NotFound):
        store.get(b, "v1")
    with pytest.raises(Conflict):
        store.add(Volume(id="v2", organization_id=a, name="data"))
    store.add(Volume(id="v3", organization_id=b, name="data"))
    vol.last_used_at = vol.updated_at
    store.save(vol)
    assert store.get(a, "v1").last_used_at == vol.updated_at
    assert [v.id for v in store.list(a)] == ["v1"]
    store.remove("v1")
    assert store.list(a) == []


def test_sandbox_keeps_its_volume_binds(db: Engine) -> None:
    org = SqlKeyStore(db).ensure_organization("o")
    store = SqlSandboxStore(db)
    binds = [VolumeBind("v1", "/data", ""), VolumeBind("v2", "/x/y", "sub/dir")]
    sb = Sandbox(id="s1", organization_id=org, name="s1", snapshot="s", user="daytona",
                 resources=Resources(1, 1, 3), volumes=binds)  # fmt: skip
    store.add(sb)
    assert store.get_by_id("s1").volumes == binds
