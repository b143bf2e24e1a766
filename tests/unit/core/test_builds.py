"""Creating sandboxes from Dockerfiles on the fake runtime: states, logs, failure, reuse."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from cove.core.buildlog import BuildLogs, MemoryBuildLogStore
from cove.core.builds import INTERRUPTED, ImageBuilder
from cove.core.config import Settings
from cove.core.contexts import ContextStore
from cove.core.create import log_key
from cove.core.lifecycle import LifecycleService
from cove.core.ports import ContainerSpec
from cove.core.reconcile import reconcile
from cove.core.sandbox import SandboxState, utcnow
from cove.core.snapshot_builds import SnapshotBuilds
from cove.core.snapshots import SnapshotService
from cove.errors import BadRequest, NotFound, QuotaExceeded
from cove.runner.fake import FakeRuntime
from cove.runner.local import LocalRunner
from cove.schemas.sandbox import BuildInfoCreate, SandboxCreate
from cove.store.snapshots import SqlSnapshotStore
from tests.unit.conftest import RecordingEvents
from tests.unit.scripted import ScriptedRuntime

S = SandboxState
DOCKERFILE = "FROM cove-default\nENV A='x y'\nWORKDIR /app\nRUN echo hello > /root/x\n"


@pytest.fixture
def runtime() -> ScriptedRuntime:
    return ScriptedRuntime()


@pytest.fixture
def snapshots(engine, store, runtime: FakeRuntime) -> SnapshotService:
    return SnapshotService(store=SqlSnapshotStore(engine), runner=LocalRunner(runtime),
        sandboxes=store,
                           default_name="cove-default")  # fmt: skip


@pytest.fixture
def lifecycle(
    settings: Settings, store, runtime: FakeRuntime, events: RecordingEvents,
    snapshots: SnapshotService,
) -> LifecycleService:  # fmt: skip
    return LifecycleService(settings=settings, store=store, runner=LocalRunner(runtime),
        events=events,
                            snapshots=snapshots)  # fmt: skip


def _request(dockerfile: str = DOCKERFILE) -> SandboxCreate:
    return SandboxCreate(build_info=BuildInfoCreate(dockerfile_content=dockerfile))


async def test_build_then_boot(
    lifecycle: LifecycleService, snapshots: SnapshotService, runtime: ScriptedRuntime,
    events: RecordingEvents, org: str,
) -> None:  # fmt: skip
    sb = await lifecycle.create(organization_id=org, request=_request())
    assert sb.state is S.PENDING_BUILD
    out = lifecycle.build_log(org, sb.id)
    await lifecycle.drain()
    sb = lifecycle.get(org, sb.id)
    assert sb.state is S.STARTED
    assert events.states_of(sb.id) == ["building_snapshot", "starting", "started"]
    assert sb.env["A"] == "x y"
    snap = snapshots.get(org, sb.snapshot)
    assert snap.name.startswith("dockerfile-")
    build_ids = {e[0] for e in runtime.execs}
    assert len(build_ids) == 1 and not build_ids & set(runtime.boxes)  # the build box is gone
    run = runtime.execs[-1]
    assert run[1][-1].endswith("echo hello > /root/x") and run[2] == {"A": "x y"}
    assert run[3] == "/app"
    text = out.text()
    assert "Step 3/3 : RUN echo hello > /root/x\nout:echo hello > /root/x\n" in text
    assert out.done
    assert "".join([c async for c in out.follow()]) == text  # replayed after the end


async def test_same_dockerfile_is_not_rebuilt(
    lifecycle: LifecycleService, snapshots: SnapshotService, runtime: ScriptedRuntime, org: str,
) -> None:  # fmt: skip
    first = await lifecycle.create(organization_id=org, request=_request())
    second = await lifecycle.create(organization_id=org, request=_request())  # concurrently
    await lifecycle.drain()
    a, b = lifecycle.get(org, first.id), lifecycle.get(org, second.id)
    assert a.state is b.state is S.STARTED and a.snapshot == b.snapshot
    assert len({e[0] for e in runtime.execs}) == 1
    assert [c for c, _ in runtime.calls].count("capture") == 1
    assert "Using cached snapshot" in lifecycle.build_log(org, b.id).text()


async def test_failing_run_is_build_failed(
    lifecycle: LifecycleService, snapshots: SnapshotService, runtime: ScriptedRuntime,
    events: RecordingEvents, org: str,
) -> None:  # fmt: skip
    dockerfile = "FROM cove-default\nRUN echo ok\nRUN please fail\nRUN never\n"
    sb = await lifecycle.create(organization_id=org, request=_request(dockerfile))
    await lifecycle.drain()
    sb = lifecycle.get(org, sb.id)
    assert sb.state is S.BUILD_FAILED
    assert events.states_of(sb.id) == ["building_snapshot", "build_failed"]
    assert sb.error_reason is not None
    assert "step 2/3 'RUN please fail'" in sb.error_reason
    assert "exit code 2" in sb.error_reason and "out:please fail" in sb.error_reason
    assert not runtime.boxes  # no build sandbox left
    assert [s.name for s in snapshots.list(org)] == ["cove-default"]  # no snapshot either
    assert not any("never" in e[1][-1] for e in runtime.execs)
    await lifecycle.destroy(org, sb.id)
    with pytest.raises(NotFound):
        lifecycle.get(org, sb.id)


async def test_a_failing_runs_endless_output_is_not_its_reason(
    lifecycle: LifecycleService, snapshots: SnapshotService, runtime: ScriptedRuntime, org: str,
) -> None:  # fmt: skip
    """The reason (in every listing of the organization's sandboxes, and no quota counts
    a failed one) ends with the last lines a failing RUN printed: never more than their
    last 8 KiB, however long its lines (the whole output is in the build log)."""
    dockerfile = "FROM cove-default\nRUN please fail " + "x" * 200_000 + "\n"
    sb = await lifecycle.create(organization_id=org, request=_request(dockerfile))
    await lifecycle.drain()
    sb = lifecycle.get(org, sb.id)
    assert sb.state is S.BUILD_FAILED and sb.error_reason is not None
    assert sb.error_reason.startswith("build failed at step 1/1 'RUN please fail xxx")
    assert sb.error_reason.endswith("...': exit code 2\n..." + "x" * 8192)
    assert len(sb.error_reason) < 8400
    assert "out:please fail " + "x" * 65_000 in lifecycle.build_log(org, sb.id).text()
    await lifecycle.destroy(org, sb.id)


async def test_refused_dockerfiles_create_nothing(
    lifecycle: LifecycleService, snapshots: SnapshotService, org: str,
) -> None:  # fmt: skip
    for dockerfile, message in [
        ("FROM cove-default\nCOPY . /app\n", "need an uploaded build context"),
        ("FROM cove-default\nADD x /y\n", "need an uploaded build context"),
        ("FROM cove-default\nSHELL [\"/bin/bash\"]\n", "SHELL is not supported"),
        ("FROM cove-default\nCOPY --from=a x /y\n", "--from is not supported"),
        ("FROM nope\nRUN true\n", "cannot be provided"),
        ("RUN true\n", "must start with FROM"),
        ("FROM cove-default\nRUN " + "[" * 100_000 + "\n", "invalid RUN exec form"),
        ("FROM cove-default\nCMD " + "[" * 100_000 + "\n", "invalid CMD exec form"),
        # the user sandboxes of the image run as, checked as a requested user is
        ("FROM cove-default\nUSER " + "u" * 1000 + "\nRUN true\n", "is not a user name or uid"),
        ("FROM cove-default\nUSER 'app;id'\n", "USER 'app;id' is not a user name or uid"),
    ]:
        with pytest.raises(BadRequest, match=message):
            await lifecycle.create(organization_id=org, request=_request(dockerfile))
    assert lifecycle.list(org) == ([], None)


BOMBS = {
    # Each RUN kept a copy of every ARG before it: 160 KB of them took 7 GB.
    "args times runs": "".join(f"ARG a{i}\n" for i in range(1200)) + "RUN x\n" * 1200,
    # Each ENV ten times the one before: 240 bytes took 150 s, each line more ten times that.
    "doubling variables": "ENV A=" + "a" * 100 + "\n" + "".join(
        f"ENV {b}=" + f"${a}" * 10 + "\n" for a, b in zip("ABC", "BCD", strict=True)),
    # Every unclosed ${...:- scanned (and backtracked over) the rest of its line: 64 KiB
    # took 14 s, 1 MiB an hour.
    "unclosed defaults": "ENV A=" + "${a:-" * 4000 + "\n",
    # shlex grows its word one character at a time: a 1 MiB value took minutes.
    "one long value": "ENV A=" + "a" * 100_000 + "\n",
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
async def test_a_dockerfile_cannot_cost_the_server_without_bound(
    lifecycle: LifecycleService, snapshots: SnapshotService, org: str, bomb: str
) -> None:
    """Parsing a Dockerfile (in the server, before any build) costs time and memory
    bounded by what a request body may hold: a small one that would cost without end
    is refused, and quickly."""
    started = time.monotonic()
    with pytest.raises(BadRequest, match="at most|longer than|missing"):
        await lifecycle.create(organization_id=org,
                               request=_request("FROM cove-default\n" + BOMBS[bomb]))
    assert time.monotonic() - started < 2
    assert lifecycle.list(org) == ([], None)


async def test_a_refusal_quotes_a_long_line_in_part(
    lifecycle: LifecycleService, snapshots: SnapshotService, org: str,
) -> None:  # fmt: skip
    with pytest.raises(BadRequest) as caught:
        await lifecycle.create(organization_id=org,
                               request=_request("FROM cove-default\nRUN [" + "x" * 100_000 + "\n"))
    assert caught.value.message.startswith("invalid RUN exec form: '[xxx")
    assert len(caught.value.message) < 200
    assert lifecycle.list(org) == ([], None)


async def test_plain_from_boots_at_once(
    lifecycle: LifecycleService, snapshots: SnapshotService, org: str
) -> None:
    sb = await lifecycle.create(organization_id=org, request=_request("FROM cove-default\n"))
    assert sb.state is S.STARTED and sb.snapshot == "cove-default"
    with pytest.raises(NotFound):
        lifecycle.build_log(org, sb.id)


async def test_build_interrupted_by_a_restart_is_build_failed(
    lifecycle: LifecycleService, snapshots: SnapshotService, store, org: str,
) -> None:  # fmt: skip
    sb = await lifecycle.create(organization_id=org, request=_request())
    await lifecycle.drain()
    record = store.get_by_id(sb.id)
    record.state = S.BUILDING_SNAPSHOT  # as a crash mid-build leaves it
    store.save(record)
    await reconcile(lifecycle)
    after = lifecycle.get(org, sb.id)
    assert after.state is S.BUILD_FAILED and "restart" in (after.error_reason or "")


def _orphan(logs: BuildLogs, key: str, replica: str) -> None:
    """What a replica that died mid-build left: an unfinished log naming it."""
    out = BuildLogs(logs.store, replica=replica).start(key)
    out.append("Step 1/1 : RUN sleep 600")
    out.set_worker("build-gone")
    out._flush()


async def test_a_build_whose_replica_is_gone_fails_without_waiting(
    lifecycle: LifecycleService, store, org: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The periodic watch leaves a just-recorded build alone a minute (its creator takes
    the lock next), unless its log names a replica that is no longer alive."""
    sb = await lifecycle.create(organization_id=org, request=_request())
    await lifecycle.drain()
    record = store.get_by_id(sb.id)
    record.state, record.state_changed_at = S.BUILDING_SNAPSHOT, utcnow()
    store.save(record)
    logs = lifecycle.creator.logs
    _orphan(logs, log_key(sb.id), "b")
    me = lifecycle.ops.coordination.replica_id
    monkeypatch.setattr(lifecycle.ops.coordination, "alive", lambda: {me, "b"})
    await reconcile(lifecycle, remove_orphans=False, wait=False)
    assert lifecycle.get(org, sb.id).state is S.BUILDING_SNAPSHOT  # b builds it still

    monkeypatch.setattr(lifecycle.ops.coordination, "alive", lambda: {me})  # b died
    await reconcile(lifecycle, remove_orphans=False, wait=False)
    after = lifecycle.get(org, sb.id)
    assert after.state is S.BUILD_FAILED and after.error_reason == INTERRUPTED
    assert lifecycle.build_log(org, sb.id).text().endswith(INTERRUPTED + "\n")
    assert logs.orphaned({me}) == []


