"""Streaming file transfers: ``fs_write`` (upload) and ``fs_read`` (bulk download).

Neither side holds a whole file: data moves in D frames of at most
:data:`protocol.CHUNK` bytes, with the socket's flow control in between.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from typing import Any

from . import protocol
from .agent import Request, op
from .files import failing_as, os_error, reach, resolve, user_of
from .protocol import AgentError

UPLOAD_MODE = 0o644
DIR_MODE = 0o755  # of the missing directories an upload makes


@op("fs_write")
async def write(request: Request) -> dict[str, Any]:
    """Receive one file: answer ``ready``, take D frames up to Z, then rename into place
    (through a symlink, like Daytona's daemon, but see ``files.reach``)."""
    user = user_of(request)
    path = resolve(user, request.arg("path"))
    with contextlib.ExitStack() as held:
        with failing_as(path):
            place = held.enter_context(reach(path, make=(user, DIR_MODE)))
            if place.exists() and stat.S_ISDIR(place.stat().st_mode):
                raise protocol.bad_request(f"{path} is a directory")
            temp, fd = _temporary(place.dir_fd)
        try:
            await request.send_json({"ready": True})
            size = await _receive(request, fd, path)
            with failing_as(path):
                os.fchmod(fd, UPLOAD_MODE)
                os.fchown(fd, user.uid, user.gid)
                os.close(fd)
                fd = -1
                os.rename(temp, place.name, src_dir_fd=place.dir_fd, dst_dir_fd=place.dir_fd)
                temp = ""
        finally:
            if fd != -1:
                os.close(fd)
            if temp:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=place.dir_fd)
    return {"path": path, "bytes": size}


def _temporary(dir_fd: int) -> tuple[str, int]:
    """A new file in ``dir_fd`` (as ``tempfile.mkstemp``, by descriptor): its name and
    a descriptor open for writing."""
    for _ in range(100):
        name = f".cove-upload-{secrets.token_hex(6)}"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return name, os.open(name, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no temporary name is free")


async def _receive(request: Request, fd: int, path: str) -> int:
    size = 0
    while True:
        kind, payload = await request.receive()
        if kind == protocol.END:
            return size
        if kind != protocol.DATA:
            raise protocol.ProtocolError(f"unexpected frame {kind!r} in an upload")
        view = memoryview(payload)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            raise os_error(exc, path) from exc
        size += len(payload)


@op("fs_read")
async def read(request: Request) -> dict[str, Any]:
    """Send each requested file (header, D frames, Z) or its error, in order."""
    user = user_of(request)
    paths = request.arg("paths", list)
    for given in paths:
        if not isinstance(given, str):
            raise protocol.bad_request("paths must be strings")
        try:
            fd = open_file(resolve(user, given))
            size = os.fstat(fd).st_size
        except AgentError as exc:
            await request.send_json({"error": exc.reply(), "path": given})
            continue
        try:
            await request.send_json({"file": given, "size": size})
            while chunk := os.read(fd, protocol.CHUNK):
                await request.send(protocol.DATA, chunk)
            await request.send(protocol.END)
        except OSError as exc:
            if isinstance(exc, ConnectionError):
                raise
            raise os_error(exc, given) from exc
        finally:
            os.close(fd)
    return {}


def open_file(path: str, shown: str | None = None) -> int:
    """A descriptor of the regular file ``path`` (named ``shown`` in errors), for
    reading. The open does not wait (``O_NONBLOCK``): a FIFO that a user planted where
    a file was expected would hold the agent, and every call to the sandbox, until a
    writer came.

    Raises:
        AgentError: there is no such file, or it is not a regular one.
    """
    shown = shown or path
    with failing_as(shown):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise protocol.bad_request(f"{shown} is {what}")
    return fd
