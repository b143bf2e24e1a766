"""Old builds of the default snapshot: removed once no sandbox of the host uses them,
kept while any sandbox (of any data dir sharing the snapshot dir), mount or create
still may; a build of the same recipe is used again rather than rebuilt."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.errors import RuntimeBackendError
from cove.runner.host import idrange
from cove.runner.layout import Metadata, SandboxPaths
from cove.runner.storage import snapshot, snapshot_gc

pytestmark = pytest.mark.integration


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty default snapshot dir; the host-wide id registry replaced by a test one."""
    monkeypatch.setattr(idrange, "REGISTRY", tmp_path / "ids")
    (tmp_path / "ids").mkdir()
    where = tmp_path / "snapshots" / "cove-default"
    where.mkdir(parents=True)
    return where


def build(base: Path, name: str, digest: str = "x") -> Path:
    (base / name / "rootfs" / "etc").mkdir(parents=True)
    (base / name / "recipe.json").write_text(json.dumps({"hash": digest}))
    return base / name


def make_current(base: Path, name: str) -> None:
    (base / "current").unlink(missing_ok=True)
    (base / "current").symlink_to(name)


def sandbox_over(data_dir: Path, sandbox_id: str, lower: Path) -> SandboxPaths:
    paths = SandboxPaths.of(data_dir, sandbox_id)
    paths.root.mkdir(parents=True)
    paths.write_metadata(Metadata(lower=str(lower / "rootfs"), hostname="h"))
    return paths


@pytest.fixture
def bind_mount(tmp_path: Path) -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for point in made:
        subprocess.run(["umount", str(point)], check=True)


def remaining(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if not p.name.startswith("."))


def test_only_builds_nothing_uses_are_removed(
    base: Path, tmp_path: Path, bind_mount: list[Path]
) -> None:
    mine, registered, leased = tmp_path / "mine", tmp_path / "other", tmp_path / "leased"
    for name in ("new", "mine", "registered", "leased", "mounted", "unused"):
        build(base, name)
    make_current(base, "new")
    sandbox_over(mine, "s1", base / "mine")  # a stopped sandbox of our own data dir
    sandbox_over(registered, "s2", base / "registered")  # another server's, sharing the dir
    snapshot_gc.register(base, registered)
    sandbox_over(leased, "s3", base / "leased")  # known only from its host id range
    (idrange.REGISTRY / "7").write_text(f"{leased}\ns3\n")
    # a running sandbox of a data dir nobody knows: its idmapped lower layer is a mount
    point = tmp_path / "lower"
    point.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(base / "mounted" / "rootfs"), str(point)],
                   check=True)  # fmt: skip
    bind_mount.append(point)

    assert snapshot_gc.collect(base, mine) == ["unused"]
    assert remaining(base) == ["current", "leased", "mine", "mounted", "new", "registered"]
    assert not list(base.glob(".build-*"))

    # once their sandboxes are gone, the builds go too (never the current one)
    for data, sid in ((mine, "s1"), (registered, "s2"), (leased, "s3")):
        SandboxPaths.of(data, sid).metadata.unlink()
    subprocess.run(["umount", str(point)], check=True)
    bind_mount.clear()
    assert sorted(snapshot_gc.collect(base, mine)) == ["leased", "mine", "mounted", "registered"]
    assert remaining(base) == ["current", "new"]
    # a registered data dir that is gone is forgotten
    assert len(list((base / snapshot_gc.REGISTERED).iterdir())) == 1
    shutil.rmtree(registered)
    build(base, "later")
    assert snapshot_gc.collect(base, mine) == ["later"]
    assert list((base / snapshot_gc.REGISTERED).iterdir()) == []


def test_unreadable_sandbox_metadata_keeps_every_build(base: Path, tmp_path: Path) -> None:
    build(base, "new")
    build(base, "old")
    make_current(base, "new")
    paths = sandbox_over(tmp_path / "data", "s1", base / "new")
    paths.metadata.write_text("{not json")
    with pytest.raises(RuntimeBackendError):
        snapshot_gc.collect(base, tmp_path / "data")
    assert remaining(base) == ["current", "new", "old"]
    assert snapshot_gc.safe_collect(base, tmp_path / "data") == []
    assert remaining(base) == ["current", "new", "old"]


def test_a_create_choosing_its_lower_layer_holds_off_the_collector(
    base: Path, tmp_path: Path
) -> None:
    build(base, "new")
    make_current(base, "new")
    settings = Settings(data_dir=tmp_path / "data", snapshot_dir=base.parent)
    with snapshot.pinned(settings, "cove-default") as lower:
        assert lower == (base / "new" / "rootfs").resolve()
        fd = os.open(base / snapshot_gc.LOCK, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # what collect() takes, blocking
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_a_build_of_the_same_recipe_is_used_again(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = snapshot.recipe_hash()
    build(base, digest, digest)
    build(base, "older", "older")
    make_current(base, "older")

    def no_build(rootfs: Path, say: snapshot.Progress) -> None:
        raise AssertionError("rebuilt although a build of the recipe exists")

    monkeypatch.setattr(snapshot, "_debootstrap", no_build)
    settings = Settings(data_dir=tmp_path / "data", snapshot_dir=base.parent)
    settings.data_dir.mkdir()
    lines: list[str] = []
    rootfs = snapshot.ensure_default_snapshot(settings, progress=lines.append)
    assert rootfs == (base / digest / "rootfs").resolve()
    assert os.readlink(base / "current") == digest
    assert lines == ["removed old build older (no sandbox uses it)"]
    assert remaining(base) == sorted([digest, "current"])
    registered = [p.read_text() for p in (base / snapshot_gc.REGISTERED).iterdir()]
    assert registered == [f"{settings.data_dir}\n"]


def test_a_snapshot_dir_reached_through_a_symlink(base: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(base.parent)
    build(base, "new")
    build(base, "old")
    make_current(base, "new")
    sandbox_over(tmp_path / "data", "s1", base / "old")  # (lower layers are recorded resolved)
    assert snapshot_gc.collect(tmp_path / "link" / "cove-default", tmp_path / "data") == []
    assert remaining(base) == ["current", "new", "old"]
