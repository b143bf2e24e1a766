"""Computer use through the API and the real agent, on a host without a desktop: what
needs no X server (status, process names, refusals). The desktop itself is exercised
end to end in tests/e2e/test_computer_use.py."""

from __future__ import annotations

import shutil

import pytest
from starlette.testclient import TestClient

from cove.agent import computer_input
from cove.agent.protocol import AgentError
from tests.unit.agent.conftest import AUTH


def _base(sid: str) -> str:
    return f"/toolbox/{sid}/computeruse"


@pytest.mark.skipif(shutil.which("Xvfb") is not None, reason="this host has Xvfb")
def test_start_without_the_programs_is_a_clear_400(client: TestClient, sandbox_id: str) -> None:
    r = client.post(f"{_base(sandbox_id)}/start", headers=AUTH)
    assert r.status_code == 400 and r.json()["code"] == "COMPUTER_USE_NOT_INSTALLED"
    assert "Xvfb" in r.json()["message"]


def test_before_start_nothing_runs_and_input_is_refused(client: TestClient,
                                                        sandbox_id: str) -> None:  # fmt: skip
    base = _base(sandbox_id)
    assert client.get(f"{base}/process-status", headers=AUTH).json() == {"status": "inactive"}
    r = client.get(f"{base}/process/xfce4/status", headers=AUTH)
    assert r.json() == {"processName": "wm", "running": False}
    assert client.get(f"{base}/process/xvfb/logs", headers=AUTH).json()["logs"] == ""
    for method, path, body in [("GET", "mouse/position", None), ("GET", "screenshot", None),
                               ("POST", "keyboard/type", {"text": "hi"}),
                               ("GET", "display/windows", None)]:  # fmt: skip
        r = client.request(method, f"{base}/{path}", json=body, headers=AUTH)
        assert r.status_code == 400 and r.json()["code"] == "COMPUTER_USE_NOT_STARTED", path
    assert client.get(f"{base}/process/sh/status", headers=AUTH).status_code == 404
    r = client.post(f"{base}/mouse/move", json={"x": -1, "y": 0}, headers=AUTH)
    assert r.status_code == 400
    r = client.get(f"{base}/screenshot/compressed", params={"scale": 5}, headers=AUTH)
    assert r.status_code == 400


@pytest.mark.parametrize("key", ["", "a b", "x" * 33, "\x00", "é"])
def test_keys_that_are_refused(key: str) -> None:
    with pytest.raises(AgentError) as refused:
        computer_input._key(key)  # noqa: SLF001
    assert refused.value.status == 400


def test_key_names_and_modifiers_are_mapped() -> None:
    assert computer_input._key("enter") == "Return"  # noqa: SLF001
    assert computer_input._key("--help") == "--help"  # noqa: SLF001 - (passed after "--")
    assert computer_input._modifiers(["Control", "option", "cmd", "ctrl"]) == [  # noqa: SLF001
        "ctrl", "alt", "super"]  # fmt: skip
    with pytest.raises(AgentError):
        computer_input._modifiers(["hyper"])  # noqa: SLF001
