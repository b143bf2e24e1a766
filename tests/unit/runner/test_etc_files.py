"""The files a sandbox's /etc/hostname, /etc/hosts and /etc/resolv.conf are bound from:
rewritten in place at every start and claim, exactly the new content, never through a
symlink."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.layout import SandboxPaths
from cove.runner.oci.container import _write_etc


def test_a_shorter_name_leaves_nothing_of_the_longer_one(tmp_path: Path) -> None:
    paths = SandboxPaths.of(tmp_path, "sb")
    _write_etc(paths, "a-pooled-sandbox-named-by-its-long-uuid", nameserver="10.0.0.1")
    _write_etc(paths, "short", nameserver="10.9.9.9")
    assert (paths.etc / "hostname").read_text() == "short\n"
    assert (paths.etc / "hosts").read_text() == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tshort\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    assert (paths.etc / "resolv.conf").read_text() == "nameserver 10.9.9.9\noptions edns0\n"


def test_the_files_are_rewritten_in_place(tmp_path: Path) -> None:
    """(a file emptied and written again, or renamed over, costs an ext4 writeback)"""
    paths = SandboxPaths.of(tmp_path, "sb")
    _write_etc(paths, "first", nameserver=None)
    inode = (paths.etc / "hostname").stat().st_ino
    _write_etc(paths, "second", nameserver=None)
    assert (paths.etc / "hostname").stat().st_ino == inode
    assert not (paths.etc / "resolv.conf").exists()


def test_a_symlink_in_place_of_a_file_is_refused(tmp_path: Path) -> None:
    paths = SandboxPaths.of(tmp_path, "sb")
    _write_etc(paths, "first", nameserver=None)
    target = tmp_path / "host-file"
    target.write_text("the host's\n")
    (paths.etc / "hosts").unlink()
    (paths.etc / "hosts").symlink_to(target)
    with pytest.raises(RuntimeBackendError):
        _write_etc(paths, "second", nameserver=None)
    assert target.read_text() == "the host's\n"
