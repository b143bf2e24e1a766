"""The lifecycle timers' due condition as SQL (see :func:`cove.core.timers.due`).

The timer tick runs every second, so the database filters the rows: only
``started`` and ``stopped`` sandboxes (the ``state`` index) whose interval has
elapsed are read. Elapsed time is computed per dialect: SQLite keeps times as
text (``julianday``), PostgreSQL as ``timestamptz`` (``EXTRACT(EPOCH ...)``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Float, and_, bindparam, case, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from cove.core.sandbox import MAX_ARCHIVE_MINUTES, TTL_STATES, SandboxState
from cove.store.models import SandboxRow

# julianday() is a double: its differences are off by up to ~0.1 ms. Rows due within
# this slack are read too; core.timers.due() decides on them exactly.
SLACK_SECONDS = 0.001


class _seconds_since(FunctionElement[float]):  # noqa: N801 - an SQL function's name
    """``now - column`` in seconds (a float)."""

    type = Float()
    inherit_cache = True


@compiles(_seconds_since, "sqlite")
def _sqlite(element: _seconds_since, compiler: SQLCompiler, **kw: Any) -> str:
    column, now = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({now}) - julianday({column})) * 86400.0)"


@compiles(_seconds_since, "postgresql")
def _postgresql(element: _seconds_since, compiler: SQLCompiler, **kw: Any) -> str:
    column, now = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({now} - {column}))"


def timers_due(now: datetime, minute: float) -> ColumnElement[bool]:
    """True for the rows whose auto-stop, auto-pause, auto-archive, auto-delete or TTL
    timer is due at
    ``now`` when a timer minute lasts ``minute`` seconds."""
    at = bindparam("timers_now", now, type_=DateTime(timezone=True))
    seconds = bindparam("timers_minute", float(minute), type_=Float())
    row = SandboxRow
    idle = _seconds_since(row.last_activity_at, at) + SLACK_SECONDS
    resting = _seconds_since(row.state_changed_at, at) + SLACK_SECONDS
    archive_after = case((row.auto_archive_interval == 0, MAX_ARCHIVE_MINUTES),
                         else_=row.auto_archive_interval)  # fmt: skip
    started = row.state == str(SandboxState.STARTED)
    stop = and_(started, row.auto_stop_interval > 0, idle >= row.auto_stop_interval * seconds)
    pause = and_(started, row.auto_pause_interval > 0, idle >= row.auto_pause_interval * seconds)
    ttl = and_(
        row.auto_destroy_at.is_not(None),
        _seconds_since(row.auto_destroy_at, at) + SLACK_SECONDS >= 0,
        row.state.in_([str(state) for state in TTL_STATES]),
    )
    rest = and_(
        row.state == str(SandboxState.STOPPED),
        or_(
            and_(row.auto_delete_interval >= 0, resting >= row.auto_delete_interval * seconds),
            resting >= archive_after * seconds,
        ),
    )
    owned = row.organization_id.is_not(None)  # a warm pool's waits for no timer
    return and_(owned, or_(stop, pause, rest, ttl))
