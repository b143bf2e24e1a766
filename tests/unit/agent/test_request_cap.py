"""A sandbox has at most COVE_MAX_SANDBOX_REQUESTS toolbox requests under way: the
server holds up to a stream window of the agent's data for each one whose client
reads slowly, so without a cap one key's stalled downloads grew the server by 1 MiB
each (200 of them: +210 MB)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.unit.agent.conftest import AUTH, served

CAP = 2


@pytest.fixture
def client(tmp_path: Path, agent_path: str) -> Iterator[TestClient]:
    with served(tmp_path, agent_path, max_sandbox_requests=CAP) as c:
        yield c


def _exec(client: TestClient, sandbox_id: str, command: str) -> tuple[int, dict]:
    r = client.post(f"/toolbox/{sandbox_id}/process/execute", headers=AUTH,
                    json={"command": command})  # fmt: skip
    return r.status_code, r.json()


def test_one_request_past_the_cap_is_429_and_the_sandbox_serves_again_after(
    client: TestClient, sandbox_id: str, tmp_path: Path
) -> None:
    go, started = tmp_path / "go", tmp_path / "started"
    started.mkdir()
    answers: list[int] = []
    command = f"touch {started}/$$; while [ ! -e {go} ]; do sleep 0.05; done"
    held = [threading.Thread(target=lambda: answers.append(_exec(client, sandbox_id, command)[0]))
            for _ in range(CAP)]  # fmt: skip
    for thread in held:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(list(started.iterdir())) < CAP:  # both under way in the sandbox
            assert time.monotonic() < deadline, "the held commands did not start"
            time.sleep(0.02)
        status, body = _exec(client, sandbox_id, "true")
        assert status == 429, body
        assert body["code"] == "TOO_MANY_REQUESTS"
        assert "COVE_MAX_SANDBOX_REQUESTS" in body["message"]
    finally:
        go.touch()
        for thread in held:
            thread.join(30)
    assert answers == [200] * CAP
    assert _exec(client, sandbox_id, "echo again") == (200, {"exitCode": 0, "result": "again\n"})
