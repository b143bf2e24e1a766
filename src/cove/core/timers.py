"""Lifecycle timers: auto-stop, auto-pause, auto-archive, auto-delete and the TTL.

Nothing is scheduled in memory: whether a timer is due follows from fields kept
in the database (``last_activity_at``, ``state_changed_at`` and the intervals),
so timers survive restarts, and one that fell due while the server was down
fires on the first tick after it starts. A lifecycle minute lasts
``COVE_MINUTE_SECONDS`` seconds (60; tests shorten it).

Paused sandboxes are left alone: auto-stop counts only while a sandbox is
``started`` (stopping a paused one would throw away the memory that pausing
is meant to keep), and auto-archive and auto-delete count only from
``stopped``. A paused sandbox stays paused until it is started, stopped or
deleted; its inactivity clock starts again when it is resumed.

Auto-pause counts inactivity as auto-stop does (at most one of them is non-zero).
The TTL (``auto_destroy_at``) is a wall-clock time: the sandbox is deleted then
whatever its state (started, paused, stopped, archived, failed), except while an
operation is under way on it (the next tick after it ends).

Several API replicas: only the one holding the jobs' lease runs the timers, and a
timer is checked again under the sandbox's lock (held across replicas) before it
fires, so it fires once even while the lease changes hands.
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime, timedelta

from cove.core.lifecycle import LifecycleService
from cove.core.periodic import every
from cove.core.sandbox import MAX_ARCHIVE_MINUTES, TTL_STATES, Sandbox, SandboxState, utcnow
from cove.errors import CoveError, NotFound

S = SandboxState
log = logging.getLogger(__name__)
TICK_SECONDS = 1.0


class Action(enum.StrEnum):
    STOP = "stop"
    PAUSE = "pause"
    ARCHIVE = "archive"
    DELETE = "delete"


def due(sandbox: Sandbox, now: datetime, minute: float) -> Action | None:
    """The timer action that is due for ``sandbox`` at ``now``, if any."""

    def elapsed(since: datetime, minutes: int) -> bool:
        return now - since >= timedelta(seconds=minutes * minute)

    expiry = sandbox.auto_destroy_at
    if expiry is not None and now >= expiry and sandbox.state in TTL_STATES:
        return Action.DELETE
    if sandbox.state is S.STARTED:
        stop_after, pause_after = sandbox.auto_stop_interval, sandbox.auto_pause_interval
        if stop_after > 0 and elapsed(sandbox.last_activity_at, stop_after):
            return Action.STOP
        if pause_after > 0 and elapsed(sandbox.last_activity_at, pause_after):
            return Action.PAUSE
        return None
    if sandbox.state is not S.STOPPED:
        return None
    delete_after = sandbox.auto_delete_interval
    if delete_after >= 0 and elapsed(sandbox.state_changed_at, delete_after):
        return Action.DELETE
    archive_after = sandbox.auto_archive_interval or MAX_ARCHIVE_MINUTES
    if elapsed(sandbox.state_changed_at, archive_after):
        return Action.ARCHIVE
    return None


async def fire_due(service: LifecycleService, minute: float) -> list[tuple[str, Action]]:
    """Carry out every due timer once; returns what was done. Only the sandboxes
    whose timer is due are read (the database filters them)."""
    done = []
    service.ops.activity.flush()  # the timers see every call so far
    now = utcnow()
    for sandbox in service.store.timers_due(now, minute):
        action = due(sandbox, now, minute)
        if action is None:
            continue
        try:
            if await _perform(service, sandbox, action, minute):
                done.append((sandbox.id, action))
        except NotFound:  # deleted meanwhile: nothing left to do
            log.debug("timer %s: sandbox %s is gone", action, sandbox.id)
        except CoveError as exc:  # e.g. it changed state meanwhile
            log.warning("timer %s of sandbox %s failed: %s", action, sandbox.id, exc.message)
    return done


async def _perform(service: LifecycleService, sandbox: Sandbox, action: Action,
                   minute: float) -> bool:  # fmt: skip
    """Carry out ``action`` if it is still due once the sandbox's lock is held (an
    operation, or another replica's timer, may have changed it meanwhile)."""

    def still_due(current: Sandbox) -> bool:
        return due(current, utcnow(), minute) is action

    log.info("timer: %s sandbox %s", action, sandbox.id)
    return await service.act_if(sandbox.id, str(action), still_due) is not None


async def run_timers(service: LifecycleService, minute: float) -> None:
    """Fire due timers every second until cancelled (on the replica that runs the
    once-only jobs: see :mod:`cove.core.coordination`)."""
    async def step() -> None:
        if service.ops.coordination.leader:
            await fire_due(service, minute)

    await every(TICK_SECONDS, step, "lifecycle timers")
