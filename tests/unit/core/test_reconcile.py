"""Reconciliation: quiet about the races it expects, loud about real failures."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cove.core.lifecycle import LifecycleService
from cove.core.ports import ContainerStatus
from cove.core.reconcile import reconcile
from cove.core.sandbox import Sandbox, SandboxState
from cove.core.timers import fire_due
from cove.runner.fake import FakeRuntime
from cove.schemas.sandbox import SandboxCreate

S = SandboxState


async def _create(lifecycle: LifecycleService, org: str, **fields: object) -> Sandbox:
    return await lifecycle.create(organization_id=org, request=SandboxCreate(**fields))


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_sandbox_deleted_while_reconciling_is_no_error(
    lifecycle: LifecycleService, org: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    kept, deleted = await _create(lifecycle, org), await _create(lifecycle, org)
    listed = lifecycle.store.all()  # the reconciler read the list ...
    await lifecycle.destroy(org, deleted.id)  # ... then a client deleted one
    monkeypatch.setattr(lifecycle.store, "all", lambda: listed)
    caplog.set_level(logging.DEBUG, logger="cove")
    await reconcile(lifecycle, remove_orphans=False)
    assert _errors(caplog) == []
    assert lifecycle.get(org, kept.id).state is S.STARTED


async def test_a_real_reconciliation_failure_is_still_logged(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    sb = await _create(lifecycle, org)
    runtime.boxes[sb.id].status = "stopped"  # it died: the reconciler must clean it up
    runtime.fail_on["stop"] = "the host refused"
    await reconcile(lifecycle, remove_orphans=False)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"reconciling sandbox {sb.id} failed: the host refused"
    ]


async def test_a_sandbox_deleted_before_its_timer_fires_is_no_warning(
    lifecycle: LifecycleService, org: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    sb = await _create(lifecycle, org, auto_stop_interval=1)
    due = lifecycle.store.timers_due
    listed = due(lifecycle.store.get_by_id(sb.id).last_activity_at.replace(year=2100), 0.0)
    assert [b.id for b in listed] == [sb.id]
    await lifecycle.destroy(org, sb.id)
    monkeypatch.setattr(lifecycle.store, "timers_due", lambda *_: listed)
    assert await fire_due(lifecycle, minute=0.0) == []
    assert _errors(caplog) == []


async def _settled(lifecycle: LifecycleService, org: str, sandbox_id: str,
                   state: SandboxState) -> Sandbox:  # fmt: skip
    for _ in range(500):
        sb = lifecycle.get(org, sandbox_id)
        if sb.state is state:
            return sb
        await asyncio.sleep(0.01)
    raise AssertionError(f"{sandbox_id} stayed {lifecycle.get(org, sandbox_id).state}")


async def test_startup_tidies_every_sandbox_and_archives_an_interrupted_archive_again(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    archiving, snapshotting, idle = [await _create(lifecycle, org) for _ in range(3)]
    await lifecycle.stop(org, archiving.id)
    for sb, state in ((archiving, S.ARCHIVING), (snapshotting, S.SNAPSHOTTING)):
        sb = lifecycle.get(org, sb.id)
        sb.state = state  # as a kill -9 mid-operation left them
        lifecycle.store.save(sb)
    runtime.boxes[snapshotting.id].status = ContainerStatus.PAUSED  # the capture froze it
    runtime.calls.clear()
    await reconcile(lifecycle)
    tidied = {sid for method, sid in runtime.calls if method == "tidy"}
    assert tidied == {archiving.id, snapshotting.id, idle.id}
    assert runtime.stale_work_removals == 1
    assert lifecycle.get(org, snapshotting.id).state is S.STARTED
    assert runtime.boxes[snapshotting.id].status == "running"
    await _settled(lifecycle, org, archiving.id, S.ARCHIVED)
    assert archiving.id in runtime.archives


async def test_the_periodic_reconciler_tidies_nothing(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    await _create(lifecycle, org)
    runtime.calls.clear()
    await reconcile(lifecycle, remove_orphans=False)
    assert not [c for c in runtime.calls if c[0] == "tidy"]
    assert runtime.stale_work_removals == 0
