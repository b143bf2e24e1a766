"""Reading files of a sandbox's root filesystem without following its symlinks out.

A sandbox owns its root filesystem, so any path in it may be a symlink to a
host path (``/etc/passwd -> /etc/shadow`` resolves on the host). Files are
opened with ``openat2(RESOLVE_IN_ROOT)``: every absolute symlink and ``..`` is
resolved inside the sandbox's root, never above it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from pathlib import Path

from cove.errors import RuntimeBackendError

_SYS_OPENAT2 = 437  # same number on x86_64 and aarch64
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
MAX_READ = 4 * 1024 * 1024

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root: Path, path: str, flags: int) -> int:
    """Open ``path`` as seen from inside ``root``; returns a file descriptor.

    Raises:
        OSError: it does not exist or cannot be opened (errno set).
    """
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(root_fd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(fd)
    finally:
        os.close(root_fd)


def read_in_root(root: Path, path: str, limit: int = MAX_READ) -> bytes | None:
    """Contents of the regular file ``path`` inside ``root``, or None if absent.

    FIFOs, devices and other non-regular files are refused, and at most
    ``limit`` bytes are read.

    Raises:
        RuntimeBackendError: the file exists but cannot be read safely.
    """
    try:
        fd = open_in_root(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise RuntimeBackendError(f"cannot open {path} in sandbox: {exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RuntimeBackendError(f"{path} in sandbox is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot read {path} in sandbox: {exc}") from exc
    finally:
        os.close(fd)


def is_dir_in_root(root: Path, path: str) -> bool:
    """Whether ``path`` inside ``root`` is a directory."""
    try:
        fd = open_in_root(root, path, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return False
    os.close(fd)
    return True
