"""A command's output as the API returns it in one piece: bounded, whatever it printed.

``execute``, ``code-run`` and a session command's logs answer with the whole
output in one JSON string (Daytona's shape). Cove keeps at most ``limit`` bytes
of it (``COVE_OUTPUT_LIMIT``): the first half and the newest half, with a marker
line in between that says how many bytes were left out. The agent already clips
on its side (so a 2 GiB print never crosses the channel); the server clips again
because the agent's words are untrusted.
"""

from __future__ import annotations

from collections import deque

DEFAULT_LIMIT = 4 * 1024 * 1024
# Small chunks are joined into pieces of up to this size (and a quarter of the kept
# tail) in the tail: an object per chunk (~40 bytes) for output in one- or two-byte
# frames of a lying agent would be ~20 times the bytes kept.
PIECE = 64 * 1024


def marker(omitted: int) -> bytes:
    """The line that stands for ``omitted`` bytes left out of the middle."""
    return f"\n[... {omitted} bytes of output omitted by Cove ...]\n".encode()


class CappedOutput:
    """The first ``limit - limit // 2`` bytes added and the newest ``limit // 2``."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._head = bytearray()
        self._head_room = limit - limit // 2
        self._keep = limit // 2
        self._piece = max(1, min(PIECE, self._keep // 4))
        self._tail: deque[bytearray] = deque()
        self._tail_size = 0
        self.omitted = 0

    def add(self, data: bytes) -> None:
        """Append output (beyond the head, older bytes of the tail fall out)."""
        room = self._head_room - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        if self._tail and len(self._tail[-1]) < self._piece:
            self._tail[-1] += data
        else:
            self._tail.append(bytearray(data))
        self._tail_size += len(data)
        while self._tail and self._tail_size - len(self._tail[0]) >= self._keep:
            dropped = self._tail.popleft()
            self._tail_size -= len(dropped)
            self.omitted += len(dropped)

    def skip(self, count: int) -> None:
        """Count ``count`` bytes that were left out before they reached us."""
        self.omitted += max(0, count)

    def bytes(self) -> bytes:
        tail = b"".join(self._tail)
        cut = max(0, len(tail) - self._keep)
        omitted = self.omitted + cut
        middle = marker(omitted) if omitted else b""
        return bytes(self._head) + middle + tail[cut:]

    def text(self) -> str:
        return self.bytes().decode(errors="replace")
