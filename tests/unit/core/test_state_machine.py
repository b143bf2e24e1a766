"""Every allowed and every refused transition of the sandbox state machine."""

from __future__ import annotations

import itertools

import pytest

from cove.core.ports import Resources
from cove.core.sandbox import ALLOWED, Sandbox, SandboxState, transition
from cove.errors import InvalidState

S = SandboxState

# Written out independently of ALLOWED, as the lifecycle is documented.
EXPECTED_EDGES = {
    (S.CREATING, S.STARTED), (S.CREATING, S.ERROR), (S.CREATING, S.DESTROYING),
    (S.STARTING, S.STARTED), (S.STARTING, S.STOPPED), (S.STARTING, S.ERROR),
    (S.STARTED, S.STOPPING), (S.STARTED, S.RESIZING), (S.STARTED, S.DESTROYING),
    (S.STARTED, S.STOPPED), (S.STARTED, S.ERROR),
    (S.RESIZING, S.STARTED), (S.RESIZING, S.STOPPED), (S.RESIZING, S.ARCHIVED),
    (S.RESIZING, S.ERROR),
    (S.STOPPING, S.STOPPED), (S.STOPPING, S.ERROR),
    (S.STOPPED, S.STARTING), (S.STOPPED, S.RESIZING), (S.STOPPED, S.ARCHIVING),
    (S.STOPPED, S.DESTROYING), (S.STOPPED, S.ERROR),
    (S.ARCHIVING, S.ARCHIVED), (S.ARCHIVING, S.STOPPED), (S.ARCHIVING, S.ERROR),
    (S.ARCHIVED, S.RESTORING), (S.ARCHIVED, S.RESIZING), (S.ARCHIVED, S.DESTROYING),
    (S.ARCHIVED, S.ERROR),
    (S.RESTORING, S.STARTED), (S.RESTORING, S.STOPPED), (S.RESTORING, S.ARCHIVED),
    (S.RESTORING, S.ERROR),
    (S.ERROR, S.STARTING), (S.ERROR, S.RESTORING), (S.ERROR, S.STOPPED),
    (S.ERROR, S.DESTROYING), (S.ERROR, S.ERROR),
    # a lost runner answers again: its sandboxes get back what it has
    (S.ERROR, S.STARTED), (S.ERROR, S.PAUSED), (S.ERROR, S.ARCHIVED),
    (S.DESTROYING, S.DESTROYED), (S.DESTROYING, S.ERROR),
    (S.STARTED, S.PAUSING), (S.STARTED, S.PAUSED),
    (S.PAUSING, S.PAUSED), (S.PAUSING, S.STARTED), (S.PAUSING, S.STOPPED),
    (S.PAUSING, S.ERROR),
    (S.PAUSED, S.RESUMING), (S.PAUSED, S.STOPPING), (S.PAUSED, S.DESTROYING),
    (S.PAUSED, S.STARTED), (S.PAUSED, S.STOPPED), (S.PAUSED, S.ERROR),
    (S.RESUMING, S.STARTED), (S.RESUMING, S.PAUSED), (S.RESUMING, S.STOPPED),
    (S.RESUMING, S.ERROR),
    (S.STARTED, S.SNAPSHOTTING), (S.STOPPED, S.SNAPSHOTTING),
    (S.SNAPSHOTTING, S.STARTED), (S.SNAPSHOTTING, S.STOPPED), (S.SNAPSHOTTING, S.ERROR),
    (S.PENDING_BUILD, S.BUILDING_SNAPSHOT), (S.PENDING_BUILD, S.BUILD_FAILED),
    (S.PENDING_BUILD, S.PULLING_SNAPSHOT),
    (S.PULLING_SNAPSHOT, S.BUILDING_SNAPSHOT), (S.PULLING_SNAPSHOT, S.STARTING),
    (S.PULLING_SNAPSHOT, S.BUILD_FAILED),
    (S.BUILDING_SNAPSHOT, S.STARTING), (S.BUILDING_SNAPSHOT, S.BUILD_FAILED),
    (S.BUILD_FAILED, S.DESTROYING),
}


def _sandbox(state: SandboxState) -> Sandbox:
    return Sandbox(
        id="sb", organization_id="org", name="sb", snapshot="cove-default", user="daytona",
        resources=Resources(1, 1, 3), state=state,
    )


def test_table_matches_the_documented_lifecycle() -> None:
    table = {(a, b) for a, targets in ALLOWED.items() for b in targets}
    assert table == EXPECTED_EDGES
    assert set(ALLOWED) == set(SandboxState)


@pytest.mark.parametrize(("old", "new"), sorted(EXPECTED_EDGES))
def test_allowed_transition(old: SandboxState, new: SandboxState) -> None:
    sandbox = _sandbox(old)
    before = sandbox.updated_at
    transition(sandbox, new, reason="boom")
    assert sandbox.state is new
    assert sandbox.updated_at >= before
    assert sandbox.error_reason == ("boom" if new in (S.ERROR, S.BUILD_FAILED) else None)


REFUSED = sorted(set(itertools.product(SandboxState, SandboxState)) - EXPECTED_EDGES)


@pytest.mark.parametrize(("old", "new"), REFUSED)
def test_refused_transition(old: SandboxState, new: SandboxState) -> None:
    sandbox = _sandbox(old)
    with pytest.raises(InvalidState, match=f"from '{old}' to '{new}'"):
        transition(sandbox, new)
    assert sandbox.state is old


def test_destroyed_is_terminal() -> None:
    for new in SandboxState:
        with pytest.raises(InvalidState):
            transition(_sandbox(S.DESTROYED), new)


def test_leaving_error_clears_the_reason() -> None:
    sandbox = _sandbox(S.STARTED)
    transition(sandbox, S.ERROR, reason="disk gone")
    sandbox.recoverable = True
    transition(sandbox, S.STARTING)
    assert sandbox.error_reason is None
    assert sandbox.recoverable is False
