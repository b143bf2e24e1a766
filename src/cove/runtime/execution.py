"""Running one ``crun exec`` to completion: output capture, timeout, tree kill."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cove.core.ports import ExecResult
from cove.errors import RuntimeBackendError, Timeout
from cove.runtime import spec, users
from cove.runtime.crun import Crun
from cove.runtime.fsutil import is_dir_in_root
from cove.runtime.layout import Metadata, SandboxPaths, write_json

MAX_OUTPUT = 32 * 1024 * 1024  # per stream; the rest is read and dropped
EXIT_WAIT = 5.0


@dataclass(frozen=True)
class ExecRequest:
    """One command to run in a sandbox."""

    argv: list[str]
    user: str
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    timeout: float | None = None


def execute(crun: Crun, paths: SandboxPaths, meta: Metadata, req: ExecRequest) -> ExecResult:
    """Run ``req`` in the running sandbox with the same hardening as its init.

    The user is resolved from the sandbox's own /etc/passwd (symlink-safe);
    the working directory defaults to the user's home (``/`` if it is missing).
    """
    who = users.resolve(paths.rootfs, req.user)
    home_ok = is_dir_in_root(paths.rootfs, who.home)
    process = spec.exec_process(
        req.argv,
        uid=who.uid,
        gid=who.gid,
        groups=who.groups,
        env=spec.exec_env(meta.env, meta.hostname, who.name, who.home, req.env),
        cwd=req.cwd or (who.home if home_ok else "/"),
        nofile_hard=spec.nofile_hard(),
    )
    tag = uuid.uuid4().hex
    process_file, pid_file = paths.root / f"exec-{tag}.json", paths.root / f"exec-{tag}.pid"
    try:
        write_json(process_file, process)
        return run_exec(
            crun.exec_argv(paths.root.name, process_file, pid_file), pid_file, req.timeout
        )
    finally:
        process_file.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)


def run_exec(argv: list[str], pid_file: Path, timeout: float | None) -> ExecResult:
    """Run a ``crun exec`` command line and collect its output.

    Returns once the exec'd process exits (processes it left in the background
    do not hold the call). On timeout the exec'd process and all its
    descendants are killed.

    Raises:
        Timeout: it ran longer than ``timeout`` seconds.
        RuntimeBackendError: crun could not be started.
    """
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        raise RuntimeBackendError(f"crun exec failed: {exc}") from exc
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        out, err, finished = _collect(proc, deadline)
        if not finished:
            _kill_exec(proc, pid_file)
            raise Timeout(f"command did not finish within {timeout} s")
        return ExecResult(exit_code=proc.wait(), stdout=out, stderr=err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _collect(proc: subprocess.Popen[bytes], deadline: float | None) -> tuple[bytes, bytes, bool]:
    """Read stdout/stderr until the process exits or the deadline passes."""
    assert proc.stdout is not None and proc.stderr is not None
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    pidfd = os.pidfd_open(proc.pid)
    sel = selectors.DefaultSelector()
    try:
        for fd in bufs:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        exited = _pump(sel, bufs, pidfd, deadline)
        if exited:
            for fd in list(bufs):
                _drain(fd, bufs[fd], sel)
    finally:
        sel.close()
        os.close(pidfd)
    out, err = (bytes(b) for b in bufs.values())
    return out, err, exited


def _pump(
    sel: selectors.BaseSelector, bufs: dict[int, bytearray], pidfd: int, deadline: float | None
) -> bool:
    while True:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            return False
        for key, _ in sel.select(wait):
            if key.fd == pidfd:
                return True
            _drain(key.fd, bufs[key.fd], sel)


def _drain(fd: int, buf: bytearray, sel: selectors.BaseSelector) -> None:
    """Read what is available now; unregister the stream at end of file."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            if fd in sel.get_map():
                sel.unregister(fd)
            return
        if len(buf) < MAX_OUTPUT:
            buf.extend(chunk[: MAX_OUTPUT - len(buf)])


def _kill_exec(proc: subprocess.Popen[bytes], pid_file: Path) -> None:
    """Kill the exec'd process tree, then crun exec itself."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        kill_tree(pid)
    try:
        proc.wait(EXIT_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants, stopping them first so none escapes."""
    stopped: list[int] = []
    for _round in range(3):
        stack, seen = [pid], set(stopped)
        while stack:
            p = stack.pop()
            if p not in seen and _signal(p, signal.SIGSTOP):
                seen.add(p)
                stopped.append(p)
            stack.extend(c for c in _children(p) if c not in seen)
    for p in stopped:
        _signal(p, signal.SIGKILL)


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found
