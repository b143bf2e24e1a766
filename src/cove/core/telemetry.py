"""How long lifecycle operations take, told to whoever measures it (the API's
Prometheus metrics) through a small port: the domain never imports a metrics library.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Recorder(Protocol):
    """Takes the duration of one lifecycle operation."""

    def observe(self, operation: str, seconds: float) -> None:
        """Record that ``operation`` (create, start, stop, archive, restore, delete)
        took ``seconds``."""


class NoRecorder:
    """Measures nothing (the default, and in tests)."""

    def observe(self, operation: str, seconds: float) -> None:
        return None


@contextmanager
def timed(recorder: Recorder, operation: str) -> Iterator[None]:
    """Tell ``recorder`` how long the block took; not when it raised (a refused
    operation, e.g. bad input or a sandbox in the wrong state, did no work to time)."""
    began = time.perf_counter()
    yield
    recorder.observe(operation, time.perf_counter() - began)
