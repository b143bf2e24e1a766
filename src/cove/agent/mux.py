"""Many requests over one connection: the multiplexed channel between server and agent.

The server keeps one connection to each sandbox's agent and opens a *stream*
per request on it; streams run side by side. Every frame carries its stream's
id (see ``protocol.HEADER``); the server opens streams (their first frame is
the J request), either side may reset one (``X``: the agent's handler then reads
the end of its input and its sends fail, as on a hang-up), and a stream
ends with the agent's final reply.

Flow control, per stream and direction: a sender may have at most ``WINDOW``
bytes in flight that the receiver's consumer has not read yet; the receiver
grants more (``W`` with the byte count) as its consumer reads. A frame counts
its payload plus ``FRAME_COST`` (what a queued frame costs the receiver, also
an empty one); the one ``A`` frame of a stream is not counted. So a slow
consumer holds back only its own stream, never the connection, and what a
receiver buffers stays bounded (the window plus one frame). A peer that sends
past its window (or a second ``A``) breaks the protocol and loses the connection.

Standard library only: the agent runs it inside sandboxes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
from collections.abc import Awaitable, Callable

from . import protocol
from .protocol import ProtocolError

WINDOW = 1024 * 1024
# What a frame counts against the window besides its payload: the receiver's memory
# for a queued frame (its tuple and queue slot, ~64 bytes), so that a peer sending
# endless empty frames runs out of window like one sending bytes.
FRAME_COST = 64
# How long the agent may hold back a request's ``A`` frame, and a command's output
# (``send(..., hold=True)``), to send them together with the request's next frame (often
# its final reply): one write and one wakeup of the server instead of several.
ACCEPT_DELAY = 0.005
HOLD_MAX = 16 * 1024  # the most output held back per stream (payload bytes)
_GRANT = struct.Struct(">I")
_UNCOUNTED = frozenset({protocol.WINDOW_UPDATE, protocol.RESET, protocol.ACCEPTED})
Opened = Callable[["Stream", bytes], Awaitable[None]]


class Tally:
    """How many streams are open on a set of channels (the server's connections to
    one organization's sandboxes): each stream opened with it counts until its
    channel forgets it or closes."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = 0


class Stream:
    """One request's frames, both ways."""

    def __init__(self, channel: Channel, stream_id: int, tally: Tally | None = None) -> None:
        self.channel = channel
        self.id = stream_id
        self.tally = tally
        self._inbox: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._buffered = 0
        self._arrived = asyncio.Event()
        self._credit = WINDOW
        self._credited = asyncio.Event()
        self._credited.set()
        self._consumed = 0
        self.ended = False  # no frame will arrive any more (EOF, reset or done)
        self.reset_by_peer = False
        self._held: list[bytes] = []  # frames held back (see ``accept``, ``send``)
        self._held_size = 0
        self._flush_at: asyncio.TimerHandle | None = None
        self._accepted = False  # the peer's A frame arrived
        self._when_ended: Callable[[], None] | None = None

    def accept(self) -> None:
        """(The agent.) Tell the server the request is taken: with the stream's next
        frame, before it waits for one of the server's, or within ``ACCEPT_DELAY``,
        whichever comes first."""
        self._hold(protocol.frame(protocol.ACCEPTED, b"", self.id), 0)

    def _hold(self, data: bytes, size: int) -> None:
        self._held.append(data)
        self._held_size += size
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(ACCEPT_DELAY, self._flush)

    def _take_held(self) -> bytes:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        held, self._held, self._held_size = b"".join(self._held), [], 0
        return held

    def _flush(self) -> None:
        """Write the held-back frames now (no await: they stay ahead of any frame of
        the stream written after them)."""
        held = self._take_held()
        if held and not self.ended:
            self.channel.write_raw(held)

    async def send(self, kind: bytes, payload: bytes = b"", *, hold: bool = False) -> None:
        """Send one frame, waiting for the receiver's credit first. With ``hold``
        (a command's output, which the server reads whole or as it comes), a small
        frame may be held back as the ``A`` frame is (see :meth:`accept`), up to
        ``HOLD_MAX`` bytes.

        Raises:
            ConnectionError: the stream or its connection is gone.
        """
        if self.reset_by_peer:
            raise ConnectionResetError("the peer reset the stream")
        if kind not in _UNCOUNTED:
            while self._credit <= 0:
                if self.ended:
                    raise ConnectionResetError("the stream is over")
                self._credited.clear()
                await self._credited.wait()
            self._credit -= _cost(payload)
        if hold and self._held_size + len(payload) <= HOLD_MAX:
            if not self.channel.alive:
                raise ConnectionResetError("the channel is closed")
            self._hold(protocol.frame(kind, payload, self.id), len(payload))
            return
        await self.channel.write(kind, self.id, payload, before=self._take_held())

    async def receive(self) -> tuple[bytes, bytes]:
        """The next frame of the peer.

        Raises:
            EOFError: nothing more will come (the peer finished, reset or hung up).
        """
        self._flush()  # the server may wait for these before it sends more
        while not self._inbox:
            if self.ended:
                raise EOFError
            self._arrived.clear()
            await self._arrived.wait()
        kind, payload = self._inbox.popleft()
        if kind not in _UNCOUNTED:
            self._buffered -= _cost(payload)
            self._consumed += _cost(payload)
            if self._consumed >= WINDOW // 2:
                granted, self._consumed = self._consumed, 0
                with contextlib.suppress(ConnectionError):
                    await self.channel.write(protocol.WINDOW_UPDATE, self.id,
                                             _GRANT.pack(granted))  # fmt: skip
        return kind, payload

    async def ended_by_peer(self) -> None:
        """Return once the peer will send nothing more (frames may still be queued)."""
        while not self.ended:
            self._arrived.clear()
            await self._arrived.wait()

    def when_ended(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once (now, if it is over already) when no frame will arrive
        any more (see :meth:`ended_by_peer`); None forgets the one given before."""
        self._when_ended = callback
        if callback is not None and self.ended:
            self._when_ended = None
            callback()

    def reset(self) -> None:
        """Forget the stream now and tell the peer it is over (it stops its work)."""
        if self.channel.forget(self.id) and not self.reset_by_peer:
            self.channel.write_soon(protocol.RESET, self.id)
        self._end()

    def finish(self) -> None:
        """The request is complete: forget the stream without telling the peer (what
        it held back is sent first)."""
        self._flush()
        self.channel.forget(self.id)
        self._end()

    def _deliver(self, kind: bytes, payload: bytes) -> None:
        if kind == protocol.WINDOW_UPDATE:
            if len(payload) != _GRANT.size:
                raise ProtocolError("bad window update")
            self._credit += _GRANT.unpack(payload)[0]
            self._credited.set()
            return
        if kind == protocol.RESET:
            self.reset_by_peer = True
            self.channel.forget(self.id)
            self._end()  # the handler's next read ends (EOF) and its sends fail
            return
        if kind == protocol.ACCEPTED:
            if self._accepted:
                raise ProtocolError(f"stream {self.id} was accepted twice")
            self._accepted = True
        else:
            self._buffered += _cost(payload)
            if self._buffered > WINDOW + FRAME_COST + protocol.MAX_FRAME:
                raise ProtocolError(f"stream {self.id} sent past its window")
        self._inbox.append((kind, payload))
        self._arrived.set()

    def _end(self) -> None:
        self._take_held()  # (over: what was held back is dropped)
        self.ended = True
        self._arrived.set()
        self._credited.set()
        callback, self._when_ended = self._when_ended, None
        if callback is not None:
            callback()


class Channel:
    """One connection carrying many streams.

    Args:
        reader, writer: the connection.
        opened: (the agent's side) called with each stream the peer opens and
            its first frame's payload; the server's side opens streams itself.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        opened: Opened | None = None,
    ) -> None:  # fmt: skip
        self._reader = reader
        self._writer = writer
        self._opened = opened
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        self._write_lock = asyncio.Lock()
        self._writers = 0  # writes holding the lock or waiting for it
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        self._pump = asyncio.ensure_future(self._read_loop())

    @property
    def alive(self) -> bool:
        """Whether frames can still be sent (the connection's end may be known from a
        failed write before its reader saw it)."""
        return not self.closed.is_set() and not self._writer.is_closing()

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return len(self._streams)

    @property
    def busy(self) -> bool:
        """Whether a stream or a task of it is still going."""
        return bool(self._streams or self._tasks)

    def open(self, tally: Tally | None = None) -> Stream:
        """A new stream (the server's side), counted in ``tally`` while this channel
        knows it; its first frame must be the J request.

        Raises:
            ConnectionError: the connection is closed.
        """
        if not self.alive:
            raise ConnectionResetError("the channel is closed")
        stream = Stream(self, self._next_id, tally)
        self._streams[stream.id] = stream
        if tally is not None:
            tally.open += 1
        self._next_id += 2
        return stream

    def forget(self, stream_id: int) -> bool:
        """Stop routing frames to the stream; whether it was known."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return False
        if stream.tally is not None:
            stream.tally.open -= 1
        return True

    async def write(self, kind: bytes, stream_id: int, payload: bytes = b"", *,
                    before: bytes = b"") -> None:  # fmt: skip
        """Write one frame (after ``before``, frames of the stream held back). A write
        that must wait for the connection (other streams' writes draining) writes
        ``before`` at once: it may be cancelled while it waits (a command's output
        pump is, once the command is over), and the stream's next frame must still
        find them ahead of it. One that need not wait writes all in one."""
        if not self.alive:
            raise ConnectionResetError("the channel is closed")
        data = protocol.frame(kind, payload, stream_id)
        if before and self._writers:
            self.write_raw(before)
        elif before:  # (nobody holds the lock or waits for it: taken without a wait)
            data = before + data
        self._writers += 1
        try:
            async with self._write_lock:
                self._writer.write(data)
                await self._writer.drain()
        finally:
            self._writers -= 1

    def write_raw(self, frames: bytes) -> None:
        """Write small whole frames at once, without waiting for the connection to
        drain (frames are whole in each write, so it cannot split another one)."""
        if self.alive:
            self._writer.write(frames)

    def write_soon(self, kind: bytes, stream_id: int, payload: bytes = b"") -> None:
        """Write a frame from a task of its own (errors ignored: the connection's
        end is noticed by its reader)."""
        task = asyncio.ensure_future(self.write(kind, stream_id, payload))
        self._tasks.add(task)
        task.add_done_callback(_quietly_done(self._tasks))

    async def close(self) -> None:
        """Close the connection; every stream ends (its reader gets EOF)."""
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        self._shut()

    def deliver(self, kind: bytes, stream_id: int, payload: bytes) -> None:
        """Take a frame read from the connection (each frame, in order: the read loop's,
        or one read before the channel was made)."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream._deliver(kind, payload)
        elif kind == protocol.JSON and self._opened is not None and stream_id % 2:
            self._accept(stream_id, payload)
        # else: a frame of a stream already over (a reset crossed it): dropped

    async def _read_loop(self) -> None:
        try:
            while True:
                self.deliver(*await protocol.read_frame(self._reader))
        except (EOFError, ConnectionError, ProtocolError, asyncio.CancelledError):
            pass
        finally:
            self._shut()

    def _accept(self, stream_id: int, payload: bytes) -> None:
        assert self._opened is not None
        stream = Stream(self, stream_id)
        self._streams[stream_id] = stream
        task = asyncio.ensure_future(self._opened(stream, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shut(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for stream in list(self._streams.values()):
            self.forget(stream.id)  # (off its tally)
            stream._end()
        for task in list(self._tasks):
            task.cancel()
        self._writer.close()


def _cost(payload: bytes) -> int:
    """What a frame with ``payload`` counts against its stream's window."""
    return FRAME_COST + len(payload)


def _quietly_done(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a write to a closed connection is no news

    return done
