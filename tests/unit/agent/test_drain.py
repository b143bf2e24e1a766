"""What a command printed before it exited reaches the server whole, even when the
connection to the server is slow; what processes it left behind print is read for
``DRAIN_SECONDS`` only."""

from __future__ import annotations

import asyncio
import getpass
import time
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

    async def send(self, kind: bytes, payload: bytes = b"") -> None:
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


async def test_a_background_process_printing_for_ever_does_not_hold_the_answer() -> None:
    request = SlowRequest(0.0)
    started = time.monotonic()
    code = await _run(request, "(while :; do echo bg; sleep 0.01; done) & echo done")
    assert code == 0
    assert b"done\n" in request.output()
    assert time.monotonic() - started < 10  # (DRAIN_SECONDS after the exit, not for ever)
