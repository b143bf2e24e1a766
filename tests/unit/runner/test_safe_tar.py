"""Unpacking a snapshot from the shared store: every hostile member is refused before
anything is written outside the target; a root filesystem's own members are kept
with their owners, modes and file capabilities."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.storage.safe_tar import UnsafeTar, extract
from tests.registry import header_bomb

MiB = 2**20


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object
            ) -> tuple[tarfile.TarInfo, bytes]:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    out.seek(0)
    return out


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """The target, and a directory outside it nothing may reach."""
    target, outside = tmp_path / "target", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    (outside / "file").write_text("host's own")
    return target, outside


def _refused(stream: io.BytesIO, target: Path, outside: Path, match: str) -> None:
    with pytest.raises(UnsafeTar, match=match):
        extract(stream, target, 100 * MiB)
    assert sorted(p.name for p in outside.iterdir()) == ["file"]
    assert (outside / "file").read_text() == "host's own"


def test_absolute_paths_and_dot_dot_are_refused(dirs: tuple[Path, Path]) -> None:
    target, outside = dirs
    _refused(_tar(_member(f"{outside}/evil", data=b"x")), target, outside, "not a relative")
    _refused(_tar(_member("../outside/evil", data=b"x")), target, outside, r"'\.\.'")
    _refused(_tar(_member("a/../../outside/evil", data=b"x")), target, outside, r"'\.\.'")


def test_nothing_is_written_through_a_link(dirs: tuple[Path, Path]) -> None:
    target, outside = dirs
    # an absolute link (allowed: resolved in the sandbox's root), then a file through it
    stream = _tar(_member("a", tarfile.SYMTYPE, linkname=str(outside)),
                  _member("a/evil", data=b"x"))  # fmt: skip
    _refused(stream, target, outside, "outside the target")
    # a link to a file of the host, then that name again as a file
    stream = _tar(_member("f", tarfile.SYMTYPE, linkname=str(outside / "file")),
                  _member("f", data=b"overwritten"))  # fmt: skip
    again = target.with_name("again")
    again.mkdir()
    _refused(stream, again, outside, "outside the target")


def test_links_escaping_the_target_are_refused(dirs: tuple[Path, Path]) -> None:
    target, outside = dirs
    _refused(_tar(_member("d/l", tarfile.SYMTYPE, linkname="../../outside")), target, outside,
             "outside the target")  # fmt: skip
    _refused(_tar(_member("h", tarfile.LNKTYPE, linkname=str(outside / "file"))), target,
             outside, "not a relative")  # fmt: skip
    _refused(_tar(_member("h", tarfile.LNKTYPE, linkname="../outside/file")), target, outside,
             r"'\.\.'")  # fmt: skip
    # a hard link to a link that points out of the target (os.link would follow it)
    stream = _tar(_member("s", tarfile.SYMTYPE, linkname=str(outside / "file")),
                  _member("h", tarfile.LNKTYPE, linkname="s"))  # fmt: skip
    _refused(stream, target, outside, "outside the target")


@pytest.mark.parametrize(("name", "kind", "major", "minor"), [
    ("dev/sda", tarfile.BLKTYPE, 8, 0),      # a disk
    ("dev/mem", tarfile.CHRTYPE, 1, 1),      # the host's memory
    ("etc/null", tarfile.CHRTYPE, 1, 3),     # /dev/null's numbers, not in /dev
])  # fmt: skip
def test_device_nodes_a_rootfs_does_not_need_are_refused(
        dirs: tuple[Path, Path], name: str, kind: bytes, major: int, minor: int,
) -> None:  # fmt: skip
    target, outside = dirs
    stream = _tar(_member(name, kind, devmajor=major, devminor=minor))
    _refused(stream, target, outside, "refused")
    assert not (target / name).exists()


def test_a_size_bomb_stops_at_the_limit(dirs: tuple[Path, Path]) -> None:
    target, _ = dirs
    stream = _tar(*(_member(f"f{i}", data=b"\0" * MiB) for i in range(4)))
    with pytest.raises(UnsafeTar, match="more than 2 MiB"):
        extract(stream, target, 2 * MiB)
    assert len(list(target.iterdir())) <= 2


def test_a_root_filesystem_is_kept_as_it_was(dirs: tuple[Path, Path]) -> None:
    target, _ = dirs
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    su, ping = _member("bin/su", data=b"#!su", mode=0o4755), _member("bin/ping", data=b"p")
    ping[0].pax_headers = {"SCHILY.xattr.security.capability": cap.decode("latin-1"),
                           "SCHILY.xattr.user.overlay.redirect": "/etc"}  # fmt: skip
    stream = _tar(
        _member(".", tarfile.DIRTYPE, mode=0o700),
        _member("bin", tarfile.DIRTYPE), su, ping,
        _member("home/daytona/x", data=b"mine", uid=1000, gid=1000),
        _member("etc/localtime", tarfile.SYMTYPE, linkname="/usr/share/zoneinfo/UTC"),
        _member("etc/mtab", tarfile.SYMTYPE, linkname="../proc/self/mounts"),
        _member("bin/su2", tarfile.LNKTYPE, linkname="bin/su", mode=0o4755),
        _member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        _member("run/fifo", tarfile.FIFOTYPE),
    )
    extract(stream, target, 100 * MiB)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755  # its own entry is skipped
    assert stat.S_IMODE(os.stat(target / "bin/su").st_mode) == 0o4755
    assert os.stat(target / "home/daytona/x").st_uid == 1000
    assert os.readlink(target / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert os.readlink(target / "etc/mtab") == "../proc/self/mounts"
    assert os.stat(target / "bin/su2").st_ino == os.stat(target / "bin/su").st_ino
    assert stat.S_ISCHR(os.stat(target / "dev/null").st_mode)
    assert stat.S_ISFIFO(os.stat(target / "run/fifo").st_mode)
    if os.geteuid() == 0:
        assert os.getxattr(target / "bin/ping", "security.capability") == cap
    assert "user.overlay.redirect" not in os.listxattr(target / "bin/ping")


def test_an_extended_header_bomb_is_refused_before_it_is_read(dirs: tuple[Path, Path]) -> None:
    """tarfile reads a pax header whole into memory before the member it describes."""
    target, _ = dirs
    bomb = header_bomb(target.parent / "bomb.tar", 64 * MiB)
    tracemalloc.start()
    try:
        with bomb.open("rb") as stream, pytest.raises(RuntimeBackendError, match="67108864"):
            extract(stream, target, 100 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB
