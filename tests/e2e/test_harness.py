"""The test harness itself: a server that does not come up is never left running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cove.testing import ServerProcess

pytestmark = pytest.mark.e2e


def test_a_server_that_is_not_healthy_in_time_is_killed(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path, api_key="harness-key-" + "x" * 32)
    with pytest.raises(RuntimeError, match="did not become healthy"):
        srv.start(timeout=0)
    assert srv.proc is not None and not srv.running
    with pytest.raises(ProcessLookupError):
        os.killpg(srv.proc.pid, 0)  # nothing of its process group is left
