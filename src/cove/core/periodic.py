"""The server's background loops: one step every so many seconds until cancelled.

A step that fails is logged and tried again at the next tick; the loop itself
outlives any one failure (a database away for a moment, a runner that does not
answer), so a keeper, a sampler or a writer never dies silently.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

log = logging.getLogger(__name__)


async def every(seconds: float, step: Callable[[], Awaitable[object] | object], what: str, *,
                wait_first: bool = False,
                on_error: Callable[[], object] | None = None) -> NoReturn:  # fmt: skip
    """Run ``step`` (a plain or an async function) every ``seconds`` until cancelled.

    Args:
        seconds: the pause between steps.
        what: what the step does, for the log line of a failure ("sampling metrics").
        wait_first: pause before the first step rather than after it.
        on_error: called after a failure is logged (e.g. to give up a lease held).
    """
    if wait_first:
        await asyncio.sleep(seconds)
    while True:
        try:
            done = step()
            if inspect.isawaitable(done):
                await done
        except Exception:  # noqa: BLE001 - the loop must outlive any one failure
            log.exception("%s failed", what)
            if on_error is not None:
                on_error()
        await asyncio.sleep(seconds)
