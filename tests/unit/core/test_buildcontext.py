"""Repacking COPY/ADD sources from hostile context archives (never extracted on the host)."""

from __future__ import annotations

import io
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from cove.core.buildcontext import ContextError, pack
from tests.registry import header_bomb

MIB = 2**20


def _context(tmp_path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    path = tmp_path / "context.tar"
    with tarfile.open(path, "w") as tar:
        for entry in entries:
            if isinstance(entry, tuple):
                info = tarfile.TarInfo(entry[0])
                info.size, info.mode, info.uid = len(entry[1]), 0o4755, 1234
                tar.addfile(info, io.BytesIO(entry[1]))
            else:
                tar.addfile(entry)
    return path


def _special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _packed(contexts: list[Path], sources: list[str], dest: str, add: bool = False):
    out = io.BytesIO()
    packed = pack(contexts, sources, dest, out, limit=MIB, add=add)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        return packed, {m.name: m for m in tar.getmembers()}


def test_a_file_and_a_directory_land_where_copy_puts_them(tmp_path: Path) -> None:
    ctx = _context(tmp_path, [_special("src", tarfile.DIRTYPE), ("src/a.txt", b"a"),
                              ("src/sub/b.txt", b"b"), ("other.txt", b"o")])  # fmt: skip
    packed, members = _packed([ctx], ["src"], "/app")
    assert set(members) == {"app/a.txt", "app/sub/b.txt"}
    assert packed.entries == ["/app/a.txt", "/app/sub/b.txt"]
    _, members = _packed([ctx], ["other.txt"], "/etc/")
    assert set(members) == {"etc/other.txt"}
    m = members["etc/other.txt"]
    assert (m.uid, m.gid, m.mode) == (0, 0, 0o4755)


def test_hostile_entries_are_dropped(tmp_path: Path) -> None:
    ctx = _context(tmp_path, [
        ("src/../../../etc/passwd", b"x"), ("/src/abs.txt", b"abs"),
        _special("src/link", tarfile.SYMTYPE, "/etc"), ("src/link/shadow", b"through"),
        _special("src/dev", tarfile.CHRTYPE), _special("src/fifo", tarfile.FIFOTYPE),
        _special("src/hard", tarfile.LNKTYPE, "/etc/shadow"), ("src/ok.txt", b"ok"),
    ])  # fmt: skip
    _, members = _packed([ctx], ["src"], "/app")
    assert set(members) == {"app/abs.txt", "app/link", "app/ok.txt"}
    assert members["app/link"].issym()  # kept as a link: it resolves inside the sandbox
    assert not any(".." in name or name.startswith("/") for name in members)


def test_a_destination_with_dots_stays_under_root(tmp_path: Path) -> None:
    ctx = _context(tmp_path, [("f", b"f")])
    _, members = _packed([ctx], ["f"], "/../../x")
    assert set(members) == {"x"}


def test_sources_must_be_in_the_context(tmp_path: Path) -> None:
    ctx = _context(tmp_path, [("f", b"f")])
    for source in ("missing", "../f"):
        with pytest.raises(ContextError, match="not found"):
            _packed([ctx], [source], "/x")


def test_add_keeps_archives_for_extraction_in_the_sandbox(tmp_path: Path) -> None:
    ctx = _context(tmp_path, [("pkg.tar.gz", b"not really"), ("plain.txt", b"p")])
    packed, members = _packed([ctx], ["pkg.tar.gz", "plain.txt"], "/opt/", add=True)
    assert packed.extract == [("/.cove-add/0/pkg.tar.gz", "/opt")]
    assert set(members) == {".cove-add/0/pkg.tar.gz", "opt/plain.txt"}


def test_a_sparse_file_is_refused_before_it_is_written_on_the_host(tmp_path: Path) -> None:
    """A GNU sparse member takes 10 KiB of the archive and says it is a terabyte: repacked,
    it would be written out whole (zeros) in the host's temporary file."""
    with open(tmp_path / "big", "wb") as f:
        f.truncate(2**40)
    ctx = tmp_path / "context.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(ctx), "-C", str(tmp_path), "big"], check=True)
    assert ctx.stat().st_size < MIB
    out = io.BytesIO()
    with pytest.raises(ContextError, match=r"the files take more than 10 MiB"):
        pack([ctx], ["big"], "/x", out, limit=10 * MIB)
    assert out.tell() < MIB


def test_the_same_files_named_again_count_again(tmp_path: Path) -> None:
    ctx = _context(tmp_path, [("f", bytes(400 * 1024))])
    _packed([ctx], ["f", "f"], "/x/")
    with pytest.raises(ContextError, match="more than 1 MiB"):
        _packed([ctx], ["f", "f", "f"], "/x/")


def test_an_extended_header_bomb_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """tarfile reads a pax header whole into memory before the member it describes."""
    ctx = header_bomb(tmp_path / "context.tar", 64 * MIB)
    tracemalloc.start()
    try:
        with pytest.raises(ContextError, match="not a valid tar: an extended header of 67108864"):
            _packed([ctx], ["after"], "/x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB
