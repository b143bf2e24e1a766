"""A command on pipes with the caller's stdin (``pipe_exec``), for SSH sessions without
a terminal (``ssh token@host cmd``, ``echo x | ssh ... cat``).

The server sends stdin as D frames and its end as a Z frame; the agent streams
stdout as O and stderr as E frames, then replies ``{"exitCode": n}``. The
command runs in a cgroup of its own: when the server abandons the request (the
SSH client went away), everything it started is killed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from . import confine, protocol, users
from .agent import Request, op
from .process import Passed, Pump, finished, kill_tree
from .shell import write_all
from .terminal import _shell


@op("pipe_exec", cancel_when_abandoned=True)
async def pipe_exec(request: Request) -> dict[str, Any]:
    """Run ``command`` with ``shell -c`` (without one: the user's shell reading stdin)."""
    user = users.lookup(request.arg("user", str, None))
    command = request.arg("command", str, None)
    argv = [_shell(user)] + (["-c", command] if command is not None else [])
    in_r, in_w = os.pipe()
    out_r, out_w = users.owned_pipe(user)
    err_r, err_w = users.owned_pipe(user)
    group = confine.Group()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=in_r, stdout=out_w, stderr=err_w,
            **users.spawn_kwargs(user, None, request.arg("env", dict, None), group))
    except BaseException:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        group.close()
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    stdin = _Stdin(in_w)
    await request.send_json({"event": "started"})
    pumps = [Pump(out_r, Passed(request, protocol.STDOUT)),
             Pump(err_r, Passed(request, protocol.STDERR))]
    feeding = asyncio.ensure_future(_feed(request, stdin))
    try:
        await finished(proc, pumps)  # (and what it printed last)
        code = proc.returncode
        assert code is not None
    finally:
        feeding.cancel()
        await asyncio.wait([feeding])  # its write, if any, is unregistered
        stdin.close()  # also when the feeding never started
        for pump in pumps:
            pump.task.cancel()
        if proc.returncode is None:
            kill_tree(proc.pid, group)
        group.close()
    return {"exitCode": code if code >= 0 else 128 - code}


class _Stdin:
    """The write end of the command's stdin, closed once (at Z, or when the request ends)."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        os.set_blocking(fd, False)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def _feed(request: Request, stdin: _Stdin) -> None:
    """Write the server's D frames to the command's stdin; close it at Z (or a hang-up)."""
    try:
        while stdin.fd is not None:
            try:
                kind, payload = await request.receive()
            except (EOFError, ConnectionError, protocol.ProtocolError):
                return
            if kind == protocol.END:
                return
            if kind == protocol.DATA and payload:
                await write_all(stdin.fd, payload)
    except OSError:  # EPIPE: the command closed its stdin
        return
    finally:
        stdin.close()
