"""The agent protocol: length-prefixed frames, many requests over one connection.

A frame is ``kind`` (1 byte) + stream id (4 bytes, big endian) + payload length
(4 bytes, big endian) + payload::

    J  a JSON object            (requests, replies, events)
    O  stdout bytes             E  stderr bytes
    D  data bytes (file content, terminal I/O, stdin)
    Z  end of data (empty)
    A  accepted (empty): the agent's first frame of every request it serves, so
       the server knows that the real agent is alive and took the request; sent
       together with the request's next frame (say its reply) or within 5 ms
    W  window update (4-byte count): the receiver read that much of the stream
    X  reset (empty): the stream is over; the agent stops the request's work
    C  a chart artifact of ``code_run`` (the bytes of one artifact line after its
       marker, see ``artifacts``): untrusted JSON the server checks
    R  (only as a connection's first frame, stream 0) a relay: ``{"user": ...}``;
       the agent hands the connection to a relay process, which runs plain
       commands and answers them itself, in frames of its own (see ``relay``)

The server keeps one connection to each agent and opens a stream per request
(odd ids; see ``mux``): its first frame is a ``J`` request ``{"op": ..., ...}``;
what follows depends on the op (see ``spec/toolbox.json``). A request ends with
a ``J`` reply ``{"ok": true, ...}`` or ``{"ok": false, "status": int, "code":
str, "message": str}``.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

HEADER = struct.Struct(">cII")
MAX_FRAME = 16 * 1024 * 1024
JSON, STDOUT, STDERR, DATA, END, ACCEPTED = b"J", b"O", b"E", b"D", b"Z", b"A"
WINDOW_UPDATE, RESET, CHART, RELAY = b"W", b"X", b"C", b"R"
CHUNK = 256 * 1024
# How long the agent keeps a spare process no command took (see ``spare``); the
# server's keep-warm pings of pooled sandboxes come more often, so one always waits.
SPARE_SECONDS = 60.0


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


class AgentError(Exception):
    """A request the agent refused or could not carry out."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def reply(self) -> dict[str, Any]:
        return {"ok": False, "status": self.status, "code": self.code, "message": self.message}


def not_found(message: str, code: str = "NOT_FOUND") -> AgentError:
    return AgentError(404, code, message)


def bad_request(message: str, code: str = "BAD_REQUEST") -> AgentError:
    return AgentError(400, code, message)


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, int, bytes]:
    """The next (kind, stream id, payload); raises EOFError when the peer closed cleanly."""
    kind, stream, size = HEADER.unpack(await read_exact(reader, HEADER.size, "frame header",
                                                        eof=True))  # fmt: skip
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is too large")
    return kind, stream, await read_exact(reader, size, "frame")


async def read_exact(reader: asyncio.StreamReader, size: int, what: str, *,
                     eof: bool = False) -> bytes:  # fmt: skip
    """``size`` bytes of ``what``.

    Raises:
        EOFError: ``eof`` and the peer closed cleanly before the first byte.
        ProtocolError: the peer closed part way (``truncated <what>``).
    """
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        if eof and not exc.partial:
            raise EOFError from exc
        raise ProtocolError(f"truncated {what}") from exc


def decode(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # (nested past the parser's depth)
        raise ProtocolError("bad JSON frame") from exc
    if not isinstance(value, dict):
        raise ProtocolError("JSON frame is not an object")
    return value


def frame(kind: bytes, payload: bytes = b"", stream: int = 1) -> bytes:
    return HEADER.pack(kind, stream, len(payload)) + payload


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def json_frame(message: dict[str, Any], stream: int = 1) -> bytes:
    return frame(JSON, encode(message), stream)
