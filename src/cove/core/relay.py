"""The server's side of relays: ``exec`` with no agent on its way (see
``cove.agent.relay`` for what a relay is, init.c for its frames).

The server keeps a relay ready for each sandbox it ran a command in
(:class:`RelaySlot`): a connection to the agent's socket that the agent handed to a
relay, which said it is ready. A plain ``exec`` takes it and sends its order; the
relay answers with the command's output and exit, and is then ready for the next
command (one at a time: a command while the relay runs another goes to the agent,
and a relay is made for the next). Or it answers ``N``, having taken no order (what
the agent looked up for it changed, the agent let it go, or it waited idle too
long), and exits: the command then goes to the agent as any other, since nothing
ran, and a new relay is made.

What comes from a relay is as untrusted as what comes from the agent: every frame's
size is bounded by its kind, the output by the limit the order set, and anything
else is a protocol error (a 502, as the agent's own).
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from cove.agent import protocol
from cove.agent.protocol import AgentError, ProtocolError
from cove.core.agent_types import Exited, Omitted, Output, ProcessEvent
from cove.core.ports import AgentConnection

READY_SECONDS = 10.0  # a relay says it is ready within this (its cgroup joins), or is let go
RETRY_SECONDS = 5.0  # after a relay could not be made (no relays here, user databases just changed)
ORDER_MAX = 1 << 20  # (init.c's RELAY_ORDER_MAX): larger commands go to the agent
CHUNK = 65536  # (init.c's RELAY_CHUNK): the largest output frame
_FRAME = struct.Struct(">cI")
_SIZE = struct.Struct(">I")
# Each kind's payload size: exactly, or (None) at most CHUNK.
_SIZES: dict[bytes, int | None] = {b"R": 0, b"N": 0, b"O": None, b"M": 8, b"X": 4, b"T": 0,
                                   b"F": 4}  # fmt: skip


@dataclass
class RelayConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    user: str | None
    clean: bool = True  # its last command was answered whole: it can take another

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


def order(command: str, cwd: str | None, env: dict[str, str], timeout: float | None,
          limit: int | None) -> bytes | None:  # fmt: skip
    """The relay's order (see init.c), or None when a relay cannot take the command
    (a NUL byte or a variable name the agent refuses: its error comes from the agent;
    an order larger than a relay reads)."""
    variables = [f"{name}={value}" for name, value in env.items()]
    timeout_ms = max(1, round(timeout * 1000)) if timeout and timeout > 0 else 0
    fields = [cwd or "", str(timeout_ms), str(limit or 0), str(len(variables)), *variables,
              command]  # fmt: skip
    if any(not name or "=" in name for name in env) or any("\0" in f for f in fields):
        return None
    body = "".join(field + "\0" for field in fields).encode("utf-8", "surrogateescape")
    if len(body) > ORDER_MAX:
        return None
    return _SIZE.pack(len(body)) + body


async def open_relay(connect: Callable[[], Awaitable[AgentConnection]],
                     user: str | None) -> RelayConnection | None:  # fmt: skip
    """A new relay for ``user``'s commands, ready; None when the agent makes none."""
    reader, writer = await connect()
    payload = protocol.encode({"user": user})
    try:
        writer.write(protocol.HEADER.pack(protocol.RELAY, 0, len(payload)) + payload)
        async with asyncio.timeout(READY_SECONDS):
            kind, _body = await _frame(reader)
        if kind != b"R":
            raise ProtocolError(f"a relay's first frame was {kind!r}")
    except (EOFError, ConnectionError, ProtocolError, TimeoutError):
        writer.close()
        return None
    return RelayConnection(reader, writer, user)


async def run(relay: RelayConnection, order: bytes,
              limit: int | None) -> AsyncGenerator[ProcessEvent, None] | None:  # fmt: skip
    """Send ``order`` to the relay: the command's events (see ``AgentClient._process``),
    or None when the relay did not take it (nothing ran).

    Raises (also from the events):
        AgentError: the command timed out (408), or never started (500).
        ProtocolError, ConnectionError: the relay broke its protocol or went away.
    """
    try:
        relay.writer.write(order)
        first = await _frame(relay.reader)
    except (BrokenPipeError, ConnectionResetError):  # it had gone (having said N, say):
        relay.close()  # the order never reached it, or it left without reading it
        return None
    except EOFError:
        relay.close()
        raise ConnectionError("the relay ended without an answer") from None
    except BaseException:
        relay.close()
        raise
    if first[0] == b"N":
        relay.close()
        return None
    return _events(relay, limit, first)


