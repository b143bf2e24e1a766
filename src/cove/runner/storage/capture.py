"""User snapshots: read-only root filesystems made from a sandbox or an OCI image.

A snapshot called by its reference ``ref`` lives at ``<snapshot_dir>/<ref>/rootfs``
(:func:`cove.runner.storage.snapshot.snapshot_rootfs` finds it). It is built in
``<snapshot_dir>/.build-<ref>-<pid>`` and renamed into place only when complete,
so a failed build leaves nothing that looks like a snapshot.

From a sandbox, the merged view (lower snapshot + writable layer) is copied
with tar (owners, modes, xattrs kept; overlay whiteouts are already applied in
the merged view): only the files the sandbox changed, when they can be told, the
others hard links to its snapshot's (see ``capture_links.py``). A running sandbox
is frozen for the copy. Holes stay holes
(``--sparse``): a file of the sandbox's may claim 16 TiB of them on a disk of 1 GiB,
and the host must not write them out as zeros. No ``user.overlay.*`` attribute is
copied: the view shows as such those the sandbox set on its files (its overlay keeps
them escaped), and on the snapshot, a lower layer, overlayfs would take them for its
own metadata (whiteouts, metacopy marks: files a sandbox of it could not see or read).

From a local OCI image layout: the image ``name:tag`` is looked up as the layout
``<oci_layout_dir>/<name>`` and unpacked (see ``unpack.py``). Images from
registries are pulled by ``registry.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cove.core.ports import ImageConfig, PulledImage
from cove.errors import RuntimeBackendError
from cove.hostfiles import private_dir, remove_tree
from cove.runner.host import freezer, mounts, proc, rootfs
from cove.runner.host.proc import run
from cove.runner.layout import Metadata, SandboxPaths
from cove.runner.storage import capture_links, layers, unpack
from cove.runner.storage.archive import TAR_FLAGS, pipe

log = logging.getLogger(__name__)
# Work of one process in the snapshot dir: ``.build-<ref>-<pid>`` (a capture or import
# under way) and ``.trash-<ref>-<pid>`` (a removal under way).
_WORK = re.compile(r"\.(?:build|trash)-.+-(\d+)")
OVERLAY_XATTRS = "user.overlay.*"  # overlayfs' metadata of a layer (never a sandbox's)


def capture_sandbox(
    base: Path, ref: str, group: str, paths: SandboxPaths, meta: Metadata, *, alive: bool,
    config: ImageConfig | None = None,
) -> int:  # fmt: skip
    """Build snapshot ``ref`` from the sandbox's merged root filesystem (``group``: its
    cgroup group, to freeze it when ``alive``); returns its size. Its image config is
    ``config``, else that of the sandbox's snapshot. Only what the sandbox changed is
    copied when it can be told (see ``capture_links``)."""
    with building(base, ref) as rootfs, _merged_view(group, paths, meta, alive) as view:
        if config is not None:
            unpack.write_config(rootfs.parent, config)
        else:
            unpack.copy_config(Path(meta.lower), rootfs.parent)
        lower = Path(meta.lower) if meta is not None and meta.layer_xattrs == "user" else None
        if lower is None or not capture_links.same_filesystem(lower, rootfs):
            _copy(view, rootfs)
        else:
            _copy_changed(view, paths.upper, lower, rootfs)
        measured = size(rootfs)  # before it is renamed into place (see remove_stale_work)
    return measured


def _copy_changed(view: Path, upper: Path, lower: Path, rootfs: Path) -> None:
    """Copy what the sandbox changed, link the rest (see ``capture_links``); all of it
    when the walk gives up."""
    try:
        found = capture_links.changes(view, upper, lower)
    except capture_links.Unusual as exc:
        log.info("capturing %s whole: %s", view, exc)
        return _copy(view, rootfs)
    try:
        capture_links.link_into(rootfs, lower, found)
    except OSError as exc:  # (say a file of the snapshot at the most links an inode has)
        log.info("capturing %s whole: %s", view, exc)
        remove_tree(rootfs)
        rootfs.mkdir()
        return _copy(view, rootfs)
    listed = rootfs.parent / "copied"  # (in the build's work dir, removed with it)
    listed.write_bytes(b"".join(f"{p}\0".encode("utf-8", "surrogateescape")
                                for p in [".", *found.dirs, *found.copies]))  # fmt: skip
    _copy(view, rootfs, listed)
    listed.unlink()


def _copy(view: Path, rootfs: Path, listed: Path | None = None) -> None:
    """Copy the merged ``view`` into ``rootfs`` with tar (owners, modes, attributes but
    overlayfs' own, holes); only the paths ``listed`` (NUL-terminated, each alone:
    a directory's entries are not) when given."""
    what = ["."] if listed is None else [
        "--null", "--verbatim-files-from", "--no-recursion", f"--files-from={listed}"]
    with open(os.devnull, "wb") as null:
        pipe(
            ["tar", "--create", "--file=-", "--sparse", f"--directory={view}", *TAR_FLAGS,
             f"--xattrs-exclude={OVERLAY_XATTRS}", *what],
            ["tar", "--extract", "--file=-", f"--directory={rootfs}", "--same-owner",
             "--same-permissions", *TAR_FLAGS],
            null,
        )  # fmt: skip


def clone_snapshot(base: Path, source: Path, ref: str, config: ImageConfig) -> int:
    """Make snapshot ``ref`` a copy of the snapshot rootfs ``source`` whose files are
    hard links to its (snapshots are never written once made, and removing one only
    unlinks), with image config ``config``; returns its size."""
    with building(base, ref) as rootfs:
        run(["cp", "-a", "--link", "--no-target-directory", str(source), str(rootfs)],
            timeout=1800)  # fmt: skip
        unpack.write_config(rootfs.parent, config)
        measured = size(rootfs)
    return measured


def import_oci(base: Path, ref: str, layout_dir: Path | None, image: str,
               limit: int) -> PulledImage:  # fmt: skip
    """Build snapshot ``ref`` from a local OCI layout; its size and config (the
    layout's manifest digest is not recorded: it names no registry image).

    Raises:
        RuntimeBackendError: the image is not in a local layout, it is over ``limit``
            bytes (compressed or unpacked), or unpacking failed.
    """
    layout, tag = resolve_image(layout_dir, image)
    layers.check_compressed(layout, tag, limit, image)
    layers.check_unpacked(layout, tag, limit, image)
    with building(base, ref) as rootfs:
        config = unpack.unpack_image(layout, tag, rootfs)
        unpack.write_config(rootfs.parent, config)
        measured = size(rootfs)
    return PulledImage(size=measured, digest="", config=config)


def has_local_image(layout_dir: Path | None, image: str) -> bool:
    """Whether ``image`` names a local OCI layout (``oci:...``, or ``name[:tag]`` with
    ``<layout_dir>/<name>`` present) rather than a registry image."""
    if image.startswith("oci:"):
        return True
    name = image.partition(":")[0]
    if layout_dir is None or not name or "/" in name or name.startswith("."):
        return False
    return (layout_dir / name / "index.json").is_file()


def resolve_image(layout_dir: Path | None, image: str) -> tuple[Path, str]:
    """``oci:<dir>:<tag>`` or ``name[:tag]`` (both under ``layout_dir``) → (layout, tag).

    Raises:
        RuntimeBackendError: no such local layout or tag, or a layout outside
            ``layout_dir`` (no client may make the server read any host path).
    """
    if image.startswith("oci:"):
        where, _, tag = image[4:].rpartition(":")
        layout = Path(where) if where else Path(image[4:])
        tag = tag if where else "latest"
        root = layout_dir.resolve() if layout_dir is not None else None
        if root is None or not layout.resolve().is_relative_to(root):
            raise RuntimeBackendError(
                f"image '{image}': only OCI layouts under COVE_OCI_LAYOUT_DIR can be imported"
            )
    else:
        name, _, tag = image.partition(":")
        if layout_dir is None or not name or "/" in name or name.startswith("."):
            raise RuntimeBackendError(
                f"image '{image}' cannot be resolved: this server has no registry access; "
                "set COVE_OCI_LAYOUT_DIR to a directory of OCI image layouts"
            )
        layout, tag = layout_dir / name, tag or "latest"
    if not (layout / "index.json").is_file():
        raise RuntimeBackendError(f"image '{image}': no OCI layout at {layout}")
    tags = run(["umoci", "ls", "--layout", str(layout)], timeout=60).stdout.decode().split()
    if tag not in tags:
        raise RuntimeBackendError(f"image '{image}': layout {layout} has no tag '{tag}'")
    return layout, tag


def remove(base: Path, ref: str) -> None:
    """Delete snapshot ``ref`` (sandboxes made from it keep nothing of it mounted).

    The snapshot is gone (renamed to a trash dir) when this returns; its files, a
    tree of a GiB or more, are removed by a background thread holding the trash's
    lock. What a server killed meanwhile leaves is :func:`remove_stale_work`'s.
    """
    target = base / ref
    if not target.exists():
        return
    trash = base / f".trash-{ref}-{secrets.token_hex(4)}-{os.getpid()}"
    try:
        with _held(target):
            target.rename(trash)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot remove snapshot {ref}: {exc}") from exc
    threading.Thread(target=_empty_trash, args=(trash,), name=f"rm {ref}", daemon=True).start()


def _empty_trash(trash: Path) -> None:
    try:
        with _held(trash):
            remove_tree(trash)
    except OSError as exc:
        log.warning("cannot remove %s: %s", trash, exc)


def remove_stale_work(base: Path) -> list[str]:
    """Remove what captures, imports and removals of dead processes left in the
    snapshot dir (a ``kill -9`` mid-way); returns the names removed.

    The dir may be shared by several servers: a work dir is removed only when the
    process named in it is gone *and* nobody holds its lock (each one is locked
    while in use), so another live server's work is never touched.
    """
    removed = []
    for work in base.glob(".*-*") if base.is_dir() else ():
        match = _WORK.fullmatch(work.name)
        if match is None or not work.is_dir() or proc.running(int(match.group(1))):
            continue
        try:
            with _held(work, wait=False):
                remove_tree(work)
        except BlockingIOError:
            continue  # in use after all (say by a server in another pid namespace)
        except OSError as exc:
            log.warning("cannot remove %s: %s", work, exc)
            continue
        removed.append(work.name)
    return removed


def remove_view(paths: SandboxPaths) -> None:
    """Unmount and remove the merged view an interrupted capture left."""
    view = paths.root / "capture"
    mounts.unmount(view)
    with contextlib.suppress(FileNotFoundError):
        view.rmdir()


@contextmanager
def _held(directory: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (released when its owner dies).

    Raises:
        BlockingIOError: ``wait`` is false and someone else holds it.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)


@contextmanager
def building(base: Path, ref: str) -> Iterator[Path]:
    final = base / ref
    if final.exists():
        raise RuntimeBackendError(f"snapshot {ref} exists already")
    work = base / f".build-{ref}-{os.getpid()}"
    try:
        remove_tree(work, ignore_errors=True)
        (private_dir(work) / "rootfs").mkdir()  # root's alone, whatever the dir above
        with _held(work):  # see remove_stale_work
            yield work / "rootfs"
            work.rename(final)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot build snapshot {ref}: {exc}") from exc
    finally:
        remove_tree(work, ignore_errors=True)


@contextmanager
def _merged_view(group: str, paths: SandboxPaths, meta: Metadata, alive: bool) -> Iterator[Path]:
    """The sandbox's whole file system with the ids it has inside (as its files carry
    them on disk): a read-only overlay of its writable layer over its snapshot,
    mounted on the host for the copy. A running sandbox is frozen meanwhile."""
    if not paths.image.is_file():
        raise RuntimeBackendError(f"sandbox {paths.root.name} has no writable layer")
    froze = alive and not freezer.is_frozen(group)
    mounted = mounts.is_mounted(paths.disk)
    if froze:
        freezer.freeze(group)
    try:
        if not mounted:
            rootfs.mount_disk(paths)
        view = paths.root / "capture"
        view.mkdir(exist_ok=True)
        paths.upper.mkdir(exist_ok=True)
        opts = f"lowerdir={paths.upper}:{meta.lower}"
        if meta.layer_xattrs == "user":
            opts += ",userxattr"
        mounts.mount_overlay_readonly(opts, view)
        try:
            yield view
        finally:
            mounts.unmount(view)
            view.rmdir()
    finally:
        if not mounted:
            mounts.unmount(paths.disk)
        if froze:
            freezer.thaw(group)


def size(path: Path) -> int:
    """Bytes under ``path`` (``du -sb``)."""
    out = run(["du", "-sb", str(path)], timeout=600).stdout.decode()
    return int(out.split()[0])
