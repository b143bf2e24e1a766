"""The log of one sandbox's image build: appended to by the builder, followed by
any number of readers (each gets everything from the start, then what comes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


class BuildLog:
    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._done = False
        self._changed = asyncio.Condition()
        self._wakers: set[asyncio.Task[None]] = set()

    @property
    def done(self) -> bool:
        return self._done

    def text(self) -> str:
        return "".join(self._chunks)

    async def write(self, text: str) -> None:
        if not text:
            return
        async with self._changed:
            self._chunks.append(text if text.endswith("\n") else text + "\n")
            self._changed.notify_all()

    def append(self, text: str) -> None:
        """Add ``text`` at once (from synchronous code on the event loop); readers are
        woken up soon after."""
        if not text:
            return
        self._chunks.append(text if text.endswith("\n") else text + "\n")
        task = asyncio.get_running_loop().create_task(self._wake())
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._done = True
            self._changed.notify_all()

    async def follow(self, *, follow: bool = True) -> AsyncIterator[str]:
        """Every chunk so far, then (with ``follow``) new ones until the log closes."""
        sent = 0
        while True:
            async with self._changed:
                if follow and sent == len(self._chunks) and not self._done:
                    await self._changed.wait()
                new, sent = self._chunks[sent:], len(self._chunks)
                finished = self._done or not follow
            for chunk in new:
                yield chunk
            if finished and sent == len(self._chunks):
                return
