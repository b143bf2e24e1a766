"""Several runners on the fake runtime: the routing runner sends each call to its
sandbox's runner and new sandboxes where placement says; the keeper marks a lost
runner's sandboxes ``error`` and gives them back, and drains a runner through the
shared archive store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from cove.core.config import Settings
from cove.core.coordination import LocalCoordination
from cove.core.fleet import Fleet, RunnerInfo, RunnerState
from cove.core.lifecycle import LifecycleService
from cove.core.ports import ContainerSpec, ImageConfig, Resources
from cove.core.sandbox import SandboxState
from cove.errors import Unavailable
from cove.runner import routing
from cove.runner.fake import FakeRuntime
from cove.runner.local import LocalRunner
from cove.runner.routing import MemberRunner, RoutingRunner
from cove.schemas.sandbox import SandboxCreate
from cove.store.runners import SqlRunnerStore
from cove.store.sql import SqlSandboxStore
from tests.unit.conftest import RecordingEvents

S = SandboxState
NAMES = ("r1", "r2", "r3")


class Flaky:
    """A runner that can stop answering (its calls fail as a refused connection)."""

    def __init__(self, name: str, inner: LocalRunner) -> None:
        self.name, self.inner, self.down = name, inner, False

    def __getattr__(self, attr: str) -> Any:
        found = getattr(self.inner, attr)
        if not asyncio.iscoroutinefunction(found):
            return found

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise Unavailable(f"runner {self.name} unreachable: refused")
            return await found(*args, **kwargs)

        return call


class Routing(RoutingRunner):
    def __init__(self, store: SqlRunnerStore, hosts: dict[str, Flaky]) -> None:
        self.hosts = hosts
        super().__init__(store)

    def _connect(self, info: RunnerInfo) -> MemberRunner | None:
        return self.hosts.get(info.name)  # type: ignore[return-value]


class World:
    def __init__(self, tmp_path: Path, engine: Engine, events: RecordingEvents) -> None:
        shared: dict[str, dict[str, bytes]] = {}  # the archive store every runner sees
        self.runtimes = {n: FakeRuntime() for n in NAMES}
        for runtime in self.runtimes.values():
            runtime.archives = shared
        self.hosts = {n: Flaky(n, LocalRunner(r, tmp_path)) for n, r in self.runtimes.items()}
        self.registry = SqlRunnerStore(engine)
        self.registry.remove("local")
        for n in NAMES:
            self.registry.add(n, f"https://{n}:3100")
        self.routing = Routing(self.registry, self.hosts)
        settings = Settings(data_dir=tmp_path, runtime="fake", api_key="k")
        self.lifecycle = LifecycleService(settings=settings, store=SqlSandboxStore(engine),
                                          runner=self.routing, events=events)  # fmt: skip
        self.fleet = Fleet(lifecycle=self.lifecycle, store=self.registry,
                           members=self.routing.member_map, sync=self.routing.sync,
                           releaser=self.routing, interval=0.01, lost_after=0)  # fmt: skip

    def on(self, sandbox_id: str) -> str | None:
        runner_id = self.registry.runner_of(sandbox_id)
        return None if runner_id is None else self.registry.get(runner_id).name

    async def create(self, org: str) -> str:
        sb = await self.lifecycle.create(organization_id=org, request=SandboxCreate())
        assert sb.state is S.STARTED
        return sb.id


@pytest.fixture
async def world(tmp_path: Path, engine: Engine, events: RecordingEvents) -> World:
    found = World(tmp_path, engine, events)
    await found.fleet.beat()
    return found


async def until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never")


async def test_creates_spread_and_calls_go_to_their_runner(world: World, org: str) -> None:
    ids = [await world.create(org) for _ in NAMES]
    assert {world.on(i) for i in ids} == set(NAMES)
    for sandbox_id in ids:
        name = world.on(sandbox_id)
        assert name is not None and sandbox_id in world.runtimes[name].boxes
        await world.lifecycle.stop(org, sandbox_id)
        assert world.runtimes[name].calls[-1] == ("stop", sandbox_id)


async def test_no_new_sandbox_on_a_cordoned_runner(world: World, org: str) -> None:
    world.registry.set_state(world.registry.get("r1").id, RunnerState.CORDONED)
    await world.fleet.beat()
    ids = [await world.create(org) for _ in range(4)]
    assert "r1" not in {world.on(i) for i in ids}


async def test_a_lost_runner_s_sandboxes_fail_and_come_back(
        world: World, org: str, events: RecordingEvents) -> None:  # fmt: skip
    ids = {world.on(i): i for i in [await world.create(org) for _ in NAMES]}
    world.hosts["r2"].down = True
    await world.fleet.beat()
    lost = world.lifecycle.store.get_by_id(ids["r2"])
    assert lost.state is S.ERROR and lost.error_reason == "runner r2 unreachable"
    assert lost.recoverable
    with pytest.raises(Unavailable, match="runner r2 unreachable"):
        await world.routing.stats(ids["r2"])  # at once: no call is made
    assert world.lifecycle.store.get_by_id(ids["r1"]).state is S.STARTED
    assert "r2" not in {world.on(await world.create(org)) for _ in range(3)}

    world.hosts["r2"].down = False
    await world.fleet.beat()
    assert world.lifecycle.store.get_by_id(ids["r2"]).state is S.STARTED
    assert events.states_of(ids["r2"])[-2:] == ["error", "started"]


async def test_a_drained_runner_s_sandboxes_start_elsewhere(world: World, org: str) -> None:
    ids = {world.on(i): i for i in [await world.create(org) for _ in NAMES]}
    moved = ids["r1"]
    world.runtimes["r1"].boxes[moved].files["/data"] = b"kept"
    world.registry.set_state(world.registry.get("r1").id, RunnerState.DRAINING)
    await world.fleet.beat()
    store = world.lifecycle.store
    await until(lambda: store.get_by_id(moved).state is S.ARCHIVED and world.on(moved) is None)
    assert moved not in world.runtimes["r1"].boxes
    assert "r1" not in {world.on(await world.create(org)) for _ in range(3)}

    await world.lifecycle.start(org, moved)
    now_on = world.on(moved)
    assert now_on in ("r2", "r3") and store.get_by_id(moved).state is S.STARTED
    assert world.runtimes[now_on].boxes[moved].files["/data"] == b"kept"


class Replica(LocalCoordination):
    """A replica that runs the once-only jobs only while ``leading``."""

    leading = False

    @property
    def leader(self) -> bool:
        return self.leading


async def test_only_the_jobs_replica_keeps_the_fleet_the_others_follow_it(
        world: World, org: str) -> None:  # fmt: skip
    ids = {world.on(i): i for i in [await world.create(org) for _ in NAMES]}
    replica = Replica()
    world.lifecycle.ops.coordination = replica
    world.hosts["r2"].down = True
    await world.fleet.beat()  # not the jobs' replica: it neither pings nor fails
    assert world.lifecycle.store.get_by_id(ids["r2"]).state is S.STARTED
    assert world.registry.get("r2").reachable
    # What the jobs' replica records (r2 lost, r3 cordoned) it follows.
    world.registry.set_reachable(world.registry.get("r2").id, False)
    world.registry.set_state(world.registry.get("r3").id, RunnerState.CORDONED)
    await world.fleet.beat()
    with pytest.raises(Unavailable, match="runner r2 unreachable"):
        await world.routing.stats(ids["r2"])  # at once: no call is made
    assert {world.on(await world.create(org)) for _ in range(3)} == {"r1"}
    world.hosts["r2"].down = False
    world.registry.set_reachable(world.registry.get("r2").id, True)  # back, says the keeper
    await world.routing.stats(ids["r2"])  # served at once, before this replica's next round
    world.hosts["r2"].down = True
    world.registry.set_state(world.registry.get("r3").id, RunnerState.READY)

    replica.leading = True  # it takes the jobs over: it keeps the fleet now
    await world.fleet.beat()
    lost = world.lifecycle.store.get_by_id(ids["r2"])
    assert lost.state is S.ERROR and lost.error_reason == "runner r2 unreachable"
    assert not world.registry.get("r2").reachable


async def test_a_sandbox_another_replica_moved_is_followed(
        world: World, org: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    sandbox_id = await world.create(org)
    other = next(n for n in NAMES if n != world.on(sandbox_id))
    await world.routing.stats(sandbox_id)  # its runner, remembered
    # Another replica moves it (a restore elsewhere); its new runner, down, tells.
    world.hosts[other].down = True
    world.registry.assign(sandbox_id, world.registry.get(other).id)
    monkeypatch.setattr(routing, "WHERE_SECONDS", -1.0)  # (remembered for a second)
    with pytest.raises(Unavailable, match=f"runner {other} unreachable"):
        await world.routing.stats(sandbox_id)


async def test_a_snapshot_only_on_a_cordoned_runner_is_fetched_or_named(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Placement prefers the runners holding the snapshot; when none of them takes
    sandboxes, one that fetches snapshots from the shared store gets it, and with no
    such runner the error names the snapshot (nothing is created)."""
    world.runtimes["r1"].snapshots.add("built-on-r1")
    world.registry.set_state(world.registry.get("r1").id, RunnerState.CORDONED)
    await world.fleet.beat()

    def spec(sandbox_id: str) -> ContainerSpec:
        return ContainerSpec(sandbox_id=sandbox_id, hostname="h", snapshot="built-on-r1",
                             resources=Resources(1, 1, 1))  # fmt: skip

    refused = "no runner that holds snapshot built-on-r1 takes new sandboxes.*S3_BUCKET"
    with pytest.raises(Unavailable, match=refused):
        world.routing.admits("built-on-r1")  # (before a create records the sandbox)
    with pytest.raises(Unavailable, match=refused):
        await world.routing.create(spec("sb-1"))
    assert not any("sb-1" in runtime.boxes for runtime in world.runtimes.values())

    monkeypatch.setattr(world.runtimes["r3"], "fetches_snapshots", lambda: True)
    world.routing.admits("built-on-r1")
    await world.routing.create(spec("sb-2"))  # (a sandbox with no record: a build's)
    assert "sb-2" in world.runtimes["r3"].boxes
    await world.routing.destroy("sb-2")  # routed to its runner from memory
    assert "sb-2" not in world.runtimes["r3"].boxes


@pytest.mark.parametrize("shared", [False, True])
async def test_a_copy_of_a_snapshot_is_made_once_when_runners_share_them(
        world: World, monkeypatch: pytest.MonkeyPatch, shared: bool) -> None:  # fmt: skip
    """Without a shared store every runner holding the source makes the copy (its
    sandboxes may go to any); sharing, one runner does (two uploads would race)."""
    for runtime in world.runtimes.values():
        monkeypatch.setattr(runtime, "fetches_snapshots", lambda: shared)
    await world.routing.clone_snapshot("cove-default", "copy", ImageConfig())
    holders = [n for n, runtime in world.runtimes.items() if "copy" in runtime.snapshots]
    assert len(holders) == (1 if shared else len(NAMES))
