"""The background loops' one helper: a failing step is logged and tried again, the
loop lives on until cancelled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cove.core.periodic import every


async def _run_until(task_done: asyncio.Event, loop: asyncio.Task[object]) -> None:
    try:
        await asyncio.wait_for(task_done.wait(), 5)
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


async def test_a_failing_step_is_logged_and_the_loop_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    calls, errors, done = [], [], asyncio.Event()

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("the database is away")
        if len(calls) == 3:
            done.set()

    with caplog.at_level(logging.ERROR, logger="cove.core.periodic"):
        loop = asyncio.create_task(every(0.001, step, "writing stamps",
                                         on_error=lambda: errors.append(1)))  # fmt: skip
        await _run_until(done, loop)
    assert len(calls) >= 3 and errors == [1]
    assert [r.getMessage() for r in caplog.records] == ["writing stamps failed"]
    assert "the database is away" in (caplog.records[0].exc_text or "")


async def test_plain_steps_and_a_pause_first() -> None:
    seen: list[float] = []
    done = asyncio.Event()
    loop_time = asyncio.get_running_loop().time
    started = loop_time()

    def step() -> None:  # a plain function
        seen.append(loop_time() - started)
        done.set()

    await _run_until(done, asyncio.create_task(every(0.05, step, "x", wait_first=True)))
    assert seen and seen[0] >= 0.04  # paused first (not a timing bound: a floor)
