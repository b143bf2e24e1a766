"""A real ``cove serve`` on loopback, driven by the official daytona SDK.

The server runs as a separate process group, so tests can ``kill -9`` it. Every
sandbox a test creates is deleted afterwards (also when the test fails), and
after the session nothing of ours may be left on the host.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from daytona import AsyncDaytona, Daytona, DaytonaConfig

from cove.runner.oci.runtime import OciRuntime
from cove.runner.storage.volumes import VolumeDir
from cove.testing import ServerProcess, sweep_snapshots
from tests.leaks import assert_no_leaks
from tests.nettools import TEST_NAMES, FakeDns, sandbox_pool

pytestmark = pytest.mark.e2e
KEY = "e2e-admin-key"
# Test servers pull only from registries the tests start on loopback: never the Internet.
LOCAL_REGISTRIES = "127.0.0.1"


class Server(ServerProcess):
    def runtime(self) -> OciRuntime:
        """The host's view, for checks that the SDK cannot make (yet)."""
        return OciRuntime(self.settings)


@pytest.fixture(scope="session")
def e2e_dns() -> Iterator[FakeDns]:
    """Upstream of the server's DNS forwarder: answers the test remotes' names."""
    dns = FakeDns(TEST_NAMES)
    yield dns
    dns.close()


ADMIN_KEY_LINE = re.compile(r"^export DAYTONA_API_KEY=(\S+)$", re.MULTILINE)


@contextmanager
def running_server(data_dir: Path, pool: int, env: dict[str, str] | None = None, *,
                   api_key: str | None = KEY) -> Iterator[Server]:  # fmt: skip
    """A ``cove serve`` with its own address pool; afterwards everything it made is
    deleted and nothing of it may be left on the host. With ``api_key=None`` no key is
    configured: the server's first start prints its admin key, which is then used."""
    env = {"COVE_NETWORK_POOL": sandbox_pool(pool), "COVE_ALLOWED_REGISTRIES": LOCAL_REGISTRIES,
           **(env or {})}  # fmt: skip
    if api_key is None:
        env["COVE_API_KEY"] = ""
    srv = Server(data_dir, api_key=api_key or "", env=env)
    srv.settings = srv.settings.model_copy(update={"network_pool": sandbox_pool(pool)})
    srv.start()
    printed = ADMIN_KEY_LINE.findall(srv.log.read_text())
    if api_key is None and len(printed) == 1:
        srv.api_key = printed[0]
    try:
        assert api_key is not None or len(printed) == 1, "no admin key line printed once"
        yield srv
    finally:
        if not srv.running:
            srv.start()
        srv.delete_all_sandboxes()
        drain_pools(srv)
        srv.stop()
        VolumeDir(srv.data_dir / "volumes").unmount_all()  # (volumes no test deleted)
        runtime = srv.runtime()
        for ref in srv.snapshots:  # the snapshot dir is shared: leave nothing of ours
            runtime.remove_snapshot(ref)
        leftovers = runtime.list_ids()
        for sandbox_id in leftovers:
            runtime.destroy(sandbox_id)
        assert not leftovers, f"sandboxes left on the host: {leftovers}"
        assert_no_leaks(srv.data_dir, srv.cgroup_parent)


def unowned(srv: Server) -> list[str]:
    """Ids of the sandboxes no organization owns (warm pools'), from the database."""
    if not (srv.data_dir / "cove.db").exists():
        return []
    with sqlite3.connect(srv.data_dir / "cove.db") as db:
        return [r[0] for r in db.execute("SELECT id FROM sandboxes WHERE organization_id IS NULL")]


def drain_pools(srv: Server) -> None:
    """Delete the admin organization's warm pools and restart the server without the
    operator's pool: it destroys every pooled sandbox."""
    if not unowned(srv):
        return
    headers = {"Authorization": f"Bearer {srv.api_key}"}
    for pool in httpx.get(f"{srv.api_url}/warm-pools", headers=headers, timeout=30).json():
        httpx.delete(f"{srv.api_url}/warm-pools/{pool['id']}", headers=headers, timeout=30)
    srv.stop()
    srv.extra_env["COVE_POOL_SIZE"] = "0"
    srv.start()
    deadline = time.monotonic() + 300
    while unowned(srv):
        assert time.monotonic() < deadline, f"pooled sandboxes left: {unowned(srv)}"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def oci_layouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's COVE_OCI_LAYOUT_DIR: local images tests may import."""
    return tmp_path_factory.mktemp("oci-layouts")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, e2e_dns: FakeDns, oci_layouts: Path
           ) -> Iterator[Server]:  # fmt: skip
    env = {"COVE_DNS_UPSTREAM": e2e_dns.upstream, "COVE_OCI_LAYOUT_DIR": str(oci_layouts),
           "COVE_VOLUME_SIZE_GB": "1"}  # (volumes a test can fill)
    with running_server(tmp_path_factory.mktemp("cove-e2e"), 1, env) as srv:
        yield srv


def sandbox_processes(sandbox_id: str) -> Iterator[tuple[int, bytes]]:
    """The host pids of a sandbox's processes, with their command lines."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            cgroup = Path(f"/proc/{entry}/cgroup").read_text()
        except OSError:
            continue
        if sandbox_id in cgroup:
            yield int(entry), cmdline


def run_ok(sb, command: str) -> str:  # noqa: ANN001 - an SDK Sandbox, sync
    """Run a shell command in an SDK sandbox; it must succeed. Returns its output."""
    result = sb.process.exec(command)
    assert result.exit_code == 0, result.result
    return result.result


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove what the session's servers left in the shared snapshot dir (a test's
    server stopped outside ``running_server`` leaves its snapshots there)."""
    sweep_snapshots()
