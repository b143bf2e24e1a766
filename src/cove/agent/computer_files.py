"""Computer use: the recordings directory, walked without following symlinks.

Recordings live where Daytona's daemon keeps them, ``~/.daytona/recordings`` of the
desktop's user. That directory belongs to the user, who may plant anything in it (a
symlink to another file, a FIFO, a hard link): every name is opened relative to a
directory descriptor with ``O_NOFOLLOW``, and only a regular file the user owns is read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator

from . import protocol, users

RECORDINGS = (".daytona", "recordings")
NAME = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_[^/]*\.mp4")
MAX_LISTED = 1000  # names looked at in one listing
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def recordings_dir(user: users.User, *, create: bool = False) -> Iterator[int | None]:
    """A descriptor of the user's recordings directory (None when it does not exist and
    ``create`` is false). Missing directories are made, owned by the user.

    Raises:
        AgentError: 400 when a part of the path is not a directory (a symlink, say).
    """
    try:
        fd = os.open(user.home, _DIR)
    except OSError:
        if create:
            raise protocol.bad_request(f"the home of {user.name} ({user.home}) is not a "
                                       "directory", "RECORDINGS_DIR_INVALID") from None
        yield None
        return
    try:
        for part in RECORDINGS:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.chown(part, user.uid, user.gid, dir_fd=fd, follow_symlinks=False)
            try:
                inner = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                yield None
                return
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise protocol.bad_request(f"~/{'/'.join(RECORDINGS)} is not a directory",
                                               "RECORDINGS_DIR_INVALID") from None  # fmt: skip
                raise
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def listing(directory: int, user: users.User) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(id, name, stat)`` of each recording file: a regular file named
    ``{uuid}_{label}_{time}.mp4`` owned by ``user`` (at most MAX_LISTED names looked at)."""
    with os.scandir(directory) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_LISTED:
                return
            match = NAME.fullmatch(entry.name)
            if match is None:
                continue
            with contextlib.suppress(OSError):
                st = os.stat(entry.name, dir_fd=directory, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_uid == user.uid:
                    yield match.group(1), entry.name, st


def open_recording(directory: int, name: str, user: users.User) -> tuple[int, int]:
    """``(fd, size)`` of the recording ``name``, opened without following a symlink.

    Raises:
        AgentError: 404 when it is gone or is not a regular file of ``user``.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=directory)  # fmt: skip
    except OSError:
        raise protocol.not_found("recording not found") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != user.uid:
        os.close(fd)
        raise protocol.not_found("recording not found")
    return fd, st.st_size
