"""Computer use: running a helper program (xdotool, python3) on the desktop's display."""

from __future__ import annotations

import asyncio
import contextlib
from asyncio.subprocess import DEVNULL, PIPE

from . import confine, protocol, users
from .computer import DESKTOP_ENV, desktop_user
from .process import kill_tree

HELPER_SECONDS = 30.0
HELPER_OUTPUT = 8 * 1024 * 1024  # base64 of it fits a frame (protocol.MAX_FRAME)


async def run_x(argv: list[str], *, stdin: bytes | None = None, timeout: float = HELPER_SECONDS,
                codes: tuple[int, ...] = (0,)) -> bytes:  # fmt: skip
    """Run a helper (xdotool, python3) on the display as the desktop's user; its stdout
    (it must exit with one of ``codes``).

    Raises:
        AgentError: 400 when computer use is not started or xdotool knows no such
            key; 500 when the helper failed
            or outlived ``timeout`` (its whole cgroup is then killed).
    """
    user = desktop_user()
    group = confine.Group()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=PIPE if stdin is not None else DEVNULL, stdout=PIPE, stderr=PIPE,
            limit=protocol.CHUNK, **users.spawn_kwargs(user, user.home, DESKTOP_ENV, group),
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(_bounded(proc, stdin), timeout)
        finally:
            if proc.returncode is None:
                kill_tree(proc.pid, group)
                await proc.wait()
    except TimeoutError:
        raise protocol.AgentError(500, "COMPUTER_USE_FAILED", f"{argv[0]} timed out") from None
    finally:
        group.close()
    if proc.returncode not in codes:
        message = err.decode(errors="replace").strip()[-500:] or f"exit {proc.returncode}"
        if argv[0] == "xdotool" and "Invalid key sequence" in message:  # a name X lacks
            raise protocol.bad_request(f"unknown key: {message.splitlines()[0]}")
        raise protocol.AgentError(500, "COMPUTER_USE_FAILED", f"{argv[0]} failed: {message}")
    return out


async def _bounded(proc: asyncio.subprocess.Process, stdin: bytes | None) -> tuple[bytes, bytes]:
    """Like ``communicate``, but at most HELPER_OUTPUT bytes of stdout (and 4 KiB of stderr)."""
    assert proc.stdout is not None and proc.stderr is not None
    if stdin is not None and proc.stdin is not None:
        proc.stdin.write(stdin)
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()

    async def read(stream: asyncio.StreamReader, limit: int) -> bytes:
        data = bytearray()
        while chunk := await stream.read(protocol.CHUNK):
            if len(data) + len(chunk) > limit:
                raise protocol.AgentError(500, "COMPUTER_USE_FAILED", "helper output too large")
            data += chunk
        return bytes(data)

    out, err = await asyncio.gather(read(proc.stdout, HELPER_OUTPUT), read(proc.stderr, 1 << 20))
    await proc.wait()
    return out, err[-4096:]
