"""What a command printed before it exited reaches the server whole, even when the
connection to the server is slow; what processes it left behind print is read for
``DRAIN_SECONDS`` only."""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cove.agent import process, protocol, users
from cove.agent.agent import Request


class SlowRequest(Request):
    """A request whose frames take ``delay`` seconds each to leave (a connection busy
    with other requests' data)."""

    def __init__(self, delay: float) -> None:
        super().__init__({}, None)  # type: ignore[arg-type]
        self.delay = delay
        self.frames: list[tuple[bytes, bytes]] = []
        self.over = asyncio.Event()

    async def send(self, kind: bytes, payload: bytes = b"", *, hold: bool = False) -> None:
        await asyncio.sleep(self.delay)
        self.frames.append((kind, payload))

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send(protocol.JSON, protocol.encode(message))

    async def hung_up(self) -> None:
        await self.over.wait()

    def output(self) -> bytes:
        return b"".join(p for k, p in self.frames if k == protocol.STDOUT)


async def _run(request: SlowRequest, command: str, limit: int | None = None) -> int:
    try:
        return await process.run_streaming(
            request, ["/bin/sh", "-c", command], user=users.lookup(getpass.getuser()), cwd=None,
            env=None,
            timeout=30, merge=True, limit=limit)  # fmt: skip
    finally:
        request.over.set()


@pytest.mark.parametrize("limit", [None, 4 * 1024 * 1024])
async def test_output_printed_before_the_exit_arrives_whole_over_a_slow_connection(
    limit: int | None,
) -> None:
    """300 KB printed, then the command exits with most of it still to send, each frame
    taking 0.3 s: all of it arrives. (It was cut off DRAIN_SECONDS after the exit.)"""
    request = SlowRequest(0.3)
    code = await _run(request, "head -c 300000 /dev/zero | tr '\\0' x", limit)
    assert code == 0
    assert request.output() == b"x" * 300_000


async def test_a_background_process_printing_for_ever_does_not_hold_the_answer(
    tmp_path: Path,
) -> None:
    request = SlowRequest(0.0)
    started = time.monotonic()
    pid = tmp_path / "pid"
    try:
        code = await _run(request, f"(while :; do echo bg; sleep 0.01; done) & echo $! > {pid}; "
                                   "echo done")  # fmt: skip
        assert code == 0
        assert b"done\n" in request.output()
        assert time.monotonic() - started < 10  # (DRAIN_SECONDS after the exit, not for ever)
    finally:
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGKILL)
        assert await _until(lambda: not process._discarded)  # (its pipe closed: dropped)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _until(check: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_background_process_printing_after_the_answer_runs_on_and_is_not_kept(
    tmp_path: Path,
) -> None:
    """What a process left behind prints once the drain is over is read and dropped:
    3 MB after the answer (more than the pipe and any buffer hold) neither blocks it
    nor breaks it, and once it ends the agent holds nothing of it (no descriptor)."""
    marker = tmp_path / "done"
    before, discarded = _open_fds(), len(process._discarded)
    request = SlowRequest(0.0)
    code = await _run(request, f"(sleep 0.5; head -c 3000000 /dev/zero && echo ok > {marker}) &")
    assert code == 0
    assert request.output() == b""
    assert await _until(marker.exists), "the background process was blocked or broken"
    assert await _until(lambda: _open_fds() == before), (before, _open_fds())
    assert len(process._discarded) == discarded


async def test_past_the_cap_a_left_behind_pipe_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``DISCARDED_MAX`` pipes read and dropped at once, the next is closed: a
    process left behind then writes to a closed pipe (the agent keeps no descriptor)."""
    monkeypatch.setattr(process, "DISCARDED_MAX", 0)
    marker = tmp_path / "said"
    before = _open_fds()
    script = f"(trap '' PIPE; sleep 0.5; echo x || echo broken > {marker}) &"
    assert await _run(SlowRequest(0.0), script) == 0
    assert await _until(lambda: _open_fds() == before)
    assert await _until(marker.exists)
    assert marker.read_text() == "broken\n"


async def test_a_read_cancelled_as_its_pipe_becomes_readable_leaves_no_error() -> None:
    """A pump cancelled in the very turn of the loop its pipe became readable in (the
    drain's end): the reader's callback finds the read's future cancelled, and says
    nothing (it raised InvalidStateError into the loop's error log)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    read_end, write_end = os.pipe()
    pipe = process.Pipe(read_end)
    try:
        reading = asyncio.ensure_future(pipe.read(10))
        await asyncio.sleep(0)  # (it waits on the loop: the pipe is empty)
        os.write(write_end, b"x")
        loop.call_soon(reading.cancel)  # (runs before the reader's callback, same turn)
        await asyncio.sleep(0.05)
        assert reading.cancelled()
        assert errors == []
    finally:
        loop.set_exception_handler(None)
        pipe.close()
        os.close(write_end)
