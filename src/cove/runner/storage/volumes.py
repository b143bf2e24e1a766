"""Volume data on the host: ``<data_dir>/volumes/<id>/``, owned by the sandbox user.

A subpath is created on first mount. Whatever a sandbox put into a volume
(symlinks included, swapped in at any moment) never makes a mount source leave
the volume: the subpath is opened one component at a time below the volume's
directory, refusing symlinks, ``..`` and mount crossings, and what is mounted
is the directory so opened (by descriptor, see ``runner/host/mountapi.py``), never
a path string that could be redirected between the check and the mount. Files
in a volume carry sandbox ids (1000 is the sandbox user); each sandbox mounts it
idmapped with its own range.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from cove.core.ports import VolumeBind
from cove.errors import RuntimeBackendError
from cove.runner.host import mountapi
from cove.runner.layout import SandboxPaths

OWNER = (1000, 1000)  # the daytona user of the default snapshot


def volumes_dir(data_dir: Path) -> Path:
    return data_dir / "volumes"


class LocalVolumeFiles:
    """Implements :class:`cove.core.volumes.VolumeFiles` with plain directories."""

    def __init__(self, data_dir: Path) -> None:
        self._root = volumes_dir(data_dir)

    def _dir(self, volume_id: str) -> Path:
        SandboxPaths.of(self._root, volume_id)  # refuses ids that are not plain names
        return self._root / volume_id

    def create(self, volume_id: str) -> None:
        path = self._dir(volume_id)
        try:
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, *OWNER)
        except OSError as exc:
            raise RuntimeBackendError(f"cannot create volume {volume_id}: {exc}") from exc

    def delete(self, volume_id: str) -> None:
        try:
            shutil.rmtree(self._dir(volume_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RuntimeBackendError(f"cannot delete volume {volume_id}: {exc}") from exc


def open_source(data_dir: Path, bind: VolumeBind) -> int:
    """An O_PATH descriptor of the directory to mount for ``bind`` (its subpath
    made when missing, owned by the sandbox user).

    Raises:
        RuntimeBackendError: the volume is gone, or the subpath leads outside it,
            through a symlink, or to something that is not a directory.
    """
    root = volumes_dir(data_dir) / bind.volume_id
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeBackendError(f"volume {bind.volume_id} has no data directory") from exc
    try:
        return mountapi.make_dirs_beneath(root_fd, bind.subpath, OWNER)
    except OSError as exc:
        reason = {errno.ELOOP: "goes through a symlink", errno.EXDEV: "leads outside the volume",
                  errno.ENOTDIR: "is not a directory"}.get(exc.errno or 0, exc.strerror)
        raise RuntimeBackendError(f"volume subpath {bind.subpath!r} {reason}") from exc
    finally:
        os.close(root_fd)
