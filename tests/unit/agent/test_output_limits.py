"""A command that prints more than COVE_OUTPUT_LIMIT: execute returns its start and its
end with a marker between, and the agent sends no more than that over the channel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cove.core.output import marker
from tests.unit.agent.conftest import AUTH, served

LIMIT = 4096


@pytest.fixture
def client(tmp_path: Path, agent_path: str) -> Iterator[TestClient]:
    with served(tmp_path, agent_path, output_limit=LIMIT) as c:
        yield c


PRINT = "head -c 3000 /dev/zero | tr '\\0' A; head -c {n} /dev/zero | tr '\\0' B; " \
        "head -c 3000 /dev/zero | tr '\\0' C"


@pytest.mark.parametrize("middle", [10, 200_000, 30_000_000])
def test_execute_returns_the_start_and_the_end(client: TestClient, sandbox_id: str,
                                               middle: int) -> None:  # fmt: skip
    r = client.post(f"/toolbox/{sandbox_id}/process/execute", headers=AUTH,
                    json={"command": PRINT.format(n=middle)})
    assert r.status_code == 200
    total = 6000 + middle
    expected = ("A" * 3000 + "B" * middle + "C" * 3000).encode()
    kept = expected[: LIMIT // 2] + marker(total - LIMIT) + expected[-LIMIT // 2 :]
    assert r.json() == {"exitCode": 0, "result": kept.decode()}


def test_code_run_is_clipped_the_same_way(client: TestClient, sandbox_id: str) -> None:
    r = client.post(f"/toolbox/{sandbox_id}/process/code-run", headers=AUTH,
                    json={"code": "print('x' * 100000, end='')"})
    assert r.json()["result"] == "x" * 2048 + marker(100000 - LIMIT).decode() + "x" * 2048


def test_session_logs_are_clipped(client: TestClient, sandbox_id: str) -> None:
    base = f"/toolbox/{sandbox_id}/process/session"
    assert client.post(base, json={"sessionId": "s"}, headers=AUTH).status_code == 201
    try:
        r = client.post(f"{base}/s/exec", headers=AUTH,
                        json={"command": "head -c 50000 /dev/zero | tr '\\0' x"})
    finally:
        client.delete(f"{base}/s", headers=AUTH)
    body = r.json()
    assert body["exitCode"] == 0 and len(body["output"]) < LIMIT + 100
    assert body["output"].startswith("x" * 2048) and "bytes of output omitted" in body["output"]
