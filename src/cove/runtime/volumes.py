"""Volume data on the host: ``<data_dir>/volumes/<id>/``, owned by the sandbox user.

A subpath is created on first mount. Whatever a sandbox put into a volume
(symlinks included) never makes a mount source leave the volume: the source
is resolved and must still lie inside the volume directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cove.core.ports import VolumeBind
from cove.errors import RuntimeBackendError
from cove.runtime.layout import SandboxPaths

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


def bind_source(data_dir: Path, bind: VolumeBind) -> Path:
    """The host directory to bind for ``bind`` (its subpath made when missing).

    Raises:
        RuntimeBackendError: the volume is gone, or the subpath leads outside it.
    """
    root = volumes_dir(data_dir) / bind.volume_id
    if not root.is_dir():
        raise RuntimeBackendError(f"volume {bind.volume_id} has no data directory")
    real_root = root.resolve()
    target = (root / bind.subpath) if bind.subpath else root
    try:
        if not target.exists():
            _make_inside(real_root, bind.subpath)
        real = target.resolve(strict=True)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot prepare volume subpath {bind.subpath!r}: {exc}") from exc
    if real != real_root and real_root not in real.parents:
        raise RuntimeBackendError(f"volume subpath {bind.subpath!r} leads outside the volume")
    if not real.is_dir():
        raise RuntimeBackendError(f"volume subpath {bind.subpath!r} is not a directory")
    return real


def _make_inside(real_root: Path, subpath: str) -> None:
    """Create ``subpath`` one level at a time, refusing to follow anything out."""
    current = real_root
    for part in Path(subpath).parts:
        nxt = current / part
        if not nxt.exists() and not nxt.is_symlink():
            nxt.mkdir()
            os.chown(nxt, *OWNER)
        current = nxt.resolve()
        if current != real_root and real_root not in current.parents:
            raise RuntimeBackendError(f"volume subpath {subpath!r} leads outside the volume")


def oci_mounts(data_dir: Path, binds: Sequence[VolumeBind]) -> list[dict[str, Any]]:
    """The read-write OCI bind mounts of a sandbox's volumes (after its own mounts)."""
    return [
        {
            "destination": b.mount_path,
            "type": "bind",
            "source": str(bind_source(data_dir, b)),
            "options": ["bind", "rw", "nosuid", "nodev"],
        }
        for b in binds
    ]
