"""The starts under way, for the work a runtime does ahead to stay out of their way.

What is made ahead (blank disks, namespace sets, pre-started agents) is made on the
same few CPUs as the starts it serves: a mkfs or a ``cove-nsexec`` run beside a
start slows that start by about as much as it takes. So that work waits, after
each take, for a moment when no start is under way (for a while at most: a host
that never stops starting still gets its stock made).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

MAX_WAIT = 2.0  # seconds work made ahead waits for starts to end, at most


class Foreground:
    """Counts the starts under way."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @contextmanager
    def start(self) -> Iterator[None]:
        """Around a start (or a create that leads to one)."""
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                if self._count == 0:
                    self._changed.notify_all()

    def wait_idle(self, timeout: float = MAX_WAIT) -> bool:
        """Return once no start is under way (True), or after ``timeout`` seconds
        (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout)
