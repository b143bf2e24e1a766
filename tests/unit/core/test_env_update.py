"""POST /env's arithmetic, its limits, and how long its change lasts."""

from __future__ import annotations

import pytest

from cove.core.env_update import updated_env
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, SandboxState, transition
from cove.errors import BadRequest
from cove.schemas.limits import MAX_ENV_VARS

S = SandboxState


def test_unset_then_set() -> None:
    current = {"A": "1", "B": "2", "C": "3"}
    assert updated_env(current, {"B": "new", "D": "4"}, ["A", "B", "NONE"], None) == {
        "B": "new", "C": "3", "D": "4"}
    assert current == {"A": "1", "B": "2", "C": "3"}  # not changed in place


def test_unset_value_prefix_spares_the_names_set() -> None:
    current = {"S1": "ph:1", "S2": "ph:2", "OTHER": "x", "EXACT": "ph"}
    assert updated_env(current, {"S2": "ph:new"}, None, "ph:") == {
        "S2": "ph:new", "OTHER": "x", "EXACT": "ph"}


def test_limits_refuse_growth_beyond_create_limits() -> None:
    with pytest.raises(BadRequest, match="variables"):
        updated_env({}, {f"V{i}": "" for i in range(MAX_ENV_VARS + 1)}, None, None)
    with pytest.raises(BadRequest, match="bytes"):
        updated_env({f"V{i}": "x" * 1000 for i in range(100)},
                    {f"W{i}": "x" * 1000 for i in range(100)}, None, None)  # fmt: skip
    big = {f"V{i}": "x" * 1000 for i in range(200)}  # already over (an image's env): may shrink
    assert len(updated_env(big, None, ["V0"], None)) == 199


def _sandbox(state: SandboxState) -> Sandbox:
    return Sandbox(id="i", organization_id="o", name="n", snapshot="s", user="daytona",
                   resources=Resources(1, 1, 1), state=state, env={"A": "create"},
                   runtime_env={"A": "runtime"})  # fmt: skip


@pytest.mark.parametrize(("start", "to", "kept"), [
    (S.STARTED, S.STOPPED, False), (S.STARTED, S.ERROR, False),
    (S.STARTED, S.PAUSED, True), (S.PAUSED, S.RESUMING, True),
    (S.STARTED, S.SNAPSHOTTING, True), (S.ERROR, S.STARTING, False),
])  # fmt: skip
def test_the_change_lasts_until_the_agent_restarts(start: SandboxState, to: SandboxState,
                                                   kept: bool) -> None:  # fmt: skip
    sb = _sandbox(start)
    transition(sb, to)
    assert sb.process_env == ({"A": "runtime"} if kept else {"A": "create"})


def test_the_agent_forgets_unset_names_and_still_spawns(monkeypatch: pytest.MonkeyPatch) -> None:
    from cove.agent import users

    monkeypatch.setattr(users, "BASE_ENV", {"PATH": "/usr/bin", "CREATED": "c", "KEEP": "/k",
                                            "OTHER": "o"})  # fmt: skip
    users.forget_env(["CREATED"], "/", ["KEEP"])  # PATH's value starts with "/": gone too
    assert users.BASE_ENV == {"KEEP": "/k", "OTHER": "o"}
    user = users.User(name="u", uid=1000, gid=1000, home="/home/u", shell="/bin/sh")
    env = users.environment(user, {"X": "1"})
    assert env["PATH"].startswith("/home/u/.local/bin:") and "CREATED" not in env
