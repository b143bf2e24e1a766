"""The server's side of a relay (cove.core.relay) against a relay that misbehaves:
what a relay sends is the sandbox's, as untrusted as what its agent sends."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import pytest

from cove.agent import protocol
from cove.agent.protocol import AgentError, ProtocolError
from cove.core import relay
from cove.core.agent_types import Exited, Omitted, Output

FRAME = struct.Struct(">cI")


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


class FakeRelay:
    """The relay's end of a connection: what it receives, and frames it sends."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair()
        self._theirs = theirs

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(sock=self._theirs)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def received(self) -> bytes:
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1 << 20)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        self.sock.close()


async def ready(fake: FakeRelay) -> relay.RelayConnection:
    fake.send(frame(b"R"))
    made = await relay.open_relay(fake.connect, None)
    assert made is not None
    return made


async def events(fake: FakeRelay, answer: bytes, limit: int | None = 100) -> list[object]:
    made = await ready(fake)
    fake.send(answer)
    order = relay.order("true", None, {}, None, limit)
    assert order is not None
    stream = await relay.run(made, order, limit)
    assert stream is not None
    return [event async for event in stream]


async def test_a_command_s_output_and_exit_come_as_events() -> None:
    fake = FakeRelay()
    got = await events(fake, frame(b"O", b"hello ") + frame(b"M", (7).to_bytes(8, "big"))
                       + frame(b"O", b"end") + frame(b"X", (3).to_bytes(4, "big")))
    assert got == [Output("stdout", b"hello "), Omitted(7), Output("stdout", b"end"), Exited(3)]
    fake.close()


async def test_the_order_carries_the_command_its_directory_env_timeout_and_limit() -> None:
    fake = FakeRelay()
    made = await ready(fake)
    fake.send(frame(b"X", (0).to_bytes(4, "big")))
    order = relay.order("echo $A", "/tmp", {"A": "b"}, 1.5, 64)
    assert order is not None
    stream = await relay.run(made, order, 64)
    assert stream is not None
    assert [e async for e in stream] == [Exited(0)]
    sent = fake.received()
    kind, stream, size = protocol.HEADER.unpack(sent[:protocol.HEADER.size])
    assert (kind, stream) == (protocol.RELAY, 0)  # the hello the agent hands the relay on
    assert json.loads(sent[protocol.HEADER.size:][:size]) == {"user": None}
    sent = sent[protocol.HEADER.size + size:]
    body = sent[4:]
    assert struct.unpack(">I", sent[:4])[0] == len(body)
    assert body.split(b"\0") == [b"/tmp", b"1500", b"64", b"1", b"A=b", b"echo $A", b""]
    fake.close()


async def test_a_declined_order_goes_to_the_agent() -> None:
    fake = FakeRelay()
    made = await ready(fake)
    fake.send(frame(b"N"))
    order = relay.order("true", None, {}, None, 100)
    assert order is not None
    assert await relay.run(made, order, 100) is None
    fake.close()


@pytest.mark.parametrize("answer, error", [
    (frame(b"O", b"x" * 101), ProtocolError),  # past the order's limit
    (FRAME.pack(b"O", relay.CHUNK + 1), ProtocolError),  # a frame larger than a relay sends
    (FRAME.pack(b"O", 1 << 31), ProtocolError),  # (whose size alone would make the server wait)
    (frame(b"M", b"\0" * 9), ProtocolError),
    (frame(b"X", b"\0" * 3), ProtocolError),
    (frame(b"Q"), ProtocolError),  # no such frame
    (frame(b"R"), ProtocolError),  # not during a command
    (frame(b"O", b"half") + b"O\0\0", ProtocolError),  # cut off
    (frame(b"O", b"before the end"), ConnectionError),  # no exit: the relay went away
])  # fmt: skip
async def test_a_relay_that_breaks_its_protocol_fails_the_command(
        answer: bytes, error: type[Exception]) -> None:  # fmt: skip
    fake = FakeRelay()
    made = await ready(fake)
    fake.send(answer)
    fake.sock.shutdown(socket.SHUT_WR)
    order = relay.order("true", None, {}, None, 100)
    assert order is not None
    with pytest.raises(error):
        stream = await relay.run(made, order, 100)
        assert stream is not None
        async for _ in stream:
            pass
    assert not made.usable or made.writer.is_closing()  # never taken back for another
    fake.close()


