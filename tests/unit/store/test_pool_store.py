"""The warm pool store on SQLite and PostgreSQL: takes are exclusive under
concurrency, claims write only what they took, pools are per organization."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from cove.core.pool import WarmPool
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import Conflict, NotFound
from cove.store.keys import SqlKeyStore
from cove.store.pools import SqlPoolStore
from cove.store.runners import SqlRunnerStore
from cove.store.sql import SqlSandboxStore

RES = Resources(cpu=1, memory=1, disk=3)


def _pooled(sandboxes: SqlSandboxStore, pool_id: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        sid = str(uuid.uuid4())
        sandboxes.add(Sandbox(id=sid, organization_id="", name=sid, snapshot="cove-default",
                              user="daytona", resources=RES, state=SandboxState.STARTED,
                              warm_pool_id=pool_id))  # fmt: skip
        ids.append(sid)
    return ids


@pytest.mark.parametrize(("waiting", "takers"), [(3, 8), (12, 12)])
def test_concurrent_takes_never_share(db: Engine, waiting: int, takers: int) -> None:
    """Takers all at once: each waiting sandbox goes to one taker, and while any waits,
    no taker finds none (none is sent to a cold boot while a sandbox waits)."""
    sandboxes, pools = SqlSandboxStore(db), SqlPoolStore(db)
    ids = _pooled(sandboxes, "p", waiting)
    gate = threading.Barrier(takers)

    def take(i: int) -> str | None:
        gate.wait()
        return pools.take(f"claim:{i}", pool_id="p")

    with ThreadPoolExecutor(takers) as ex:
        got = list(ex.map(take, range(takers)))
    taken = [g for g in got if g is not None]
    assert sorted(taken) == sorted(ids)  # each once; the takers beyond found none
    assert pools.take("claim:late", pool_id="p") is None


def test_pooled_rows_are_no_organizations_and_claims_write_what_they_took(db: Engine) -> None:
    sandboxes, pools = SqlSandboxStore(db), SqlPoolStore(db)
    org = SqlKeyStore(db).ensure_organization("a")
    sid = _pooled(sandboxes, "p", 1)[0]
    assert sandboxes.list(org) == ([], None)
    with pytest.raises(NotFound):
        sandboxes.get(org, sid)
    assert [sb.id for sb in pools.unowned()] == [sid]
    sandboxes.add(Sandbox(id="mine", organization_id=org, name="taken-name",
                          snapshot="cove-default", user="daytona", resources=RES))  # fmt: skip
    claimed = Sandbox(id=sid, organization_id=org, name="new", snapshot="cove-default",
                      user="root", resources=RES, state=SandboxState.STARTED)  # fmt: skip
    with pytest.raises(NotFound):
        pools.adopt(claimed, "claim:not-taken")  # a claim writes only a row it took
    assert pools.take("claim:1", pool_id="p") == sid
    with pytest.raises(Conflict):
        pools.adopt(Sandbox(**{**claimed.__dict__, "name": "taken-name"}), "claim:1")
    pools.adopt(claimed, "claim:1")
    got = sandboxes.get(org, "new")
    assert (got.id, got.user, got.warm_pool_id) == (sid, "root", None)
    assert pools.unowned() == []


def test_pools_are_per_organization(db: Engine) -> None:
    pools = SqlPoolStore(db)
    a, b = (SqlKeyStore(db).ensure_organization(n) for n in ("a", "b"))
    pool = WarmPool(id="p1", organization_id=a, snapshot="cove-default", target="local",
                    size=2, resources=RES, isolation="crun", user="daytona")  # fmt: skip
    pools.add(pool)
    with pytest.raises(Conflict):
        pools.add(WarmPool(**{**pool.__dict__, "id": "p2"}))  # same snapshot and target
    pools.add(WarmPool(**{**pool.__dict__, "id": "p3", "organization_id": b}))
    assert pools.get(a, "p1").size == 2 and [p.id for p in pools.list(a)] == ["p1"]
    with pytest.raises(NotFound):
        pools.get(b, "p1")
    pool.size, pool.error_reason = 0, "why"
    pools.save(pool)
    assert (pools.get(a, "p1").size, pools.get(a, "p1").error_reason) == (0, "why")
    assert sorted(p.id for p in pools.list()) == ["p1", "p3"]
    pools.remove("p1")
    assert pools.list(a) == []


def test_a_claim_takes_only_a_sandbox_on_a_placeable_runner(db: Engine) -> None:
    """Several runners: a pooled sandbox on a cordoned, draining or lost runner is left."""
    sandboxes, pools = SqlSandboxStore(db), SqlPoolStore(db)
    registry = SqlRunnerStore(db)
    r1, r2 = registry.add("r1", "https://r1:3100"), registry.add("r2", "https://r2:3100")
    on_r1, on_r2 = _pooled(sandboxes, "p", 2)
    registry.assign(on_r1, r1.id)
    registry.assign(on_r2, r2.id)
    assert pools.take("claim:1", pool_id="p", runners=["local"]) is None
    assert pools.take("claim:2", pool_id="p", runners=[r2.id]) == on_r2
    assert pools.take("claim:3", pool_id="p", runners=[r2.id]) is None
    assert pools.take("claim:4", pool_id="p", runners=[r1.id, r2.id]) == on_r1