async def test_a_snapshot_build_whose_replica_is_gone_fails(
    settings: Settings, snapshots: SnapshotService, org: str, tmp_path,
) -> None:  # fmt: skip
    logs = BuildLogs(MemoryBuildLogStore(), replica="me")
    builds = SnapshotBuilds(settings=settings, snapshots=snapshots, builder=None, images=None,
                            contexts=ContextStore(tmp_path / "ctx", b"k" * 32, 1024),
                            logs=logs)  # fmt: skip
    snap = snapshots.new(org, "half-built")
    snap.state = "building"
    snapshots.store.add(snap)
    _orphan(logs, f"snapshot:{snap.id}", "gone")
    assert await builds.fail_orphaned({"me", "gone"}) == 0  # its replica lives
    assert await builds.fail_orphaned({"me"}) == 1
    after = snapshots.get(org, snap.id)
    assert after.state == "build_failed" and after.error_reason == INTERRUPTED
    assert builds.build_log(org, snap.id).text().endswith(INTERRUPTED + "\n")
    assert await builds.fail_orphaned({"me"}) == 0  # once
    await snapshots.delete(org, snap.id)  # its log goes with it
    assert logs.get(f"snapshot:{snap.id}") is None


async def test_a_log_left_after_its_build_is_ended(
    lifecycle: LifecycleService, org: str,
) -> None:  # fmt: skip
    """Its replica died booting the sandbox: the build was over, the log was not."""
    sb = await lifecycle.create(organization_id=org, request=_request())
    await lifecycle.drain()
    logs = lifecycle.creator.logs
    _orphan(logs, log_key(sb.id), "gone")
    _orphan(logs, log_key("deleted-sandbox"), "gone")
    await reconcile(lifecycle, remove_orphans=False, wait=False)
    assert lifecycle.get(org, sb.id).state is S.STARTED
    assert lifecycle.build_log(org, sb.id).text().endswith("this build stopped\n")
    assert logs.get(log_key("deleted-sandbox")) is None
    assert logs.orphaned({lifecycle.ops.coordination.replica_id}) == []


