"""Freezing and thawing every process of a sandbox through its freezer cgroup.

``crun pause`` waits for the v1 freezer without a limit, and on this kind of
host the freezer can stay in ``FREEZING`` (a task in an uninterruptible sleep
never reaches the freezer). So Cove writes the freezer itself: it asks for
``FROZEN``, waits a bounded time, and when the cgroup is still ``FREEZING`` it
thaws, lets the stuck task run a moment, and tries again. crun reads the same
files, so ``crun state`` then reports the container as ``paused``.
"""

from __future__ import annotations

import time
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import cgroups

WAIT = 2.0  # seconds one freezing attempt may take
ATTEMPTS = 4
POLL = 0.01


def freeze(group: str, *, wait: float = WAIT, attempts: int = ATTEMPTS) -> None:
    """Freeze every task of the sandbox; thawed again when every attempt timed out.

    Raises:
        RuntimeBackendError: no freezer cgroup, or it would not freeze.
    """
    for attempt in range(attempts):
        _request(group, frozen=True)
        if _wait_frozen(group, wait):
            return
        _request(group, frozen=False)  # let the stuck task move on, then retry
        time.sleep(0.05 * (attempt + 1))
    raise RuntimeBackendError(f"sandbox group {group} did not freeze within {attempts} attempts")


def thaw(group: str) -> None:
    """Let every task of the sandbox run again (no error when it is not frozen)."""
    _request(group, frozen=False)


def is_frozen(group: str) -> bool:
    """Whether the sandbox's tasks are (completely) frozen."""
    try:
        if cgroups.mode() is cgroups.CgroupMode.UNIFIED:
            events = (_dir(group) / "cgroup.events").read_text()
            return "frozen 1" in events.splitlines()
        return (_dir(group) / "freezer.state").read_text().strip() == "FROZEN"
    except OSError:
        return False


def _dir(group: str) -> Path:
    return cgroups.controller_dir(group, "freezer")


def _request(group: str, *, frozen: bool) -> None:
    if cgroups.mode() is cgroups.CgroupMode.UNIFIED:
        target, value = _dir(group) / "cgroup.freeze", "1" if frozen else "0"
    else:
        target, value = _dir(group) / "freezer.state", "FROZEN" if frozen else "THAWED"
    try:
        target.write_text(value)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot write {target}: {exc.strerror}") from exc


def _wait_frozen(group: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if is_frozen(group):
            return True
        time.sleep(POLL)
    return is_frozen(group)
