"""examples/agent_runner (seed 001's backend), run unchanged against a real cove serve."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daytona import AsyncDaytona, DaytonaNotFoundError, ListSandboxesQuery
from websockets.asyncio.client import ClientConnection, connect

from cove.testing import free_port
from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).parents[2] / "examples" / "agent_runner"

# Prints a line, then waits (1 s at a time) until the test has seen that line and said
# go: the second line cannot be printed before the first one reached the client.
HANDSHAKE = """\
import os, sys, time
print("first")
while not os.path.exists("/tmp/go"):
    time.sleep(1)
print("second")
print("to stderr", file=sys.stderr)
sys.exit(3)
"""
FOREVER = 'import time\nprint("started")\ntime.sleep(600)\n'


@pytest.fixture(scope="module")
def runner(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example app served by uvicorn as its README says, configured like the SDK."""
    port = free_port()
    env = {**os.environ, "DAYTONA_API_URL": server.api_url, "DAYTONA_API_KEY": KEY}
    log = (tmp_path_factory.mktemp("agent-runner") / "uvicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(EXAMPLE),
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"127.0.0.1:{port}"
    try:
        wait_serving(proc, f"http://{url}/")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a handler stuck on a failed test's sandbox
            proc.kill()
            proc.wait()
        log.close()


def wait_serving(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the example app exited"
        try:
            httpx.get(url, timeout=5).raise_for_status()
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the example app did not start serving"
            time.sleep(0.1)


async def next_message(ws: ClientConnection) -> dict:
    return json.loads(await ws.recv())


async def run_until(ws: ClientConnection, content: str) -> tuple[str, list[dict]]:
    """Reads messages up to the log line ``content``; returns the sandbox id and them."""
    seen: list[dict] = []
    while not seen or seen[-1].get("content") != content:
        seen.append(await next_message(ws))
        assert seen[-1]["type"] in ("status", "log"), seen
    running = [m for m in seen if m.get("status") == "running"]
    return running[0]["sandbox_id"], seen


def test_page_is_served_without_remote_assets(runner: str) -> None:
    page = httpx.get(f"http://{runner}/").text
    assert "<textarea" in page and "/ws/agents/" in page
    assert "https://" not in page and "http://" not in page


async def test_logs_stream_live_then_exit_code_and_sandbox_deleted(
    runner: str, server: Server, async_daytona: AsyncDaytona
) -> None:
    agent_id = f"t-{uuid.uuid4().hex[:8]}"
    async with connect(f"ws://{runner}/ws/agents/{agent_id}/run") as ws:
        await ws.send(json.dumps({"code": HANDSHAKE}))
        sandbox_id, seen = await run_until(ws, "first")
        assert {"type": "log", "stream": "stdout", "content": "first"} in seen
        sandbox = await async_daytona.get(sandbox_id)
        assert sandbox.labels.get("agent_id") == agent_id
        await sandbox.fs.upload_file(b"", "/tmp/go")
        rest = [json.loads(message) async for message in ws]  # until the app closes
    assert rest == [
        {"type": "log", "stream": "stdout", "content": "second"},
        {"type": "log", "stream": "stderr", "content": "to stderr"},
        {"type": "execution_complete", "exit_code": 3},
    ]
    # The socket closes once the sandbox is deleted.
    with pytest.raises(DaytonaNotFoundError):
        await async_daytona.get(sandbox_id)
    assert sandbox_id not in server.runtime().list_ids()


async def test_client_leaving_mid_run_deletes_the_sandbox(
    runner: str, server: Server, async_daytona: AsyncDaytona
) -> None:
    agent_id = f"t-{uuid.uuid4().hex[:8]}"
    async with connect(f"ws://{runner}/ws/agents/{agent_id}/run") as ws:
        await ws.send(json.dumps({"code": FOREVER}))
        sandbox_id, _ = await run_until(ws, "started")
    # The program would run for 10 minutes: the app must notice and delete its sandbox.
    query = ListSandboxesQuery(labels={"agent_id": agent_id})
    deadline = time.monotonic() + 120
    while [sb.id async for sb in async_daytona.list(query)]:
        assert time.monotonic() < deadline, "the sandbox outlived its client"
        await asyncio.sleep(0.2)
    with pytest.raises(DaytonaNotFoundError):
        await async_daytona.get(sandbox_id)
    assert sandbox_id not in server.runtime().list_ids()


async def test_bad_requests_are_refused_before_any_sandbox(
    runner: str, async_daytona: AsyncDaytona
) -> None:
    async with connect(f"ws://{runner}/ws/agents/no%20spaces/run") as ws:
        await ws.wait_closed()
    assert ws.close_code == 1008
    agent_id = f"t-{uuid.uuid4().hex[:8]}"
    async with connect(f"ws://{runner}/ws/agents/{agent_id}/run") as ws:
        await ws.send(json.dumps({"code": 42}))
        await ws.wait_closed()
    assert ws.close_code == 1003
    query = ListSandboxesQuery(labels={"agent_id": agent_id})
    assert not [sb async for sb in async_daytona.list(query)]
