"""The program an interpreter context runs: a stateful Python REPL behind two pipes.

The agent runs it on the sandbox's own ``python3`` (``python3 - CMD_FD MSG_FD``,
this source on stdin), as the sandbox user. It imports nothing of Cove and
must run on any Python 3.6+, so it sticks to the standard library.

* Commands arrive on ``CMD_FD`` and events leave on ``MSG_FD``, both as frames
  of a 4-byte big-endian length and a JSON object. A command is
  ``{"code": str, "envs": {str: str}}``; its events are at most one
  ``{"type": "error", "name", "value", "traceback"}``, then ``{"type": "done"}``.
* ``sys.stdout`` and ``sys.stderr`` are unbuffered: every write goes at once to
  file descriptor 1 or 2, pipes the agent reads itself. Processes the user's
  code starts write there too, so what the code and its children print arrives
  in the order it was printed; they do not keep the command channel open.
* The user's code runs in a fresh ``__main__`` module, so none of the driver's
  names are visible to it, and pickling its classes works.
* SIGINT raises KeyboardInterrupt in the user's code only: when it lands in
  the driver's own code (between runs, or while sending an event) it is
  deferred to the end of that send, or dropped when no code runs.
"""

import codecs
import io
import json
import linecache
import os
import signal
import struct
import sys
import traceback
import types

_HEADER = struct.Struct(">I")
_GLOBALS = globals()
_STATE = {"armed": False, "pending": False, "cells": 0, "pid": os.getpid()}


class _Channel:
    """The framed pipes to the agent."""

    def __init__(self, cmd_fd, msg_fd):
        self.cmd_fd = cmd_fd
        self.msg_fd = msg_fd
        self.lock = _allocate_lock()

    def receive(self):
        """The next command, or None once the agent is gone."""
        header = self._read(_HEADER.size)
        if header is None:
            return None
        body = self._read(_HEADER.unpack(header)[0])
        return None if body is None else json.loads(body.decode("utf-8"))

    def _read(self, size):
        data = bytearray()
        while len(data) < size:
            chunk = os.read(self.cmd_fd, min(size - len(data), 1 << 20))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def send(self, message):
        body = json.dumps(message).encode("ascii")
        view = memoryview(_HEADER.pack(len(body)) + body)
        with self.lock:
            try:
                while view:
                    view = view[os.write(self.msg_fd, view):]
            except OSError:
                os._exit(70)  # the agent is gone: nobody is left to serve
        if _STATE["pending"] and _STATE["armed"]:
            _STATE["pending"] = False
            raise KeyboardInterrupt


def _write_fd(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _allocate_lock():
    import _thread

    return _thread.allocate_lock()


class _Output(io.TextIOBase):
    """An unbuffered text stream straight onto its file descriptor."""

    def __init__(self, channel, kind, fd):
        self._channel = channel
        self._kind = kind
        self._fd = fd
        self.buffer = _BinaryOutput(self)

    @property
    def name(self):
        return f"<{self._kind}>"

    @property
    def encoding(self):  # type: ignore[override]  # read-only here, as on a real stream
        return "utf-8"

    @property
    def errors(self):  # type: ignore[override]
        return "strict"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        _write_fd(self._fd, text.encode("utf-8", "backslashreplace"))
        return len(text)

    def flush(self):
        pass


class _BinaryOutput(io.RawIOBase):
    """``sys.stdout.buffer``: bytes, decoded as UTF-8 as they come."""

    def __init__(self, text):
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self):
        return True

    def write(self, data):
        self._text.write(self._decoder.decode(bytes(data)))
        return len(data)


def _on_sigint(signum, frame):
    if not _STATE["armed"]:
        return
    if frame is not None and frame.f_globals is _GLOBALS:
        _STATE["pending"] = True  # inside the driver: raise once it is safe
        return
    raise KeyboardInterrupt


def _execute(code, namespace):
    """Run ``code`` in ``namespace``; the exception to report, if any."""
    _STATE["cells"] += 1
    filename = f"<cell-{_STATE['cells']}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    _STATE["pending"] = False
    try:
        compiled = compile(code, filename, "exec", dont_inherit=True)
        _STATE["armed"] = True
        exec(compiled, namespace)
    except SystemExit as exc:
        _STATE["armed"] = False
        return None if exc.code in (None, 0) else exc
    except BaseException as exc:
        _STATE["armed"] = False
        return exc
    finally:
        _STATE["armed"] = False
    return None


def _error_event(exc):
    """The error event of ``exc``, its traceback without the driver's frames."""
    summary = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    seen = set()
    todo: list[traceback.TracebackException | None] = [summary]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        frames = [f for f in item.stack if f.filename != _execute.__code__.co_filename]
        item.stack = traceback.StackSummary.from_list(frames)
        todo += [item.__cause__, item.__context__]
    value = str(exc.code) if isinstance(exc, SystemExit) else str(exc)
    return {"type": "error", "name": type(exc).__name__, "value": value,
            "traceback": "".join(summary.format())}


def _run(channel, command, namespace):
    saved = {}
    for key, value in (command.get("envs") or {}).items():
        saved[key] = os.environ.get(key)
        os.environ[key] = str(value)
    try:
        error = _execute(command.get("code", ""), namespace)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if error is not None:
        channel.send(_error_event(error))
    channel.send({"type": "done"})


def _setup(cmd_fd, msg_fd):
    """Private pipes, stdin from /dev/null, event streams, a clean ``__main__``."""
    for fd in (cmd_fd, msg_fd):
        os.set_inheritable(fd, False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    channel = _Channel(cmd_fd, msg_fd)
    if hasattr(os, "register_at_fork"):  # 3.7+: forked children must not hold the channel
        os.register_at_fork(after_in_child=lambda: _close(cmd_fd, msg_fd))
    sys.stdout = _Output(channel, "stdout", 1)
    sys.stderr = _Output(channel, "stderr", 2)
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None and hasattr(stream, "reconfigure"):  # 3.7+
            stream.reconfigure(line_buffering=True, write_through=True)
    sys.argv = [""]
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    signal.signal(signal.SIGINT, _on_sigint)
    return channel, module.__dict__


def main():
    channel, namespace = _setup(int(sys.argv[1]), int(sys.argv[2]))
    while True:
        command = channel.receive()
        if command is None:
            return
        _run(channel, command, namespace)


if __name__ == "__main__":
    main()


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)
