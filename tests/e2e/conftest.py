"""A real ``cove serve`` on loopback, driven by the official daytona SDK.

The server runs as a separate process group, so tests can ``kill -9`` it. Every
sandbox a test creates is deleted afterwards (also when the test fails), and
after the session nothing of ours may be left on the host.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daytona import AsyncDaytona, Daytona, DaytonaConfig

from cove.core.config import Settings
from cove.runtime.oci import OciRuntime
from tests.leaks import assert_no_leaks

pytestmark = pytest.mark.e2e
KEY = "e2e-admin-key"
SNAPSHOTS = Path("/var/lib/cove/snapshots")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``cove serve`` process and the settings it runs with."""

    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.settings = Settings(data_dir=data_dir, snapshot_dir=SNAPSHOTS, port=self.port)
        self.log = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "COVE_API_KEY": KEY,
            "COVE_SNAPSHOT_DIR": str(SNAPSHOTS),
        }
        cmd = [sys.executable, "-m", "cove.cli.main", "serve", "--port", str(self.port),
               "--data-dir", str(self.data_dir)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cove serve exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("cove serve did not become healthy")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def runtime(self) -> OciRuntime:
        """The host's view, for checks that the SDK cannot make (yet)."""
        return OciRuntime(self.settings)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("cove-e2e"))
    srv.start()
    try:
        yield srv
    finally:
        _delete_everything(srv)
        srv.stop()
        runtime = srv.runtime()
        leftovers = runtime.list_ids()
        for sandbox_id in leftovers:
            runtime.destroy(sandbox_id)
        assert not leftovers, f"sandboxes left on the host: {leftovers}"
        assert_no_leaks()


def _delete_everything(srv: Server) -> None:
    if srv.proc is None or srv.proc.poll() is not None:
        srv.start()
    headers = {"Authorization": f"Bearer {KEY}"}
    items = httpx.get(f"{srv.api_url}/sandbox", headers=headers, timeout=30).json()["items"]
    for item in items:
        httpx.delete(f"{srv.api_url}/sandbox/{item['id']}", headers=headers, timeout=60)


@pytest.fixture
def daytona(server: Server) -> Iterator[Daytona]:
    client = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
    yield client


@pytest.fixture
async def async_daytona(server: Server):
    async with AsyncDaytona(DaytonaConfig(api_key=KEY, api_url=server.api_url)) as client:
        yield client


@pytest.fixture
def sandboxes(daytona: Daytona, request: pytest.FixtureRequest) -> Iterator[list]:
    """Append SDK sandboxes here; they are deleted after the test, whatever happens."""
    created: list = []
    yield created
    failed = getattr(request.node, "rep_call", None)
    for sb in created:
        if failed is not None and failed.failed:
            print(f"sandbox of failed test: {sb.id}")  # noqa: T201
        try:
            sb.delete()
        except Exception:  # noqa: BLE001 - already deleted by the test
            pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
