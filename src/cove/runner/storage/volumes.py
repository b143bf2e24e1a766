"""Volume data on a runner's host: ``<volumes dir>/<id>/``, owned by the sandbox user.

The volumes dir is the runner's own ``<data_dir>/volumes``, or ``COVE_VOLUMES_DIR``:
one directory that several runners share (an NFS or CephFS mount), recognized as the
same by the id written into it once (:attr:`VolumeDir.shared_id`). A volume's
directory is made when a sandbox first mounts it (the API has found the volume in
the sandbox's organization before it sends the spec), and removed when the API
deletes the volume.

Whatever a sandbox put into a volume (symlinks included, swapped in at any moment)
never makes a mount source leave the volume: the subpath is opened one component at
a time below the volume's directory, refusing symlinks, ``..`` and mount crossings,
and what is mounted is the directory so opened (by descriptor, see
``runner/host/mountapi.py``), never a path string that could be redirected between
the check and the mount. Files in a volume carry sandbox ids (1000 is the sandbox
user); each sandbox mounts it idmapped with its own range.

In a runner's own volumes dir, a volume is bounded (``COVE_VOLUME_SIZE_GB``): its
data is a sparse ext4 image, ``<id>.img``, loop-mounted at ``<id>/`` (nosuid,
nodev, noexec) from its first mount until it is deleted or moved, so a sandbox
writing into it gets "no space left" at its size, and the host's disk is not the
limit. The mount outlives the server (it is the host's), as sandboxes' disks do.
A volume made before this (a plain directory, no image) stays a directory. In a
shared dir (NFS, CephFS) volumes are directories: one ext4 image mounted by two
hosts at once would be corrupted; that file server's quotas bound them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from cove.core.config import Settings
from cove.core.ports import VolumeBind
from cove.errors import InvalidState, RuntimeBackendError
from cove.hostfiles import DIR_MODE, FILE_MODE, private_dir, remove_tree
from cove.runner.host import disk, mountapi, mounts
from cove.runner.host.proc import run
from cove.runner.storage import archive
from cove.runner.storage.archive_store import ArchiveStore

OWNER = (1000, 1000)  # the daytona user of the default snapshot
MARKER = ".cove-volumes-id"  # in a shared volumes dir: its id, the same for every runner
_REASONS = {errno.ELOOP: "goes through a symlink", errno.EXDEV: "leads outside the volume",
            errno.ENOTDIR: "is not a directory"}  # fmt: skip
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def volumes_dir(data_dir: Path) -> Path:
    """A runner's own volumes dir (when no COVE_VOLUMES_DIR is set)."""
    return data_dir / "volumes"


