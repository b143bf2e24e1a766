"""Lifecycle timers: when each one is due, and what firing it does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cove.core.lifecycle import LifecycleService
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.core.timers import Action, due, fire_due
from cove.errors import NotFound
from cove.schemas.sandbox import SandboxCreate

S = SandboxState
MIN = 60.0
T0 = utcnow()  # the boxes below are made at collection; judge them at that same time


def _box(state: SandboxState, *, idle: float = 0, stopped: float = 0, **kw: int) -> Sandbox:
    now = T0
    sb = Sandbox(id="x", organization_id="o", name="x", snapshot="s", user="u",
                 resources=Resources(1, 1, 1), state=state, **kw)
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


async def test_activity_is_recorded_at_most_every_few_seconds(
    lifecycle: LifecycleService, org: str
) -> None:
    sb = await _create(lifecycle, org, auto_stop_interval=1)
    recorded = lifecycle.get(org, sb.id).last_activity_at
    lifecycle.touch(org, sb.id)  # right after the start: nothing new to write
    assert lifecycle.get(org, sb.id).last_activity_at == recorded
    stale = lifecycle.get(org, sb.id)
    stale.last_activity_at = utcnow() - timedelta(seconds=lifecycle.ops.touch_seconds + 1)
    lifecycle.store.save(stale)
    lifecycle.touch(org, sb.id)
    assert lifecycle.get(org, sb.id).last_activity_at > stale.last_activity_at
