"""What Cove keeps on the host is root's alone: directories 0700, files 0600.

Modes are set explicitly where Cove creates a path, never through the process
umask (sandboxes and the files they make must not inherit one). The data dir is
tightened even when it exists with a looser mode; a directory Cove did not
create (an operator's ``COVE_ARCHIVE_DIR``, the parent of a SQLite file named
in ``COVE_DATABASE_URL``) keeps its mode.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from cove.core.config import Settings

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create ``path`` (and missing parents) with mode 0700.

    Args:
        path: The directory.
        tighten: Also set 0700 when it exists already.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        if not tighten:
            return path
    os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists with mode 0600 (created so; an existing one tightened)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def tighten(*paths: Path) -> None:
    """Set mode 0600 on each of ``paths`` that exists and is more open than that (one
    stricter, such as a read-only mounted secret's 0400, is left as it is)."""
    for path in paths:
        try:
            if os.stat(path).st_mode & 0o777 & ~FILE_MODE:
                os.chmod(path, FILE_MODE)
        except FileNotFoundError:
            pass


def secret_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """The contents of secret ``path``, written by ``make()`` (mode 0600) if missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        tighten(path)
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(make())
    return path.read_bytes()


def prepare_host_dirs(settings: Settings) -> None:
    """At server start: the data dir made or tightened to 0700; the snapshot and archive
    dirs made 0700 when missing (an existing one is the operator's, or shared)."""
    private_dir(settings.data_dir, tighten=True)
    archives = None if settings.archive_s3_bucket else settings.archive_dir
    for where in (settings.snapshot_dir, archives):
        if where is not None and not where.exists():
            private_dir(where)


def remove_tree(path: Path, *, ignore_errors: bool = False) -> None:
    """Remove the directory ``path`` and everything under it, however deep (nothing
    there: nothing to do).

    ``shutil.rmtree`` recurses once per level (Python 3.11): a tree a sandbox nested
    a few thousand levels deep (in a volume, in a snapshot captured from it) stops it
    half-way with a RecursionError. ``rm -rf`` walks any depth, never follows a
    symlink, and with ``--one-file-system`` leaves what is mounted inside alone.

    Raises:
        OSError: something could not be removed (unless ``ignore_errors``); its
            message ends with rm's last complaint.
    """
    with tempfile.TemporaryFile() as err:
        try:
            code = subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, check=False).returncode  # fmt: skip
        except OSError:
            if ignore_errors:
                return
            raise
        if code == 0 or ignore_errors:
            return
        err.seek(max(0, os.fstat(err.fileno()).st_size - 1024))
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
    raise OSError(f"cannot remove {path}: {tail[0]}")


def walk_tree(root: Path) -> Iterator[os.DirEntry[str]]:
    """Every entry below ``root``, never through a symlink, a directory's before what
    is in it. The tree may be a tenant's, nested as deep as it liked: it is walked
    with a list, not recursively (``os.walk`` recurses once per level, and a few
    thousand levels raise RecursionError). A directory that cannot be read (gone, or
    deeper than a path can name: PATH_MAX) is skipped."""
    pending = [str(root)]
    while pending:
        try:
            with os.scandir(pending.pop()) as found:
                entries = list(found)
        except OSError:
            continue
        for entry in entries:
            yield entry
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
