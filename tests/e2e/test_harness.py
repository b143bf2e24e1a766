"""The test harness itself: a server that does not come up is never left running."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cove.runner.host import mounts
from cove.runner.host.nsstock import STOCK_DIR
from cove.testing import ServerProcess

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
