"""One tenant cannot hurt the server or the others.

Twenty sandboxes print 1 GiB each at once while other sandboxes run ``true``:
the server's memory stays bounded (execute returns at most COVE_OUTPUT_LIMIT
bytes of each output) and the quiet sandboxes keep answering. A sandbox whose
agent is frozen (it accepts nothing) holds back only its own calls. A client
that hangs up stops the command it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona

from cove.core.output import DEFAULT_LIMIT
from cove.testing import RssWatch
from tests.e2e.conftest import KEY, Server
from tests.e2e.test_relays import host_pid, relayed
from tests.e2e.test_toolbox_files_git import agent_pid

MiB = 1 << 20
FLOODERS = 20
QUIET = 2
# What the server may grow by while 20 GiB of output pass: 20 outputs of at most
# 4 MiB each held at once (as bytes, as text and as JSON), plus allocator slack.
RSS_BOUND = 512 * MiB
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def many(daytona: Daytona) -> Iterator[list]:
    """FLOODERS + QUIET sandboxes of 1 GiB memory, deleted afterwards."""
    params = CreateSandboxFromSnapshotParams(auto_stop_interval=0)
    with ThreadPoolExecutor(4) as pool:
        boxes = list(pool.map(lambda _: daytona.create(params, timeout=120),
                              range(FLOODERS + QUIET)))  # fmt: skip
    yield boxes
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda sb: sb.delete(), boxes))


def _execute(server: Server, sandbox_id: str, command: str, timeout: float = 900) -> httpx.Response:
    return httpx.post(f"{server.url}/toolbox/{sandbox_id}/process/execute", headers=HEADERS,
                      json={"command": command}, timeout=timeout)  # fmt: skip


class Quiet:
    """Runs ``true`` in the quiet sandboxes, one after another, until stopped."""

    def __init__(self, server: Server, sandbox_ids: list[str]) -> None:
        self.server, self.ids = server, sandbox_ids
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for sandbox_id in self.ids:
                r = _execute(self.server, sandbox_id, "true", timeout=120)
                self.answers.append((r.status_code, r.text))

    def __enter__(self) -> Quiet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.timeout(1200)
def test_twenty_floods_keep_memory_bounded_and_neighbours_answering(
    server: Server, many: list
) -> None:
    assert server.proc is not None
    flooders, quiet_ones = many[:FLOODERS], many[FLOODERS:]
    command = "head -c 1G /dev/zero | tr '\\0' x"
    with RssWatch(server.proc.pid) as rss, Quiet(server, [sb.id for sb in quiet_ones]) as quiet:
        with ThreadPoolExecutor(FLOODERS) as pool:
            floods = list(pool.map(lambda sb: _execute(server, sb.id, command), flooders))
        during = len(quiet.answers)
    for r in floods:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["exitCode"] == 0
        result = body["result"]
        assert DEFAULT_LIMIT <= len(result) < DEFAULT_LIMIT + 100
        assert result.startswith("x" * (DEFAULT_LIMIT // 2))
        assert f"{(1 << 30) - DEFAULT_LIMIT} bytes of output omitted" in result
    assert during >= QUIET, "the quiet sandboxes got no answer while the others flooded"
    assert all(answer == (200, '{"exitCode":0,"result":""}') for answer in quiet.answers)
    assert rss.growth < RSS_BOUND, f"server RSS grew by {rss.growth / MiB:.0f} MiB"


@pytest.mark.timeout(300)
def test_a_frozen_agent_holds_back_only_its_own_sandbox(server: Server, daytona: Daytona,
                                                        sandboxes: list) -> None:  # fmt: skip
    params = CreateSandboxFromSnapshotParams(auto_stop_interval=0)
    frozen, other = (daytona.create(params) for _ in range(2))
    sandboxes.extend([frozen, other])
    assert frozen.process.exec("true").exit_code == 0  # its channel is open
    relayed(frozen)  # (and its relay made: both freeze, as a wedged sandbox's would)
    pids = [agent_pid(frozen.id), host_pid(frozen.id, b"--relay")]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(8) as pool:
            stuck = [pool.submit(_execute, server, frozen.id, "true", 120) for _ in range(8)]
            for _ in range(20):
                assert _execute(server, other.id, "echo fine", 60).json()["result"] == "fine\n"
            assert not any(f.done() for f in stuck), "the frozen agent answered?"
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            answers = [f.result() for f in stuck]
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # (a relay's idle exit since)
                os.kill(pid, signal.SIGCONT)
    # Thawed before the agent's accept deadline: every held call then ran.
    assert {(r.status_code, r.text) for r in answers} == {(200, '{"exitCode":0,"result":""}')}


@pytest.mark.timeout(300)
def test_a_client_that_hangs_up_stops_its_command(server: Server, daytona: Daytona,
                                                 sandboxes: list) -> None:  # fmt: skip
    sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    sandboxes.append(sb)
    with pytest.raises(httpx.ReadTimeout):
        _execute(server, sb.id, "echo $$ > /tmp/pid; exec sleep 600", timeout=3)
    pid = sb.process.exec("cat /tmp/pid").result.strip()
    assert pid.isdigit()
    for _ in range(100):
        if sb.process.exec(f"kill -0 {pid} 2>/dev/null && echo alive").result == "":
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the command of the client that left still runs")
