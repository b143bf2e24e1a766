"""Waiting for a descriptor to become readable, at any descriptor number."""

from __future__ import annotations

import select
from typing import Protocol


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def readable(fd: int | _HasFileno, timeout: float) -> bool:
    """Whether ``fd`` (a descriptor, or an object with ``fileno``) has something to read
    (or hung up) within ``timeout`` seconds. ``poll``, not ``select``: a server of many
    sandboxes holds descriptors above select's limit of 1023."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(timeout, 0.0) * 1000))
