"""Pause, resume and fork in the lifecycle service, on the fake runtime."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from cove.core import fork, timers
from cove.core.lifecycle import LifecycleService
from cove.core.reconcile import reconcile
from cove.core.sandbox import SandboxState, utcnow
from cove.errors import Conflict, InvalidState
from cove.runner.fake import FakeRuntime
from cove.schemas.sandbox import SandboxCreate
from tests.unit.conftest import RecordingEvents

S = SandboxState


async def _create(lifecycle: LifecycleService, org: str, **fields: object):
    return await lifecycle.create(organization_id=org, request=SandboxCreate(**fields))


async def test_pause_then_start_resumes(
    lifecycle: LifecycleService, org: str, events: RecordingEvents, runtime: FakeRuntime
) -> None:
    sb = await _create(lifecycle, org)
    assert (await lifecycle.pause(org, sb.id)).state is S.PAUSED
    assert (await lifecycle.pause(org, sb.id)).state is S.PAUSED  # idempotent
    assert runtime.status(sb.id).value == "paused"
    assert (await lifecycle.start(org, sb.id)).state is S.STARTED
    assert events.states_of(sb.id) == ["started", "pausing", "paused", "resuming", "started"]


async def test_paused_can_stop_archive_and_delete(lifecycle: LifecycleService, org: str) -> None:
    sb = await _create(lifecycle, org)
    await lifecycle.pause(org, sb.id)
    assert (await lifecycle.stop(org, sb.id)).state is S.STOPPED
    with pytest.raises(InvalidState):
        await lifecycle.pause(org, sb.id)
    await lifecycle.start(org, sb.id)
    await lifecycle.pause(org, sb.id)
    assert (await lifecycle.archive(org, sb.id)).state is S.ARCHIVED
    await lifecycle.start(org, sb.id)
    await lifecycle.pause(org, sb.id)
    assert (await lifecycle.destroy(org, sb.id)).state is S.DESTROYED


async def test_failed_freeze_leaves_it_started(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    sb = await _create(lifecycle, org)
    runtime.fail_on["pause"] = "stuck in FREEZING"
    with pytest.raises(InvalidState, match="stuck in FREEZING"):
        await lifecycle.pause(org, sb.id)
    assert lifecycle.get(org, sb.id).state is S.STARTED


async def test_reconcile_reports_a_frozen_container_paused(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    sb = await _create(lifecycle, org)
    runtime.pause(sb.id)
    await reconcile(lifecycle)
    assert lifecycle.get(org, sb.id).state is S.PAUSED


async def test_timers_leave_paused_sandboxes_alone(lifecycle: LifecycleService, org: str) -> None:
    sb = await _create(lifecycle, org, auto_stop_interval=1, auto_delete_interval=0)
    sb = await lifecycle.pause(org, sb.id)
    assert timers.due(sb, utcnow() + timedelta(days=60), 60.0) is None


async def test_fork_copies_record_and_files(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime, events: RecordingEvents
) -> None:
    sb = await _create(lifecycle, org, env={"A": "1"}, labels={"l": "x"}, cpu=2)
    runtime.boxes[sb.id].files["/f"] = b"data"
    child = await fork.fork(lifecycle, org, sb.id, name="child")
    assert child.state is S.STARTED and child.id != sb.id and child.name == "child"
    assert (child.env, child.labels, child.resources) == (sb.env, sb.labels, sb.resources)
    assert runtime.boxes[child.id].files == {"/f": b"data"}
    assert events.states_of(child.id) == ["started"]
    with pytest.raises(Conflict):
        await fork.fork(lifecycle, org, sb.id, name="child")
    assert len(lifecycle.list(org)[0]) == 2


async def test_fork_refuses_archived_and_cleans_up_on_failure(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    sb = await _create(lifecycle, org)
    runtime.fail_on["fork"] = "disk full"
    with pytest.raises(Exception, match="disk full"):
        await fork.fork(lifecycle, org, sb.id, name=None)
    del runtime.fail_on["fork"]
    await lifecycle.archive(org, sb.id)
    with pytest.raises(InvalidState):
        await fork.fork(lifecycle, org, sb.id, name=None)
    assert [s.id for s in lifecycle.list(org)[0]] == [sb.id]


async def test_deleting_a_fork_while_its_files_are_copied_leaves_nothing_running(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new sandbox is listed (``creating``) while the source's files are copied: a
    delete of it then must not leave a container running that no record names (and no
    quota counts)."""
    sb = await _create(lifecycle, org)
    copying, go_on = asyncio.Event(), asyncio.Event()
    copy = lifecycle.runner.fork

    async def slow_copy(source_id: str, spec: object) -> None:
        copying.set()
        await go_on.wait()
        await copy(source_id, spec)  # type: ignore[arg-type]

    monkeypatch.setattr(lifecycle.runner, "fork", slow_copy)
    forking = asyncio.ensure_future(fork.fork(lifecycle, org, sb.id, name="child"))
    await copying.wait()
    deleting = asyncio.ensure_future(lifecycle.destroy(org, "child"))
    await asyncio.sleep(0.05)
    go_on.set()
    results = await asyncio.gather(forking, deleting, return_exceptions=True)
    assert [s.id for s in lifecycle.list(org)[0]] == [sb.id], results
    assert runtime.list_ids() == {sb.id}
