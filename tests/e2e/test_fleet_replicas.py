"""Several API replicas over several runners: PostgreSQL and Redis started by the
test, three ``cove runner`` processes each in a network namespace of its own acting
as a separate host (registered in the database with ``cove runner add``), and two
``cove serve`` replicas on that database and Redis. Through the official SDK on
replica A: creates land on different runners; what is done through replica B
reaches A's SDK (Socket.IO through Redis); a runner killed with SIGKILL puts its
sandboxes in ``error`` (recoverable), marked once (by the replica running the jobs),
while the other runners keep serving through both replicas, and gives them back
when it returns; with the jobs' replica killed, the other keeps the fleet."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig, Sandbox

from cove.server import REPLICA_KEY_FILES
from cove.testing_remote import RunnerProcess, make_pki
from tests.backing import postgres, redis
from tests.e2e.conftest import KEY, Server, running_server
from tests.e2e.test_replicas import Recorder
from tests.netns_runners import (
    NAMES,
    kill_runner,
    netns_hosts,
    netns_runners,
    register,
    runner_cli,
    runner_of,
    runners_listed,
    settled,
    start_stopped,
    wait_for,
)

pytestmark = pytest.mark.e2e
STOPPED = [("started", "stopping"), ("stopping", "stopped")]
STARTED = [("stopped", "starting"), ("starting", "started")]
TAG = f"fr{os.getpid() % 1000}"  # namespaces of this run (several runs may share a host)


@dataclass
class Fleet:
    runners: dict[str, RunnerProcess]
    a: Server
    b: Server
    db: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return runner_cli(self.a.data_dir, self.a.extra_env, *args)

    def runner_of(self, sandbox_id: str) -> str | None:
        return runner_of(self.db, sandbox_id)

    def logged(self, line: str) -> int:
        """How many times both replicas logged ``line``."""
        return sum(srv.log.read_text().count(line) for srv in (self.a, self.b))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(postgres(tcp=True))
        events = stack.enter_context(redis())
        hosts = stack.enter_context(netns_hosts(TAG, "10.248"))
        runners = stack.enter_context(netns_runners(tmp_path_factory, pki, hosts, 31))
        cert, key = pki.api
        env = {"COVE_DATABASE_URL": db, "COVE_EVENTS_URL": events,
               "COVE_RUNNER_CA": str(pki.ca), "COVE_RUNNER_CERT": str(cert),
               "COVE_RUNNER_KEY": str(key), "COVE_RUNNER_HEARTBEAT_SECONDS": "0.5",
               "COVE_RUNNER_LOST_SECONDS": "3", "COVE_LEASE_SECONDS": "3",
               "COVE_POOL_SIZE": "0"}  # fmt: skip
        a_dir = tmp_path_factory.mktemp("cove-a")
        register(a_dir, env, runners)  # in the shared database, before any replica
        a = stack.enter_context(running_server(a_dir, 34, env))
        b_dir = tmp_path_factory.mktemp("cove-b")
        for name in REPLICA_KEY_FILES:  # one deployment's secrets
            shutil.copy2(a.data_dir / name, b_dir / name)
        b = stack.enter_context(running_server(b_dir, 35, env))
        yield Fleet(runners, a, b, db)
        start_stopped(runners)  # every runner up, so that every delete works


def client(srv: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=srv.api_url))


@pytest.fixture(scope="module")
def placed(fleet: Fleet) -> Iterator[dict[str, Sandbox]]:
    """One sandbox per runner, created through replica A by placement alone."""
    daytona = client(fleet.a)
    found: dict[str, Sandbox] = {}
    try:
        for _ in NAMES:
            sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
            name = fleet.runner_of(sb.id)
            assert name is not None and name not in found, f"{sb.id} placed on {name} again"
            found[name] = sb
        yield found
    finally:
        start_stopped(fleet.runners)
        for sb in found.values():
            wait_for("ready to delete", lambda sb=sb: settled(sb))
            sb.delete()


@pytest.fixture
def recorder_a(fleet: Fleet) -> Iterator[Recorder]:
    rec = Recorder(fleet.a)
    yield rec
    rec.close()


def test_creates_through_one_replica_land_on_every_runner_and_both_serve_them(
        fleet: Fleet, placed: dict[str, Sandbox]) -> None:  # fmt: skip
    assert set(placed) == set(NAMES)
    on_b = client(fleet.b)
    for sb in placed.values():
        assert sb.process.exec("echo via-a").result.strip() == "via-a"
        assert on_b.get(sb.id).process.exec("echo via-b").result.strip() == "via-b"
    listed = runners_listed(fleet.cli)
    assert {r["name"]: (r["state"], r["sandboxes"]) for r in listed} == dict.fromkeys(
        NAMES, ("ready", 1))  # fmt: skip


def test_state_changed_through_b_reaches_the_sdk_on_a(
        fleet: Fleet, placed: dict[str, Sandbox], recorder_a: Recorder) -> None:  # fmt: skip
    sb = placed["r3"]
    via_b = client(fleet.b).get(sb.id)
    via_b.stop()
    # A's object learns it from A's Socket.IO connection alone (no request)
    wait_for("A's SDK sees the stop", lambda: sb.state.value == "stopped")
    via_b.start()
    wait_for("A's SDK sees the start", lambda: sb.state.value == "started")
    wait_for("A's other client is told too", lambda: STARTED[-1] in recorder_a.of(sb.id))
    assert recorder_a.of(sb.id)[-4:] == [*STOPPED, *STARTED]
    assert sb.process.exec("echo again").result.strip() == "again"


def test_a_killed_runner_is_marked_once_and_the_others_serve_through_both(
        fleet: Fleet, placed: dict[str, Sandbox], recorder_a: Recorder) -> None:  # fmt: skip
    victim_name = "r2"
    victim, runner = placed[victim_name], fleet.runners[victim_name]
    victim.fs.upload_file(b"kept across the loss", "/home/daytona/kept.txt")
    kill_runner(runner, victim, victim_name)
    seen_by_b = client(fleet.b).get(victim.id)
    assert seen_by_b.state.value == "error" and seen_by_b.recoverable
    for name, sb in placed.items():  # the others keep serving, through both replicas
        if name != victim_name:
            assert sb.process.exec("echo ok").result.strip() == "ok"
            assert client(fleet.b).get(sb.id).process.exec("echo ok").result.strip() == "ok"
    for srv in (fleet.a, fleet.b):  # neither replica places a sandbox there
        fresh = client(srv).create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        try:
            assert fleet.runner_of(fresh.id) not in (None, victim_name)
        finally:
            fresh.delete()
    listed = {r["name"]: r["state"] for r in runners_listed(fleet.cli)}
    assert listed[victim_name] == "unreachable"

    runner.start()  # it comes back: the sandbox is what the runner has
    wait_for("the sandbox is back", lambda: settled(victim))
    assert victim.state.value == "started"
    assert client(fleet.b).get(victim.id).fs.download_file(
        "/home/daytona/kept.txt") == b"kept across the loss"  # fmt: skip
    # One keeper (the jobs' replica) noticed the loss, and A's SDK was told of each
    # change once.
    wait_for("A's SDK is told it is back", lambda: ("error", "started") in recorder_a.of(
        victim.id))  # fmt: skip
    assert recorder_a.of(victim.id) == [("started", "error"), ("error", "started")]
    assert fleet.logged(f"runner {victim_name} lost") == 1


def test_the_fleet_s_keeper_moves_with_the_jobs(
        fleet: Fleet, placed: dict[str, Sandbox]) -> None:  # fmt: skip
    """Replica A (started first) runs the jobs; killed outright, B takes them over,
    the keeper with them: B notices a runner's loss and its return."""
    a, b = fleet.a, fleet.b
    victim_name = "r1"
    runner = fleet.runners[victim_name]
    victim = client(b).get(placed[victim_name].id)
    a.kill9()
    try:
        kill_runner(runner, victim, victim_name)  # marked by B, the jobs' holder now
        assert f"runner {victim_name} lost" in b.log.read_text()
        assert client(b).get(placed["r3"].id).process.exec("echo ok").result.strip() == "ok"
        runner.start()
        wait_for("B gives it back", lambda: settled(victim))
        assert victim.state.value == "started"
        assert victim.process.exec("echo back").result.strip() == "back"
    finally:
        start_stopped(fleet.runners)
        a.start()
