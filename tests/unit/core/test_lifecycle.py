"""The lifecycle service on the fake runtime: states, failures, events, rules."""

from __future__ import annotations

import asyncio

import pytest

from cove.core.lifecycle import LifecycleService
from cove.core.reconcile import reconcile
from cove.core.sandbox import SandboxState
from cove.errors import BadRequest, Conflict, InvalidState, NotFound, QuotaExceeded
from cove.runner.fake import FakeRuntime
from cove.schemas.sandbox import BuildInfoCreate, SandboxCreate, SandboxResize
from tests.unit.conftest import RecordingEvents

S = SandboxState


async def _create(lifecycle: LifecycleService, org: str, **fields: object):
    return await lifecycle.create(organization_id=org, request=SandboxCreate(**fields))


async def test_create_uses_defaults_and_starts(
    lifecycle: LifecycleService, org: str, events: RecordingEvents
) -> None:
    sb = await _create(lifecycle, org, labels={"a": "1"}, env={"X": "1"})
    assert sb.state is S.STARTED
    assert (sb.resources.cpu, sb.resources.memory, sb.resources.disk) == (1, 1, 3)
    assert (sb.auto_stop_interval, sb.auto_archive_interval, sb.auto_delete_interval) == (
        15, 10080, -1,
    )
    assert sb.name == sb.id and sb.snapshot == "cove-default" and sb.user == "daytona"
    assert events.created == [sb.id]
    assert events.states_of(sb.id) == ["started"]
    assert lifecycle.get(org, sb.id).state is S.STARTED


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"cpu": 5}, QuotaExceeded, "cpu 5 exceeds the per-sandbox limit of 4"),
        ({"memory": 9}, QuotaExceeded, "memory 9 exceeds"),
        ({"disk": 11}, QuotaExceeded, "disk 11 exceeds"),
        ({"cpu": 0}, QuotaExceeded, "cpu must be at least 1"),
        ({"snapshot": "nope"}, BadRequest, "Snapshot 'nope' not found"),
        ({"build_info": BuildInfoCreate(dockerfile_content="FROM python:3.12-slim\n")},
         BadRequest, "Image 'python:3.12-slim' cannot be provided"),
        ({"build_info": BuildInfoCreate(dockerfile_content="FROM x\nRUN y\n")},
         BadRequest, "Dockerfiles is not supported"),
        ({"labels": {"code-toolbox-language": "cobol"}}, BadRequest, "must be one of"),
        ({"network_allow_list": "10.0.0.0/8,nonsense"}, BadRequest, "invalid CIDR"),
        ({"gpu": 1}, BadRequest, "GPUs"),
    ],
)
async def test_bad_input_creates_nothing(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime, events: RecordingEvents,
    fields: dict, error: type, message: str,
) -> None:
    with pytest.raises(error, match=message):
        await _create(lifecycle, org, **fields)
    assert lifecycle.store.all() == []
    assert runtime.calls == [] and events.created == []


async def test_image_that_is_a_local_snapshot_works(lifecycle: LifecycleService, org: str) -> None:
    sb = await _create(
        lifecycle, org, build_info=BuildInfoCreate(dockerfile_content="FROM cove-default\n")
    )
    assert sb.state is S.STARTED and sb.snapshot == "cove-default"


async def test_name_must_be_unique_per_organization(
    lifecycle: LifecycleService, org: str
) -> None:
    await _create(lifecycle, org, name="box")
    with pytest.raises(Conflict):
        await _create(lifecycle, org, name="box")
    assert lifecycle.get(org, "box").name == "box"


@pytest.mark.parametrize("method", ["create", "start"])
async def test_runtime_failure_on_create_means_error_and_cleanup(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime, method: str
) -> None:
    runtime.fail_on[method] = "crun exploded"
    sb = await _create(lifecycle, org)
    assert sb.state is S.ERROR
    assert "crun exploded" in (sb.error_reason or "")
    assert runtime.list_ids() == set()
    assert lifecycle.get(org, sb.id).state is S.ERROR
    runtime.fail_on.clear()
    recovered = await lifecycle.recover(org, sb.id)
    assert recovered.state is S.STARTED and recovered.error_reason is None