class VolumeDir:
    """The directory holding a runner's volumes.

    Args:
        root: the directory (made 0700 when missing).
        shared: whether other runners mount the same one (``COVE_VOLUMES_DIR``).
        archives: the shared archive store volumes move through between runners (a
            drain), if any: a volume missing here is brought back from it first.
    """

    def __init__(self, root: Path, *, shared: bool = False, archives: ArchiveStore | None = None,
                 size_gib: int | None = None) -> None:  # fmt: skip
        self.root, self.shared, self.archives = root, shared, archives
        # GiB of a new volume's image (None: new volumes are directories)
        self.size_gib = None if shared else size_gib
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def of(cls, settings: Settings) -> VolumeDir:
        """The runner's volumes dir (one object per configuration: it holds the locks
        that keep a volume from being brought back twice at once)."""
        s3 = (settings.archive_s3_bucket, settings.archive_s3_prefix,
              settings.archive_s3_endpoint, settings.archive_s3_region)  # fmt: skip
        return _volume_dir(settings.volumes_dir, settings.data_dir, s3,
                           settings.volume_size_gb or None)  # fmt: skip

    @contextlib.contextmanager
    def _locked(self, volume_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(volume_id, threading.Lock())
        with lock:
            yield

    @functools.cached_property
    def shared_id(self) -> str | None:
        """The shared dir's id (made by the first runner to read it), None when the
        dir is this runner's own. Runners reporting one id hold the same volumes."""
        if not self.shared:
            return None
        private_dir(self.root)
        marker = self.root / MARKER
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            return marker.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex + "\n")
        return marker.read_text().strip()

    def open(self, bind: VolumeBind) -> int:
        """An O_PATH descriptor of the directory to mount for ``bind``: the volume's
        directory and the subpath in it made when missing (owned by the sandbox user).

        Raises:
            RuntimeBackendError: the subpath leads outside the volume, through a
                symlink, or to something that is not a directory.
        """
        name = _checked(bind.volume_id)
        if not self.root.is_dir():
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        with self._locked(name):
            self._bring_back(name)
            bounded = self._attach(name)
        # an image's file system is walked from its root (the walk crosses no mount)
        start, below = (self.root / name, bind.subpath) if bounded else (
            self.root, f"{name}/{bind.subpath}")  # fmt: skip
        try:
            root_fd = os.open(start, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeBackendError(f"volumes dir {start}: {exc.strerror}") from exc
        try:
            return mountapi.make_dirs_beneath(root_fd, below, OWNER)
        except OSError as exc:
            reason = _REASONS.get(exc.errno or 0, exc.strerror)
            raise RuntimeBackendError(f"volume subpath {bind.subpath!r} {reason}") from exc
        finally:
            os.close(root_fd)

    def delete(self, volume_id: str) -> None:
        """Remove the volume's directory and its data, and its archive in the shared
        store (none: nothing to do)."""
        _checked(volume_id)
        with self._locked(volume_id):
            try:
                self._remove(volume_id)
            except OSError as exc:
                raise RuntimeBackendError(f"cannot delete volume {volume_id}: {exc}") from exc
            if self.archives is not None:
                self.archives.delete(volume_id)

    def pack(self, volume_id: str) -> int:
        """Move the volume's data into the shared archive store (off this runner: the
        runner that mounts it next brings it back); the archive's size.

        Raises:
            InvalidState: there is no shared archive store, or the volumes dir is shared
                (every runner of it has the data already).
        """
        if self.archives is None or self.shared:
            raise InvalidState("volume data moves between runners only through a shared "
                               "archive store (COVE_ARCHIVE_S3_BUCKET) and from a runner's "
                               "own volumes dir")  # fmt: skip
        path = self.root / _checked(volume_id)
        with self._locked(volume_id):
            if not path.is_dir():
                size = self.archives.size(volume_id)
                if size is not None:
                    return size  # packed already
                path.mkdir(parents=True)  # never mounted: an empty volume moves
            size = archive.pack_dir(path, self.archives, volume_id)
            try:
                self._remove(volume_id)
            except OSError as exc:
                raise RuntimeBackendError(f"cannot remove volume {volume_id}: {exc}") from exc
            return size

    def _bring_back(self, volume_id: str) -> None:
        """A volume whose data is not here but in the shared archive store (moved off a
        drained runner): unpacked beside, renamed into place, its archive deleted."""
        path = self.root / volume_id
        if self.archives is None or path.exists() or not self.archives.exists(volume_id):
            return
        if self.size_gib is not None:  # into a new image (this runner's alone: no race)
            self._attach(volume_id)
            try:
                archive.unpack_dir(self.archives, volume_id, path)
            except BaseException:
                self._remove(volume_id)
                raise
            self.archives.delete(volume_id)
            return
        if not self.shared:  # interrupted ones' (in a shared dir: maybe another's, live)
            for stale in self.root.glob(f".restore-{volume_id}-*"):
                remove_tree(stale, ignore_errors=True)
        # Of its own name: another runner of a shared dir may bring it back at once.
        fresh = self.root / f".restore-{volume_id}-{uuid.uuid4().hex[:12]}"
        fresh.mkdir()
        try:
            os.chown(fresh, *OWNER)
            archive.unpack_dir(self.archives, volume_id, fresh)
            fresh.rename(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise RuntimeBackendError(f"cannot restore volume {volume_id}: {exc}") from exc
            return  # the other one was first: its copy is the volume
        finally:
            remove_tree(fresh, ignore_errors=True)
        self.archives.delete(volume_id)

    def _attach(self, volume_id: str) -> bool:
        """Mount the volume's image at its directory, unless mounted already (a new
        volume's image made first); False: the volume is a directory. Whether it has
        an image is the volume's own, whatever COVE_VOLUME_SIZE_GB says now."""
        path, image = self.root / volume_id, self.root / f"{volume_id}.img"
        if not image.exists():
            if self.size_gib is None or path.exists():
                return False  # (a shared dir's, or one made as a directory)
            self._make_image(image)
        if not mounts.is_mounted(path):
            disk.mount(image, path)
        return True

    def _make_image(self, image: Path) -> None:
        """A new volume's empty image: its root the sandbox user's, no ``lost+found``."""
        assert self.size_gib is not None
        fresh = image.with_name(f".new-{uuid.uuid4().hex[:12]}-{image.name}")
        try:
            disk.create_image(fresh, self.size_gib, root_owner=OWNER)
            run(["debugfs", "-w", "-R", "rmdir lost+found", str(fresh)], timeout=60)
            fresh.rename(image)
        finally:
            fresh.unlink(missing_ok=True)

    def unmount_all(self) -> None:
        """Unmount every volume image mounted here (before the whole dir is removed:
        a runner's data dir wiped, a test server's gone)."""
        for image in self.root.glob("*.img"):
            if mounts.is_mounted(path := image.with_suffix("")):
                mounts.detach(path)

    def _remove(self, volume_id: str) -> None:
        """Remove the volume's data here: its image (unmounted first; sandboxes still
        running with it keep theirs until they stop) or its directory."""
        path = self.root / volume_id
        if mounts.is_mounted(path):
            mounts.detach(path)
        (self.root / f"{volume_id}.img").unlink(missing_ok=True)
        remove_tree(path)


@functools.cache
def _volume_dir(shared_dir: Path | None, data_dir: Path,
                s3: tuple[str | None, str, str | None, str | None],
                size_gib: int | None) -> VolumeDir:  # fmt: skip
    bucket, prefix, endpoint, region = s3
    archives = None
    if bucket:  # a shared store: volumes move through it (beside the sandboxes' archives)
        from cove.runner.storage.s3_archive import S3ArchiveStore

        archives = S3ArchiveStore(bucket, prefix=f"{prefix}volumes/", endpoint_url=endpoint,
                                  region=region)  # fmt: skip
    if shared_dir is not None:
        return VolumeDir(shared_dir, shared=True, archives=archives)
    return VolumeDir(volumes_dir(data_dir), archives=archives, size_gib=size_gib)


def _checked(volume_id: str) -> str:
    """``volume_id`` if it is one plain path component."""
    if not _ID.match(volume_id):
        raise RuntimeBackendError(f"invalid volume id {volume_id!r}")
    return volume_id
