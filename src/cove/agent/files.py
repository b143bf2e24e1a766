"""The sandbox's file system, as the sandbox sees it (the agent runs inside it).

Paths are the sandbox's own: absolute, or relative to the user's home. The
agent runs as root, so it can read and write anything in the sandbox, like
Daytona's daemon; what it creates belongs to the sandbox user. An operation that
changes the file system reaches its path through :func:`reach`, so that a symlink
a user planted (say in its home, where the caller will later write) lends that
user none of the agent's power. Errors use Daytona's codes (``FILE_NOT_FOUND``,
``FILE_ACCESS_DENIED``, ...).

Transfers stream: ``fs_write`` takes D frames after its ``ready`` answer and
writes them to a temporary file renamed into place at Z; ``fs_read`` answers
each path with a J ``{"file"}`` header, D frames and Z, or a J ``{"error"}``.
Listings (``fs_list``, ``fs_find``, ``fs_search``) arrive as J ``{"items"}`` batches.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import shutil
import stat
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import protocol, users
from .agent import Request, op
from .protocol import AgentError

BATCH = 500
LINE_LIMIT = 1024 * 1024
_STATUS = {errno.ENOENT: (404, "FILE_NOT_FOUND"), errno.EACCES: (403, "FILE_ACCESS_DENIED"),
           errno.EPERM: (403, "FILE_ACCESS_DENIED"), errno.ENOTDIR: (404, "FILE_NOT_FOUND"),
           errno.EEXIST: (409, "CONFLICT"), errno.ENOTEMPTY: (409, "CONFLICT")}


def os_error(exc: OSError, path: str) -> AgentError:
    """Daytona's error for a failed file operation on ``path``."""
    status, code = _STATUS.get(exc.errno or 0, (400, "BAD_REQUEST"))
    reason = exc.strerror or str(exc)
    if status == 404:
        return AgentError(status, code, f"file not found: {path}")
    return AgentError(status, code, f"{path}: {reason}")


