"""The starts under way, for the work a runtime does ahead to stay out of their way.

What is made ahead (blank disks, namespace sets) is made on the same few CPUs as
the starts it serves: a mkfs or a ``cove-nsexec`` run beside a start slows that
start by about as much as it takes. So that work (a :class:`Refiller`) waits, after
each take, for a moment when no start is under way (for a while at most: a host
that never stops starting still gets its stock made).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from cove.errors import RuntimeBackendError

MAX_WAIT = 2.0  # seconds work made ahead waits for starts to end, at most
log = logging.getLogger(__name__)


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


class Refiller:
    """Makes a stock back up in one worker thread: ``delay`` seconds after a take, then
    one item at a time, each once ``idle()`` returns (no start under way)."""

    def __init__(self, name: str, idle: Callable[[], object]) -> None:
        self._idle = idle
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._guard = threading.Lock()
        self._filling: set[Hashable] = set()

    def refill(self, key: Hashable, short: Callable[[], bool], make: Callable[[], None],
               *, delay: float, what: str) -> None:  # fmt: skip
        """Call ``make`` while ``short()`` (unless the stock ``key`` is being made up
        already); a failure is logged (``what`` is made) and ends that refill."""
        with self._guard:
            if key in self._filling:
                return
            self._filling.add(key)
        try:
            self._worker.submit(self._fill, key, short, make, delay, what)
        except RuntimeError:  # shut down (closed, or interpreter exit)
            with self._guard:
                self._filling.discard(key)

    def busy(self) -> bool:
        """Whether a refill is under way or waiting."""
        with self._guard:
            return bool(self._filling)

    def shutdown(self) -> None:
        """Finish the refill under way (no other starts)."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _fill(self, key: Hashable, short: Callable[[], bool], make: Callable[[], None],
              delay: float, what: str) -> None:  # fmt: skip
        time.sleep(delay)
        try:
            while short():
                self._idle()
                make()
        except (RuntimeBackendError, OSError) as exc:
            log.warning("cannot make %s ahead: %s", what, exc)
        finally:
            with self._guard:
                self._filling.discard(key)
