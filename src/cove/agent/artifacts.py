"""Chart artifacts in ``code_run`` output: lines that start with Daytona's marker.

A Python snippet's ``plt.show()`` prints each figure as one line: the marker, then
``{"type": "chart", "value": {...}}`` (the default snapshot's matplotlib backend,
``cove_charts``, does so; it is selected through ``MPLBACKEND``). Such lines leave
the output, as Daytona's do, and go to the server as ``C`` frames of their own, so
clipping the output never cuts a chart. The agent does not read them: the server
checks each one (what a sandbox prints is untrusted).
"""

from __future__ import annotations

import os
from typing import Protocol

from . import protocol
from .agent import Request

MARKER = b"dtn_artifact_k39fd2:"
# Where a snapshot's matplotlib backend for charts lives, and how code_run selects it.
BACKEND_DIR = "/usr/local/lib/cove/python"
BACKEND = "module://cove_charts"
# One artifact line is at most this long (a frame must hold it whole).
MAX_ARTIFACT = protocol.MAX_FRAME // 2


class Sink(Protocol):
    async def write(self, chunk: bytes) -> None: ...

    async def close(self) -> None: ...


def chart_env(env: dict[str, str] | None) -> dict[str, str]:
    """``env`` for a Python ``code_run``: with the snapshot's chart backend selected,
    when the sandbox has it and the caller chose no backend of their own."""
    env = dict(env or {})
    if "MPLBACKEND" in env or not os.path.isfile(f"{BACKEND_DIR}/cove_charts.py"):
        return env
    path = env.get("PYTHONPATH")
    env["MPLBACKEND"] = BACKEND
    env["PYTHONPATH"] = f"{BACKEND_DIR}:{path}" if path else BACKEND_DIR
    return env


def omitted(size: int) -> bytes:
    """The output line that stands for an artifact left out."""
    return f"[... a chart of {size} bytes omitted by Cove ...]\n".encode()


class ArtifactSplitter:
    """Passes output to ``sink`` but for artifact lines, which it sends as ``C`` frames
    (the bytes after the marker): at most ``budget`` bytes of them in all; a larger one
    is dropped, and a line in the output says so."""

    def __init__(self, request: Request, sink: Sink, budget: int) -> None:
        self.request = request
        self.sink = sink
        self.budget = budget
        self.at_start = True  # the next byte begins a line
        self.carry = b""  # a line's first bytes, too few to tell whether it is an artifact
        self.artifact: bytearray | None = None  # the artifact line being read
        self.size = 0  # its length so far (it is no longer kept once too large)

    async def write(self, chunk: bytes) -> None:
        data, self.carry = self.carry + chunk, b""
        text = bytearray()
        while data:
            if self.artifact is not None:
                end = data.find(b"\n")
                self._take(data if end < 0 else data[:end])
                if end < 0:
                    break
                text += await self._finish()
                data = data[end + 1 :]
            elif self.at_start and data.startswith(MARKER):
                self.artifact, self.size = bytearray(), len(MARKER)
                data = data[len(MARKER) :]
            elif self.at_start and MARKER.startswith(data):
                self.carry = data  # (shorter than the marker: wait for more)
                break
            else:
                end = data.find(b"\n")
                self.at_start = end >= 0
                text += data if end < 0 else data[: end + 1]
                data = b"" if end < 0 else data[end + 1 :]
        if text:
            await self.sink.write(bytes(text))

    def _take(self, part: bytes) -> None:
        assert self.artifact is not None
        self.size += len(part)
        if self.size <= min(self.budget, MAX_ARTIFACT):
            self.artifact += part
        else:
            self.artifact.clear()

    async def _finish(self) -> bytes:
        """Send the artifact line just read; the output's words for it, if dropped."""
        artifact, self.artifact, self.at_start = self.artifact, None, True
        assert artifact is not None
        kept = len(artifact) + len(MARKER) == self.size
        if not kept:
            return omitted(self.size)
        self.budget -= self.size
        await self.request.send(protocol.CHART, bytes(artifact))
        return b""

    async def close(self) -> None:
        """The output ended (a last line may lack its newline)."""
        text = self.carry
        if self.artifact is not None:
            text += await self._finish()
        if text:
            await self.sink.write(text)
        await self.sink.close()
