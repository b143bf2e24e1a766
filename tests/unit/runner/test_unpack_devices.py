"""An unpacked image's device nodes are removed, however deep a registry nested them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cove.hostfiles import remove_tree
from cove.runner.storage.unpack import remove_devices
from tests.unit.runner.test_stale_work import deep_tree


def test_device_nodes_go_at_any_depth_and_links_are_not_followed(tmp_path: Path) -> None:
    """A tree 1,500 levels deep (os.walk's recursion stops near 1,000) with a device
    at its bottom; a symlink to a device elsewhere is not followed."""
    rootfs, outside = tmp_path / "rootfs", tmp_path / "outside"
    try:
        _check(rootfs, outside)
    finally:  # (pytest's own clean-up of tmp_path recurses: it would fail on this tree)
        remove_tree(rootfs, ignore_errors=True)


def _check(rootfs: Path, outside: Path) -> None:
    outside.mkdir()
    os.mknod(outside / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    rootfs.mkdir()
    deep_tree(rootfs, 1500)
    deep = rootfs.joinpath(*["d"] * 1500)
    os.mknod(deep / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(rootfs / "sda", stat.S_IFBLK | 0o600, os.makedev(8, 0))
    (rootfs / "kept").write_text("data")
    (rootfs / "link").symlink_to(outside / "null")
    (rootfs / "dirlink").symlink_to(outside)
    remove_devices(rootfs)
    assert not (deep / "null").exists() and (deep / "f").exists()
    assert not (rootfs / "sda").exists()
    assert (rootfs / "kept").read_text() == "data" and (rootfs / "link").is_symlink()
    assert (outside / "null").exists()  # (not followed)
