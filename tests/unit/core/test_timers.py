"""Lifecycle timers: when each one is due, and what firing it does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cove.core import intervals
from cove.core.lifecycle import LifecycleService
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.core.timers import Action, due, fire_due
from cove.errors import BadRequest, NotFound
from cove.schemas.sandbox import SandboxCreate

S = SandboxState
MIN = 60.0
T0 = utcnow()  # the boxes below are made at collection; judge them at that same time


def _box(state: SandboxState, *, idle: float = 0, stopped: float = 0, **kw: object) -> Sandbox:
    now = T0
    sb = Sandbox(id="x", organization_id="o", name="x", snapshot="s", user="u",
                 resources=Resources(1, 1, 1), state=state, **kw)  # type: ignore[arg-type]
    sb.last_activity_at = now - timedelta(minutes=idle)
    sb.state_changed_at = now - timedelta(minutes=stopped)
    return sb


CASES = [
    (_box(S.STARTED, idle=14, auto_stop_interval=15), None),
    (_box(S.STARTED, idle=15.1, auto_stop_interval=15), Action.STOP),
    (_box(S.STARTED, idle=10**6, auto_stop_interval=0), None),  # 0 disables
    (_box(S.STOPPED, stopped=59, auto_archive_interval=60), None),
    (_box(S.STOPPED, stopped=61, auto_archive_interval=60), Action.ARCHIVE),
    (_box(S.STOPPED, stopped=29 * 24 * 60, auto_archive_interval=0), None),
    (_box(S.STOPPED, stopped=30 * 24 * 60 + 1, auto_archive_interval=0), Action.ARCHIVE),
    (_box(S.STOPPED, stopped=10**6, auto_delete_interval=-1, auto_archive_interval=10**7),
     None),
    (_box(S.STOPPED, stopped=5, auto_delete_interval=5), Action.DELETE),
    (_box(S.STOPPED, stopped=0, auto_delete_interval=0), Action.DELETE),
    (_box(S.STOPPED, stopped=100, auto_delete_interval=90, auto_archive_interval=60),
     Action.DELETE),  # deleting wins over archiving
    (_box(S.ARCHIVED, stopped=10**6, auto_delete_interval=1), None),
    (_box(S.ERROR, idle=10**6, auto_stop_interval=1), None),
    (_box(S.PAUSED, idle=10**6, auto_stop_interval=1), None),
    (_box(S.STARTED, idle=10**6, stopped=10**6, auto_stop_interval=0,
          auto_delete_interval=0), None),  # resting timers count only when stopped
    # auto-pause counts inactivity while started
    (_box(S.STARTED, idle=14, auto_stop_interval=0, auto_pause_interval=15), None),
    (_box(S.STARTED, idle=15.1, auto_stop_interval=0, auto_pause_interval=15), Action.PAUSE),
    (_box(S.PAUSED, idle=10**6, auto_stop_interval=0, auto_pause_interval=1), None),
    (_box(S.STOPPED, idle=10**6, stopped=1, auto_pause_interval=1), None),
    # the TTL deletes at its time whatever the state, unless an operation is under way
    (_box(S.STARTED, auto_destroy_at=T0 + timedelta(minutes=1)), None),
    (_box(S.STARTED, auto_destroy_at=T0 - timedelta(seconds=1)), Action.DELETE),
    (_box(S.STARTED, idle=16, auto_stop_interval=15, auto_destroy_at=T0), Action.DELETE),
    (_box(S.PAUSED, auto_destroy_at=T0 - timedelta(minutes=1)), Action.DELETE),
    (_box(S.STOPPED, auto_destroy_at=T0 - timedelta(minutes=1)), Action.DELETE),
    (_box(S.ARCHIVED, auto_destroy_at=T0 - timedelta(minutes=1)), Action.DELETE),
    (_box(S.ERROR, auto_destroy_at=T0 - timedelta(minutes=1)), Action.DELETE),
    (_box(S.STARTING, auto_destroy_at=T0 - timedelta(minutes=1)), None),
    (_box(S.ARCHIVING, auto_destroy_at=T0 - timedelta(minutes=1)), None),
]


@pytest.mark.parametrize(("sandbox", "expected"), CASES)
def test_due(sandbox: Sandbox, expected: Action | None) -> None:
    assert due(sandbox, T0, MIN) == expected


async def _create(lifecycle: LifecycleService, org: str, **fields: object) -> Sandbox:
    return await lifecycle.create(organization_id=org, request=SandboxCreate(**fields))


async def test_firing_stops_archives_and_deletes(lifecycle: LifecycleService, org: str) -> None:
    idle = await _create(lifecycle, org, auto_stop_interval=1)
    kept = await _create(lifecycle, org, auto_stop_interval=0)
    to_archive = await _create(lifecycle, org, auto_archive_interval=1)
    to_delete = await _create(lifecycle, org, auto_delete_interval=1)
    for sb in (to_archive, to_delete):
        await lifecycle.stop(org, sb.id)
    assert await fire_due(lifecycle, minute=3600) == []  # nothing due yet
    done = dict(await fire_due(lifecycle, minute=0.0))
    assert done == {idle.id: Action.STOP, to_archive.id: Action.ARCHIVE,
                    to_delete.id: Action.DELETE}
    assert lifecycle.get(org, idle.id).state is S.STOPPED
    assert lifecycle.get(org, kept.id).state is S.STARTED
    assert lifecycle.get(org, to_archive.id).state is S.ARCHIVED
    with pytest.raises(NotFound):
        lifecycle.get(org, to_delete.id)


async def test_firing_pauses_and_ends_ttls(lifecycle: LifecycleService, org: str) -> None:
    idle = await _create(lifecycle, org, auto_pause_interval=1)
    assert (idle.auto_stop_interval, idle.auto_pause_interval) == (0, 1)
    ttl = await _create(lifecycle, org, ttl_minutes=1, auto_stop_interval=0)
    assert ttl.auto_destroy_at is not None and ttl.auto_destroy_at > ttl.created_at
    archived = await _create(lifecycle, org, auto_stop_interval=0)
    await lifecycle.archive(org, archived.id)
    await intervals.set_ttl(lifecycle, org, archived.id, 1)
    assert await fire_due(lifecycle, minute=3600) == []  # nothing due yet
    lifecycle.settings = lifecycle.settings.model_copy(update={"minute_seconds": 0.0})
    await intervals.set_ttl(lifecycle, org, archived.id, 1)  # re-anchored: due at once
    done = dict(await fire_due(lifecycle, minute=0.0))
    assert done == {idle.id: Action.PAUSE, archived.id: Action.DELETE}
    assert lifecycle.get(org, idle.id).state is S.PAUSED
    with pytest.raises(NotFound):
        lifecycle.get(org, archived.id)
    await intervals.set_ttl(lifecycle, org, ttl.id, 0)  # 0 removes the TTL
    assert lifecycle.get(org, ttl.id).auto_destroy_at is None
    assert await fire_due(lifecycle, minute=0.0) == []


async def test_auto_stop_and_auto_pause_exclude_each_other(
    lifecycle: LifecycleService, org: str
) -> None:
    with pytest.raises(BadRequest):
        await _create(lifecycle, org, auto_stop_interval=5, auto_pause_interval=5)
    with pytest.raises(BadRequest):  # not for ephemeral sandboxes
        await _create(lifecycle, org, auto_pause_interval=5, auto_delete_interval=0)
    assert lifecycle.list(org)[0] == []  # nothing was created
    sb = await _create(lifecycle, org)
    sb = await intervals.set_auto_pause(lifecycle, org, sb.id, 30)
    assert (sb.auto_stop_interval, sb.auto_pause_interval) == (0, 30)
    sb = await intervals.set_auto_stop(lifecycle, org, sb.id, 10)
    assert (sb.auto_stop_interval, sb.auto_pause_interval) == (10, 0)
    ephemeral = await _create(lifecycle, org, auto_delete_interval=0)
    with pytest.raises(BadRequest):
        await intervals.set_auto_pause(lifecycle, org, ephemeral.id, 30)


async def test_activity_resets_auto_stop(lifecycle: LifecycleService, org: str) -> None:
    sb = await _create(lifecycle, org, auto_stop_interval=1)
    stale = lifecycle.get(org, sb.id)
    stale.last_activity_at = utcnow() - timedelta(seconds=90)
    lifecycle.store.save(stale)
    lifecycle.touch(org, sb.id)
    assert await fire_due(lifecycle, minute=60) == []
    assert lifecycle.get(org, sb.id).state is S.STARTED


async def test_a_fresh_start_counts_as_activity(lifecycle: LifecycleService, org: str) -> None:
    sb = await _create(lifecycle, org, auto_stop_interval=1)
    await lifecycle.stop(org, sb.id)
    stale = lifecycle.get(org, sb.id)
    stale.last_activity_at = utcnow() - timedelta(days=3)
    lifecycle.store.save(stale)
    await lifecycle.start(org, sb.id)
    assert await fire_due(lifecycle, minute=60) == []


async def test_activity_is_written_in_batches_and_never_moves_back(
    lifecycle: LifecycleService, org: str
) -> None:
    sb = await _create(lifecycle, org, auto_stop_interval=1)
    stale = lifecycle.get(org, sb.id)
    stale.last_activity_at = utcnow() - timedelta(seconds=90)
    lifecycle.store.save(stale)
    lifecycle.touch(org, sb.id)
    assert lifecycle.get(org, sb.id).last_activity_at == stale.last_activity_at  # not yet
    lifecycle.ops.activity.flush()
    written = lifecycle.get(org, sb.id).last_activity_at
    assert written > stale.last_activity_at
    lifecycle.ops.activity._pending[sb.id] = written - timedelta(seconds=30)  # an older one
    lifecycle.ops.activity.flush()
    assert lifecycle.get(org, sb.id).last_activity_at == written


async def test_activity_of_a_deleted_sandbox_is_dropped(
    lifecycle: LifecycleService, org: str
) -> None:
    sb = await _create(lifecycle, org)
    lifecycle.touch(org, sb.id)
    await lifecycle.destroy(org, sb.id)
    lifecycle.ops.activity.flush()  # no error, nothing written
    assert lifecycle.ops.activity._pending == {}