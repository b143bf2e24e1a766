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
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import uuid
from pathlib import Path

from cove.core.config import Settings
from cove.core.ports import VolumeBind
from cove.errors import RuntimeBackendError
from cove.hostfiles import DIR_MODE, FILE_MODE, private_dir
from cove.runner.host import mountapi

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
    """

    def __init__(self, root: Path, *, shared: bool = False) -> None:
        self.root, self.shared = root, shared

    @classmethod
    def of(cls, settings: Settings) -> VolumeDir:
        if settings.volumes_dir is not None:
            return cls(settings.volumes_dir, shared=True)
        return cls(volumes_dir(settings.data_dir))

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
        try:
            root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeBackendError(f"volumes dir {self.root}: {exc.strerror}") from exc
        try:
            return mountapi.make_dirs_beneath(root_fd, f"{name}/{bind.subpath}", OWNER)
        except OSError as exc:
            reason = _REASONS.get(exc.errno or 0, exc.strerror)
            raise RuntimeBackendError(f"volume subpath {bind.subpath!r} {reason}") from exc
        finally:
            os.close(root_fd)

    def delete(self, volume_id: str) -> None:
        """Remove the volume's directory and its data (none: nothing to do)."""
        path = self.root / _checked(volume_id)
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RuntimeBackendError(f"cannot delete volume {volume_id}: {exc}") from exc


def _checked(volume_id: str) -> str:
    """``volume_id`` if it is one plain path component."""
    if not _ID.match(volume_id):
        raise RuntimeBackendError(f"invalid volume id {volume_id!r}")
    return volume_id
