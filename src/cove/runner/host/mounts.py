"""Mounting and unmounting: the ext4 image, the overlay, and cleanup helpers."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import time
from pathlib import Path
from typing import NamedTuple

from cove.errors import RuntimeBackendError

_MNT_DETACH, _UMOUNT_NOFOLLOW = 2, 8
_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 0x1, 0x2, 0x4
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _unescape(field: str) -> str:
    """Undo the octal escapes of /proc/mounts (space, tab, newline, backslash)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


class Mount(NamedTuple):
    """One line of /proc/self/mounts."""

    source: str
    point: str
    fstype: str
    options: frozenset[str]


def mount_table() -> list[Mount]:
    """Every mount of this process's mount namespace, in mount order."""
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
        rows = [line.split(" ") for line in f]
    return [
        Mount(_unescape(r[0]), _unescape(r[1]), r[2], frozenset(r[3].split(",")))
        for r in rows
        if len(r) >= 4
    ]


def is_mounted(path: Path) -> bool:
    """Whether something is mounted exactly at ``path`` (a symlink there is not
    followed: nothing is mounted on it).

    Compares the mount ids of ``path`` and its parent, so it costs the same however
    many mounts the host has (the mount table of a host with thousands of sandboxes
    is long).
    """
    try:
        return _mount_id(path) != _mount_id(path.parent)
    except OSError:
        return False


def _mount_id(path: Path) -> int:
    """The id of the mount ``path`` (not followed if a symlink) lies on."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    raise OSError(errno.ENOTSUP, f"no mount id for {path}")


def mounted_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest last (mount order)."""
    root = str(path).rstrip("/")
    points = [m.point for m in mount_table()]
    return [p for p in points if p == root or p.startswith(root + "/")]


def unmount(path: Path, *, busy_wait: float = 3.0) -> None:
    """Unmount everything stacked at ``path``; no error when nothing is mounted.

    A busy mount (processes of a just-killed container still exiting) is
    retried for up to ``busy_wait`` seconds.

    Raises:
        RuntimeBackendError: the mount stays busy or cannot be removed.
    """
    deadline = time.monotonic() + busy_wait
    while True:  # (until EINVAL: nothing, or nothing more, is mounted there)
        if _libc.umount2(os.fsencode(str(path)), _UMOUNT_NOFOLLOW) == 0:
            continue
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return
        if err != errno.EBUSY or time.monotonic() > deadline:
            raise RuntimeBackendError(f"umount {path}: {os.strerror(err)}")
        time.sleep(0.02)


def detach(path: Path) -> None:
    """Lazily unmount what is mounted at ``path`` (nothing mounted: no error)."""
    _libc.umount2(os.fsencode(str(path)), _MNT_DETACH | _UMOUNT_NOFOLLOW)


def unmount_under(path: Path) -> None:
    """Lazily unmount every mount at or below ``path``, deepest first."""
    for point in reversed(mounted_under(path)):
        detach(Path(point))


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount an overlay of the read-only ``lower`` and writable ``upper`` at ``target``.

    Raises:
        RuntimeBackendError: the overlay could not be mounted.
    """
    for path in (lower, upper, work):
        if any(c in str(path) for c in ",:\\"):
            raise RuntimeBackendError(f"overlay path has a forbidden character: {path}")
    target.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={lower},upperdir={upper},workdir={work},index=off,xino=off"
    _mount("overlay", target, "overlay", opts)


def mount_overlay_readonly(options: str, target: Path) -> None:
    """Mount a read-only overlay (``lowerdir=a:b`` in ``options``) at ``target``.

    Raises:
        RuntimeBackendError: the overlay could not be mounted.
    """
    if "\\" in options or ",," in options:
        raise RuntimeBackendError(f"overlay options have a forbidden character: {options}")
    _mount("overlay", target, "overlay", options, _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _mount(source: str, target: Path, fstype: str, data: str, flags: int = 0) -> None:
    args = (source.encode(), os.fsencode(str(target)), fstype.encode(), flags, data.encode())
    if _libc.mount(*args) != 0:
        err = ctypes.get_errno()
        raise RuntimeBackendError(f"mount {fstype} at {target}: {os.strerror(err)}")
