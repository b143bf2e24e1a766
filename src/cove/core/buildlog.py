"""The log of one sandbox's image build: appended to by the builder, followed by
any number of readers (each gets everything from the start, then what comes).

The log lives in a file (``<data dir>/build-logs/<sandbox id>.log``), not in the
server's memory, and what the build's commands print is kept up to ``cap``
bytes: beyond that it is counted, not stored, and a marker line says how much
was left out. The builder's own lines (steps, the outcome) are always kept.
"""

from __future__ import annotations

import asyncio
import codecs
import os
from collections.abc import AsyncIterator
from pathlib import Path

CAP = 16 * 1024 * 1024
READ_CHUNK = 64 * 1024


class BuildLog:
    def __init__(self, path: Path, cap: int = CAP) -> None:
        self.path = path
        self._cap = cap
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._size = 0  # bytes in the file
        self._printed = 0  # bytes of the commands' output kept
        self._omitted = 0
        self._done = False
        self._changed = asyncio.Condition()
        self._wakers: set[asyncio.Task[None]] = set()

    @property
    def done(self) -> bool:
        return self._done

    def text(self) -> str:
        """Everything logged so far."""
        return self.path.read_bytes().decode(errors="replace")

    async def write(self, text: str) -> None:
        """A line of the builder's own (always kept)."""
        await self._append(text)

    async def output(self, line: str) -> None:
        """A line a build command printed (dropped, and counted, beyond the cap)."""
        size = len(line.encode())
        if self._printed + size > self._cap:
            if not self._omitted:
                await self._append(f"[... output beyond {self._cap} bytes is left out ...]")
            self._omitted += size + 1
            return
        self._printed += size
        await self._append(line)

    async def _append(self, text: str) -> None:
        if not text or self._done:
            return
        data = (text if text.endswith("\n") else text + "\n").encode()
        async with self._changed:
            os.write(self._fd, data)
            self._size += len(data)
            self._changed.notify_all()

    def append(self, text: str) -> None:
        """Add ``text`` at once (from synchronous code on the event loop); readers are
        woken up soon after."""
        if not text or self._done:
            return
        data = (text if text.endswith("\n") else text + "\n").encode()
        os.write(self._fd, data)
        self._size += len(data)
        task = asyncio.get_running_loop().create_task(self._wake())
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def close(self) -> None:
        if self._omitted:
            await self._append(f"[... {self._omitted} bytes of build output were left out ...]")
        async with self._changed:
            if not self._done:
                self._done = True
                os.close(self._fd)
            self._changed.notify_all()

    def discard(self) -> None:
        """Remove the log's file (the sandbox is gone)."""
        if not self._done:
            self._done = True
            os.close(self._fd)
        self.path.unlink(missing_ok=True)

    async def follow(self, *, follow: bool = True) -> AsyncIterator[str]:
        """Everything so far, then (with ``follow``) what comes until the log closes."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sent = 0
        try:
            while True:
                async with self._changed:
                    if follow and sent == self._size and not self._done:
                        await self._changed.wait()
                    size, finished = self._size, self._done or not follow
                while sent < size:
                    chunk = os.pread(fd, min(READ_CHUNK, size - sent), sent)
                    if not chunk:
                        return
                    sent += len(chunk)
                    yield decoder.decode(chunk)
                if finished:
                    return
        finally:
            os.close(fd)
