"""Placement: ready, reachable runners only; the snapshot's locality first (else the
runners that fetch it from the shared store); then the most free capacity left."""

from __future__ import annotations

import pytest

from cove.core.fleet import Allocation, RunnerInfo, RunnerState, place
from cove.core.ports import Capacity, Resources
from cove.core.sandbox import utcnow
from cove.errors import Unavailable

GiB = 1024**3
RES = Resources(cpu=1, memory=1, disk=3)


def _runner(name: str, state: RunnerState = RunnerState.READY, *, reachable: bool = True,
            cpu: int = 4, memory: int = 8, disk_free: int = 100, max_sandboxes: int = 0,
            sandboxes: int = 0) -> RunnerInfo:  # fmt: skip
    cap = Capacity(cpu=cpu, memory=memory * GiB, memory_free=memory * GiB, disk=200 * GiB,
                   disk_free=disk_free * GiB, sandboxes=sandboxes,
                   max_sandboxes=max_sandboxes)  # fmt: skip
    return RunnerInfo(id=name, name=name, url=f"https://{name}:3100", state=state,
                      reachable=reachable, capacity=cap, last_heartbeat=None,
                      created_at=utcnow())  # fmt: skip


def _everywhere(_rid: str) -> bool:
    return True


def _nowhere(_rid: str) -> bool:
    return False


def test_the_most_free_runner_takes_it() -> None:
    runners = [_runner("a"), _runner("b"), _runner("c")]
    used = {"a": Allocation(cpu=2, memory=2, disk=6, sandboxes=2),
            "b": Allocation(cpu=1, memory=1, disk=3, sandboxes=1)}  # fmt: skip
    assert place(runners, used, RES, "s", _everywhere, _nowhere).name == "c"
    used["c"] = Allocation(cpu=3, memory=1, disk=3, sandboxes=1)  # its CPU is the scarce
    assert place(runners, used, RES, "s", _everywhere, _nowhere).name == "b"


def test_memory_and_disk_count() -> None:
    runners = [_runner("a", memory=4), _runner("b", memory=64)]
    assert place(runners, {}, RES, "s", _everywhere, _nowhere).name == "b"
    runners = [_runner("a", disk_free=10), _runner("b", disk_free=150)]
    assert place(runners, {}, RES, "s", _everywhere, _nowhere).name == "b"


def test_never_a_cordoned_draining_unreachable_or_full_runner() -> None:
    runners = [_runner("a", RunnerState.CORDONED, cpu=64), _runner("b", RunnerState.DRAINING,
               cpu=64), _runner("c", reachable=False, cpu=64),
               _runner("d", max_sandboxes=2, sandboxes=2, cpu=64), _runner("e", cpu=1)]  # fmt: skip
    assert place(runners, {}, RES, "s", _everywhere, _nowhere).name == "e"
    with pytest.raises(Unavailable):
        place(runners[:4], {}, RES, "s", _everywhere, _nowhere)


def test_the_snapshot_s_locality_first() -> None:
    runners = [_runner("a", cpu=64), _runner("b", cpu=2)]
    assert place(runners, {}, RES, "s", lambda rid: rid == "b", _nowhere).name == "b"
    assert place(runners, {}, RES, "s", lambda rid: rid == "b", _everywhere).name == "b"
    # none has it: those that fetch it, by capacity
    assert place(runners, {}, RES, "s", _nowhere, _everywhere).name == "a"
    assert place(runners, {}, RES, "s", _nowhere, lambda rid: rid == "b").name == "b"


def test_a_snapshot_no_placeable_runner_has_or_fetches_is_named() -> None:
    runners = [_runner("a", RunnerState.CORDONED), _runner("b")]
    with pytest.raises(Unavailable, match="no runner that holds snapshot s takes new sandboxes"):
        place(runners, {}, RES, "s", lambda rid: rid == "a", _nowhere)
