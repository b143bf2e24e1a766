"""A runner's volumes dir: volumes made at first mount, a shared dir known by its id,
symlinks never followed, and a volume's data moved through an archive store."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.core.ports import VolumeBind
from cove.errors import InvalidState, RuntimeBackendError
from cove.runner.host import mounts
from cove.runner.storage import archive
from cove.runner.storage.archive_store import LocalArchiveStore
from cove.runner.storage.volumes import OWNER, VolumeDir
from tests.unit.runner.test_stale_work import deep_tree


def _mounted(where: VolumeDir, volume: str, subpath: str = "") -> Path:
    """What ``open`` hands the mount, as a path (the descriptor's own)."""
    fd = where.open(VolumeBind(volume, "/data", subpath))
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)


def test_a_volume_is_made_at_its_first_mount(tmp_path: Path) -> None:
    where = VolumeDir(tmp_path / "volumes")
    assert where.shared_id is None
    assert _mounted(where, "v1", "a/b") == tmp_path / "volumes" / "v1" / "a" / "b"
    for path in (tmp_path / "volumes" / "v1", tmp_path / "volumes" / "v1" / "a"):
        assert (path.stat().st_uid, path.stat().st_gid) == OWNER
    where.delete("v1")
    assert not (tmp_path / "volumes" / "v1").exists()
    where.delete("v1")  # none: nothing to do


@pytest.mark.parametrize("volume", ["..", "../x", "a/b", ".hidden", ""])
def test_ids_that_are_not_one_plain_name_are_refused(tmp_path: Path, volume: str) -> None:
    where = VolumeDir(tmp_path / "volumes")
    with pytest.raises(RuntimeBackendError, match="invalid volume id"):
        where.open(VolumeBind(volume, "/data"))
    with pytest.raises(RuntimeBackendError, match="invalid volume id"):
        where.delete(volume)


def test_a_symlink_in_a_volume_leads_nowhere(tmp_path: Path) -> None:
    where = VolumeDir(tmp_path / "volumes")
    _mounted(where, "mine")
    _mounted(where, "theirs")
    mine = tmp_path / "volumes" / "mine"
    (mine / "rel").symlink_to("../theirs")
    (mine / "abs").symlink_to(tmp_path / "volumes" / "theirs")
    for sub in ("rel", "abs", "rel/x"):
        with pytest.raises(RuntimeBackendError, match="symlink"):
            where.open(VolumeBind("mine", "/data", sub))


def test_runners_sharing_a_dir_read_one_id(tmp_path: Path) -> None:
    one, two = (VolumeDir(tmp_path / "nfs", shared=True) for _ in range(2))
    assert one.shared_id and one.shared_id == two.shared_id
    assert VolumeDir(tmp_path / "other", shared=True).shared_id != one.shared_id
    with pytest.raises(InvalidState):
        one.pack("v")  # every runner of it has its volumes already


def test_a_volume_moves_through_the_archive_store(tmp_path: Path) -> None:
    store = LocalArchiveStore(tmp_path / "archives")
    here = VolumeDir(tmp_path / "a", archives=store)
    there = VolumeDir(tmp_path / "b", archives=store)
    data = _mounted(here, "v", "sub")
    (data / "f").write_text("kept")
    os.chown(data / "f", 1001, 1002)
    assert here.pack("v") > 0 and not (tmp_path / "a" / "v").exists()
    assert here.pack("v") > 0  # packed already: the same archive
    assert _mounted(there, "v", "sub") == tmp_path / "b" / "v" / "sub"
    moved = tmp_path / "b" / "v" / "sub" / "f"
    assert moved.read_text() == "kept" and (moved.stat().st_uid, moved.stat().st_gid) == (
        1001, 1002)  # fmt: skip
    assert not store.exists("v") and not list((tmp_path / "b").glob(".restore-*"))
    with pytest.raises(InvalidState):
        VolumeDir(tmp_path / "c").pack("v")  # no shared store: it stays
    there.pack("v")
    there.delete("v")  # its archive goes too
    assert not store.exists("v")


def test_of_two_runners_bringing_a_shared_volume_back_the_first_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    store = LocalArchiveStore(tmp_path / "archives")
    source = VolumeDir(tmp_path / "a", archives=store)
    (_mounted(source, "v") / "f").write_text("packed")
    source.pack("v")
    shared = VolumeDir(tmp_path / "nfs", shared=True, archives=store)
    unpack = archive.unpack_dir

    def slow(store_: object, key: str, directory: Path) -> None:
        unpack(store, key, directory)  # type: ignore[arg-type]
        (tmp_path / "nfs" / "v").mkdir()  # meanwhile, another runner of the dir did it
        (tmp_path / "nfs" / "v" / "f").write_text("theirs")

    monkeypatch.setattr(archive, "unpack_dir", slow)
    assert _mounted(shared, "v") == tmp_path / "nfs" / "v"
    assert (tmp_path / "nfs" / "v" / "f").read_text() == "theirs"
    assert not list((tmp_path / "nfs").glob(".restore-*"))
    store.delete("v")


