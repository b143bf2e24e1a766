"""The log of one image build (a sandbox's or a snapshot's): appended to by the
builder, followed by any number of readers (each gets everything from the start,
then what comes), on any API replica.

The log lives in the database (:class:`BuildLogStore`; on one host without one, in
memory), in chunks of at most :data:`CHUNK` bytes: what the builder writes waits in
a buffer of about that size, stored when it is full or :data:`FLUSH` seconds after
its first line. What the build's commands print is kept up to ``cap`` bytes: beyond
that it is counted, not stored, and a marker line says how much was left out. The
builder's own lines (steps, the outcome) are always kept.

A reader on the builder's replica is woken as each chunk is stored; one on another
replica looks every :data:`POLL` seconds (a build's log is read by a person or an
SDK's progress callback: a quarter of a second is soon enough, and it costs one
indexed query). A log whose builder is gone (its replica died) is ended by the
replica that finds it so (:meth:`BuildLogs.end`), with the reason: its readers end too.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

CAP = 16 * 1024 * 1024
CHUNK = 64 * 1024  # bytes per stored chunk (and the write buffer's size)
FLUSH = 0.1  # seconds a buffered line waits at most before it is stored
POLL = 0.25  # seconds between a reader's looks at a log written elsewhere
READ_CHUNKS = 16  # chunks read at once (1 MiB)


@dataclass(frozen=True)
class LogInfo:
    key: str
    replica: str  # the replica writing it
    worker: str | None  # the build sandbox it runs in (None: none yet)
    done: bool


class BuildLogStore(Protocol):
    """Where the logs live (the database: :class:`cove.store.build_logs.SqlBuildLogStore`)."""

    def create(self, key: str, replica: str) -> None:
        """Start log ``key`` empty (replacing one of that key), written by ``replica``."""

    def append(self, key: str, data: bytes) -> None:
        """Add a chunk after the log's last (nothing if the log is gone)."""

    def set_worker(self, key: str, worker: str | None) -> None: ...

    def finish(self, key: str) -> None: ...

    def info(self, key: str) -> LogInfo | None: ...

    def read(self, key: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` chunks after number ``after``, in order."""

    def unfinished(self) -> list[LogInfo]: ...

    def delete(self, key: str) -> None: ...


@dataclass
class _Log:
    info: LogInfo
    chunks: list[bytes] = field(default_factory=list)


class MemoryBuildLogStore:
    """The logs in this process's memory: one server without a database of its own
    (unit tests); bounded as the writers are."""

    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}

    def create(self, key: str, replica: str) -> None:
        self._logs[key] = _Log(LogInfo(key, replica, None, False))

    def append(self, key: str, data: bytes) -> None:
        if key in self._logs:
            self._logs[key].chunks.append(data)

    def set_worker(self, key: str, worker: str | None) -> None:
        if key in self._logs:
            i = self._logs[key].info
            self._logs[key].info = LogInfo(key, i.replica, worker, i.done)

    def finish(self, key: str) -> None:
        if key in self._logs:
            i = self._logs[key].info
            self._logs[key].info = LogInfo(key, i.replica, i.worker, True)

    def info(self, key: str) -> LogInfo | None:
        found = self._logs.get(key)
        return found.info if found else None

    def read(self, key: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        found = self._logs.get(key)
        chunks = found.chunks[after : after + limit] if found else []
        return list(enumerate(chunks, after + 1))

    def unfinished(self) -> list[LogInfo]:
        return [log.info for log in self._logs.values() if not log.info.done]

    def delete(self, key: str) -> None:
        self._logs.pop(key, None)


class BuildLog:
    """One log: written through the replica's :meth:`BuildLogs.start` (the builder's),
    read through any (:meth:`follow`)."""

    def __init__(self, logs: BuildLogs, key: str, *, writer: bool = False,
                 cap: int = CAP) -> None:  # fmt: skip
        self._logs = logs
        self.key = key
        self._cap = cap
        self._buffer = bytearray()
        self._printed = 0  # bytes of the commands' output kept
        self._omitted = 0
        self._done = not writer
        self._timer: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        """Whether this replica's writing of it ended (always, for a reader)."""
        return self._done

    def discarded(self) -> bool:
        """Whether the log was removed (its snapshot was deleted) while it was written
        (here or by another replica): its build should end."""
        return self._logs.store.info(self.key) is None

    def text(self) -> str:
        """Everything stored so far."""
        data = b"".join(d for _, d in self._logs.store.read(self.key, 0, 1 << 30))
        return data.decode(errors="replace")

    async def write(self, text: str) -> None:
        """A line of the builder's own (always kept)."""
        self.append(text)

    async def output(self, line: str) -> None:
        """A line a build command printed (dropped, and counted, beyond the cap)."""
        size = len(line.encode()) + 1  # as stored, with its newline
        if self._printed + size > self._cap:
            if not self._omitted:
                self.append(f"[... output beyond {self._cap} bytes is left out ...]")
            self._omitted += size
            return
        self._printed += size
        self.append(line)

    def append(self, text: str) -> None:
        """Add a line (also from synchronous code on the event loop); stored with the
        buffer's next flush."""
        if not text or self._done:
            return
        self._buffer += (text if text.endswith("\n") else text + "\n").encode()
        if len(self._buffer) >= CHUNK:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH, self._flush)

    def set_worker(self, worker: str | None) -> None:
        """Record the build sandbox the build runs in (removed if the build is orphaned)."""
        self._logs.store.set_worker(self.key, worker)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._buffer:
            data = bytes(self._buffer[:CHUNK])
            del self._buffer[:CHUNK]
            self._logs.store.append(self.key, data)
        self._logs.wake()

    async def close(self) -> None:
        if self._done:
            return
        if self._omitted:
            self.append(f"[... {self._omitted} bytes of build output were left out ...]")
        self._flush()
        self._done = True
        self._logs.store.finish(self.key)
        self._logs.closed(self)

    def discard(self) -> None:
        """Remove the log (its sandbox or snapshot is gone)."""
        self._logs.discard(self.key)

    async def follow(self, *, follow: bool = True) -> AsyncIterator[str]:
        """Everything so far, then (with ``follow``) what comes until the log ends."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        after = 0
        while True:
            info = self._logs.store.info(self.key)
            chunks = self._logs.store.read(self.key, after, READ_CHUNKS)
            for seq, data in chunks:
                after = seq
                text = decoder.decode(data)
                if text:
                    yield text
            if len(chunks) == READ_CHUNKS:
                continue
            if info is None or info.done or not follow:
                break
            await self._logs.changed()
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest


class BuildLogs:
    """The replica's view of every build log: those it writes, and any other's."""

    def __init__(self, store: BuildLogStore | None = None, *, replica: str = "local",
                 cap: int = CAP) -> None:  # fmt: skip
        self.store: BuildLogStore = store or MemoryBuildLogStore()
        self.replica = replica
        self._cap = cap
        self._writing: dict[str, BuildLog] = {}
        self._changed: asyncio.Event | None = None

    def start(self, key: str) -> BuildLog:
        """A new, empty log ``key`` this replica writes."""
        self.store.create(key, self.replica)
        out = self._writing[key] = BuildLog(self, key, writer=True, cap=self._cap)
        return out

    def get(self, key: str) -> BuildLog | None:
        """Log ``key`` (whoever writes it), or None: there is none."""
        found = self._writing.get(key)
        if found is not None:
            return found
        return BuildLog(self, key) if self.store.info(key) is not None else None

    def building(self, key: str) -> bool:
        """Whether this replica writes log ``key`` now (its build runs here)."""
        found = self._writing.get(key)
        return found is not None and not found.done

    def closed(self, log: BuildLog) -> None:
        """``log``, written here, is finished: its readers read it from the store."""
        if self._writing.get(log.key) is log:
            del self._writing[log.key]
        self.wake()

    def discard(self, key: str) -> None:
        found = self._writing.pop(key, None)
        if found is not None:
            found._done = True
        self.store.delete(key)
        self.wake()

    def end(self, key: str, reason: str) -> str | None:
        """End a log whose writer is gone, with ``reason``; returns its build sandbox
        (to remove), if any. Nothing for a log this replica writes or one finished."""
        info = self.store.info(key)
        if info is None or info.done or self.building(key):
            return None
        self.store.append(key, (reason.rstrip("\n") + "\n").encode()[:CHUNK])
        self.store.finish(key)
        self.wake()
        return info.worker

    def orphaned(self, alive: set[str]) -> list[LogInfo]:
        """The unfinished logs whose writer is no live replica."""
        return [i for i in self.store.unfinished()
                if i.replica not in alive and not self.building(i.key)]  # fmt: skip

    def wake(self) -> None:
        """Wake this replica's readers (a chunk was stored)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def changed(self) -> None:
        """Until a chunk is stored here, or :data:`POLL` seconds (one may be elsewhere)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), POLL)
