"""Packing a sandbox's writable layer into a zstd-compressed tar, and back.

The layer is an overlayfs upper directory: deletions of lower files are
whiteouts (0:0 character devices) and opaque directories carry the
``trusted.overlay.opaque`` xattr, so tar runs as root with every xattr and
numeric owners, and restores device nodes.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from cove.errors import RuntimeBackendError
from cove.runtime import disk, mounts
from cove.runtime.layout import SandboxPaths

TAR_FLAGS = ("--xattrs", "--xattrs-include=*", "--numeric-owner")


def pack(upper: Path, dest: Path) -> int:
    """Write ``upper`` as ``dest`` (atomically: temp file, fsync, rename).

    Returns:
        The archive's size in bytes.

    Raises:
        RuntimeBackendError: tar or zstd failed; ``dest`` is untouched.
    """
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tar = ["tar", "--create", "--file=-", "--sparse", f"--directory={upper}", *TAR_FLAGS, "."]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            _pipe(tar, ["zstd", "-1", "-T0", "-q", "-c"], out)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, dest)
        _fsync_dir(dest.parent)
        return dest.stat().st_size
    except OSError as exc:
        raise RuntimeBackendError(f"cannot write archive {dest}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def verify(archive: Path) -> None:
    """Check the zstd frames and that tar can list the whole archive.

    Raises:
        RuntimeBackendError: the archive is missing, truncated or corrupt.
    """
    if not archive.is_file():
        raise RuntimeBackendError(f"archive {archive} is missing")
    _pipe(["zstd", "-t", "-q", str(archive)], None, subprocess.DEVNULL)
    with open(os.devnull, "wb") as null:
        _pipe(["zstd", "-d", "-q", "-c", str(archive)], ["tar", "--list", "--file=-"], null)


def unpack(archive: Path, upper: Path) -> None:
    """Extract ``archive`` into the (empty) directory ``upper``, owners and xattrs kept.

    Raises:
        RuntimeBackendError: extraction failed (for example the disk is too small).
    """
    tar = ["tar", "--extract", "--file=-", f"--directory={upper}", "--same-permissions"]
    with open(os.devnull, "wb") as null:
        _pipe(["zstd", "-d", "-q", "-c", str(archive)], [*tar, "--same-owner", *TAR_FLAGS], null)


def archive_layer(paths: SandboxPaths, target: Path) -> int:
    """Pack the upper dir of a stopped sandbox's image into ``target``; delete the image.

    Returns:
        The archive's size in bytes.
    """
    disk.mount(paths.image, paths.disk)
    try:
        paths.upper.mkdir(exist_ok=True)
        size = pack(paths.upper, target)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot archive {paths.root.name}: {exc}") from exc
    finally:
        mounts.unmount(paths.disk)
    try:
        paths.image.unlink()
    except OSError as exc:
        raise RuntimeBackendError(f"cannot remove {paths.image}: {exc}") from exc
    return size


def restore_layer(source: Path, paths: SandboxPaths, disk_gib: int) -> None:
    """Extract ``source`` into a fresh image of ``disk_gib`` GiB that becomes disk.img.

    The image only gets its final name once extraction succeeded.
    """
    fresh = paths.root / "disk.img.restore"
    try:
        disk.create_image(fresh, disk_gib)
        disk.mount(fresh, paths.disk)
        paths.upper.mkdir()
        unpack(source, paths.upper)
        paths.work.mkdir(exist_ok=True)
        mounts.unmount(paths.disk)
        fresh.rename(paths.image)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot restore {paths.root.name}: {exc}") from exc
    finally:
        mounts.unmount(paths.disk)
        fresh.unlink(missing_ok=True)


def _pipe(first: list[str], second: list[str] | None, out: IO[bytes] | int) -> None:
    """Run ``first | second > out`` (or ``first > out``) and check both exit codes."""
    stages = [first, second] if second else [first]
    with tempfile.TemporaryFile() as err0, tempfile.TemporaryFile() as err1:
        try:
            a = subprocess.Popen(
                first,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if second else out,
                stderr=err0,
            )
            procs = [a]
            if second:
                assert a.stdout is not None
                procs.append(subprocess.Popen(second, stdin=a.stdout, stdout=out, stderr=err1))
                a.stdout.close()
            codes = [p.wait() for p in reversed(procs)][::-1]
        except OSError as exc:
            raise RuntimeBackendError(f"{first[0]} failed: {exc}") from exc
        for argv, code, err in reversed(list(zip(stages, codes, (err0, err1), strict=False))):
            if code != 0:
                err.seek(0)
                tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise RuntimeBackendError(f"{argv[0]} exited {code}: {tail[0]}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