def test_holes_in_a_volume_move_as_holes(tmp_path: Path) -> None:
    """A sandbox's file of holes in a volume (it may claim 16 TiB of them) is neither
    read as zeros when the volume is packed nor written out when it is brought back."""
    store = LocalArchiveStore(tmp_path / "archives")
    here = VolumeDir(tmp_path / "a", archives=store)
    there = VolumeDir(tmp_path / "b", archives=store)
    data = _mounted(here, "v")
    with open(data / "holes", "wb") as f:
        f.truncate(48 * 2**20)
        f.seek(0, os.SEEK_END)
        f.write(b"end\n")
    here.pack("v")
    tar = subprocess.run(["zstd", "-d", "-q", "-c", str(store.path("v"))], capture_output=True,
                         check=True).stdout  # fmt: skip
    assert len(tar) < 2**20
    moved = _mounted(there, "v") / "holes"
    assert moved.stat().st_size == 48 * 2**20 + 4 and moved.stat().st_blocks * 512 < 2**20
    assert moved.read_bytes()[-4:] == b"end\n"


def test_a_volume_deeper_than_python_recursion_is_deleted(tmp_path: Path) -> None:
    """A sandbox may nest directories in a volume as deep as it likes: deleting the
    volume removes them all (and so does moving it off the runner)."""
    store = LocalArchiveStore(tmp_path / "archives")
    where = VolumeDir(tmp_path / "volumes", archives=store)
    for volume in ("v1", "v2"):
        deep_tree(_mounted(where, volume))
    where.delete("v1")
    assert not (tmp_path / "volumes" / "v1").exists()
    assert where.pack("v2") > 0
    assert not (tmp_path / "volumes" / "v2").exists()


@pytest.fixture
def bounded(tmp_path: Path) -> Iterator[VolumeDir]:
    """A runner's own volumes dir whose volumes are 1 GiB images (unmounted after)."""
    where = VolumeDir(tmp_path / "volumes", size_gib=1)
    try:
        yield where
    finally:
        for mounted in (tmp_path / "volumes").glob("*"):
            if mounts.is_mounted(mounted):
                mounts.detach(mounted)


def _fill(path: Path) -> int:
    """Write zeros into ``path`` until the file system is full; how many MiB went in."""
    done = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", "count=1500"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0 and "No space left on device" in done.stderr, done.stderr
    return path.stat().st_size // 2**20


def test_a_volume_is_an_image_of_its_size(tmp_path: Path, bounded: VolumeDir) -> None:
    """A sandbox writing into a volume gets "no space left" at the volume's size: the
    host's disk is not the limit."""
    data = _mounted(bounded, "v1", "a")
    root = tmp_path / "volumes" / "v1"
    assert data == root / "a" and mounts.is_mounted(root)
    assert (root.stat().st_uid, root.stat().st_gid) == OWNER
    assert sorted(p.name for p in root.iterdir()) == ["a"]  # no lost+found
    assert 900 < _fill(data / "zeros") <= 1024
    assert (tmp_path / "volumes" / "v1.img").stat().st_blocks * 512 < 1.2 * 2**30  # sparse
    (data / "zeros").unlink()
    (data / "f").write_text("kept")
    mounts.detach(root)
    for later in (2, None):  # a changed setting is for new volumes: this one is mounted again
        bounded.size_gib = later
        assert _mounted(bounded, "v1", "a") == data and (data / "f").read_text() == "kept"
        assert mounts.is_mounted(root)
    bounded.delete("v1")
    assert not root.exists() and not (tmp_path / "volumes" / "v1.img").exists()
    assert str(root) not in Path("/proc/self/mountinfo").read_text()


def test_a_volume_made_as_a_directory_stays_one(tmp_path: Path, bounded: VolumeDir) -> None:
    (tmp_path / "volumes" / "old" / "x").mkdir(parents=True)
    assert _mounted(bounded, "old", "x") == tmp_path / "volumes" / "old" / "x"
    assert not mounts.is_mounted(tmp_path / "volumes" / "old")
    assert not (tmp_path / "volumes" / "old.img").exists()
    shared = VolumeDir(tmp_path / "nfs", shared=True, size_gib=1)  # a shared dir: directories
    _mounted(shared, "v")
    assert not mounts.is_mounted(tmp_path / "nfs" / "v")


def test_a_bounded_volume_moves_through_the_archive_store(tmp_path: Path) -> None:
    store = LocalArchiveStore(tmp_path / "archives")
    here = VolumeDir(tmp_path / "a", archives=store, size_gib=1)
    there = VolumeDir(tmp_path / "b", archives=store, size_gib=1)
    try:
        (_mounted(here, "v", "sub") / "f").write_text("kept")
        assert here.pack("v") > 0
        assert not (tmp_path / "a" / "v").exists() and not (tmp_path / "a" / "v.img").exists()
        moved = _mounted(there, "v", "sub") / "f"
        assert moved.read_text() == "kept" and mounts.is_mounted(tmp_path / "b" / "v")
        assert not store.exists("v")
        there.delete("v")
        assert not (tmp_path / "b" / "v").exists()
    finally:
        for root in (tmp_path / "a" / "v", tmp_path / "b" / "v"):
            if mounts.is_mounted(root):
                mounts.detach(root)
