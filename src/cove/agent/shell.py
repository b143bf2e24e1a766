"""A session's shell: its process and pipes, the script it is fed, and its output markers.

The shell (bash, else sh) runs as the sandbox user and reads its script from a
private pipe: fd 9 at start-up, which it opens again as its own close-on-exec
script descriptor and then closes, so no user process inherits it. Its stdin
is a pipe for the commands' input, its stdout and stderr pipes to the agent.
Every pipe belongs to the user, so ``/dev/stdin``, ``/dev/stdout`` and
``/dev/stderr`` open as they would in a terminal. Nothing touches the disk.

Each command is one script line that prints marker lines ``T<`` before it and
``T>`` after it (``T>$?`` on stdout), ``T`` being an unguessable token, so the
shell's output can be split per command (:class:`Splitter`).
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import secrets
import termios
from collections.abc import Callable
from dataclasses import dataclass

from . import confine, protocol, users

SCRIPT_FD = 9
MAX_FD = os.sysconf("SC_OPEN_MAX")
START, END = b"<", b">"


@dataclass
class Shell:
    proc: asyncio.subprocess.Process
    script: int  # write end of the shell's script
    input_r: int  # the commands' stdin (kept to discard what a command left unread)
    input_w: int
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    transports: tuple[asyncio.BaseTransport, ...]
    group: confine.Group  # the session's cgroup: the shell and everything it starts

    async def run(self, line: bytes) -> None:
        await write_all(self.script, line)

    async def feed(self, data: bytes) -> None:
        await write_all(self.input_w, data)

    def discard_input(self) -> None:
        """Drop unread input without making the pipe non-blocking for its readers."""
        pending = array.array("i", [0])
        fcntl.ioctl(self.input_r, termios.FIONREAD, pending)
        while pending[0] > 0:
            pending[0] -= len(os.read(self.input_r, pending[0]))

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        for fd in (self.script, self.input_r, self.input_w):
            os.close(fd)
        self.group.close()


async def spawn(user: users.User, env: dict[str, str] | None) -> Shell:
    """Start a shell as ``user`` in its home directory, with ``env`` added."""
    pipes = [os.pipe() for _ in range(4)]
    (script_r, script_w), (input_r, input_w), (out_r, out_w), (err_r, err_w) = pipes
    if users.privileged():
        for read_end, _ in pipes:
            os.fchown(read_end, user.uid, user.gid)
    script = f"/dev/fd/{SCRIPT_FD}" if os.path.isdir("/dev/fd") else f"/proc/self/fd/{SCRIPT_FD}"
    argv = (["/bin/bash", "--noprofile", "--norc", script] if os.path.exists("/bin/bash")
            else ["/bin/sh", script])
    group = confine.Group()
    kwargs = {**users.spawn_kwargs(user, None, env, group, lambda: _child_fds(script_r)),
              "close_fds": False}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=input_r, stdout=out_w, stderr=err_w, **kwargs)
    except BaseException:
        for fd in (script_w, input_r, input_w, out_r, err_r):
            os.close(fd)
        group.close()
        raise
    finally:
        for fd in (script_r, out_w, err_w):
            os.close(fd)
    os.set_blocking(script_w, False)
    os.set_blocking(input_w, False)
    os.write(script_w, f"exec {SCRIPT_FD}<&-\n".encode())
    (stdout, out_t), (stderr, err_t) = await _reader(out_r), await _reader(err_r)
    return Shell(proc, script_w, input_r, input_w, stdout, stderr, (out_t, err_t), group)


def _child_fds(script_r: int) -> None:
    """In the shell's process, before exec: the script on fd 9, nothing else beyond 2."""
    if script_r == SCRIPT_FD:
        os.set_inheritable(SCRIPT_FD, True)
    else:
        os.dup2(script_r, SCRIPT_FD)
    os.closerange(3, SCRIPT_FD)
    os.closerange(SCRIPT_FD + 1, MAX_FD)


async def _reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=protocol.CHUNK)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    return reader, transport


def new_token() -> bytes:
    """A marker token: a control character no output starts a line with, then 128 random bits."""
    return b"\x1f" + secrets.token_hex(16).encode()


def script_line(command: str, token: bytes, previous: int) -> bytes:
    """The line that runs ``command`` between markers, with ``$?`` set to ``previous``.

    ``command eval`` runs it in the shell itself (``cd`` and ``export`` carry
    over) and makes a syntax error fail the command (2), not the shell.
    """
    t = token.decode()
    quoted = "'" + command.replace("'", "'\\''") + "'"
    restore = f"(exit {previous}); " if previous else ""
    return (f"command printf '{t}<\\n'; command printf '{t}<\\n' >&2; {restore}"
            f"command eval {quoted}; command printf '{t}>%d\\n' \"$?\"; "
            f"command printf '{t}>\\n' >&2\n").encode()


class Splitter:
    """Splits a stream at marker lines: ``on_data`` gets the rest, ``on_marker`` their bodies."""

    def __init__(self, token: bytes, on_data: Callable[[bytes], None],
                 on_marker: Callable[[bytes], None]) -> None:
        self.token = token
        self.on_data, self.on_marker = on_data, on_marker
        self.pending = b""

    def feed(self, data: bytes) -> None:
        buf = self.pending + data
        while True:
            at = buf.find(self.token)
            if at < 0:  # hold back what could be the start of a marker
                keep = _partial(buf, self.token)
                self._data(buf[: len(buf) - keep])
                self.pending = buf[len(buf) - keep :]
                return
            self._data(buf[:at])
            eol = buf.find(b"\n", at)
            if eol < 0:
                self.pending = buf[at:]
                return
            self.on_marker(buf[at + len(self.token) : eol])
            buf = buf[eol + 1 :]

    def flush(self) -> None:
        self._data(self.pending)
        self.pending = b""

    def _data(self, data: bytes) -> None:
        if data:
            self.on_data(data)


def _partial(buf: bytes, token: bytes) -> int:
    """How many bytes at the end of ``buf`` could be the start of ``token``."""
    for keep in range(min(len(token) - 1, len(buf)), 0, -1):
        if token.startswith(buf[-keep:]):
            return keep
    return 0


async def split(stream: asyncio.StreamReader, splitter: Splitter) -> None:
    while chunk := await stream.read(protocol.CHUNK):
        splitter.feed(chunk)
    splitter.flush()


def resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def write_all(fd: int, data: bytes) -> None:
    """Write everything to a non-blocking descriptor without blocking the agent."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_writer(fd, resolve, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


async def read_some(fd: int) -> bytes:
    """The next bytes from a non-blocking descriptor; empty at its end (EOF or EIO)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, protocol.CHUNK)
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_reader(fd, resolve, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
        except OSError:  # EIO: a terminal nothing holds open any more
            return b""
