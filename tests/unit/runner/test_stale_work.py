"""Work dirs in a (possibly shared) snapshot dir: only dead processes' are removed."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

from cove.runner.storage.capture import remove, remove_stale_work


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_only_dead_processes_unlocked_work_is_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    gone = [tmp_path / f".build-r1-{dead}", tmp_path / f".trash-r2-{dead}"]
    live = tmp_path / f".build-r3-{os.getpid()}"  # another server at work
    locked = tmp_path / f".build-r4-{dead}"  # its pid is not ours to see, its lock is held
    snapshot = tmp_path / "r5"  # a finished snapshot
    for d in [*gone, live, locked, snapshot]:
        (d / "rootfs").mkdir(parents=True)
    fd = os.open(locked, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        removed = remove_stale_work(tmp_path)
    finally:
        os.close(fd)
    assert sorted(removed) == sorted(p.name for p in gone)
    assert not any(p.exists() for p in gone)
    assert live.is_dir() and locked.is_dir() and snapshot.is_dir()


def test_a_removed_snapshot_is_gone_at_once_and_its_files_follow(tmp_path: Path) -> None:
    for _ in range(2):  # the same name made and removed again while the first goes
        (tmp_path / "r1" / "rootfs" / "etc").mkdir(parents=True)
        (tmp_path / "r1" / "rootfs" / "etc" / "hostname").write_text("x")
        remove(tmp_path, "r1")
        assert not (tmp_path / "r1").exists()
    for _ in range(500):
        if not list(tmp_path.iterdir()):
            break
        time.sleep(0.01)
    assert list(tmp_path.iterdir()) == []  # no trash left behind


def deep_tree(top: Path, depth: int = 1500) -> None:
    """Directories nested ``depth`` deep under ``top`` (a sandbox makes them in a second:
    deeper than Python's recursion limit)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)


def test_trees_deeper_than_python_recursion_are_removed(tmp_path: Path) -> None:
    """A snapshot captured from a sandbox holds whatever tree the sandbox made: its
    removal (and that of a dead server's work) must not stop half-way."""
    (tmp_path / "r1" / "rootfs").mkdir(parents=True)
    deep_tree(tmp_path / "r1" / "rootfs")
    remove(tmp_path, "r1")
    for _ in range(500):
        if not list(tmp_path.iterdir()):
            break
        time.sleep(0.01)
    assert list(tmp_path.iterdir()) == []
    stale = tmp_path / f".build-r2-{_dead_pid()}"
    (stale / "rootfs").mkdir(parents=True)
    deep_tree(stale / "rootfs")
    assert remove_stale_work(tmp_path) == [stale.name]
    assert list(tmp_path.iterdir()) == []