async def test_a_create_deleted_before_it_boots_leaves_nothing_running(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime, events: RecordingEvents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record is stored (and announced) before the boot takes the sandbox's lock: a
    delete by the name the client chose can come first. The boot must not then run a
    container that no record names (and no quota counts)."""
    announced, go_on = asyncio.Event(), asyncio.Event()

    async def slow_announce(sandbox: object) -> None:
        announced.set()
        await go_on.wait()

    monkeypatch.setattr(events, "sandbox_created", slow_announce)
    creating = asyncio.ensure_future(_create(lifecycle, org, name="box"))
    await announced.wait()
    deleted = await lifecycle.destroy(org, "box")
    assert deleted.state is S.DESTROYED
    go_on.set()
    with pytest.raises(NotFound):
        await creating
    assert lifecycle.list(org)[0] == []
    assert runtime.list_ids() == set()


async def test_stop_start_archive_restore(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime, events: RecordingEvents
) -> None:
    sb = await _create(lifecycle, org)
    runtime.boxes[sb.id].files["/home/daytona/f"] = b"data"
    assert (await lifecycle.stop(org, sb.id)).state is S.STOPPED
    assert (await lifecycle.start(org, sb.id)).state is S.STARTED
    archived = await lifecycle.archive(org, sb.id)  # started: stopped first
    assert archived.state is S.ARCHIVED and runtime.status(sb.id) == "archived"
    assert (await lifecycle.start(org, sb.id)).state is S.STARTED
    assert runtime.boxes[sb.id].files == {"/home/daytona/f": b"data"}
    assert events.states_of(sb.id) == [
        "started", "stopping", "stopped", "starting", "started",
        "stopping", "stopped", "archiving", "archived", "restoring", "started",
    ]


async def test_broken_archive_leaves_error_with_reason(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    sb = await _create(lifecycle, org)
    await lifecycle.archive(org, sb.id)
    runtime.fail_on["restore"] = "archive checksum mismatch"
    failed = await lifecycle.start(org, sb.id)
    assert failed.state is S.ERROR and "checksum mismatch" in (failed.error_reason or "")
    assert failed.recoverable
    runtime.fail_on.clear()
    assert (await lifecycle.recover(org, sb.id)).state is S.STARTED


async def test_stop_and_start_are_idempotent(lifecycle: LifecycleService, org: str) -> None:
    sb = await _create(lifecycle, org)
    assert (await lifecycle.start(org, sb.id)).state is S.STARTED
    await lifecycle.stop(org, sb.id)
    assert (await lifecycle.stop(org, sb.id, force=True)).state is S.STOPPED


async def test_ephemeral_sandbox_is_deleted_when_stopped(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    sb = await _create(lifecycle, org, auto_delete_interval=0)
    assert (await lifecycle.stop(org, sb.id)).state is S.DESTROYED
    with pytest.raises(NotFound):
        lifecycle.get(org, sb.id)
    assert runtime.list_ids() == set()


async def test_live_resize_only_grows_cpu_and_memory(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    sb = await _create(lifecycle, org)
    grown = await lifecycle.resize(org, sb.id, SandboxResize(cpu=2, memory=4))
    assert (grown.resources.cpu, grown.resources.memory, grown.state) == (2, 4, S.STARTED)
    with pytest.raises(BadRequest, match="only be decreased while the sandbox is stopped"):
        await lifecycle.resize(org, sb.id, SandboxResize(cpu=1))
    with pytest.raises(BadRequest, match="Disk can only be resized while"):
        await lifecycle.resize(org, sb.id, SandboxResize(disk=5))
    with pytest.raises(QuotaExceeded):
        await lifecycle.resize(org, sb.id, SandboxResize(memory=64))
    await lifecycle.stop(org, sb.id)
    shrunk = await lifecycle.resize(org, sb.id, SandboxResize(cpu=1, memory=1, disk=5))
    assert (shrunk.resources.cpu, shrunk.resources.disk, shrunk.state) == (1, 5, S.STOPPED)
    assert runtime.boxes[sb.id].resources.disk == 5


async def test_failed_resize_keeps_old_resources(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    sb = await _create(lifecycle, org)
    await lifecycle.stop(org, sb.id)
    runtime.fail_on["resize"] = "filesystem too full to shrink"
    with pytest.raises(BadRequest, match="too full"):
        await lifecycle.resize(org, sb.id, SandboxResize(disk=1))
    after = lifecycle.get(org, sb.id)
    assert (after.state, after.resources.disk) == (S.STOPPED, 3)


async def test_destroy_removes_record_and_host_state(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime, events: RecordingEvents
) -> None:
    sb = await _create(lifecycle, org)
    await lifecycle.destroy(org, sb.id)
    assert runtime.list_ids() == set()
    with pytest.raises(NotFound):
        lifecycle.get(org, sb.id)
    assert events.states_of(sb.id)[-2:] == ["destroying", "destroyed"]


async def test_other_organizations_cannot_see_a_sandbox(
    lifecycle: LifecycleService, org: str
) -> None:
    sb = await _create(lifecycle, org)
    with pytest.raises(NotFound):
        lifecycle.get("someone-else", sb.id)


async def test_update_replaces_labels_and_validates_them(
    lifecycle: LifecycleService, org: str
) -> None:
    sb = await _create(lifecycle, org, labels={"a": "1", "b": "2"})
    updated = await lifecycle.update(org, sb.id, labels={"c": "3"})
    assert updated.labels == {"c": "3"} == lifecycle.get(org, sb.id).labels
    with pytest.raises(BadRequest):
        await lifecycle.update(org, sb.id, labels={"code-toolbox-language": "perl"})


async def test_list_filters_by_labels_states_and_pages(
    lifecycle: LifecycleService, org: str
) -> None:
    boxes = [await _create(lifecycle, org, labels={"team": "x", "n": str(i)}) for i in range(5)]
    await _create(lifecycle, org, labels={"team": "y"})
    await lifecycle.stop(org, boxes[0].id)
    seen, cursor = [], None
    while True:
        page, cursor = lifecycle.list(org, labels={"team": "x"}, cursor=cursor, limit=2)
        seen += [sb.id for sb in page]
        if cursor is None:
            break
    assert seen == [sb.id for sb in boxes]
    stopped, _ = lifecycle.list(org, states=["stopped"])
    assert [sb.id for sb in stopped] == [boxes[0].id]
    assert lifecycle.list(org, states=["build_failed"]) == ([], None)
    assert lifecycle.list(org, labels={"team": "x", "n": "3"})[0][0].id == boxes[3].id


async def test_reconcile_reports_dead_containers_as_stopped(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    alive = await _create(lifecycle, org)
    dead = await _create(lifecycle, org)
    gone = await _create(lifecycle, org)
    runtime.boxes[dead.id].status = "stopped"  # its container died while we were away
    del runtime.boxes[gone.id]
    runtime.boxes["orphan"] = runtime.boxes[alive.id].__class__("stopped", alive.resources)
    await reconcile(lifecycle)
    assert lifecycle.get(org, alive.id).state is S.STARTED
    assert lifecycle.get(org, dead.id).state is S.STOPPED
    lost = lifecycle.get(org, gone.id)
    assert lost.state is S.ERROR and "missing" in (lost.error_reason or "")
    assert "orphan" not in runtime.list_ids()


async def test_reconcile_finishes_interrupted_operations(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    creating, stopping, destroying = [await _create(lifecycle, org) for _ in range(3)]
    for sb, state in ((creating, S.CREATING), (stopping, S.STOPPING), (destroying, S.DESTROYING)):
        sb.state = state
        lifecycle.store.save(sb)
    await reconcile(lifecycle)
    assert lifecycle.get(org, creating.id).state is S.ERROR
    assert creating.id not in runtime.list_ids()
    assert lifecycle.get(org, stopping.id).state is S.STOPPED
    with pytest.raises(NotFound):
        lifecycle.get(org, destroying.id)


async def test_start_of_a_creating_sandbox_is_refused(
    lifecycle: LifecycleService, org: str
) -> None:
    sb = await _create(lifecycle, org)
    sb.state = S.DESTROYING
    lifecycle.store.save(sb)
    with pytest.raises(InvalidState):
        await lifecycle.start(org, sb.id)


async def test_watch_notices_a_container_that_died(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    import asyncio

    from cove.core.reconcile import watch

    sb = await _create(lifecycle, org)
    runtime.boxes[sb.id].status = "stopped"
    task = asyncio.create_task(watch(lifecycle, interval=0.01))
    for _ in range(200):
        if lifecycle.get(org, sb.id).state is S.STOPPED:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert lifecycle.get(org, sb.id).state is S.STOPPED
