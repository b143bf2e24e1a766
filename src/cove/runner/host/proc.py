"""Running host commands, with foreign failures turned into RuntimeBackendError."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cove.errors import RuntimeBackendError
from cove.runner.host.waiting import readable

MAX_FAILURE = 1024  # characters of a failed command's line its error quotes


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to completion, capturing its output.

    Args:
        argv: The command and its arguments.
        input: Bytes fed to its standard input (``/dev/null`` when None).
        check: Raise when it exits non-zero.
        timeout: Seconds before it is killed and an error raised.

    Returns:
        The completed process, stdout and stderr as bytes.

    Raises:
        RuntimeBackendError: it could not be run, timed out, or failed with ``check``.
    """
    try:
        done = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            close_fds=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeBackendError(f"{argv[0]} failed: {exc}") from exc
    if check and done.returncode != 0:
        raise RuntimeBackendError(describe_failure(argv, done.returncode, done.stderr))
    return done


def wait(process: subprocess.Popen[Any], timeout: float) -> int:
    """``process.wait(timeout)``, returning as soon as the process exits.

    Before Python 3.14, ``Popen.wait`` with a timeout polls, sleeping 1, 2, 4, 8, 16
    ms between its checks: a ``crun run`` of 11 ms was seen after 16. This waits on a
    pidfd of the process instead.

    Raises:
        subprocess.TimeoutExpired: it still runs after ``timeout`` seconds.
    """
    if process.returncode is not None:
        return process.returncode
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:  # (reaped already, by another wait)
        return process.wait()
    try:
        if not readable(pidfd, timeout):
            raise subprocess.TimeoutExpired(process.args, timeout)
    finally:
        os.close(pidfd)
    return process.wait()


def call(argv: Sequence[str], *, timeout: float, **popen: Any) -> int:
    """``subprocess.call`` with its timeout, without its polling (see :func:`wait`):
    the exit code; killed and ``subprocess.TimeoutExpired`` raised after ``timeout``."""
    with subprocess.Popen(list(argv), **popen) as process:
        try:
            return wait(process, timeout)
        except BaseException:
            process.kill()
            raise


def describe_failure(argv: Sequence[str], code: int, stderr: bytes) -> str:
    """One readable line about a failed command: the last of its stderr, at most
    :data:`MAX_FAILURE` characters of it (its start and its end, where the cause is).
    A tool quotes what it was given: umoci an image's User whole, as its pusher wrote
    it, and the line becomes the error a sandbox or snapshot keeps."""
    text = stderr.decode(errors="replace").strip().splitlines()
    tail = text[-1] if text else ""
    if len(tail) > MAX_FAILURE:
        half = MAX_FAILURE // 2
        tail = f"{tail[:half]}...({len(tail) - 2 * half} characters)...{tail[-half:]}"
    return f"{' '.join(argv[:3])} exited {code}: {tail}"


@contextmanager
def foreign_errors() -> Iterator[None]:
    """Turn an OSError that escaped a helper into RuntimeBackendError."""
    try:
        yield
    except OSError as exc:
        raise RuntimeBackendError(f"host operation failed: {exc}") from exc


def running(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie does; a recycled pid reads as running:
    callers only ever keep, never drop, on that answer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
