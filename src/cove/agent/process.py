"""Running commands: ``exec`` (one shell command), ``code_run``, and sandbox info."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from . import confine, protocol, users
from .agent import Request, op
from .protocol import AgentError

VERSION = "cove-agent 0.1.0"
DRAIN_SECONDS = 0.2
RUNNERS = {
    "python": ["python3", "-c"],
    "javascript": ["node", "-e"],
    "typescript": ["tsx", "-e"],
}


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (found through /proc, so setsid cannot hide one)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, group: confine.Group | None = None) -> None:
    """SIGKILL everything ``pid`` started: its cgroup ``group`` when it has one (no
    process escapes that), else ``pid``, its process group and every descendant."""
    if group is not None and group.kill():
        return
    victims = [pid, *descendants(pid)]
    for target in victims:
        try:
            os.kill(target, signal.SIGSTOP)  # freeze first so none can fork away
        except ProcessLookupError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for target in victims:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def run_streaming(
    request: Request, argv: list[str], *, user: users.User, cwd: str | None,
    env: dict[str, str] | None, timeout: float | None, merge: bool,
) -> int:
    """Run ``argv``, stream its output as frames, return its exit code.

    Raises:
        AgentError: 408 PROCESS_EXECUTION_TIMEOUT once ``timeout`` passes (the
            whole process tree is killed at that moment).
    """
    out_r, out_w = users.owned_pipe(user)
    err_r, err_w = (out_r, out_w) if merge else users.owned_pipe(user)
    group = confine.Group()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out_w, stderr=err_w,
            **users.spawn_kwargs(user, cwd, env, group),
        )
    except BaseException:
        for fd in {out_r, err_r}:
            os.close(fd)
        group.close()
        raise
    finally:
        for fd in {out_w, err_w}:
            os.close(fd)
    pumps = [asyncio.ensure_future(_pump(await _reader(out_r), request, protocol.STDOUT))]
    if not merge:
        pumps.append(asyncio.ensure_future(_pump(await _reader(err_r), request, protocol.STDERR)))
    try:
        await asyncio.wait_for(_finished(proc, pumps), timeout if timeout and timeout > 0 else None)
    except TimeoutError:
        kill_tree(proc.pid, group)
        await proc.wait()
        for pump in pumps:
            pump.cancel()
        raise AgentError(408, "PROCESS_EXECUTION_TIMEOUT", "command execution timeout") from None
    finally:
        if proc.returncode is None:
            kill_tree(proc.pid, group)
        group.close()
    code = proc.returncode
    assert code is not None  # _finished waited for it
    return code if code >= 0 else 128 - code


async def _finished(
    proc: asyncio.subprocess.Process, pumps: Sequence[asyncio.Future[None]]
) -> None:
    """The command exited and what it printed was read. Processes it left in the
    background do not hold the call: their output is read for DRAIN_SECONDS more,
    then the pipes are closed (they keep running, in the command's cgroup)."""
    await proc.wait()
    _done, pending = await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
    for pump in pending:
        pump.cancel()


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=protocol.CHUNK)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb"))
    return reader


async def _pump(stream: asyncio.StreamReader, request: Request, kind: bytes) -> None:
    while chunk := await stream.read(protocol.CHUNK):
        await request.send(kind, chunk)


@op("exec")
async def exec_command(request: Request) -> dict[str, Any]:
    """Run a shell command; stdout and stderr arrive merged as O frames (with
    ``separate``: stdout as O, stderr as E frames)."""
    user = users.lookup(request.arg("user", str, None))
    command = request.arg("command")
    started = time.monotonic()
    code = await run_streaming(
        request, ["/bin/sh", "-c", command], user=user, cwd=request.arg("cwd", str, None),
        env=request.arg("env", dict, None), timeout=request.arg("timeout", (int, float), None),
        merge=not request.arg("separate", bool, False),
    )
    return {"exitCode": code, "seconds": time.monotonic() - started}


@op("code_run")
async def code_run(request: Request) -> dict[str, Any]:
    """Run a snippet with the interpreter of its language (python, javascript, typescript)."""
    language = request.arg("language", str, "python")
    if language not in RUNNERS:
        raise protocol.bad_request(f"unsupported language '{language}'")
    argv = [*RUNNERS[language], request.arg("code"), *request.arg("argv", list, [])]
    user = users.lookup(request.arg("user", str, None))
    code = await run_streaming(
        request, argv, user=user, cwd=request.arg("cwd", str, None),
        env=request.arg("env", dict, None), timeout=request.arg("timeout", (int, float), None),
        merge=True,
    )
    return {"exitCode": code}


@op("info")
async def info(request: Request) -> dict[str, Any]:
    """The user's home, the working directory, the environment and the agent version."""
    user = users.lookup(request.arg("user", str, None))
    env = users.environment(user, request.arg("env", dict, None))
    return {"home": user.home, "workDir": users.work_dir(user), "env": env, "version": VERSION}


@op("ping")
async def ping(request: Request) -> dict[str, Any]:
    return {"pid": os.getpid()}
