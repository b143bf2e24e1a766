"""The real toolbox agent, run in process on the host, behind the real API.

Fast tests of the toolbox routes and the agent's handlers. Commands run as the
test's own user on the host, in temporary directories; the isolation itself is
tested end to end on real sandboxes (tests/e2e).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from cove.agent import agent, process
from cove.api.app import create_app
from cove.core.config import Settings
from cove.runner.fake import FakeRuntime

AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture(autouse=True)
def no_pipes_left_to_drop() -> Iterator[None]:
    """Pipes the agent reads and drops for processes a command left behind live in its
    loop: a test's loop ends with the test, so none may outlast it (it would keep every
    later test's agent from its idle exit)."""
    yield
    for pipe in list(process._discarded):
        pipe.close()
    process._discarded.clear()


@pytest.fixture
def agent_path(tmp_path: Path) -> Iterator[str]:
    with running_agent(tmp_path) as path:
        yield path


@contextlib.contextmanager
def running_agent(tmp_path: Path) -> Iterator[str]:
    """The agent, serving on a socket in ``tmp_path`` (its path) in a thread of its own."""
    path = str(tmp_path / "agent.sock")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def run() -> None:
        server = await agent.serve(path, check_peer=False)
        ready.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield path
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


@pytest.fixture
def client(tmp_path: Path, agent_path: str) -> Iterator[TestClient]:
    with served(tmp_path, agent_path) as c:
        yield c


@contextlib.contextmanager
def served(tmp_path: Path, agent_path: str, **settings: Any) -> Iterator[TestClient]:
    """The API, with ``settings`` of its own, before the in-process agent."""
    config = Settings(data_dir=tmp_path / "data", runtime="fake", api_key="test-key",
                      **settings)  # fmt: skip
    with TestClient(create_app(config, runtime=FakeRuntime(agent_path=agent_path))) as c:
        yield c


@pytest.fixture
def sandbox_id(client: TestClient) -> str:
    body = {"user": getpass.getuser(), "env": {"SANDBOX_VAR": "yes"}, "volumes": []}
    r = client.post("/api/sandbox", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def assert_dies(pid: int) -> None:
    """``pid`` exits (or is a zombie) within 5 s."""
    for _ in range(100):
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().split()[2] == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still alive")
