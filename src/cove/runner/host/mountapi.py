"""The kernel's file-descriptor mount API, for mounts no path string can redirect.

Everything Cove mounts into a sandbox is first opened as a file descriptor
(without following symlinks where a sandbox could have planted one), turned
into a detached mount with ``open_tree``, given its flags (and an id mapping:
"idmapped mount") with ``mount_setattr``, and attached with ``move_mount``.
A sandbox that swaps a directory for a symlink after Cove looked at it changes
nothing: the mount refers to what was opened. Disk images are attached to loop
devices by descriptor too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import time
from collections.abc import Sequence
from pathlib import Path

from cove.errors import RuntimeBackendError

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long

# x86_64 and aarch64 share these numbers (the "generic" table from 5.2 on).
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_OPENAT2, _SYS_MOUNT_SETATTR = 428, 429, 437, 442
_OPEN_TREE_CLONE, _AT_EMPTY_PATH, _AT_RECURSIVE = 0x1, 0x1000, 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432
_FSOPEN_CLOEXEC, _FSMOUNT_CLOEXEC = 0x1, 0x1
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 0, 1, 6
ATTR_RDONLY, ATTR_NOSUID, ATTR_NODEV, ATTR_NOEXEC, ATTR_NOATIME = 0x1, 0x2, 0x4, 0x8, 0x10
_ATTR_IDMAP = 0x00100000
_RESOLVE_NO_XDEV, _RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 1, 2, 4, 8
_LOOP_CTL_GET_FREE, _LOOP_CONFIGURE, _LO_FLAGS_AUTOCLEAR = 0x4C82, 0x4C0A, 4
_LO_FLAGS_DIRECT_IO = 16


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]  # fmt: skip


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _LoopInfo64(ctypes.Structure):
    _fields_ = [("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64),
                ("lo_rdevice", ctypes.c_uint64), ("lo_offset", ctypes.c_uint64),
                ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
                ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32),
                ("lo_flags", ctypes.c_uint32), ("lo_file_name", ctypes.c_uint8 * 64),
                ("lo_crypt_name", ctypes.c_uint8 * 64), ("lo_encrypt_key", ctypes.c_uint8 * 32),
                ("lo_init", ctypes.c_uint64 * 2)]  # fmt: skip


class _LoopConfig(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32),
                ("info", _LoopInfo64), ("reserved", ctypes.c_uint64 * 8)]  # fmt: skip


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return int(result)


def open_beneath(root: int, path: str, flags: int = os.O_PATH | os.O_DIRECTORY) -> int:
    """Open ``path`` below the directory ``root`` without following any symlink,
    crossing a mount, or leaving ``root`` (``..`` above it fails).

    Raises:
        OSError: ELOOP for a symlink on the way, EXDEV for an escape, ENOENT...
    """
    how = _OpenHow(flags | os.O_CLOEXEC, 0,
                   _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
                   | _RESOLVE_NO_XDEV)  # fmt: skip
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(root),
                       ctypes.c_char_p(os.fsencode(path)), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))  # fmt: skip
    return _check(fd, f"open {path}")


def make_dirs_beneath(root: int, path: str, owner: tuple[int, int]) -> int:
    """Open directory ``path`` below ``root``, creating missing components (owned
    by ``owner``) one at a time; never follows a symlink. Returns an O_PATH fd.
    """
    fd = os.dup(root)
    try:
        for part in [p for p in path.split("/") if p]:
            if part in (".", ".."):
                raise OSError(errno.EXDEV, f"path component {part!r} refused")
            try:
                nxt = open_beneath(fd, part)
            except FileNotFoundError:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.chown(part, *owner, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    pass  # made meanwhile: opened below, symlinks still refused
                nxt = open_beneath(fd, part)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def bind(
    source: int | Path, target: Path, *, userns: int | None = None, flags: int = 0,
    clear: int = 0, recursive: bool = False,
) -> None:  # fmt: skip
    """Attach a copy of the mount tree at ``source`` (an fd or a path opened here
    without following a final symlink) on ``target`` (an existing file or directory).

    Args:
        source: What to bind.
        target: Where to attach it.
        userns: A user namespace fd: the bind is idmapped with its id mapping.
        flags: ``ATTR_*`` flags to set (read-only, nosuid, nodev, noexec).
        clear: ``ATTR_*`` flags the source has that the bind must not have.
        recursive: Copy submounts too.

    Raises:
        RuntimeBackendError: any step failed (nothing is attached then).
    """
    opened = None
    try:
        if isinstance(source, int):
            fd = source
        else:
            fd = opened = os.open(source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        tree = _check(_libc.syscall(
            ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(fd), ctypes.c_char_p(b""),
            ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_EMPTY_PATH
                          | (_AT_RECURSIVE if recursive else 0))), "open_tree")  # fmt: skip
        try:
            attr = _MountAttr(flags | (_ATTR_IDMAP if userns is not None else 0), clear, 0,
                              userns if userns is not None else 0)  # fmt: skip
            _check(_libc.syscall(
                ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(tree), ctypes.c_char_p(b""),
                ctypes.c_uint(_AT_EMPTY_PATH | (_AT_RECURSIVE if recursive else 0)),
                ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr")
            _check(_libc.syscall(
                ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(tree), ctypes.c_char_p(b""),
                ctypes.c_int(-100), ctypes.c_char_p(os.fsencode(str(target))),
                ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH)), "move_mount")  # fmt: skip
        finally:
            os.close(tree)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot mount {source} on {target}: {exc.strerror}") from exc
    finally:
        if opened is not None:
            os.close(opened)


def mount_image(image: Path, target: Path, *, attrs: int,
                options: Sequence[tuple[str, str | None]]) -> None:  # fmt: skip
    """Mount the ext4 image file ``image`` (opened without following a symlink) at
    ``target`` through a loop device that goes away with the last unmount (see
    :func:`image_mount` for ``attrs`` and ``options``).

    Raises:
        RuntimeBackendError: no loop device, or the mount failed.
    """
    attach(image_mount(image, attrs=attrs, options=options), target)


def image_mount(image: Path, *, attrs: int, options: Sequence[tuple[str, str | None]]) -> int:
    """A detached mount of the ext4 image file ``image`` (opened without following a
    symlink), through a loop device that goes away with the mount: a descriptor to
    :func:`attach` (or close: the mount, and its loop device, are then gone).

    Args:
        attrs: ``ATTR_*`` flags of the mount (nosuid, nodev, noexec, noatime).
        options: the file system's options, ``(name, value)`` (None: a flag).

    Raises:
        RuntimeBackendError: no loop device, or the file system could not be mounted.
    """
    try:
        backing = os.open(image, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot open {image}: {exc.strerror}") from exc
    try:
        device, loop = _attach_loop(backing)
        try:
            fs = _check(_libc.syscall(ctypes.c_long(_SYS_FSOPEN), ctypes.c_char_p(b"ext4"),
                                      ctypes.c_uint(_FSOPEN_CLOEXEC)), "fsopen")  # fmt: skip
            try:
                for key, value in (("source", device), *options):
                    _fsconfig(fs, key, value)
                _check(_libc.syscall(ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs),
                                     ctypes.c_uint(_FSCONFIG_CMD_CREATE), None, None,
                                     ctypes.c_int(0)), "create")  # fmt: skip
                return _check(_libc.syscall(ctypes.c_long(_SYS_FSMOUNT), ctypes.c_int(fs),
                                            ctypes.c_uint(_FSMOUNT_CLOEXEC),
                                            ctypes.c_uint(attrs)), "fsmount")  # fmt: skip
            finally:
                os.close(fs)
        finally:
            os.close(loop)  # the mount holds the device now; its end frees it
    except OSError as exc:
        raise RuntimeBackendError(f"mount {image}: {exc.strerror}") from exc
    finally:
        os.close(backing)


def _fsconfig(fs: int, key: str, value: str | None) -> None:
    kind = _FSCONFIG_SET_FLAG if value is None else _FSCONFIG_SET_STRING
    _check(_libc.syscall(
        ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs), ctypes.c_uint(kind),
        ctypes.c_char_p(key.encode()), ctypes.c_char_p(None if value is None else value.encode()),
        ctypes.c_int(0)), f"option {key}")  # fmt: skip


def attach(mount: int, target: Path) -> None:
    """Attach the detached mount ``mount`` (a descriptor, closed either way) at
    ``target``, an existing directory.

    Raises:
        RuntimeBackendError: it could not be attached (the mount is then gone).
    """
    try:
        _check(_libc.syscall(
            ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(mount), ctypes.c_char_p(b""),
            ctypes.c_int(-100), ctypes.c_char_p(os.fsencode(str(target))),
            ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH)), "move_mount")  # fmt: skip
    except OSError as exc:
        raise RuntimeBackendError(f"cannot mount on {target}: {exc.strerror}") from exc
    finally:
        os.close(mount)


def _attach_loop(backing: int) -> tuple[str, int]:
    """A free loop device configured on ``backing`` (auto-clearing), and its open fd.

    With direct I/O where the backing file's file system allows it: the image's
    blocks are then cached once (in the ext4 inside), not a second time as the
    backing file's page cache.
    """
    config = _LoopConfig(fd=backing)
    config.info.lo_flags = _LO_FLAGS_AUTOCLEAR | _LO_FLAGS_DIRECT_IO
    for _attempt in range(64):
        try:
            control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
            try:
                number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
            finally:
                os.close(control)
            device = f"/dev/loop{number}"
            loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeBackendError(f"no loop device: {exc.strerror}") from exc
        try:
            fcntl.ioctl(loop, _LOOP_CONFIGURE, bytes(config))
            return device, loop
        except OSError as exc:
            os.close(loop)
            if exc.errno == errno.EINVAL and config.info.lo_flags & _LO_FLAGS_DIRECT_IO:
                config.info.lo_flags &= ~_LO_FLAGS_DIRECT_IO  # no O_DIRECT there
                continue
            if exc.errno != errno.EBUSY:  # taken by another process meanwhile: next one
                raise RuntimeBackendError(f"cannot set up {device}: {exc.strerror}") from exc
        time.sleep(0.001)
    raise RuntimeBackendError("no free loop device")
