"""Several runners on the fake runtime: the routing runner sends each call to its
sandbox's runner and new sandboxes where placement says; the keeper marks a lost
runner's sandboxes ``error`` and gives them back, and drains a runner through the
shared archive store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from cove.core.config import Settings
from cove.core.coordination import LocalCoordination
from cove.core.fleet import (
    IN_ARCHIVE,
    Fleet,
    RunnerInfo,
    RunnerState,
    VolumeHome,
    volume_constraint,
)
from cove.core.lifecycle import LifecycleService
from cove.core.ports import Capacity, ContainerSpec, ImageConfig, Resources, VolumeBind
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.core.volumes import VolumeService
from cove.errors import Conflict, Unavailable
from cove.runner import routing, tls
from cove.runner.fake import FakeRuntime
from cove.runner.local import LocalRunner
from cove.runner.remote import RemoteRunner
from cove.runner.routing import MemberRunner, RoutingRunner
from cove.runner.storage.archive_store import LocalArchiveStore
from cove.runner.storage.volumes import VolumeDir
from cove.schemas.sandbox import SandboxCreate, VolumeMount
from cove.store.runners import SqlRunnerStore
from cove.store.sql import SqlSandboxStore
from cove.store.volumes import SqlVolumeStore
from cove.testing_remote import make_pki
from tests.unit.conftest import RecordingEvents
from tests.unit.runner.test_remote import LyingRunner

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
        for n in NAMES:
            (tmp_path / n).mkdir()
        self.hosts = {n: Flaky(n, LocalRunner(r, tmp_path / n)) for n, r in self.runtimes.items()}
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


async def test_a_runner_gone_silent_mid_call_lets_go_of_its_sandboxes(
    world: World, org: str, tmp_path: Path
) -> None:
    """A runner (a remote one, over the wire) that takes a create and then answers
    nothing (a host cut off, or taken over): once the keeper marks it lost, the calls
    in flight to it end (Unavailable), their sandboxes go ``error``, and the keeper's
    round ends. A call has no read timeout (a create takes as long as it takes): the
    create held its sandbox's lock for good, and the keeper waited on it for good
    (no runner lost, drained or added again, on any runner)."""
    pki = make_pki(tmp_path / "pki")
    async with LyingRunner(pki, {"/v1/call/create": None, "/v1/call/capacity": None}) as url:
        r2 = world.registry.get("r2").id
        remote = RemoteRunner(url, tls.client_context(pki.ca, *pki.api))
        await remote.refresh()
        world.routing.members[r2] = remote
        for name in ("r1", "r3"):
            world.registry.set_state(world.registry.get(name).id, RunnerState.CORDONED)
        create = asyncio.ensure_future(world.create(org))
        await until(lambda: bool(world.lifecycle.store.all()))
        sandbox_id = world.lifecycle.store.all()[0].id
        await until(lambda: world.on(sandbox_id) == "r2")
        await asyncio.sleep(0.5)  # the create is in flight
        assert not create.done()
        await asyncio.wait_for(world.fleet.beat(), 20)  # lost: its ping goes unanswered
        assert not world.registry.get(r2).reachable
        with pytest.raises(Exception):  # noqa: B017 - the create failed, whatever the error
            await asyncio.wait_for(create, 10)
        assert world.lifecycle.store.get_by_id(sandbox_id).state is S.ERROR
        await remote.close()


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


# ---- volumes: their data on the runner that first mounted them ----------------------


def _volumes(world: World, engine: Engine) -> VolumeService:
    service = VolumeService(store=SqlVolumeStore(engine), runner=world.routing,
                            sandboxes=world.lifecycle.store)  # fmt: skip
    world.lifecycle.volumes = service
    return service


def _only(world: World, *names: str) -> None:
    for n in NAMES:
        world.registry.set_state(world.registry.get(n).id,
                                 RunnerState.READY if n in names else RunnerState.CORDONED)


async def _mounting(world: World, org: str, volume: str) -> Sandbox:
    req = SandboxCreate(volumes=[VolumeMount(volume_id=volume, mount_path="/data")])
    return await world.lifecycle.create(organization_id=org, request=req)


async def test_a_volume_s_sandboxes_go_where_its_data_is(
        world: World, org: str, engine: Engine, tmp_path: Path) -> None:  # fmt: skip
    volumes = _volumes(world, engine)
    vol = await volumes.create(org, "v")
    assert vol.home is None  # nowhere yet: the first sandbox's runner becomes its home
    first = await _mounting(world, org, "v")
    home = world.on(first.id)
    assert home is not None and volumes.get(org, "v").home == world.registry.get(home).id
    for _ in NAMES:  # placement alone would spread them
        assert world.on((await _mounting(world, org, "v")).id) == home
    world.registry.set_state(world.registry.get(home).id, RunnerState.CORDONED)
    before = len(world.lifecycle.store.all())
    with pytest.raises(Unavailable, match=f"keeps its data on runner {home}, which takes no "
                       "new sandboxes now \\(cordoned\\)"):  # fmt: skip
        await _mounting(world, org, "v")
    assert len(world.lifecycle.store.all()) == before  # refused before it was recorded
    data = tmp_path / home / "volumes" / vol.id
    data.mkdir(parents=True)
    (tmp_path / "r1" / "volumes" / "other").mkdir(parents=True, exist_ok=True)
    for sb in world.lifecycle.store.all():
        await world.lifecycle.destroy(org, sb.id)
    assert world.lifecycle.store.all() == []
    with pytest.raises(Conflict, match="volumes keep their data on the runner \\(v\\)"):
        world.registry.remove(world.registry.get(home).id)
    world.hosts[home].down = True  # its data cannot be deleted now: nor is the volume
    await world.fleet.beat()
    with pytest.raises(Unavailable, match="volume v's data does not answer"):
        await volumes.delete(org, "v")
    assert volumes.get(org, "v") and data.exists()
    world.hosts[home].down = False
    await world.fleet.beat()
    await volumes.delete(org, "v")
    assert not data.exists() and (tmp_path / "r1" / "volumes" / "other").exists()
    world.registry.remove(world.registry.get(home).id)  # nothing of it is left there


async def test_runners_sharing_a_volumes_dir_serve_its_volumes_alike(
        world: World, org: str, engine: Engine, tmp_path: Path) -> None:  # fmt: skip
    shared = VolumeDir(tmp_path / "nfs", shared=True)
    for n in ("r1", "r2"):
        world.hosts[n].inner.volumes = VolumeDir(shared.root, shared=True)
    volumes = _volumes(world, engine)
    await volumes.create(org, "v")
    _only(world, "r1")
    first = await _mounting(world, org, "v")
    assert world.on(first.id) == "r1" and volumes.get(org, "v").home == shared.shared_id
    _only(world, "r2")
    assert world.on((await _mounting(world, org, "v")).id) == "r2"
    _only(world, "r3")
    with pytest.raises(Unavailable, match="the volumes dir shared by runners r1, r2"):
        await _mounting(world, org, "v")
    for sb in world.lifecycle.store.all():
        await world.lifecycle.destroy(org, sb.id)
    world.registry.remove(world.registry.get("r1").id)  # the others share its volumes


def test_the_constraint_s_reasons() -> None:
    def runner(rid: str, state: RunnerState = RunnerState.READY) -> RunnerInfo:
        cap = Capacity(cpu=1, memory=1, memory_free=1, disk=1, disk_free=1, sandboxes=0)
        return RunnerInfo(rid, rid, "https://x", state, True, cap, None, utcnow())

    runners = {"a": runner("a", RunnerState.DRAINING), "b": runner("b")}
    stores = {"b": "nfs1"}
    assert volume_constraint([VolumeHome("v", None)], runners, stores.get) is None
    rule = volume_constraint([VolumeHome("v", "a")], runners, stores.get)
    assert rule is not None and rule.fits(runners["a"]) and not rule.fits(runners["b"])
    assert "runner a, which takes no new sandboxes now (draining)" in rule.why
    rule = volume_constraint([VolumeHome("v", "nfs1")], runners, stores.get)
    assert rule is not None and rule.fits(runners["b"]) and not rule.fits(runners["a"])
    rule = volume_constraint([VolumeHome("v", "a"), VolumeHome("w", "b")], runners, stores.get)
    assert rule is not None and "different runners" in rule.why
    rule = volume_constraint([VolumeHome("v", "gone")], runners, stores.get)
    assert rule is not None and "no registered runner answers for" in rule.why


async def test_a_drain_moves_its_volumes_through_the_archive_store(
        world: World, org: str, engine: Engine, tmp_path: Path) -> None:  # fmt: skip
    store = LocalArchiveStore(tmp_path / "shared-archives")  # as the S3 store would be
    for n in NAMES:
        world.hosts[n].inner.volumes = VolumeDir(tmp_path / n / "volumes", archives=store)
    volumes = _volumes(world, engine)
    vol = await volumes.create(org, "v")
    _only(world, "r1")
    sb = await _mounting(world, org, "v")
    data = tmp_path / "r1" / "volumes" / vol.id  # what its mount would have made
    data.mkdir(parents=True)
    (data / "kept.txt").write_text("kept")
    _only(world, "r2", "r3")
    world.registry.set_state(world.registry.get("r1").id, RunnerState.DRAINING)
    await world.fleet.beat()
    await until(lambda: volumes.get(org, "v").home == IN_ARCHIVE)
    assert world.on(sb.id) is None and not data.exists() and store.exists(vol.id)
    world.registry.remove(world.registry.get("r1").id)  # nothing of it is left there

    await world.lifecycle.start(org, sb.id)  # restored where placement says
    now_on = world.on(sb.id)
    assert now_on in ("r2", "r3")
    assert volumes.get(org, "v").home == world.registry.get(now_on).id
    host = world.hosts[now_on].inner
    os.close(host.volumes.open(VolumeBind(vol.id, "/data")))  # its mount brings it back
    assert (tmp_path / now_on / "volumes" / vol.id / "kept.txt").read_text() == "kept"
    assert not store.exists(vol.id)


async def test_a_volume_is_not_bound_to_a_runner_that_never_got_its_sandbox(
        world: World, org: str, engine: Engine) -> None:  # fmt: skip
    volumes = _volumes(world, engine)
    await volumes.create(org, "v")
    _only(world, "r1", "r2")
    for n in ("r1", "r2"):  # lost since the last heartbeat: placement tries each
        world.hosts[n].down = True
    refused = await _mounting(world, org, "v")
    assert refused.state is S.ERROR and world.on(refused.id) is None
    assert volumes.get(org, "v").home is None
    for n in ("r1", "r2"):
        world.hosts[n].down = False
    await world.lifecycle.destroy(org, refused.id)
    placed = await _mounting(world, org, "v")
    assert volumes.get(org, "v").home == world.registry.get(world.on(placed.id) or "").id


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
        await world.routing.admits("built-on-r1")  # (before a create records the sandbox)
    with pytest.raises(Unavailable, match=refused):
        await world.routing.create(spec("sb-1"))
    assert not any("sb-1" in runtime.boxes for runtime in world.runtimes.values())

    monkeypatch.setattr(world.runtimes["r3"], "fetches_snapshots", lambda: True)
    await world.routing.admits("built-on-r1")
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
