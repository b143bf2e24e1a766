"""Work made ahead waits for the starts under way to end (at most a while)."""

from __future__ import annotations

import threading
import time

from cove.runner.host.foreground import Foreground


def test_idle_at_once_when_nothing_starts() -> None:
    assert Foreground().wait_idle(0) is True


def test_a_wait_ends_when_the_last_start_ends() -> None:
    fg = Foreground()
    released = threading.Event()
    waited: list[bool] = []

    def start() -> None:
        with fg.start():
            released.wait(5)

    starts = [threading.Thread(target=start) for _ in range(2)]
    for t in starts:
        t.start()
    while fg._count < 2:  # (until both are under way)
        time.sleep(0.001)
    waiter = threading.Thread(target=lambda: waited.append(fg.wait_idle(5)))
    waiter.start()
    time.sleep(0.05)
    assert not waited  # still waiting: two starts under way
    released.set()
    for t in starts:
        t.join()
    waiter.join(5)
    assert waited == [True]


def test_a_wait_gives_up_after_its_timeout_while_starts_go_on() -> None:
    fg = Foreground()
    with fg.start():
        begun = time.monotonic()
        assert fg.wait_idle(0.05) is False
        assert time.monotonic() - begun >= 0.05
    assert fg.wait_idle(0) is True


def test_a_start_that_fails_still_ends() -> None:
    fg = Foreground()
    try:
        with fg.start():
            raise RuntimeError("failed start")
    except RuntimeError:
        pass
    assert fg.wait_idle(0) is True
