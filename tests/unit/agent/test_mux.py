"""The multiplexed channel between server and agent: streams side by side, bounded
buffers, resets, and a peer that breaks the rules (the agent is untrusted)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from cove.agent import mux, protocol
from cove.agent.mux import Channel, Stream

CHUNK = 256 * 1024


async def _pair(opened: mux.Opened | None = None) -> tuple[Channel, Channel]:
    a, b = socket.socketpair()
    server = Channel(*await asyncio.open_unix_connection(sock=a))
    agent = Channel(*await asyncio.open_unix_connection(sock=b), opened=opened)
    return server, agent


async def _accepting_pair(accepted: asyncio.Queue[Stream]) -> tuple[Channel, Channel]:
    """A pair whose agent side accepts each stream (``accept``) and puts it in ``accepted``."""

    async def opened(stream: Stream, payload: bytes) -> None:
        stream.accept()
        await accepted.put(stream)

    return await _pair(opened)


@pytest.fixture
async def accepted() -> AsyncIterator[asyncio.Queue[Stream]]:
    """Where a test's agent side puts the streams it accepted."""
    yield asyncio.Queue()


async def test_a_slow_stream_holds_back_only_itself(accepted: asyncio.Queue[Stream]) -> None:
    async def opened(stream: Stream, payload: bytes) -> None:
        await accepted.put(stream)
        await asyncio.Event().wait()

    server, agent = await _pair(opened)
    slow, fast = server.open(), server.open()
    for s in (slow, fast):
        await s.send(protocol.JSON, b"{}")
    slow_agent, fast_agent = await accepted.get(), await accepted.get()
    # The agent floods the slow stream, which the server does not read: its sender
    # stops at the window, the other stream still flows.
    flood = asyncio.ensure_future(_send_many(slow_agent, 3 * mux.WINDOW // CHUNK))
    await asyncio.sleep(0.2)
    assert not flood.done()
    assert slow._buffered <= mux.WINDOW + mux.FRAME_COST + CHUNK  # (the window, one frame)
    await fast_agent.send(protocol.DATA, b"hello")
    assert await asyncio.wait_for(fast.receive(), 5) == (protocol.DATA, b"hello")
    # Reading the slow stream lets the rest through.
    got = 0
    while got < 3 * mux.WINDOW // CHUNK * CHUNK:
        kind, payload = await asyncio.wait_for(slow.receive(), 5)
        got += len(payload)
    await asyncio.wait_for(flood, 5)
    await server.close()
    await agent.close()


async def _send_many(stream: Stream, count: int) -> None:
    for _ in range(count):
        await stream.send(protocol.DATA, b"x" * CHUNK)


async def test_a_peer_that_ignores_the_window_loses_the_connection() -> None:
    a, b = socket.socketpair()
    server = Channel(*await asyncio.open_unix_connection(sock=a))
    stream = server.open()
    await stream.send(protocol.JSON, b"{}")
    # A lying agent: raw frames past the window, no credit asked.
    junk = protocol.frame(protocol.DATA, b"y" * (1024 * 1024), stream.id)
    writer = asyncio.ensure_future(asyncio.to_thread(_send_raw, b, junk * 20))
    await asyncio.wait_for(server.closed.wait(), 10)
    with pytest.raises(EOFError):
        while True:  # what arrived before the breach may be read, then the end
            await stream.receive()
    b.close()
    await asyncio.gather(writer, return_exceptions=True)


@pytest.mark.parametrize("kind", [protocol.STDOUT, protocol.ACCEPTED])
async def test_a_peer_that_floods_empty_frames_loses_the_connection(kind: bytes) -> None:
    """Empty frames cost the receiver memory too (a queued frame is ~100 bytes): a
    lying agent sending endless empty output (or accept) frames on a stream the
    server does not read breaks the window like one sending bytes."""
    a, b = socket.socketpair()
    server = Channel(*await asyncio.open_unix_connection(sock=a))
    stream = server.open()
    await stream.send(protocol.JSON, b"{}")
    junk = protocol.frame(kind, b"", stream.id) * (1024 * 1024)  # 1 Mi frames, 9 MiB
    writer = asyncio.ensure_future(asyncio.to_thread(_send_raw, b, junk))
    await asyncio.wait_for(server.closed.wait(), 20)
    assert len(stream._inbox) < 400_000
    b.close()
    await asyncio.gather(writer, return_exceptions=True)


def _send_raw(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


async def test_frames_of_unknown_streams_are_dropped_and_the_server_opens_no_stream() -> None:
    a, b = socket.socketpair()
    server = Channel(*await asyncio.open_unix_connection(sock=a))
    stream = server.open()
    b.sendall(protocol.frame(protocol.JSON, b'{"op": "x"}', 7)  # the agent opening a stream
              + protocol.frame(protocol.DATA, b"stray", 99)
              + protocol.frame(protocol.DATA, b"mine", stream.id))  # fmt: skip
    assert await asyncio.wait_for(stream.receive(), 5) == (protocol.DATA, b"mine")
    assert server.alive
    await server.close()
    b.close()


async def test_a_reset_ends_the_handlers_input_and_its_sends(
    accepted: asyncio.Queue[Stream],
) -> None:
    ended = asyncio.Event()

    async def opened(stream: Stream, payload: bytes) -> None:
        await accepted.put(stream)
        with pytest.raises(EOFError):
            await stream.receive()
        with pytest.raises(ConnectionError):
            await stream.send(protocol.DATA, b"late")
        ended.set()

    server, agent = await _pair(opened)
    stream = server.open()
    await stream.send(protocol.JSON, b"{}")
    await accepted.get()
    stream.reset()
    await asyncio.wait_for(ended.wait(), 5)
    assert server.alive and agent.alive  # other requests go on
    await server.close()
    await agent.close()


async def test_closing_the_connection_ends_every_stream(accepted: asyncio.Queue[Stream]) -> None:
    server, agent = await _pair()
    streams = [server.open() for _ in range(3)]
    await agent.close()
    for stream in streams:
        with pytest.raises(EOFError):
            await asyncio.wait_for(stream.receive(), 5)
    with pytest.raises(ConnectionError):
        server.open()
    await server.close()


async def test_an_accept_goes_with_the_next_frame_or_on_its_own(
    accepted: asyncio.Queue[Stream],
) -> None:
    """The agent's A frame comes first on every stream it serves: with its next
    frame, before it waits for the server's, or alone when it has nothing to say."""

    server, agent = await _accepting_pair(accepted)
    # A quick reply: A, then the reply.
    quick = server.open()
    await quick.send(protocol.JSON, b"{}")
    await (await accepted.get()).send(protocol.JSON, b'{"ok":true}')
    assert await asyncio.wait_for(quick.receive(), 5) == (protocol.ACCEPTED, b"")
    assert await asyncio.wait_for(quick.receive(), 5) == (protocol.JSON, b'{"ok":true}')
    # An agent that waits for the server's data: the server sees A first.
    upload = server.open()
    await upload.send(protocol.JSON, b"{}")
    taker = await accepted.get()
    reading = asyncio.ensure_future(taker.receive())
    assert await asyncio.wait_for(upload.receive(), 5) == (protocol.ACCEPTED, b"")
    await upload.send(protocol.DATA, b"x")
    assert await asyncio.wait_for(reading, 5) == (protocol.DATA, b"x")
    # An agent that works long and says nothing: A comes alone.
    silent = server.open()
    await silent.send(protocol.JSON, b"{}")
    await accepted.get()
    assert await asyncio.wait_for(silent.receive(), 5) == (protocol.ACCEPTED, b"")
    await server.close()
    await agent.close()


async def test_an_accept_is_not_lost_with_a_send_cancelled_while_the_connection_is_busy(
    accepted: asyncio.Queue[Stream],
) -> None:
    """A command's output frame that waits for the connection (other streams' writes
    draining) and is cancelled (its pump, once the command is over): the stream's
    reply still comes after its A. It did not: the A went with the cancelled frame,
    and the server failed the command (502, "expected the agent to accept")."""

    server, agent = await _accepting_pair(accepted)
    command = server.open()
    await command.send(protocol.JSON, b"{}")
    handler = await accepted.get()
    async with agent._write_lock:  # another stream's write, waiting for the connection
        agent._writers += 1
        output = asyncio.ensure_future(handler.send(protocol.STDOUT, b"hello"))
        await asyncio.sleep(0.05)
        output.cancel()
        agent._writers -= 1
    await handler.send(protocol.JSON, b'{"ok":true}')
    assert await asyncio.wait_for(command.receive(), 5) == (protocol.ACCEPTED, b"")
    assert await asyncio.wait_for(command.receive(), 5) == (protocol.JSON, b'{"ok":true}')
    await server.close()
    await agent.close()


async def test_a_tally_counts_the_streams_open_on_its_channels_until_each_ends(
    accepted: asyncio.Queue[Stream],
) -> None:
    """(An organization's count of toolbox requests: cove.core.toolbox.AgentLinks.)"""

    async def opened(stream: Stream, payload: bytes) -> None:
        await accepted.put(stream)
        await asyncio.Event().wait()

    tally, other = mux.Tally(), mux.Tally()
    (one, one_agent), (two, two_agent) = await _pair(opened), await _pair(opened)
    finished, reset = one.open(tally), one.open(tally)
    by_peer, left = two.open(tally), two.open(tally)
    uncounted, elsewhere = two.open(), two.open(other)
    assert (tally.open, other.open) == (4, 1)
    for stream in (finished, reset, by_peer, left, uncounted, elsewhere):
        await stream.send(protocol.JSON, b"{}")
    agents = {}
    for _ in range(6):
        stream = await asyncio.wait_for(accepted.get(), 5)
        agents[(stream.channel, stream.id)] = stream
    finished.finish()
    finished.finish()  # (twice: counted off once)
    reset.reset()
    assert tally.open == 2
    agents[(two_agent, by_peer.id)].reset()  # the agent ends it: its R frame arrives
    for _ in range(100):
        if tally.open == 1:
            break
        await asyncio.sleep(0.01)
    assert (tally.open, other.open) == (1, 1)
    await two.close()  # the connection ends: every stream on it is over
    assert (tally.open, other.open) == (0, 0)
    for channel in (one, one_agent, two_agent):
        await channel.close()


def _count_writes(channel: Channel) -> list[bytes]:
    """Each write ``channel`` makes to its connection, from now on."""
    writes: list[bytes] = []
    write = channel._writer.write

    def counted(data: bytes) -> None:
        writes.append(bytes(data))
        write(data)

    channel._writer.write = counted  # type: ignore[method-assign,assignment]
    return writes


async def test_held_output_goes_with_the_reply_in_one_write_in_order(
    accepted: asyncio.Queue[Stream],
) -> None:
    """A command's small output (``hold``) reaches the server with the stream's next
    frame, its reply: the A, the output in order and the reply in one write."""

    server, agent = await _accepting_pair(accepted)
    command = server.open()
    await command.send(protocol.JSON, b"{}")
    handler = await accepted.get()
    writes = _count_writes(agent)
    await handler.send(protocol.STDOUT, b"one ", hold=True)
    await handler.send(protocol.STDERR, b"two ", hold=True)
    await handler.send(protocol.STDOUT, b"three", hold=True)
    await handler.send(protocol.JSON, b'{"ok":true}')
    got = [await asyncio.wait_for(command.receive(), 5) for _ in range(5)]
    assert got == [(protocol.ACCEPTED, b""), (protocol.STDOUT, b"one "),
                   (protocol.STDERR, b"two "), (protocol.STDOUT, b"three"),
                   (protocol.JSON, b'{"ok":true}')]  # fmt: skip
    assert len(writes) == 1
    await server.close()
    await agent.close()


async def test_held_output_is_sent_within_the_delay_past_its_bound_and_at_the_end(
    accepted: asyncio.Queue[Stream],
) -> None:
    """Output held back is not kept: a command still running has it sent within
    ``ACCEPT_DELAY``; more than ``HOLD_MAX`` goes at once; a stream finished without
    a reply sends it before it ends."""

    server, agent = await _accepting_pair(accepted)
    running = server.open()
    await running.send(protocol.JSON, b"{}")
    handler = await accepted.get()
    await handler.send(protocol.STDOUT, b"early", hold=True)  # then nothing for a while
    assert await asyncio.wait_for(running.receive(), 5) == (protocol.ACCEPTED, b"")
    assert await asyncio.wait_for(running.receive(), 5) == (protocol.STDOUT, b"early")
    big = server.open()
    await big.send(protocol.JSON, b"{}")
    handler = await accepted.get()
    writes = _count_writes(agent)
    await handler.send(protocol.STDOUT, b"a" * (mux.HOLD_MAX - 10), hold=True)
    assert writes == []
    await handler.send(protocol.STDOUT, b"b" * 20, hold=True)  # past the bound: all now
    assert len(writes) == 1
    assert [await asyncio.wait_for(big.receive(), 5) for _ in range(3)] == [
        (protocol.ACCEPTED, b""), (protocol.STDOUT, b"a" * (mux.HOLD_MAX - 10)),
        (protocol.STDOUT, b"b" * 20)]  # fmt: skip
    quiet = server.open()
    await quiet.send(protocol.JSON, b"{}")
    handler = await accepted.get()
    await handler.send(protocol.STDOUT, b"last", hold=True)
    handler.finish()
    assert await asyncio.wait_for(quiet.receive(), 5) == (protocol.ACCEPTED, b"")
    assert await asyncio.wait_for(quiet.receive(), 5) == (protocol.STDOUT, b"last")
    await server.close()
    await agent.close()
