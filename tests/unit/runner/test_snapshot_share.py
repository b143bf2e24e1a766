"""Snapshots shared through the archive store: what one runner uploads another
fetches whole, once however many boots ask at the same time; a download that does
not match its digest, or holds a hostile member, leaves nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.storage.archive_store import ArchiveStore, LocalArchiveStore
from cove.runner.storage.safe_tar import UnsafeTar
from cove.runner.storage.snapshot_share import SnapshotShare

LIMIT = 64 * 2**20


class Counting:
    """An archive store that counts the downloads of each key."""

    def __init__(self, inner: ArchiveStore) -> None:
        self.inner, self.gets = inner, dict[str, int]()

    def get(self, key: str) -> Any:
        self.gets[key] = self.gets.get(key, 0) + 1
        return self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _make(base: Path, ref: str) -> Path:
    root = base / ref / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "marker").write_text("made here\n")
    (root / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/UTC")
    (base / ref / "image.json").write_text('{"env": {"A": "1"}}')
    return root


def _shares(tmp_path: Path) -> tuple[SnapshotShare, SnapshotShare, Counting]:
    store = Counting(LocalArchiveStore(tmp_path / "store"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return (SnapshotShare(store, tmp_path / "a", LIMIT),  # type: ignore[arg-type]
            SnapshotShare(store, tmp_path / "b", LIMIT), store)  # type: ignore[arg-type]  # fmt: skip


def test_a_snapshot_made_on_one_runner_is_fetched_once_by_another(tmp_path: Path) -> None:
    a, b, store = _shares(tmp_path)
    _make(a.base, "s1")
    assert a.push("s1") > 0
    present = (b.base / "s1").is_dir

    threads = [threading.Thread(target=b.ensure, args=("s1", present)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.gets["s1.tar.zst"] == 1
    assert (b.base / "s1" / "rootfs" / "etc" / "marker").read_text() == "made here\n"
    assert (b.base / "s1" / "rootfs" / "etc" / "localtime").readlink() == Path(
        "/usr/share/zoneinfo/UTC")  # fmt: skip
    assert json.loads((b.base / "s1" / "image.json").read_text()) == {"env": {"A": "1"}}
    assert [p.name for p in b.base.iterdir()] == ["s1"]  # no work dir left

    a.delete("s1")
    assert store.keys() == set()
    with pytest.raises(RuntimeBackendError, match="neither on this runner nor in the shared"):
        b.ensure("s1", lambda: False)


def test_a_download_not_matching_its_digest_leaves_nothing(tmp_path: Path) -> None:
    a, b, _ = _shares(tmp_path)
    for ref in ("s1", "s2"):
        _make(a.base, ref)
        a.push(ref)
    objects = tmp_path / "store"  # (a local store adds its own suffix)
    swapped = (objects / "s2.tar.zst.tar.zst").read_bytes()  # a valid snapshot, another one
    (objects / "s1.tar.zst.tar.zst").write_bytes(swapped)
    with pytest.raises(RuntimeBackendError, match="does not match its digest"):
        b.ensure("s1", lambda: False)
    assert list(b.base.iterdir()) == []


def _upload_tar(store: ArchiveStore, ref: str, members: list[tarfile.TarInfo]) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    packed = subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True,
                            check=True).stdout  # fmt: skip
    record = {"sha256": hashlib.sha256(packed).hexdigest(), "size": len(packed)}
    store.put(f"{ref}.tar.zst", io.BytesIO(packed), lambda: None)
    store.put(f"{ref}.sha256", io.BytesIO(json.dumps(record).encode()), lambda: None)


def test_a_hostile_snapshot_in_the_store_is_refused(tmp_path: Path) -> None:
    _, b, store = _shares(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    link = tarfile.TarInfo("rootfs/etc")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    through = tarfile.TarInfo("rootfs/etc/passwd")
    through.size = 1
    _upload_tar(store, "evil", [link, through])  # type: ignore[arg-type]
    with pytest.raises(UnsafeTar, match="outside the target"):
        b.ensure("evil", lambda: False)
    assert list(outside.iterdir()) == [] and list(b.base.iterdir()) == []


def test_holes_in_a_snapshot_are_neither_read_nor_written_out(tmp_path: Path) -> None:
    """A file of holes (of a sandbox's, captured: it may claim 16 TiB) goes up as its
    map of holes, not as zeros that zstd would read for hours, and comes down as holes."""
    a, b, _ = _shares(tmp_path)
    root = _make(a.base, "s1")
    with open(root / "holes", "wb") as f:
        f.truncate(48 * 2**20)
        f.seek(0, io.SEEK_END)
        f.write(b"end\n")
    a.push("s1")
    packed = tmp_path / "store" / "s1.tar.zst.tar.zst"
    tar = subprocess.run(["zstd", "-d", "-q", "-c", str(packed)], capture_output=True,
                         check=True).stdout  # fmt: skip
    assert len(tar) < 2**20
    b.ensure("s1", lambda: False)
    fetched = b.base / "s1" / "rootfs" / "holes"
    assert fetched.stat().st_size == 48 * 2**20 + 4 and fetched.stat().st_blocks * 512 < 2**20
    assert fetched.read_bytes()[-4:] == b"end\n"


@pytest.mark.parametrize(("name", "kind"), [
    ("image.json", tarfile.SYMTYPE), ("image.json", tarfile.FIFOTYPE),
    ("image.json", tarfile.DIRTYPE), ("current", tarfile.SYMTYPE),
])  # fmt: skip
def test_a_fetched_snapshot_dir_holds_its_rootfs_and_config_only(
    tmp_path: Path, name: str, kind: bytes
) -> None:
    """The host reads a snapshot's image.json by path (a sandbox's start; a capture
    copies it) and follows its ``current`` to the rootfs: from the store, an image.json
    that is a link to a host file (``/dev/zero``: read without end; a secret: copied
    into the next capture) or a FIFO (a start that never returns), or a ``current``
    naming a host directory (another snapshot as a sandbox's root) is refused."""
    _, b, store = _shares(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text('{"env": {"HOST": "secret"}}')
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, str(secret) if kind == tarfile.SYMTYPE else ""
    root = tarfile.TarInfo("rootfs")
    root.type = tarfile.DIRTYPE
    _upload_tar(store, "evil", [root, member])  # type: ignore[arg-type]
    with pytest.raises(UnsafeTar, match=name):
        b.ensure("evil", lambda: False)
    assert list(b.base.iterdir()) == []
