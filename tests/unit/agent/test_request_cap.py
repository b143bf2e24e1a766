"""A sandbox has at most COVE_MAX_SANDBOX_REQUESTS toolbox requests under way, an
organization at most COVE_MAX_ORGANIZATION_REQUESTS on all its sandboxes: the server
holds up to a stream window of the agent's data for each one whose client reads
slowly, so without a cap one key's stalled downloads grew the server by 1 MiB each
(200 of them: +210 MB), and with the sandbox's cap alone by 512 MiB per sandbox of
the organization."""

from __future__ import annotations

import contextlib
import getpass
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from cove.cli.main import main
from tests.unit.agent.conftest import AUTH, served

CAP = 2


@pytest.fixture
def client(tmp_path: Path, agent_path: str) -> Iterator[TestClient]:
    with served(tmp_path, agent_path, max_sandbox_requests=CAP) as c:
        yield c


def _exec(client: TestClient, sandbox_id: str, command: str,
          auth: dict[str, str] = AUTH) -> tuple[int, dict]:  # fmt: skip
    r = client.post(f"/toolbox/{sandbox_id}/process/execute", headers=auth,
                    json={"command": command})  # fmt: skip
    return r.status_code, r.json()


@contextlib.contextmanager
def _held(client: TestClient, sandbox_ids: list[str], tmp_path: Path) -> Iterator[list[int]]:
    """One command under way in each of ``sandbox_ids`` (each waits for a file) until
    the block ends; yields the statuses they were answered with, once answered."""
    go, started = tmp_path / "go", tmp_path / "started"
    started.mkdir()
    answers: list[int] = []
    command = f"touch {started}/$$; while [ ! -e {go} ]; do sleep 0.05; done"
    held = [threading.Thread(target=lambda s=s: answers.append(_exec(client, s, command)[0]))
            for s in sandbox_ids]  # fmt: skip
    for thread in held:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(list(started.iterdir())) < len(held):  # all under way in the sandbox
            assert time.monotonic() < deadline, "the held commands did not start"
            time.sleep(0.02)
        yield answers
    finally:
        go.touch()
        for thread in held:
            thread.join(30)


def test_one_request_past_the_cap_is_429_and_the_sandbox_serves_again_after(
    client: TestClient, sandbox_id: str, tmp_path: Path
) -> None:
    with _held(client, [sandbox_id] * CAP, tmp_path) as answers:
        status, body = _exec(client, sandbox_id, "true")
        assert status == 429, body
        assert body["code"] == "TOO_MANY_REQUESTS"
        assert "COVE_MAX_SANDBOX_REQUESTS" in body["message"]
    assert answers == [200] * CAP
    assert _exec(client, sandbox_id, "echo again") == (200, {"exitCode": 0, "result": "again\n"})


def _sandbox(client: TestClient, auth: dict[str, str] = AUTH) -> str:
    r = client.post("/api/sandbox", json={"user": getpass.getuser(), "volumes": []},
                    headers=auth)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_an_organization_past_its_cap_gets_429_on_every_sandbox_and_others_do_not(
    tmp_path: Path, agent_path: str
) -> None:
    with served(tmp_path, agent_path, max_sandbox_requests=0,
                max_organization_requests=CAP) as client:  # fmt: skip
        key = CliRunner().invoke(main, ["keys", "create", "--org", "other", "--data-dir",
                                        str(tmp_path / "data")]).output.strip()  # fmt: skip
        other = {"Authorization": f"Bearer {key}"}
        ours, theirs = [_sandbox(client) for _ in range(CAP + 1)], _sandbox(client, other)
        with _held(client, ours[:CAP], tmp_path) as answers:  # one in each of two sandboxes
            for sandbox_id in ours:  # a third sandbox of the organization, too
                status, body = _exec(client, sandbox_id, "true")
                assert status == 429, body
                assert body["code"] == "TOO_MANY_REQUESTS"
                assert "COVE_MAX_ORGANIZATION_REQUESTS" in body["message"]
            assert _exec(client, theirs, "echo theirs", other) == (
                200, {"exitCode": 0, "result": "theirs\n"})  # another organization: served
        assert answers == [200] * CAP
        assert _exec(client, ours[CAP], "echo again") == (
            200, {"exitCode": 0, "result": "again\n"})
