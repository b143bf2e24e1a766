"""Warm pools on the fake runtime: claims carry every setting, never share a sandbox,
fall back to a cold boot, and pooled sandboxes are no organization's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cove.core.config import Settings
from cove.core.lifecycle import LifecycleService
from cove.core.pool import CLAIMS_AT_ONCE, OPERATOR_POOL, PoolKeeper
from cove.core.pool_demand import BUCKET_SECONDS, WINDOW_SECONDS, Demand
from cove.core.ports import NetworkPolicy
from cove.core.sandbox import SandboxState
from cove.core.toolbox import RecordCache
from cove.core.warm_pools import WarmPoolService
from cove.errors import BadRequest, Conflict, NotFound
from cove.runner.fake import FakeRuntime
from cove.runner.local import LocalRunner
from cove.schemas.sandbox import SandboxCreate, VolumeMount
from cove.store.keys import SqlKeyStore
from cove.store.pools import SqlPoolStore
from cove.store.sql import SqlSandboxStore
from tests.unit.conftest import RecordingEvents

S = SandboxState


@pytest.fixture
def pooled(tmp_path: Path, engine: Engine, store: SqlSandboxStore, runtime: FakeRuntime,
           events: RecordingEvents) -> LifecycleService:  # fmt: skip
    settings = Settings(data_dir=tmp_path, runtime="fake", api_key="k", pool_size=3)
    service = LifecycleService(settings=settings, store=store, runner=LocalRunner(runtime),
                               events=events)  # fmt: skip
    service.use_pools(SqlPoolStore(engine))
    return service


def keeper(service: LifecycleService) -> PoolKeeper:
    assert service.pool is not None
    return service.pool


def waiting(service: LifecycleService) -> set[str]:
    return {sb.id for sb in keeper(service).members().get(OPERATOR_POOL, [])
            if sb.state is S.STARTED}  # fmt: skip


async def create(service: LifecycleService, org: str, **fields: object):
    return await service.create(organization_id=org, request=SandboxCreate(**fields))


async def test_the_pool_fills_and_no_organization_sees_it(
    pooled: LifecycleService, org: str, events: RecordingEvents, runtime: FakeRuntime
) -> None:
    await keeper(pooled).keep()
    ids = waiting(pooled)
    assert len(ids) == 3 and set(runtime.boxes) == ids
    assert pooled.list(org) == ([], None)
    for sandbox_id in ids:
        with pytest.raises(NotFound):
            pooled.get(org, sandbox_id)
        assert runtime.specs[sandbox_id].network == NetworkPolicy()  # a default create's
    assert events.created == [] and events.transitions == []
    one = pooled.store.get_by_id(sorted(ids)[0])
    await pooled.ops.set_state(one, S.STOPPED)  # as the reconciler reports a dead one
    assert pooled.store.timers_due(datetime(2100, 1, 1, tzinfo=UTC), 0.001) == []
    assert events.transitions == []


async def test_a_claim_carries_every_setting_and_the_pool_refills(
    pooled: LifecycleService, org: str, events: RecordingEvents, runtime: FakeRuntime
) -> None:
    await keeper(pooled).keep()
    before = waiting(pooled)
    sb = await create(pooled, org, name="mine", labels={"team": "a"}, env={"K": "v"},
                      user="root", network_allow_list="1.1.1.0/24", auto_stop_interval=7,
                      auto_archive_interval=9, auto_delete_interval=0, public=True)  # fmt: skip
    assert sb.id in before and sb.state is S.STARTED and sb.organization_id == org
    got = pooled.get(org, "mine")
    assert got.id == sb.id and got.warm_pool_id is None
    assert (got.labels, got.env, got.user, got.public) == ({"team": "a"}, {"K": "v"}, "root", True)
    assert (got.auto_stop_interval, got.auto_archive_interval, got.auto_delete_interval) == (
        7, 9, 0)
    assert (got.network_block_all, got.network_allow_list) == (False, "1.1.1.0/24")
    assert got.process_env == {"HOSTNAME": "mine", "K": "v"}  # what its processes get
    spec = runtime.specs[sb.id]  # what the runtime was told at the claim
    assert (spec.hostname, spec.user, spec.env) == ("mine", "root", {"K": "v"})
    assert runtime.networks[sb.id] == NetworkPolicy(allow_cidrs=("1.1.1.0/24",))
    assert events.created == [sb.id]
    assert sb.id not in waiting(pooled)
    await keeper(pooled).keep()
    assert len(waiting(pooled)) == 3 and sb.id not in waiting(pooled)


async def test_block_all_and_an_unnamed_claim(pooled: LifecycleService, org: str,
                                              runtime: FakeRuntime) -> None:  # fmt: skip
    await keeper(pooled).keep()
    sb = await create(pooled, org, network_block_all=True)
    assert sb.name == sb.id and runtime.specs[sb.id].hostname == sb.id
    assert runtime.networks[sb.id] == NetworkPolicy(block_all=True)
    before = waiting(pooled)
    plain = await create(pooled, org)  # the default firewall: nothing to change
    assert plain.id in before and plain.id not in runtime.networks


async def test_concurrent_claims_never_share_a_sandbox(
    pooled: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    await keeper(pooled).keep()
    before = waiting(pooled)
    made = await asyncio.gather(*(create(pooled, org, name=f"c{i}", env={"I": str(i)})
                                  for i in range(CLAIMS_AT_ONCE + 4)))  # some wait their turn
    assert len({sb.id for sb in made}) == CLAIMS_AT_ONCE + 4
    assert {sb.id for sb in made} & before == before  # the pool's 3 went, each once
    for i, sb in enumerate(made):
        got = pooled.get(org, f"c{i}")
        assert got.id == sb.id and got.env == {"I": str(i)} and got.state is S.STARTED
        assert runtime.specs[sb.id].hostname == f"c{i}"


async def test_a_failed_claim_boots_cold_and_destroys_the_taken_one(
    pooled: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    await keeper(pooled).keep()
    before = waiting(pooled)
    runtime.fail_on["adopt"] = "no"
    sb = await create(pooled, org, name="cold", env={"A": "1"})
    assert sb.id not in before and sb.state is S.STARTED
    assert runtime.specs[sb.id].hostname == "cold" and runtime.specs[sb.id].env == {"A": "1"}
    assert len(waiting(pooled)) == 2  # the one taken is gone, from the host too
    assert len(set(runtime.boxes) & before) == 2


@pytest.mark.parametrize("fields", [
    {"cpu": 2}, {"disk": 4}, {"labels": {"cove.io/isolation": "gvisor"}},
    {"snapshot": "other"},
])  # fmt: skip
async def test_what_no_pool_serves_boots_cold(
    pooled: LifecycleService, org: str, runtime: FakeRuntime, fields: dict
) -> None:
    runtime.snapshots.add("other")
    pooled.settings.public_snapshots = ["other"]
    await keeper(pooled).keep()
    before = waiting(pooled)
    sb = await create(pooled, org, **fields)
    assert sb.id not in before and waiting(pooled) == before


async def test_volumes_boot_cold(pooled: LifecycleService, org: str, engine: Engine) -> None:
    from cove.core.volumes import VolumeService
    from cove.store.volumes import SqlVolumeStore

    pooled.volumes = VolumeService(store=SqlVolumeStore(engine), runner=pooled.runner,
                                   sandboxes=pooled.store)  # fmt: skip
    vol = await pooled.volumes.create(org, "v")
    await keeper(pooled).keep()
    before = waiting(pooled)
    sb = await create(pooled, org, volumes=[VolumeMount(volume_id=vol.id, mount_path="/d")])
    assert sb.id not in before and sb.volumes and waiting(pooled) == before


async def test_a_taken_name_fails_as_cold_and_spends_nothing(
    pooled: LifecycleService, org: str
) -> None:
    await keeper(pooled).keep()
    await create(pooled, org, name="x")
    await keeper(pooled).keep()
    before = waiting(pooled)
    with pytest.raises(Conflict):
        await create(pooled, org, name="x")
    assert waiting(pooled) == before


async def test_dead_and_interrupted_members_are_replaced(
    pooled: LifecycleService, engine: Engine, runtime: FakeRuntime
) -> None:
    await keeper(pooled).keep()
    dead, taken, *_ = sorted(waiting(pooled))
    runtime.boxes.pop(dead)  # its container and files vanished
    sb = pooled.store.get_by_id(dead)
    await pooled.ops.fail(sb, "gone", recoverable=False)
    SqlPoolStore(engine).take("claim:crashed", pool_id=OPERATOR_POOL, sandbox_id=taken)
    await keeper(pooled).keep()
    now = waiting(pooled)
    assert len(now) == 3 and dead not in now and taken not in now
    ids = {sb.id for sb in pooled.store.all()}
    assert dead not in ids and taken not in ids and taken not in runtime.boxes


async def test_the_operators_pool_grows_with_demand_and_shrinks_back(
    pooled: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    clock = [1000.0]
    keeper(pooled).demand = Demand(lambda: clock[0])
    pooled.settings.pool_adaptive_max = 5
    await keeper(pooled).keep()
    assert len(waiting(pooled)) == 3
    made = [await create(pooled, org) for _ in range(7)]  # 3 from the pool, 4 cold
    assert keeper(pooled).cold_fallbacks == 4
    await keeper(pooled).keep()
    assert len(waiting(pooled)) == 5  # grown to the burst, up to its bound
    pooled.settings.pool_adaptive_max = 0  # a fixed size: the demand does not count
    await keeper(pooled).keep()
    assert len(waiting(pooled)) == 3
    pooled.settings.pool_adaptive_max = 5
    await keeper(pooled).keep()
    assert len(waiting(pooled)) == 5
    clock[0] += WINDOW_SECONDS + BUCKET_SECONDS  # a quiet minute
    await keeper(pooled).keep()
    assert len(waiting(pooled)) == 3
    assert {sb.id for sb in made} <= set(runtime.boxes)  # the claimed ones untouched


async def test_pool_size_zero_drains(pooled: LifecycleService) -> None:
    await keeper(pooled).keep()
    pooled.settings.pool_size = 0
    await keeper(pooled).keep()
    assert pooled.store.all() == []


async def test_an_organizations_pool_serves_only_it(
    pooled: LifecycleService, engine: Engine, org: str
) -> None:
    pooled.settings.pool_size = 0
    other = SqlKeyStore(engine).ensure_organization("other")
    pools = WarmPoolService(settings=pooled.settings, keeper=keeper(pooled),
                            store=SqlPoolStore(engine),
                            ref_for=pooled.creator._usable_snapshot, snapshots=None)  # fmt: skip
    pool, _ = pools.create(org, "cove-default", 2, None)
    await keeper(pooled).keep()
    assert pools.get(org, pool.id)[1] == 2
    with pytest.raises(NotFound):
        pools.get(other, pool.id)
    with pytest.raises(NotFound):
        pools.update(other, pool.id, 5)
    with pytest.raises(NotFound):
        pools.delete(other, pool.id)
    theirs = await create(pooled, other, name="b")
    assert pools.get(org, pool.id)[1] == 2  # B's create went cold
    mine = await create(pooled, org, name="a")
    assert pools.get(org, pool.id)[1] == 1 and mine.id != theirs.id
    with pytest.raises(Conflict):
        pools.create(org, "cove-default", 1, None)
    with pytest.raises(BadRequest, match="not found"):
        pools.create(org, "nope", 1, None)
    with pytest.raises(BadRequest, match="at most 10"):
        pools.update(org, pool.id, 11)
    pools.delete(org, pool.id)
    await keeper(pooled).keep()
    assert sorted(sb.name for sb in pooled.store.all()) == ["a", "b"]


async def test_a_pool_that_cannot_boot_says_why_and_waits(
    pooled: LifecycleService, runtime: FakeRuntime
) -> None:
    runtime.fail_on["start"] = "no room"
    await keeper(pooled).keep()
    pool = keeper(pooled).operator_pool()
    assert pool is not None and "no room" in (pool.error_reason or "")
    del runtime.fail_on["start"]
    await keeper(pooled).keep()  # the failed one is removed; no new try yet
    assert pooled.store.all() == [] and runtime.boxes == {}
    keeper(pooled)._retry_at.clear()  # its time has come
    await keeper(pooled).keep()
    assert len(waiting(pooled)) == 3
    assert keeper(pooled).operator_pool().error_reason is None  # type: ignore[union-attr]


async def test_waiting_agents_are_pinged_well_within_their_idle_exit(
    pooled: LifecycleService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle agent exits after COVE_AGENT_IDLE_SECONDS; a waiting sandbox's must not,
    or a claim's first call would wait for it to start again."""
    pinged: list[str] = []

    class Agent:
        def __init__(self, sandbox_id: str) -> None:
            self.sandbox_id = sandbox_id

        async def ping(self, *, spare: bool = False) -> None:
            assert spare  # (a spare readied for the claim's first command)
            pinged.append(self.sandbox_id)

    monkeypatch.setattr("cove.core.pool.agent_client",
                        lambda runner, sandbox_id, user, env, links: Agent(sandbox_id))  # fmt: skip
    await keeper(pooled).keep()  # boots them
    await keeper(pooled).keep()  # sees them
    ids = waiting(pooled)
    assert sorted(pinged) == sorted(ids)
    await keeper(pooled).keep()  # pinged a moment ago: not again yet
    assert len(pinged) == len(ids)
    keeper(pooled)._warmed = dict.fromkeys(ids, -1e9)  # long ago
    await keeper(pooled).keep()
    assert len(pinged) == 2 * len(ids)


async def test_the_claimed_record_goes_to_the_toolbox_until_it_changes(
    pooled: LifecycleService, org: str, store: SqlSandboxStore
) -> None:
    """A claim hands its record to the toolbox's cache (the first call reads nothing);
    a later change through the store is seen at once."""
    records = RecordCache(store)
    keeper(pooled).claimed = records.put
    await keeper(pooled).keep()
    claimed = await create(pooled, org, env={"A": "1"})
    assert records.get(org, claimed.id) is claimed  # the claim's own record: not read again
    changed = store.get_by_id(claimed.id)
    changed.env = {"A": "2"}
    store.save(changed)
    assert records.get(org, claimed.id).env == {"A": "2"}
