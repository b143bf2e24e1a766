"""A capture links the files a sandbox left untouched and copies the rest: how the
merged view is sorted, and what makes the capture copy it whole instead.

A sandbox's merged view is a plain directory here, whose untouched files are hard
links to the snapshot's (as overlayfs shows them: the snapshot's inode); the real
overlay is tested in ``tests/integration/runner/test_capture.py``.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import pytest

from cove.core.ports import ImageConfig
from cove.runner.layout import Metadata, SandboxPaths
from cove.runner.storage import capture, capture_links


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(view, upper, lower): lower holds ``a`` and ``d/x``; the sandbox rewrote ``b``
    and made ``n``."""
    view, upper, lower = (tmp_path / n for n in ("view", "upper", "lower"))
    for root in (view, upper, lower):
        root.mkdir()
    (lower / "d").mkdir()
    for name in ("a", "b", "d/x"):
        (lower / name).write_text(f"{name} of the snapshot\n")
    (view / "d").mkdir()
    for name in ("a", "d/x"):
        os.link(lower / name, view / name)
    for name in ("b", "n"):
        (upper / name).write_text(f"{name} of the sandbox\n")
        (view / name).write_text(f"{name} of the sandbox\n")
    return view, upper, lower


def test_untouched_files_are_linked_and_the_others_copied(
    layers: tuple[Path, Path, Path],
) -> None:
    found = capture_links.changes(*layers)
    assert found.dirs == ["./d"]
    assert sorted(found.links) == ["./a", "./d/x"]
    assert sorted(found.copies) == ["./b", "./n"]


def test_a_file_of_the_layer_is_copied_though_it_looks_like_the_snapshots(
    layers: tuple[Path, Path, Path],
) -> None:
    """Rewritten with its old size and times (and shown with the snapshot's inode, as
    no overlay would): the layer holds it, so it is copied."""
    _view, upper, _lower = layers
    (upper / "a").write_text("changed\n")
    found = capture_links.changes(*layers)
    assert "./a" in found.copies
    assert "./a" not in found.links