@contextlib.contextmanager
def failing_as(path: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise os_error(exc, path) from exc


def resolve(user: users.User, path: str | None) -> str:
    """``path`` as an absolute sandbox path (relative ones start at the user's home)."""
    if not path:
        raise protocol.bad_request("path is required", "INVALID_FILE_PATH")
    if "\0" in path:
        raise protocol.bad_request("path contains a NUL byte", "INVALID_FILE_PATH")
    return os.path.normpath(os.path.join(user.home, path))


def user_of(request: Request) -> users.User:
    return users.lookup(request.arg("user", str, None))


def _name(table: Any, ident: int) -> str:
    try:
        return str(table(ident)[0])
    except KeyError:
        return str(ident)


def file_info(path: str) -> dict[str, Any]:
    """Daytona's FileInfo of ``path`` (following a symlink, unless it is dangling)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = os.lstat(path)
    when = datetime.fromtimestamp(st.st_mtime, UTC)
    return {
        "name": os.path.basename(path) or path, "path": path, "isDir": stat.S_ISDIR(st.st_mode),
        "size": st.st_size, "mode": stat.filemode(st.st_mode),
        "permissions": f"{stat.S_IMODE(st.st_mode):04o}",
        "owner": _name(pwd.getpwuid, st.st_uid), "group": _name(grp.getgrgid, st.st_gid),
        "modTime": when.strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC"),
        "modifiedAt": when.isoformat().replace("+00:00", "Z"),
    }


MAX_LINKS = 40  # symlinks followed in one path (the kernel's limit)
_STEP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Place:
    """Where an operation that changes the file system acts (see :func:`reach`): the
    directory holding the entry (an ``O_PATH`` descriptor), the entry's name there,
    and a descriptor of the entry itself when it exists (None: it does not)."""

    dir_fd: int
    name: str
    fd: int | None

    def exists(self) -> bool:
        return self.fd is not None

    def stat(self) -> os.stat_result:
        assert self.fd is not None
        return os.fstat(self.fd)

    @property
    def inode(self) -> str:
        """The entry as a path no process can redirect (the descriptor's magic link),
        for calls that take no descriptor (``chmod``, a reopening)."""
        return f"/proc/self/fd/{self.fd}"


@contextlib.contextmanager
def reach(path: str, *, follow: bool = True,
          make: tuple[users.User, int] | None = None) -> Iterator[Place]:  # fmt: skip
    """The :class:`Place` of the absolute ``path``, walked one name at a time
    (each opened without following it), so that no process can redirect a lookup
    between this walk and the operation. Symlinks are followed as the kernel does
    (the last one only with ``follow``), but one that belongs to a user other than
    root lends that user nothing: past it, the operation may only act in a directory,
    and on an entry, of that user's own. Without that rule, a user's symlink
    ``~/notes.txt -> /etc/passwd`` makes the caller's next upload to ``~/notes.txt``
    replace /etc/passwd with a file of the user's. With ``make`` (a user, a mode),
    missing directories on the way are made, the user's.

    Raises:
        OSError: a name on the way is missing (ENOENT) or no directory (ENOTDIR),
            too many links (ELOOP), or one of another user's leads where that user
            owns nothing (EACCES).
    """
    opened: list[int] = []

    def keep(fd: int) -> int:
        opened.append(fd)
        return fd

    try:
        yield _walk(path, follow, make, keep)
    finally:
        for fd in opened:
            os.close(fd)


def _walk(path: str, follow: bool, make: tuple[users.User, int] | None,
          keep: Callable[[int], int]) -> Place:  # fmt: skip
    lent: set[int] = set()  # owners (but root) of the symlinks followed
    links = 0
    at = keep(os.open("/", _STEP | os.O_DIRECTORY))
    pending = deque(part for part in path.split("/") if part)
    if not pending:
        return Place(at, ".", keep(os.open(".", _STEP, dir_fd=at)))
    while pending:
        name = pending.popleft()
        last = not pending
        try:
            fd = keep(os.open(name, _STEP, dir_fd=at))
        except FileNotFoundError:
            if last:
                _may_change(at, None, lent)
                return Place(at, name, None)
            if make is None:
                raise
            _may_change(at, None, lent)
            fd = keep(_make_dir(at, name, *make))
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode) and (follow or not last):
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links")
            if st.st_uid != 0:
                lent.add(st.st_uid)
            target = os.readlink("", dir_fd=fd)
            if target.startswith("/"):
                at = keep(os.open("/", _STEP | os.O_DIRECTORY))
            pending.extendleft(reversed([part for part in target.split("/") if part]))
            if not pending:  # a link to "/"
                return Place(at, ".", keep(os.open(".", _STEP, dir_fd=at)))
            continue
        if last:
            _may_change(at, st, lent)
            return Place(at, name, fd)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        at = fd
    raise AssertionError("unreachable")  # (the last name returns)


def _may_change(dir_fd: int, entry: os.stat_result | None, lent: set[int]) -> None:
    """Refuse to act in ``dir_fd`` (on ``entry``) past a symlink of a user (``lent``)
    unless both are that user's own."""
    if not lent:
        return
    owners = {os.fstat(dir_fd).st_uid, *([entry.st_uid] if entry is not None else [])}
    if owners != lent:
        raise PermissionError(errno.EACCES, "reached through a symbolic link of a user "
                                            "to what that user does not own")  # fmt: skip


def _make_dir(dir_fd: int, name: str, user: users.User, mode: int) -> int:
    """Make the directory ``name`` in ``dir_fd`` with ``mode``, the user's; an
    ``O_PATH`` descriptor of it (a name swapped meanwhile is refused, never followed)."""
    os.mkdir(name, mode, dir_fd=dir_fd)
    fd = os.open(name, _STEP | os.O_DIRECTORY, dir_fd=dir_fd)
    try:
        os.chmod(f"/proc/self/fd/{fd}", mode)
        os.chown(f"/proc/self/fd/{fd}", user.uid, user.gid)
    except BaseException:
        os.close(fd)
        raise
    return fd


async def send_items(request: Request, items: Iterator[dict[str, Any] | str]) -> None:
    """Stream ``items`` as J ``{"items": [...]}`` batches."""
    batch: list[dict[str, Any] | str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            await request.send_json({"items": batch})
            batch = []
    if batch:
        await request.send_json({"items": batch})


@op("fs_info")
async def info(request: Request) -> dict[str, Any]:
    path = resolve(user_of(request), request.arg("path"))
    with failing_as(path):
        return {"file": file_info(path)}


def _listing(path: str, depth: int) -> Iterator[dict[str, Any]]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        try:
            found = file_info(entry.path)
        except OSError:
            continue
        yield found
        if depth > 1 and entry.is_dir(follow_symlinks=False):
            yield from _listing(entry.path, depth - 1)


@op("fs_list")
async def list_dir(request: Request) -> dict[str, Any]:
    path = resolve(user_of(request), request.arg("path"))
    depth = max(1, request.arg("depth", int, None) or 1)
    with failing_as(path):
        os.scandir(path).close()
    await send_items(request, _listing(path, depth))
    return {}


@op("fs_mkdir")
async def mkdir(request: Request) -> dict[str, Any]:
    user = user_of(request)
    path = resolve(user, request.arg("path"))
    mode = _mode(request.arg("mode", str, None) or "755")
    with failing_as(path), reach(path, make=(user, mode)) as place:
        if place.exists() and not stat.S_ISDIR(place.stat().st_mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a directory")
        if not place.exists():
            os.close(_make_dir(place.dir_fd, place.name, user, mode))
    return {}


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise protocol.bad_request(f"invalid mode '{text}'") from None
    if not 0 <= mode <= 0o7777:
        raise protocol.bad_request(f"invalid mode '{text}'")
    return mode


@op("fs_delete")
async def delete(request: Request) -> dict[str, Any]:
    path = resolve(user_of(request), request.arg("path"))
    recursive = bool(request.arg("recursive", bool, False))
    with failing_as(path), reach(path, follow=False) as place:
        if not place.exists():
            raise FileNotFoundError(errno.ENOENT, "no such file")
        if not stat.S_ISDIR(place.stat().st_mode):
            os.unlink(place.name, dir_fd=place.dir_fd)
        elif not recursive:
            raise protocol.bad_request(f"{path} is a directory: delete it with recursive=true")
        else:
            shutil.rmtree(place.name, dir_fd=place.dir_fd)
    return {}


@op("fs_move")
async def move(request: Request) -> dict[str, Any]:
    user = user_of(request)
    source = resolve(user, request.arg("source"))
    target = resolve(user, request.arg("destination"))
    with contextlib.ExitStack() as places:
        with failing_as(source):
            origin = places.enter_context(reach(source, follow=False))
            if not origin.exists():
                raise FileNotFoundError(errno.ENOENT, "no such file")
        with failing_as(target):
            place = places.enter_context(reach(target, follow=False))
            if place.exists():
                raise AgentError(409, "CONFLICT", f"destination {target} already exists")
            try:
                os.rename(origin.name, place.name, src_dir_fd=origin.dir_fd,
                          dst_dir_fd=place.dir_fd)  # fmt: skip
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # another file system: shutil copies, then deletes (through the
                # descriptors' directories, which no process can redirect)
                shutil.move(f"/proc/self/fd/{origin.dir_fd}/{origin.name}",
                            f"/proc/self/fd/{place.dir_fd}/{place.name}")
    return {}


@op("fs_chmod")
async def chmod(request: Request) -> dict[str, Any]:
    path = resolve(user_of(request), request.arg("path"))
    mode, owner, group = (request.arg(k, str, None) for k in ("mode", "owner", "group"))
    uid = _lookup(pwd.getpwnam, owner, "user") if owner else -1
    gid = _lookup(grp.getgrnam, group, "group") if group else -1
    with failing_as(path), reach(path) as place:
        if not place.exists():
            raise FileNotFoundError(errno.ENOENT, "no such file")
        if mode:
            os.chmod(place.inode, _mode(mode))
        if uid != -1 or gid != -1:
            os.chown(place.inode, uid, gid)
    return {}


def _lookup(table: Any, name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return int(table(name)[2])
    except KeyError:
        raise protocol.bad_request(f"no {what} '{name}' in the sandbox") from None


from . import fs_search, fs_transfer  # noqa: E402,F401 - registers their ops