class EndlessRuntime(ScriptedRuntime):
    """Every command runs until its sandbox is destroyed (then the agent's connection
    drops), as ``RUN sleep infinity`` does; a build sandbox's create waits for
    ``creating`` to be set."""

    def __init__(self) -> None:
        super().__init__()
        self.creating = threading.Event()

    def create(self, spec: ContainerSpec) -> None:
        self.creating.wait(10)
        super().create(spec)

    def _agent(self, sandbox_id: str, sock: socket.socket) -> None:
        with sock:
            sock.recv(1)  # the command came
            while sandbox_id in self.boxes:
                time.sleep(0.01)


def _endless_builds(settings: Settings, engine, store, tmp_path  # noqa: ANN001
                    ) -> tuple[EndlessRuntime, SnapshotService, SnapshotBuilds]:  # fmt: skip
    """Snapshot builds on a runtime whose RUN steps never end."""
    runtime = EndlessRuntime()
    snapshots = SnapshotService(store=SqlSnapshotStore(engine), runner=LocalRunner(runtime),
                                sandboxes=store, default_name="cove-default")  # fmt: skip
    builder = ImageBuilder(settings=settings, runner=snapshots.runner, snapshots=snapshots)
    builds = SnapshotBuilds(settings=settings, snapshots=snapshots, builder=builder, images=None,
                            contexts=ContextStore(tmp_path / "ctx", b"k" * 32, 1024))  # fmt: skip
    return runtime, snapshots, builds


