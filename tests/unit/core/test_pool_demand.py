"""The operator's pool grows to recent demand, within its bounds, and shrinks back."""

from __future__ import annotations

from cove.core.pool_demand import BUCKET_SECONDS, WINDOW_SECONDS, Demand


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_busiest_bucket_of_the_window_sets_the_target() -> None:
    clock = Clock()
    demand = Demand(clock)
    assert demand.target(2, 16) == 2  # no demand: the set size
    for _ in range(7):
        demand.note()
    clock.now += BUCKET_SECONDS
    for _ in range(3):
        demand.note()
    assert demand.peak() == 7
    assert demand.target(2, 16) == 7
    assert demand.target(2, 5) == 5  # never beyond its bound
    assert demand.target(2, 0) == 2  # a bound at or below the set size: fixed
    assert demand.target(9, 16) == 9  # never below the set size


def test_demand_is_forgotten_after_the_window() -> None:
    clock = Clock()
    demand = Demand(clock)
    for _ in range(7):
        demand.note()
    clock.now += WINDOW_SECONDS - BUCKET_SECONDS
    assert demand.target(2, 16) == 7  # still within the window
    clock.now += 2 * BUCKET_SECONDS
    assert demand.target(2, 16) == 2
    demand.note()
    assert demand.peak() == 1
