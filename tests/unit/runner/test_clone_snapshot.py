"""A snapshot copied for a cached Dockerfile build: hard links, its own image config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cove.core.ports import ImageConfig
from cove.errors import RuntimeBackendError
from cove.runner.storage.capture import clone_snapshot


def test_clone_links_every_file_and_writes_its_config(tmp_path: Path) -> None:
    source = tmp_path / "src" / "rootfs"
    (source / "etc").mkdir(parents=True)
    (source / "etc" / "f").write_text("data")
    os.symlink("etc/f", source / "link")
    config = ImageConfig(env={"A": "1"}, user="daytona", cmd=("sleep",), labels={"k": "v"})
    clone_snapshot(tmp_path, source, "copy", config)
    copied = tmp_path / "copy" / "rootfs"
    assert (copied / "etc" / "f").stat().st_ino == (source / "etc" / "f").stat().st_ino
    assert os.readlink(copied / "link") == "etc/f"
    data = json.loads((tmp_path / "copy" / "image.json").read_text())
    assert data["env"] == {"A": "1"} and data["labels"] == {"k": "v"}
    assert not (tmp_path / "src" / "image.json").exists()
    with pytest.raises(RuntimeBackendError, match="exists already"):
        clone_snapshot(tmp_path, source, "copy", config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "src"]
