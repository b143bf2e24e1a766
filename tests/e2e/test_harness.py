"""The test harness itself: a server that does not come up is never left running."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from cove.runner.host import mounts
from cove.runner.host.nsstock import STOCK_DIR
from cove.testing import ServerProcess
from tests.leaks import assert_no_leaks

pytestmark = pytest.mark.e2e


def test_a_server_that_is_not_healthy_in_time_is_killed(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, api_key="harness-key-" + "x" * 32)
    with pytest.raises(RuntimeError, match="did not become healthy"):
        srv.start(timeout=0)
    assert srv.proc is not None and not srv.running
    with pytest.raises(ProcessLookupError):
        os.killpg(srv.proc.pid, 0)  # nothing of its process group is left


def test_a_stopped_server_leaves_no_stock_mount_behind(tmp_path: Path) -> None:
    """A server stopped while its namespace stock made a set leaves the set mounted in
    its scratch (its next start would sweep it): the harness unmounts it, so a bench or
    test that removes the data dir leaves nothing on the host."""
    (tmp_path / "data").mkdir()
    server = ServerProcess(tmp_path / "data", api_key="k")
    server.start()
    scratch = server.data_dir / STOCK_DIR / f"{server.proc.pid}.half" / "ns"  # type: ignore[union-attr]
    scratch.mkdir(parents=True)
    (scratch / "user").touch()
    subprocess.run(["mount", "--bind", "/proc/self/ns/user", str(scratch / "user")], check=True)
    try:
        server.stop()
        assert not mounts.mounted_under(server.data_dir / STOCK_DIR)
    finally:
        mounts.unmount_under(server.data_dir / STOCK_DIR)


def test_delete_all_sandboxes_reaches_every_organization_it_made_a_key_of(
    tmp_path: Path,
) -> None:
    """A bench or test that made sandboxes with another organization's key (``org_key``)
    leaves none running: the harness deletes them too."""
    (tmp_path / "data").mkdir()
    server = ServerProcess(tmp_path / "data", api_key="harness-key-" + "y" * 32)
    server.start()
    try:
        key = server.org_key("another-org")
        headers = {"Authorization": f"Bearer {key}"}
        made = httpx.post(f"{server.api_url}/sandbox", json={}, headers=headers, timeout=120)
        assert made.status_code == 200, made.text
        server.delete_all_sandboxes()
        listed = httpx.get(f"{server.api_url}/sandbox", headers=headers, timeout=30).json()
        assert listed["items"] == []
    finally:
        server.delete_all_sandboxes()
        server.stop()
    assert_no_leaks(server.data_dir, server.cgroup_parent)
