"""The default snapshot: its layout, its user, and builds that fail leave nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.errors import RuntimeBackendError
from cove.runner.storage import snapshot

pytestmark = pytest.mark.integration


def test_default_snapshot_layout(default_rootfs: Path, it_settings: Settings) -> None:
    base = it_settings.snapshot_dir / "cove-default"  # type: ignore[operator]
    current = base / "current"
    assert current.is_symlink()  # the first build; a server uses its own recipe's build
    assert (base / os.readlink(current) / "recipe.json").is_file()
    assert default_rootfs == base / snapshot.recipe_hash() / "rootfs"
    assert snapshot.snapshot_rootfs(it_settings, "cove-default") == default_rootfs
    meta = json.loads((default_rootfs.parent / "recipe.json").read_text())
    assert meta["hash"] == snapshot.recipe_hash()
    assert default_rootfs.parent.name.startswith(snapshot.recipe_hash())
    passwd = (default_rootfs / "etc/passwd").read_text()
    assert "daytona:x:1000:1000::/home/daytona:/bin/bash" in passwd
    assert (default_rootfs / "home/daytona").stat().st_uid == 1000
    assert (default_rootfs / "usr/bin/python3").exists()
    assert not list(default_rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"))  # pip may install
    assert (default_rootfs / "home/daytona/.local/bin").stat().st_uid == 1000
    assert not list(base.glob(".build-*"))
    assert not list((default_rootfs / "var/lib/apt/lists").glob("*_Packages"))


def test_up_to_date_snapshot_is_not_rebuilt(default_rootfs: Path, it_settings: Settings) -> None:
    lines: list[str] = []
    assert snapshot.ensure_default_snapshot(it_settings, progress=lines.append) == default_rootfs
    assert lines == []


def test_failed_build_leaves_nothing_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, snapshot_dir=tmp_path / "snapshots")

    def half_done(rootfs: Path, say: snapshot.Progress) -> None:
        (rootfs / "etc").mkdir(parents=True)
        say("I: pretending")
        raise RuntimeBackendError("debootstrap exited 1")

    monkeypatch.setattr(snapshot, "_debootstrap", half_done)
    lines: list[str] = []
    with pytest.raises(RuntimeBackendError):
        snapshot.ensure_default_snapshot(settings, progress=lines.append)
    assert lines == ["I: pretending"]
    base = tmp_path / "snapshots" / "cove-default"
    assert sorted(p.name for p in base.iterdir()) == [".lock"]
    assert not snapshot.snapshot_rootfs(settings, "cove-default").exists()
