"""kill -9 the server in the middle of an archive or a Dockerfile build: after a
restart nothing of the interrupted work is left on disk, and every sandbox is in a
state that says what happened."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

from cove.testing import SHARED_SNAPSHOTS
from tests.e2e.conftest import KEY, Server, running_server

pytestmark = pytest.mark.e2e
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("cove-crash"), 5) as srv:
        yield srv


@pytest.fixture
def daytona(server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))


def _until(what: str, check: Callable[[], object]) -> object:
    """Poll ``check`` until it returns something true (the test fails after 5 min)."""
    deadline = time.monotonic() + 300
    while not (found := check()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)
    return found


def _state(server: Server, sandbox_id: str) -> str:
    response = httpx.get(f"{server.api_url}/sandbox/{sandbox_id}", headers=HEADERS, timeout=30)
    return str(response.json()["state"])


def _in_background(request: Callable[[], object]) -> threading.Thread:
    """A lifecycle call that only answers when done (or fails when the server dies)."""

    def call() -> None:
        try:
            request()
        except httpx.HTTPError:
            pass  # the server was killed under it

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def _partial_archives(server: Server, pid: int | str = "*") -> list[Path]:
    """Archives being written (by the server process ``pid``, if given)."""
    return list((server.data_dir / "archives").glob(f".*.{pid}.tmp"))


def test_kill9_during_archive_leaves_no_partial_archive(
    server: Server, daytona: Daytona
) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams(labels={"crash": "archive"}))
    try:
        sb.process.exec("head -c 400000000 /dev/urandom > /home/daytona/big && sync", timeout=300)
        size = sb.process.exec("stat -c %s /home/daytona/big").result.strip()
        sb.stop()
        call = _in_background(lambda: httpx.post(
            f"{server.api_url}/sandbox/{sb.id}/archive", headers=HEADERS, timeout=300))
        _until("a half-written archive", lambda: _partial_archives(server))
        assert _state(server, sb.id) == "archiving"
        assert server.proc is not None
        killed = server.proc.pid
        server.kill9()
        call.join()
        assert _partial_archives(server, killed)  # what the kill left
        server.start()

        # (the new server archives again at once: its own partial archive may be there)
        assert not _partial_archives(server, killed)
        # The interrupted archive is rolled back, then run again to its end.
        _until("archived again", lambda: _state(server, sb.id) == "archived")
        assert not _partial_archives(server)
        assert server.runtime().status(sb.id) == "archived"  # its live copy was freed
        sb.refresh_data()
        sb.start()
        assert sb.process.exec("stat -c %s /home/daytona/big").result.strip() == size
    finally:
        sb.delete()


def _build_work(server: Server) -> list[Path]:
    """Work dirs of this server's snapshot captures in the (shared) snapshot dir."""
    assert server.proc is not None
    return list(SHARED_SNAPSHOTS.glob(f".build-*-{server.proc.pid}"))


def _build_sandboxes(server: Server) -> set[str]:
    return {i for i in server.runtime().list_ids() if i.startswith("build-")}


@pytest.mark.parametrize("moment", ["running a step", "capturing the snapshot"])
def test_kill9_during_a_dockerfile_build_leaves_nothing(server: Server, moment: str) -> None:
    if moment == "running a step":
        dockerfile = f"FROM cove-default\nRUN echo {time.time_ns()} && sleep 600\n"
    else:  # a quick step, then a long capture of what it wrote
        dockerfile = (f"FROM cove-default\nRUN echo {time.time_ns()} && "
                      "head -c 800000000 /dev/zero > /big\n")  # fmt: skip
    created = httpx.post(f"{server.api_url}/sandbox", headers=HEADERS, timeout=60,
                         json={"buildInfo": {"dockerfileContent": dockerfile}})  # fmt: skip
    assert created.status_code == 200, created.text
    sandbox_id = created.json()["id"]
    try:
        _until("a build sandbox", lambda: _build_sandboxes(server))
        if moment == "capturing the snapshot":
            _until("a snapshot capture under way", lambda: _build_work(server))
            work = _build_work(server)
        assert _state(server, sandbox_id) == "building_snapshot"
        server.kill9()
        server.start()

        assert _state(server, sandbox_id) == "build_failed"
        reason = httpx.get(f"{server.api_url}/sandbox/{sandbox_id}", headers=HEADERS).json()
        assert "interrupted by a server restart" in reason["errorReason"]
        assert _build_sandboxes(server) == set()
        if moment == "capturing the snapshot":
            assert not any(p.exists() for p in work)
        snapshots = httpx.get(f"{server.api_url}/snapshots", headers=HEADERS).json()
        assert not [s for s in snapshots["items"] if s["name"].startswith("dockerfile-")]
    finally:
        httpx.delete(f"{server.api_url}/sandbox/{sandbox_id}", headers=HEADERS, timeout=120)