def test_a_symlink_of_the_snapshot_never_leads_the_walk_out_of_it(
    layers: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The snapshot's ``s`` links to a host directory; the sandbox made ``s`` a
    directory of its own holding a file that is the host's file (same inode, as if
    the walk had gone through the snapshot's symlink): copied from the view, never
    a hard link to the host's file."""
    view, upper, lower = layers
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("the host's\n")
    (lower / "s").symlink_to(host)
    (upper / "s").mkdir()
    (view / "s").mkdir()
    os.link(host / "secret", view / "s" / "secret")
    found = capture_links.changes(view, upper, lower)
    assert "./s/secret" in found.copies
    assert "./s/secret" not in found.links


def test_a_tree_deeper_than_the_walk_goes_is_captured_whole(
    layers: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, upper, lower = layers
    deep = view / "1/2/3/4/5"
    deep.mkdir(parents=True)
    (deep / "f").write_text("deep\n")
    monkeypatch.setattr(capture_links, "MAX_DEPTH", 3)
    with pytest.raises(capture_links.Unusual, match="too deep"):
        capture_links.changes(view, upper, lower)
    rootfs = _capture(tmp_path, view, lower, monkeypatch)
    assert (rootfs / "1/2/3/4/5/f").read_text() == "deep\n"
    assert (rootfs / "a").stat().st_ino != (lower / "a").stat().st_ino  # copied, whole


def test_a_view_of_more_paths_than_the_walk_keeps_is_captured_whole(
    layers: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture_links, "MAX_ENTRIES", 3)
    with pytest.raises(capture_links.Unusual, match="more than 3 paths"):
        capture_links.changes(*layers)


def test_a_layer_that_disagrees_with_the_view_is_captured_whole(
    layers: tuple[Path, Path, Path],
) -> None:
    view, upper, lower = layers
    (upper / "d").write_text("a file where the view has a directory\n")
    with pytest.raises(capture_links.Unusual, match="disagrees"):
        capture_links.changes(view, upper, lower)


def test_a_capture_links_into_the_new_snapshot_and_copies_attributes(
    layers: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new snapshot: links for the untouched files, copies of the others, and its
    directories with the view's owners, modes and times (set after the links)."""
    view, _upper, lower = layers
    os.chown(view / "d", 1000, 1001)
    os.chmod(view / "d", 0o751)
    os.utime(view / "d", ns=(10**18, 10**18))
    rootfs = _capture(tmp_path, view, lower, monkeypatch)
    assert (rootfs / "d/x").stat().st_ino == (lower / "d/x").stat().st_ino
    assert (rootfs / "a").stat().st_ino == (lower / "a").stat().st_ino
    assert (rootfs / "b").read_text() == "b of the sandbox\n"
    assert (rootfs / "b").stat().st_ino != (lower / "b").stat().st_ino
    assert (lower / "b").read_text() == "b of the snapshot\n"
    assert (rootfs / "n").read_text() == "n of the sandbox\n"
    st = (rootfs / "d").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_mtime_ns) == (1000, 1001, 0o751,
                                                                           10**18)  # fmt: skip
    assert not (rootfs.parent / "copied").exists()  # the list of copies went


def test_the_sandboxs_names_and_symlinks_are_copied_as_they_are(
    layers: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names the sandbox chose reach tar in its list of copies: one that reads as a
    tar option, one with a newline, one not UTF-8 are copied by their names (no
    option taken, nothing run); a symlink to a host path is copied as a symlink."""
    view, upper, lower = layers
    names = ["--checkpoint=1 --checkpoint-action=exec=touch RAN", "two\nlines",
             os.fsdecode(b"not-utf8-\xff")]  # fmt: skip
    for name in names:
        (upper / name).write_text("mine\n")
        (view / name).write_text("mine\n")
    for root in (upper, view):
        (root / "host").symlink_to("/etc/passwd")
    rootfs = _capture(tmp_path, view, lower, monkeypatch)
    for name in names:
        assert (rootfs / name).read_text() == "mine\n"
    assert os.readlink(rootfs / "host") == "/etc/passwd"
    assert not any((where / "RAN").exists() for where in (view, rootfs, Path.cwd()))


def test_a_snapshot_on_another_file_system_is_copied_whole(
    layers: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, _upper, lower = layers
    monkeypatch.setattr(capture_links, "same_filesystem", lambda *_: False)
    rootfs = _capture(tmp_path, view, lower, monkeypatch)
    assert (rootfs / "a").stat().st_ino != (lower / "a").stat().st_ino
    assert (rootfs / "a").read_text() == "a of the snapshot\n"


def test_a_layer_with_overlay_metadata_of_old_is_copied_whole(
    layers: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer written before sandboxes ran in user namespaces (trusted.overlay.*
    attributes, with which overlayfs may follow a renamed directory's redirect):
    copied whole."""
    view, _upper, lower = layers
    rootfs = _capture(tmp_path, view, lower, monkeypatch, xattrs="trusted")
    assert (rootfs / "a").stat().st_ino != (lower / "a").stat().st_ino
    assert (rootfs / "d/x").read_text() == "d/x of the snapshot\n"


def _capture(tmp_path: Path, view: Path, lower: Path, monkeypatch: pytest.MonkeyPatch,
             xattrs: str = "user") -> Path:  # fmt: skip
    """Capture ``view`` (upper: ``tmp_path/upper``) into a new snapshot; its rootfs."""
    monkeypatch.setattr(capture, "_merged_view", lambda *args: nullcontext(view))
    paths = SandboxPaths(tmp_path / "sandbox")
    paths.disk.mkdir(parents=True)
    paths.upper.symlink_to(tmp_path / "upper")
    base = tmp_path / "snapshots"
    base.mkdir()
    meta = Metadata(lower=str(lower), hostname="h", layer_xattrs=xattrs)
    capture.capture_sandbox(base, "new", "group", paths, meta, alive=False, config=ImageConfig())
    return base / "new" / "rootfs"
