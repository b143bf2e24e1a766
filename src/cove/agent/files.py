"""The sandbox's file system, as the sandbox sees it (the agent runs inside it).

Paths are the sandbox's own: absolute, or relative to the user's home. The
agent runs as root, so it can read and write anything in the sandbox, like
Daytona's daemon; what it creates belongs to the sandbox user. Errors use
Daytona's codes (``FILE_NOT_FOUND``, ``FILE_ACCESS_DENIED``, ...).

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
from collections.abc import Iterator
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


def make_dirs(path: str, user: users.User, mode: int = 0o755) -> None:
    """Create ``path`` and its missing parents, owned by ``user``."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory, mode)
        os.chmod(directory, mode)
        os.chown(directory, user.uid, user.gid)


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
    with failing_as(path):
        if os.path.lexists(path) and not os.path.isdir(path):
            raise FileExistsError(errno.EEXIST, "exists and is not a directory")
        make_dirs(path, user, mode)
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
    with failing_as(path):
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
        elif not recursive:
            raise protocol.bad_request(f"{path} is a directory: delete it with recursive=true")
        else:
            shutil.rmtree(path)
    return {}


@op("fs_move")
async def move(request: Request) -> dict[str, Any]:
    user = user_of(request)
    source = resolve(user, request.arg("source"))
    target = resolve(user, request.arg("destination"))
    with failing_as(source):
        os.lstat(source)
    with failing_as(target):
        if os.path.lexists(target):
            raise AgentError(409, "CONFLICT", f"destination {target} already exists")
        os.stat(os.path.dirname(target))
        shutil.move(source, target)
    return {}


@op("fs_chmod")
async def chmod(request: Request) -> dict[str, Any]:
    path = resolve(user_of(request), request.arg("path"))
    mode, owner, group = (request.arg(k, str, None) for k in ("mode", "owner", "group"))
    uid = _lookup(pwd.getpwnam, owner, "user") if owner else -1
    gid = _lookup(grp.getgrnam, group, "group") if group else -1
    with failing_as(path):
        os.stat(path)
        if mode:
            os.chmod(path, _mode(mode))
        if uid != -1 or gid != -1:
            os.chown(path, uid, gid)
    return {}


def _lookup(table: Any, name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return int(table(name)[2])
    except KeyError:
        raise protocol.bad_request(f"no {what} '{name}' in the sandbox") from None


from . import fs_search, fs_transfer  # noqa: E402,F401 - registers their ops
