"""The snapshot service on the fake runtime."""

from __future__ import annotations

import pytest

from cove.core.lifecycle import LifecycleService
from cove.core.ports import ImageConfig
from cove.core.sandbox import SandboxState
from cove.core.snapshots import SnapshotService
from cove.errors import BadRequest, Conflict, InvalidState, NotFound
from cove.runner.fake import FakeRuntime
from cove.runner.local import LocalRunner
from cove.schemas.sandbox import SandboxCreate
from cove.store.snapshots import SqlSnapshotStore
from tests.unit.conftest import RecordingEvents

S = SandboxState


@pytest.fixture
def snapshots(engine, store, runtime: FakeRuntime, lifecycle: LifecycleService) -> SnapshotService:
    service = SnapshotService(store=SqlSnapshotStore(engine), runner=LocalRunner(runtime),
        sandboxes=store,
                              default_name="cove-default")  # fmt: skip
    lifecycle.snapshots = service
    return service


async def test_default_is_listed_and_protected(snapshots: SnapshotService, org: str) -> None:
    assert [s.name for s in snapshots.list(org)] == ["cove-default"]
    assert snapshots.get(org, "cove-default").general
    assert snapshots.activate(org, "cove-default").state == "active"
    with pytest.raises(BadRequest):
        await snapshots.delete(org, "cove-default")
    with pytest.raises(NotFound):
        snapshots.get(org, "nope")
    assert snapshots.page(org, 1, 1) == ([snapshots.default], 1, 1)


async def test_from_sandbox_then_create_from_it(
    snapshots: SnapshotService, lifecycle: LifecycleService, org: str, events: RecordingEvents,
    runtime: FakeRuntime,
) -> None:  # fmt: skip
    sb = await lifecycle.create(organization_id=org, request=SandboxCreate(cpu=2))
    snap = await snapshots.create_from_sandbox(lifecycle.ops, org, sb.id, "mine")
    assert events.states_of(sb.id) == ["started", "snapshotting", "started"]
    assert (snap.source_sandbox_id, snap.cpu, snap.state) == (sb.id, 2, "active")
    assert runtime.has_snapshot(snap.id)
    with pytest.raises(Conflict):
        await snapshots.create_from_sandbox(lifecycle.ops, org, sb.id, "mine")
    with pytest.raises(BadRequest):
        await snapshots.create_from_sandbox(lifecycle.ops, org, sb.id, "bad/name")
    child = await lifecycle.create(organization_id=org, request=SandboxCreate(snapshot="mine"))
    assert child.snapshot == snap.id and child.state is S.STARTED
    assert snapshots.get(org, "mine").last_used_at is not None
    items, total, pages = snapshots.page(org, 2, 1)
    assert [s.name for s in items] == ["mine"] and (total, pages) == (2, 2)
    with pytest.raises(Conflict, match="used by"):
        await snapshots.delete(org, snap.id)
    await lifecycle.destroy(org, child.id)
    await snapshots.delete(org, "mine")
    assert not runtime.has_snapshot(snap.id)


async def test_failures_leave_nothing(
    snapshots: SnapshotService, lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    sb = await lifecycle.create(organization_id=org, request=SandboxCreate())
    runtime.fail_on["capture"] = "disk full"
    with pytest.raises(BadRequest, match="disk full"):
        await snapshots.create_from_sandbox(lifecycle.ops, org, sb.id, "s1")
    assert lifecycle.get(org, sb.id).state is S.STARTED
    del runtime.fail_on["capture"]
    await lifecycle.pause(org, sb.id)
    with pytest.raises(InvalidState):
        await snapshots.create_from_sandbox(lifecycle.ops, org, sb.id, "s1")
    with pytest.raises(BadRequest, match="cannot be built"):
        await snapshots.create_from_image(org, "img", "python:3.12")
    assert [s.name for s in snapshots.list(org)] == ["cove-default"]
    with pytest.raises(BadRequest, match="not found"):
        await lifecycle.create(organization_id=org, request=SandboxCreate(snapshot="s1"))


async def test_from_image_inactive_and_activate(
    snapshots: SnapshotService, lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    runtime.images.add("tiny:v1")
    snap = await snapshots.create_from_image(org, "tiny", "tiny:v1")
    assert snap.image_name == "tiny:v1"
    snap.state = "inactive"
    snapshots.store.save(snap)
    with pytest.raises(BadRequest, match="inactive"):
        await lifecycle.create(organization_id=org, request=SandboxCreate(snapshot="tiny"))
    assert snapshots.activate(org, "tiny").state == "active"
    sb = await lifecycle.create(organization_id=org, request=SandboxCreate(snapshot="tiny"))
    assert sb.snapshot == snap.id


async def test_a_local_image_whose_config_is_past_its_bounds_is_refused_and_leaves_nothing(
    snapshots: SnapshotService, org: str, runtime: FakeRuntime
) -> None:
    """As a pulled one (see test_images): its Entrypoint would be in every listing."""
    runtime.images.add("long:v1")
    runtime.image_configs["long:v1"] = ImageConfig(entrypoint=("x" * 2**20,))
    with pytest.raises(BadRequest, match="Entrypoint takes 1048577 characters, at most 32768"):
        await snapshots.create_from_image(org, "long", "long:v1")
    assert [s.name for s in snapshots.list(org)] == ["cove-default"]
    assert runtime.snapshots == {"cove-default"}


async def test_builds_and_pulls_cut_short_by_a_restart_are_failed(
    snapshots: SnapshotService, org: str
) -> None:
    for name, state in (("was-building", "building"), ("was-pulling", "pulling")):
        snap = snapshots.new(org, name)
        snap.state = state
        snapshots.store.add(snap)
    assert snapshots.fail_interrupted() == 2
    built, pulled = snapshots.get(org, "was-building"), snapshots.get(org, "was-pulling")
    assert (built.state, pulled.state) == ("build_failed", "error")
    assert "build was interrupted" in (built.error_reason or "")
    assert snapshots.fail_interrupted() == 0
