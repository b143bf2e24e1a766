"""How many sandboxes the operator's warm pool keeps now: its set size, grown to
the recent demand, up to a bound.

Demand is the creates the pool serves or would have served (those it could not,
being empty, booted cold), counted per ``BUCKET_SECONDS``. The pool's target is the
busiest bucket of the last ``WINDOW_SECONDS``: a burst of ten creates in ten seconds
makes the pool hold ten while such bursts keep coming, and a minute after the last
one it is back at its set size (the keeper then lets the extra sandboxes go). The
keeper fills a pool one sandbox at a time, so a target grown in the middle of a
burst serves the next burst, never delays a create of this one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0
BUCKET_SECONDS = 10.0


class Demand:
    """The recent demand on one pool."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [bucket number, creates], oldest first

    def note(self) -> None:
        """One create the pool served, or would have served had it held a sandbox."""
        bucket = int(self._clock() // BUCKET_SECONDS)
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([bucket, 1])
        self._forget()

    def peak(self) -> int:
        """The creates of the busiest bucket within the window."""
        self._forget()
        return max((count for _, count in self._buckets), default=0)

    def target(self, base: int, most: int) -> int:
        """The size a pool set to ``base`` keeps now, growing up to ``most`` (at most
        ``base``: a fixed size)."""
        return max(base, min(most, self.peak()))

    def _forget(self) -> None:
        oldest = int((self._clock() - WINDOW_SECONDS) // BUCKET_SECONDS)
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()
