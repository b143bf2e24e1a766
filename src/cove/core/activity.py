"""Activity stamps: recorded in memory on every toolbox call, written in batches.

A toolbox call is activity (it resets the auto-stop and auto-pause timers), and a
busy loop of calls should not write the database each time. So a call only notes
the time in memory (:meth:`ActivityLog.record`); the newest stamp of each sandbox
is written every ``flush_seconds`` (a twelfth of a timer minute, 5 s), before the
timers look at the database, and when the server stops. A server killed outright
loses at most the last ``flush_seconds`` of activity. A flush never moves a stamp
back (it keeps the newer of the stored and the written time). API keys' last use
is batched the same way (:class:`Stamps`, in :mod:`cove.core.auth`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from cove.core.periodic import every
from cove.core.ports import SandboxStore
from cove.core.sandbox import Sandbox, utcnow

log = logging.getLogger(__name__)


class Stamps:
    """Times noted in memory, per id, written in batches by ``write`` (the newest of each
    id every ``flush_seconds``); a failed write is tried again on the next flush."""

    def __init__(self, write: Callable[[dict[str, datetime]], None],
                 flush_seconds: float) -> None:  # fmt: skip
        self._write = write
        self.flush_seconds = flush_seconds
        self._pending: dict[str, datetime] = {}

    def note(self, key: str, at: datetime) -> None:
        self._pending[key] = at

    def flush(self) -> None:
        """Write the stamps noted so far (a record deleted meanwhile is skipped)."""
        if not self._pending:
            return
        stamps, self._pending = self._pending, {}
        try:
            self._write(stamps)
        except Exception:
            for key, at in stamps.items():  # tried again on the next flush
                self._pending.setdefault(key, at)
            raise

    async def run(self) -> None:
        """Flush every ``flush_seconds`` until cancelled."""
        await every(self.flush_seconds, self.flush, f"writing {type(self).__name__}",
                    wait_first=True)  # fmt: skip


class ActivityLog(Stamps):
    """The sandboxes' activity not yet written, and its writer."""

    def __init__(self, store: SandboxStore, flush_seconds: float) -> None:
        super().__init__(store.touch, flush_seconds)
        self.store = store

    def record(self, sandbox: Sandbox) -> None:
        """Note activity on ``sandbox`` now (its record in memory shows it at once)."""
        sandbox.last_activity_at = utcnow()
        self.note(sandbox.id, sandbox.last_activity_at)
