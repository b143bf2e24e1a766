"""Blank disk images made ahead, so that a create takes one instead of running mkfs.

``<data_dir>/blank-disks/<gib>g-<uuid>.img``: sparse ext4 images exactly as
:func:`cove.runner.host.disk.create_image` makes them (each by its own mkfs, so
each file system has a UUID of its own), never handed to anyone before a
sandbox takes one. Taking is a rename into the sandbox's directory (atomic: two
creates never get the same image). After each take, a worker thread makes the
size taken back up to ``KEEP`` images, a moment later and once no start is under
way (``foreground``), so that the mkfs does not compete with a start. Sizes nobody
asked for in this run are not made; what is left from an earlier run is used.

With ``mount_ahead``, each image this instance makes is also mounted as
``disk.mount`` mounts a sandbox's (loop device, ext4, its options), detached:
held by a descriptor, mounted nowhere, gone with the process. Such an image is
this instance's alone (``<gib>g-<uuid>.held-<pid>-<instance>``: no other taker
looks for it, so no one mounts it a second time). A take that names a mount point
attaches its mount there (the loop device follows the renamed file), so the
sandbox's first start finds its disk mounted. Held images of a process that is
gone are ready blanks again (renamed back) for the next instance; so are an
instance's own when it goes.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import disk, mountapi, proc
from cove.runner.host.foreground import Refiller

KEEP = 2  # blank images kept per size (about 2 MiB of the host's disk each)
REFILL_DELAY = 0.05  # seconds between a take and the mkfs that replaces it (then: once idle)
_TMP = ".making-"
_HELD = ".held-"
log = logging.getLogger(__name__)


class BlankDisks:
    """The blank images of one data dir."""

    def __init__(self, data_dir: Path, *, mount_ahead: bool = False,
                 idle: Callable[[], object] = lambda: None) -> None:  # fmt: skip
        self.directory = data_dir / "blank-disks"
        self._data_dir = data_dir
        self._guard = threading.Lock()
        self._refiller = Refiller("cove-blank-disk", idle)  # (idle: see foreground.py)
        self._swept = False
        self._mount_ahead = mount_ahead
        self._token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # its held images' and scratch
        self._mounted: dict[Path, int] = {}  # held image -> its detached mount
        self._finalizer = weakref.finalize(self, _let_go, self._mounted, self._guard)

    def take(self, image: Path, size_gib: int, mount_at: Path | None = None) -> bool:
        """Move a blank image of ``size_gib`` GiB to ``image`` (replacing it); False
        when none is ready (the caller makes one). With ``mount_at``, one mounted
        ahead is taken first and attached there (another is left unmounted). Either
        way, that size is made back up to KEEP images in the background."""
        taken = False
        with self._guard:
            held = sorted(p for p in self._mounted if p.name.startswith(f"{size_gib}g-"))
        for candidate in (held if mount_at is not None else []) + self._ready(size_gib):
            try:
                os.rename(candidate, image)
            except FileNotFoundError:
                continue  # taken by another create meanwhile
            except OSError as exc:  # (another file system: the caller makes one)
                log.warning("cannot take blank disk %s: %s", candidate, exc)
                break
            taken = True
            with self._guard:
                mount = self._mounted.pop(candidate, None)
            if mount is not None:
                _attach(mount, image, mount_at)
            break
        self._refill(size_gib)
        return taken

    def _ready(self, size_gib: int) -> list[Path]:
        """The ready images of that size any instance may take (none mounted)."""
        try:
            return sorted(self.directory.glob(f"{size_gib}g-*.img"))
        except OSError:
            return []

    def _count(self, size_gib: int) -> int:
        with self._guard:
            held = sum(1 for p in self._mounted if p.name.startswith(f"{size_gib}g-"))
        return held + len(self._ready(size_gib))

    def _refill(self, size_gib: int) -> None:
        self._refiller.refill(
            size_gib, lambda: self._count(size_gib) < KEEP and self._finalizer.alive,
            lambda: self._make(size_gib), delay=REFILL_DELAY,
            what=f"a blank {size_gib} GiB disk")  # fmt: skip

    def _prepare_directory(self) -> None:
        """Make the directory (not the data dir: a data dir removed meanwhile stays
        removed) and, once a run, remove what an interrupted mkfs of a process now
        gone left, and make the images a gone process held ready blanks again."""
        if not self._data_dir.is_dir():
            raise RuntimeBackendError(f"{self._data_dir} is gone")
        self.directory.mkdir(mode=0o700, exist_ok=True)
        if not self._swept:
            for left in self.directory.glob(f"{_TMP}*"):
                if not _alive(left.name[len(_TMP):]):
                    left.unlink(missing_ok=True)
            for left in self.directory.glob(f"*{_HELD}*"):
                name, _, owner = left.name.partition(_HELD)
                if not _alive(owner):
                    _rename(left, left.with_name(f"{name}.img"))
            self._swept = True

    def _make(self, size_gib: int) -> None:
        self._prepare_directory()
        name = uuid.uuid4().hex
        scratch = self.directory / f"{_TMP}{self._token}-{name}"
        try:
            disk.create_image(scratch, size_gib)
            mount = self._mount(scratch) if self._mount_ahead else None
            if mount is None:
                os.rename(scratch, self.directory / f"{size_gib}g-{name}.img")
                return
            held = self.directory / f"{size_gib}g-{name}{_HELD}{self._token}"
            try:
                os.rename(scratch, held)
            except BaseException:
                _attach(mount, scratch, None)
                raise
            with self._guard:
                self._mounted[held] = mount
        finally:
            scratch.unlink(missing_ok=True)

    def _mount(self, image: Path) -> int | None:
        """A detached mount of ``image`` (None: it cannot be mounted; it is then a
        ready blank all the same, mounted at its sandbox's start)."""
        try:
            return mountapi.image_mount(image, attrs=disk.MOUNT_ATTRS, options=disk.MOUNT_OPTIONS)
        except RuntimeBackendError as exc:
            log.warning("cannot mount blank disk %s ahead: %s", image, exc)
            return None


def _attach(mount: int, image: Path, target: Path | None) -> None:
    """Attach the detached mount of ``image`` at ``target``; when it cannot be (or
    ``target`` is None), let it go and wait until its file system is gone, so that
    the image can be mounted again."""
    device = os.fstat(mount).st_dev
    if target is not None:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("blank disk mounted ahead not attached at %s: %s", target, exc)
        else:
            try:
                mountapi.attach(mount, target)  # (it closes the descriptor either way)
                return
            except RuntimeBackendError as exc:
                log.warning("blank disk mounted ahead not attached at %s: %s", target, exc)
                disk.wait_released(device, image)
                return
    os.close(mount)
    disk.wait_released(device, image)


def _let_go(mounted: dict[Path, int], guard: threading.Lock) -> None:
    """Let every mount made ahead go; their images are ready blanks again."""
    with guard:
        held = list(mounted.items())
        mounted.clear()
    for image, mount in held:
        try:
            _attach(mount, image, None)
        except RuntimeBackendError as exc:
            log.warning("blank disk %s still in use: %s", image, exc)
            continue
        name = image.name.partition(_HELD)[0]
        _rename(image, image.with_name(f"{name}.img"))


def _rename(old: Path, new: Path) -> None:
    try:
        os.rename(old, new)
    except OSError:
        pass  # (gone meanwhile: nothing to give back)


def _alive(owner: str) -> bool:
    """Whether the process named by ``<pid>-...`` still runs (a name of another form
    is an older Cove's: its process is gone)."""
    pid = owner.partition("-")[0]
    return pid.isdigit() and proc.running(int(pid))