@pytest.mark.parametrize("answer, status", [(frame(b"T"), 408),
                                            (frame(b"F", (2).to_bytes(4, "big")), 500)])
async def test_a_timeout_and_a_failed_start_keep_the_relay_for_the_next_command(
        answer: bytes, status: int) -> None:  # fmt: skip
    fake = FakeRelay()
    made = await ready(fake)
    fake.send(answer)
    order = relay.order("sleep 9", None, {}, 0.01, 100)
    assert order is not None
    stream = await relay.run(made, order, 100)
    assert stream is not None
    with pytest.raises(AgentError) as caught:
        async for _ in stream:
            pass
    assert caught.value.status == status
    assert made.clean and made.usable
    fake.close()


async def test_a_relay_gone_before_the_order_did_not_take_it() -> None:
    """A relay that declined and exited while it waited (the agent let it go, its idle
    time passed): the order goes to the agent."""
    fake = FakeRelay()
    made = await ready(fake)
    fake.send(frame(b"N"))
    fake.close()
    await asyncio.sleep(0.01)
    order = relay.order("true", None, {}, None, 100)
    assert order is not None
    assert await relay.run(made, order, 100) is None


async def test_a_relay_that_ends_before_its_answer_is_an_error_not_a_retry() -> None:
    """The command may have run: it is not sent to the agent again."""
    fake = FakeRelay()
    made = await ready(fake)
    fake.sock.shutdown(socket.SHUT_WR)
    order = relay.order("true", None, {}, None, 100)
    assert order is not None
    with pytest.raises(ConnectionError):
        await relay.run(made, order, 100)
    fake.close()


async def test_a_relay_that_never_says_ready_is_not_made() -> None:
    fake = FakeRelay()
    fake.send(frame(b"X", b"\0\0\0\0"))
    assert await relay.open_relay(fake.connect, None) is None
    fake.close()
    fake = FakeRelay()
    fake.close()  # the agent makes none (no spares on this tier): it closes the connection
    assert await relay.open_relay(fake.connect, None) is None


def test_commands_a_relay_cannot_take_go_to_the_agent() -> None:
    assert relay.order("a\0b", None, {}, None, 10) is None
    assert relay.order("true", None, {"A=B": "c"}, None, 10) is None
    assert relay.order("true", None, {"": "c"}, None, 10) is None
    assert relay.order("true", "/t\0mp", {}, None, 10) is None
    assert relay.order("x" * (relay.ORDER_MAX + 1), None, {}, None, 10) is None
    assert relay.order("true", None, {"A": "b"}, None, 10) is not None


async def test_a_ready_relay_is_kept_when_the_organization_is_at_its_cap() -> None:
    """A command refused by a cap goes to the agent (which says why), and the sandbox's
    ready relay stays for its next command: no new one is made."""
    from cove.core.toolbox import AgentLinks

    fakes = {"a": FakeRelay(), "b": FakeRelay()}
    connects: list[str] = []

    class Runner:
        async def open_agent(self, sandbox_id: str) -> object:
            connects.append(sandbox_id)
            return await fakes[sandbox_id].connect()

    links = AgentLinks(Runner(), max_owner_streams=1)  # type: ignore[arg-type]
    order = relay.order("true", None, {}, None, 100)
    assert order is not None
    for sandbox_id, fake in fakes.items():
        fake.send(frame(b"R"))
        assert await links.relayed(sandbox_id, "org", None, order, 100) is None  # (none)
        await asyncio.sleep(0.02)
        assert not connects.count(sandbox_id)  # (none made beside the agent's command)
        links.prepare_relay(sandbox_id, None)  # (after it)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if connects.count(sandbox_id) and links._relays[sandbox_id]._ready is not None:
                break
    fakes["a"].send(frame(b"O", b"hi"))
    running = await links.relayed("a", "org", None, order, 100)  # the org's one request
    assert running is not None
    assert await links.relayed("b", "org", None, order, 100) is None  # over the cap
    fakes["a"].send(frame(b"X", b"\0\0\0\0"))
    assert [event async for event in running] == [Output("stdout", b"hi"), Exited(0)]
    fakes["b"].send(frame(b"O", b"b") + frame(b"X", b"\0\0\0\0"))
    again = await links.relayed("b", "org", None, order, 100)
    assert again is not None
    assert [event async for event in again] == [Output("stdout", b"b"), Exited(0)]
    assert connects.count("b") == 1
    await links.close()
    for fake in fakes.values():
        fake.close()
