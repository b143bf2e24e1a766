"""A gVisor sandbox's view: the only host paths its runsc processes are given.

runsc's gofer and sentry run as the sandbox's root host uid and resolve the
paths of config.json with that uid's permissions, so every directory on the
way must be searchable by it. The data dir is root's alone (0700), and stays
so: each gVisor sandbox gets a view outside it instead::

    /run/cove/gvisor/                 root, 0711
      <data dir tag>/                 root, 0711 (one per server)
        <sandbox id>/                 root, group the sandbox's root host gid, 0710
          rootfs  etc  init  ro-<n>  vol-<n>  chan
                                      binds of exactly what config.json names

Nothing of another sandbox (nor the data dir, the database or a volume the
sandbox does not mount) is reachable from a view, and no other host uid may
enter it. The sandbox's own ids may only search it (runsc's processes run with
its root's gid): they cannot rename or add entries, so no path Cove mounts on
or unmounts can be swapped for a symlink. Binds are made by descriptor
(``open_tree``) of paths Cove made. A
view is removed at stop and delete, and the startup reconciliation removes
those of sandboxes that no longer run (every step is idempotent).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import mountapi, mounts
from cove.runner.host.network import data_tag

ROOT = Path("/run/cove/gvisor")
PARENT_MODE = 0o711
VIEW_MODE = 0o710


def view_dir(data_dir: Path, sandbox_id: str, root: Path = ROOT) -> Path:
    """Where the view of sandbox ``sandbox_id`` of the server on ``data_dir`` lives."""
    return root / data_tag(data_dir) / sandbox_id


class View:
    """One sandbox's view, being filled with binds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def bind(self, name: str, source: Path, *, readonly: bool = False) -> Path:
        """Bind ``source`` (a file or directory of the host, not followed if a
        symlink) at ``name`` in the view, nosuid and nodev; returns the path runsc
        is to use.

        Raises:
            RuntimeBackendError: the source is missing or the bind failed.
        """
        target = self.path / name
        try:
            is_dir = stat.S_ISDIR(os.lstat(source).st_mode)
            if is_dir:
                target.mkdir(mode=0o700, exist_ok=True)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o600))  # fmt: skip
        except OSError as exc:
            raise RuntimeBackendError(f"cannot bind {source} into {self.path}: {exc}") from exc
        flags = mountapi.ATTR_NOSUID | mountapi.ATTR_NODEV
        mountapi.bind(source, target, flags=flags | (mountapi.ATTR_RDONLY if readonly else 0))
        return target


def make(data_dir: Path, sandbox_id: str, owner: int, root: Path = ROOT) -> View:
    """A fresh, empty view of the sandbox, which host gid ``owner`` (the
    sandbox's root) may search.

    A view left over (a crash) is removed first.

    Raises:
        RuntimeBackendError: it cannot be made.
    """
    path = view_dir(data_dir, sandbox_id, root)
    remove(data_dir, sandbox_id, root)
    for _attempt in range(3):
        try:
            for parent in (root.parent, root, path.parent):
                _root_dir(parent)
            path.mkdir(mode=VIEW_MODE)
            os.chown(path, 0, owner)
            os.chmod(path, VIEW_MODE)
            return View(path)
        except FileNotFoundError as exc:  # (the server's last other view went, with its
            error: OSError = exc          # parent, meanwhile: again)
        except OSError as exc:
            error = exc
            break
    raise RuntimeBackendError(f"cannot make {path}: {error}") from error


def remove(data_dir: Path, sandbox_id: str, root: Path = ROOT) -> None:
    """Unmount and delete the sandbox's view; nothing to do when there is none.

    Raises:
        RuntimeBackendError: a bind stays busy (the view is kept then).
    """
    path = view_dir(data_dir, sandbox_id, root)
    for point in reversed(mounts.mounted_under(path)):
        mounts.unmount(Path(point))
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RuntimeBackendError(f"cannot remove {path}: {exc}") from exc
    try:  # never recursively: a bind still there must stop this, not be emptied
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        path.rmdir()
    except OSError as exc:
        raise RuntimeBackendError(f"cannot remove {path}: {exc}") from exc
    try:
        path.parent.rmdir()  # (the server's last view)
    except OSError:
        pass


def sandbox_ids(data_dir: Path, root: Path = ROOT) -> set[str]:
    """The sandboxes of the server on ``data_dir`` that have a view."""
    try:
        return {p.name for p in (root / data_tag(data_dir)).iterdir()}
    except FileNotFoundError:
        return set()


def _root_dir(path: Path) -> None:
    """``path`` as a directory of root's, mode 0711 (made if missing)."""
    try:
        path.mkdir(mode=PARENT_MODE)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(f"{path} is not a directory")
    if info.st_uid != 0 or info.st_gid != 0:
        os.chown(path, 0, 0, follow_symlinks=False)
    if stat.S_IMODE(info.st_mode) != PARENT_MODE:
        os.chmod(path, PARENT_MODE)
