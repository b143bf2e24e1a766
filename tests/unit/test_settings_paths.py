"""Where a server keeps things: the snapshot dir is shared by every data dir of the host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cove.agent import users
from cove.core.config import Settings


def test_a_new_data_dir_shares_the_hosts_snapshot_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COVE_SNAPSHOT_DIR", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    shared = Path("/var/lib/cove") if os.geteuid() == 0 else Path.home() / ".local/share/cove"
    assert settings.snapshot_dir == shared / "snapshots"
    assert settings.archive_dir == tmp_path / "data" / "archives"  # archives stay its own
    monkeypatch.setenv("COVE_SNAPSHOT_DIR", str(tmp_path / "mine"))
    assert Settings(data_dir=tmp_path / "data").snapshot_dir == tmp_path / "mine"


def test_a_users_own_commands_come_first_on_its_path() -> None:
    daytona = users.User("daytona", 1000, 1000, "/home/daytona", "/bin/bash")
    path = users.environment(daytona)["PATH"].split(":")
    assert path[0] == "/home/daytona/.local/bin"
    assert "/usr/bin" in path
    root = users.User("root", 0, 0, "/root", "/bin/sh")
    assert "/root/.local/bin" not in users.environment(root)["PATH"]
    assert users.environment(daytona, {"PATH": "/x"})["PATH"] == "/x"  # asked for: as given
