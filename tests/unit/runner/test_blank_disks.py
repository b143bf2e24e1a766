"""Blank disk images made ahead: a take moves one into place, never the same twice."""

from __future__ import annotations

import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cove.runner.host import blank_disks
from cove.runner.host.blank_disks import BlankDisks

GIB = 1024**3


@pytest.fixture(autouse=True)
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blank_disks, "REFILL_DELAY", 0.0)


def _ext4_uuid(image: Path) -> bytes:
    """The file system's UUID (after checking the ext4 magic of its superblock)."""
    with open(image, "rb") as f:
        f.seek(1024)
        block = f.read(1024)
    assert struct.unpack_from("<H", block, 0x38)[0] == 0xEF53
    return block[0x68:0x78]


def _stocked(disks: BlankDisks, size: int) -> list[Path]:
    for _ in range(3000):
        ready = sorted(disks.directory.glob(f"{size}g-*.img"))
        if len(ready) >= blank_disks.KEEP and not disks._refiller.busy():
            return ready
        time.sleep(0.01)
    raise AssertionError("no blank disks were made")


def test_a_take_with_none_ready_makes_the_size_ahead_for_the_next(tmp_path: Path) -> None:
    disks = BlankDisks(tmp_path)
    target = tmp_path / "disk.img"
    assert disks.take(target, 1) is False and not target.exists()
    ready = _stocked(disks, 1)
    assert disks.take(target, 1) is True
    assert target.stat().st_size == GIB and _ext4_uuid(target)
    assert not ready[0].exists() or not ready[1].exists()  # moved, not copied
    assert disks.take(tmp_path / "other.img", 2) is False  # each size its own
    assert len(_stocked(disks, 1)) == blank_disks.KEEP


def test_concurrent_takes_never_share_an_image_and_each_has_its_own_file_system(
    tmp_path: Path,
) -> None:
    disks = BlankDisks(tmp_path)
    disks.take(tmp_path / "first.img", 1)
    _stocked(disks, 1)
    targets = [tmp_path / f"t{n}.img" for n in range(blank_disks.KEEP + 2)]
    with ThreadPoolExecutor(len(targets)) as pool:
        taken = list(pool.map(lambda t: disks.take(t, 1), targets))
    got = [t for t, ok in zip(targets, taken, strict=True) if ok]
    assert len(got) == blank_disks.KEEP  # the others make their own
    uuids = {_ext4_uuid(t) for t in [*got, *_stocked(disks, 1)]}
    assert len(uuids) == 2 * blank_disks.KEEP


def test_nothing_is_made_once_the_data_dir_is_gone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    disks = BlankDisks(data)
    data.rmdir()
    disks.take(tmp_path / "disk.img", 1)
    disks._refiller.shutdown()
    assert not data.exists()