@pytest.mark.parametrize("when", ["running a step", "starting its build sandbox"])
async def test_deleting_a_building_snapshot_ends_its_build(
    settings: Settings, engine, store, org: str, tmp_path, when: str,  # noqa: ANN001
) -> None:  # fmt: skip
    """A snapshot's build runs the Dockerfile's steps in a build sandbox; its delete frees
    what the organization's snapshot quota counted. The build sandbox must not run on
    (a RUN that does not end: for RUN_TIMEOUT), or a tenant makes as many as it likes,
    one snapshot create and delete at a time, none of them counted, listed or stopped."""
    runtime, snapshots, builds = _endless_builds(settings, engine, store, tmp_path)
    snap = await builds.create(org, "forever", "FROM cove-default\nRUN sleep infinity\n", [])
    if when == "running a step":
        runtime.creating.set()
        for _ in range(500):
            if runtime.execs or any(b.startswith("build-") for b in runtime.boxes):
                break
            await asyncio.sleep(0.01)
        assert any(b.startswith("build-") for b in runtime.boxes)
        await snapshots.delete(org, snap.id)
    else:
        await asyncio.sleep(0.1)  # its build sandbox is being made
        await snapshots.delete(org, snap.id)
        runtime.creating.set()
    await asyncio.wait_for(asyncio.gather(*builds._tasks), 5)
    assert list(runtime.boxes) == []
    assert [s.name for s in snapshots.list(org)] == ["cove-default"]


async def test_an_organization_builds_at_most_max_builds_snapshots_at_once(
    settings: Settings, engine, store, org: str, tmp_path,  # noqa: ANN001
) -> None:  # fmt: skip
    """Each build runs in a build sandbox of the default resources that no sandbox
    quota counts: past COVE_MAX_BUILDS at once, a snapshot build is refused; once
    one ends, the next is taken."""
    settings.max_builds = 2
    runtime, snapshots, builds = _endless_builds(settings, engine, store, tmp_path)
    endless = "FROM cove-default\nRUN sleep infinity\n"
    first = await builds.create(org, "one", endless, [])
    await builds.create(org, "two", endless, [])
    with pytest.raises(QuotaExceeded, match="COVE_MAX_BUILDS"):
        await builds.create(org, "three", endless, [])
    assert [s.name for s in snapshots.list(org)] == ["cove-default", "one", "two"]
    await snapshots.delete(org, first.id)  # ends its build
    await builds.create(org, "three", endless, [])
    runtime.creating.set()
    for snap in snapshots.store.list(org):
        await snapshots.delete(org, snap.id)
    await asyncio.wait_for(asyncio.gather(*builds._tasks), 5)
    assert list(runtime.boxes) == []