async def _events(relay: RelayConnection, limit: int | None,
                  first: tuple[bytes, bytes]) -> AsyncGenerator[ProcessEvent, None]:  # fmt: skip
    sent = 0
    kind, body = first
    relay.clean = False
    try:
        while True:
            if kind == b"O":
                sent += len(body)
                if limit is not None and sent > limit:
                    raise ProtocolError("a relay sent more output than its limit")
                yield Output("stdout", body)
            elif kind == b"M":
                yield Omitted(int.from_bytes(body, "big"))
            elif kind == b"X":
                relay.clean = True
                yield Exited(int.from_bytes(body, "big", signed=True))
                return
            elif kind == b"T":
                relay.clean = True
                raise AgentError(408, "PROCESS_EXECUTION_TIMEOUT", "command execution timeout")
            elif kind == b"F":
                relay.clean = True
                code = int.from_bytes(body, "big") or errno.EIO
                raise AgentError(500, "INTERNAL_ERROR", repr(OSError(code, os.strerror(code))))
            else:
                raise ProtocolError(f"a relay sent a {kind!r} frame during a command")
            try:
                kind, body = await _frame(relay.reader)
            except EOFError:
                raise ConnectionError("the relay ended without the command's exit") from None
    finally:
        if not relay.clean:  # (a command still running is killed: the relay sees the hang-up)
            relay.close()


async def _frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The next frame; EOFError at a clean end before one."""
    kind, size = _FRAME.unpack(await protocol.read_exact(reader, _FRAME.size, "relay frame",
                                                         eof=True))  # fmt: skip
    if kind not in _SIZES:
        raise ProtocolError(f"unknown relay frame {kind!r}")
    expected = _SIZES[kind]
    if (size > CHUNK) if expected is None else (size != expected):
        raise ProtocolError(f"a relay's {kind!r} frame of {size} bytes")
    return kind, await protocol.read_exact(reader, size, "relay frame")


class RelaySlot:
    """One sandbox's relay-in-waiting, made again after each one taken."""

    def __init__(self, connect: Callable[[], Awaitable[AgentConnection]]) -> None:
        self._connect = connect
        self._ready: RelayConnection | None = None
        self._making: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self.busy = 0  # relays of this sandbox running a command now

    def take(self, user: str | None) -> RelayConnection | None:
        """The ready relay for ``user``'s commands, or None (then the agent runs the
        command, and :meth:`refill` after it makes one for the next)."""
        relay, self._ready = self._ready, None
        if relay is not None and (relay.user != user or not relay.usable):
            relay.close()
            relay = None
        return relay

    def give_back(self, relay: RelayConnection) -> None:
        """A relay whose command was answered: ready for the next (or closed, when
        one is ready already or it cannot take one)."""
        if self._ready is None and relay.clean and relay.usable:
            self._ready = relay
        else:
            relay.close()
            self.refill(relay.user)

    def refill(self, user: str | None) -> None:
        """Make a relay for the next command, unless one is ready or being made."""
        loop = asyncio.get_running_loop()
        if self._ready is None and self._making is None and loop.time() >= self._retry_at:
            self._making = asyncio.ensure_future(self._make(user))

    async def _make(self, user: str | None) -> None:
        try:
            relay = await open_relay(self._connect, user)
        except Exception:  # noqa: BLE001 - (Unavailable, Busy, OSError): the agent's way
            relay = None
        finally:
            self._making = None
        if relay is None:
            self._retry_at = asyncio.get_running_loop().time() + RETRY_SECONDS
            return
        if self._ready is not None:
            self._ready.close()
        self._ready = relay

    def close(self) -> None:
        if self._making is not None:
            self._making.cancel()
            self._making = None
        if self._ready is not None:
            self._ready.close()
            self._ready = None

