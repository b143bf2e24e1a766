"""Two ``cove serve`` replicas on one PostgreSQL and one Redis, their sandboxes on one
``cove runner`` (the replicas keep nothing of a sandbox: any of them serves any
request). The official SDK connected to one replica sees what is done through the
other; operations through both on one sandbox are serialized; a timer fires once, on
the replica holding the jobs' lease (their /metrics count it); a replica killed
outright leaves the other serving, and its jobs move over."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import socketio
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from cove.server import REPLICA_KEY_FILES
from cove.testing_remote import RunnerProcess, make_pki
from tests.backing import postgres, redis
from tests.e2e.conftest import KEY, Server, running_server
from tests.e2e.test_preview import PORT, serve_app
from tests.leaks import stop_runner_clean
from tests.nettools import FakeDns, sandbox_pool

pytestmark = pytest.mark.e2e
MINUTE = 2.0  # seconds in a lifecycle minute (auto-stop after 1 "minute")
LEASE = 3.0  # a dead replica's jobs move over within this
CREATED = ("creating", "started")
STOPPED = [("started", "stopping"), ("stopping", "stopped")]
METRICS_TOKEN = "replicas-metrics-token"
TIMED = 8  # sandboxes whose auto-stops fall due together: their stops outlast a timer tick


@pytest.fixture(scope="module")
def backing() -> Iterator[tuple[str, str]]:
    """PostgreSQL and Redis on loopback."""
    with postgres(tcp=True) as db, redis() as events:
        yield db, events


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, e2e_dns: FakeDns) -> Iterator[RunnerProcess]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    proc = RunnerProcess(tmp_path_factory.mktemp("cove-runner"), pki,
                         {"COVE_NETWORK_POOL": sandbox_pool(11),
                          "COVE_DNS_UPSTREAM": e2e_dns.upstream})  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        stop_runner_clean(proc)


def _env(backing: tuple[str, str], runner: RunnerProcess) -> dict[str, str]:
    db, events = backing
    return {**runner.pki.api_env(runner.url), "COVE_DATABASE_URL": db,
            "COVE_EVENTS_URL": events, "COVE_MINUTE_SECONDS": str(MINUTE),
            "COVE_LEASE_SECONDS": str(LEASE), "COVE_METRICS_TOKEN": METRICS_TOKEN}  # fmt: skip


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, backing: tuple[str, str],
             runner: RunnerProcess) -> Iterator[tuple[Server, Server]]:  # fmt: skip
    """Replica A (started first: it runs the once-only jobs), then replica B."""
    env = _env(backing, runner)
    with running_server(tmp_path_factory.mktemp("cove-a"), 12, env) as a:
        b_dir = tmp_path_factory.mktemp("cove-b")
        for name in REPLICA_KEY_FILES:  # one deployment's secrets, as the operator copies them
            shutil.copy2(a.data_dir / name, b_dir / name)
        with running_server(b_dir, 13, env) as b:
            yield a, b


def client(srv: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=srv.api_url))


class Recorder:
    """A Socket.IO client of one replica: every ``sandbox.state.updated`` it is sent."""

    def __init__(self, srv: Server) -> None:
        self.events: list[tuple[str, str, str]] = []  # (sandbox id, old, new)
        self._lock = threading.Lock()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("sandbox.state.updated", self._on)
        self.sio.connect(srv.url, socketio_path="/api/socket.io", auth={"token": KEY},
                         transports=["websocket"], wait_timeout=30)  # fmt: skip

    def _on(self, data: dict[str, object]) -> None:
        sandbox = data["sandbox"]
        assert isinstance(sandbox, dict)
        with self._lock:
            self.events.append((sandbox["id"], str(data["oldState"]), str(data["newState"])))

    def of(self, sandbox_id: str) -> list[tuple[str, str]]:
        with self._lock:
            return [(old, new) for sid, old, new in self.events if sid == sandbox_id]

    def close(self) -> None:
        self.sio.disconnect()


@pytest.fixture
def recorder_a(replicas: tuple[Server, Server]) -> Iterator[Recorder]:
    rec = Recorder(replicas[0])
    yield rec
    rec.close()


def until(what: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def jobs_holder(db: str) -> str | None:
    engine = create_engine(db)
    try:
        with engine.begin() as conn:
            return conn.execute(text("SELECT holder FROM leases WHERE name = 'jobs' "
                                     "AND expires_at > now()")).scalar()  # fmt: skip
    finally:
        engine.dispose()


def stops(srv: Server) -> float:
    """The stops this replica carried out (its ``/metrics``: timed stops, a stop
    that found the sandbox stopped already is none)."""
    r = httpx.get(f"{srv.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    r.raise_for_status()
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if (sample.name == "cove_operation_duration_seconds_count"
                    and sample.labels == {"operation": "stop"}):  # fmt: skip
                return sample.value
    return 0.0


def test_the_sdk_on_one_replica_sees_changes_made_through_the_other(
    replicas: tuple[Server, Server], recorder_a: Recorder,
) -> None:  # fmt: skip
    a, b = replicas
    sb = client(a).create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    try:
        assert sb.process.exec("echo via-a").result.strip() == "via-a"
        on_b = client(b).get(sb.id)
        assert on_b.process.exec("echo via-b").result.strip() == "via-b"
        on_b.stop()
        # A's object learns it from A's Socket.IO connection alone (no request)
        until(lambda: sb.state.value == "stopped")
        on_b.start()
        until(lambda: sb.state.value == "started")
        # The recorder is a connection of its own: its copy of the last event may come
        # after the SDK's.
        until(lambda: ("starting", "started") in recorder_a.of(sb.id), timeout=30)
        assert recorder_a.of(sb.id) == [CREATED, *STOPPED, ("stopped", "starting"),
                                        ("starting", "started")]
        assert sb.process.exec("echo again").result.strip() == "again"
    finally:
        client(b).delete(client(b).get(sb.id))


def test_links_issued_through_one_replica_work_through_the_other(
    replicas: tuple[Server, Server],
) -> None:  # fmt: skip
    a, b = replicas
    sb = client(a).create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    try:
        serve_app(sb)
        link = sb.get_preview_link(PORT)
        via_b = link.url.replace(a.url, b.url)
        assert via_b != link.url
        token = {"X-Daytona-Preview-Token": link.token}
        assert httpx.get(f"{via_b}/p", headers=token).text == "path=/p"
        signed = sb.create_signed_preview_url(PORT, expires_in_seconds=120)
        signed_b = signed.url.replace(a.url, b.url)
        assert signed_b != signed.url and httpx.get(f"{signed_b}/s").text == "path=/s"
        sb.expire_signed_preview_url(PORT, signed.token)  # through A: B refuses it too
        until(lambda: httpx.get(f"{signed_b}/s").status_code == 404, timeout=30)
        sb.fs.upload_file(b"numbers\n", "/home/daytona/r.txt")
        url = sb.download_url("/home/daytona/r.txt", ttl_seconds=60)  # A's signing key
        assert url.startswith(a.url)
        assert httpx.get(url.replace(a.url, b.url)).content == b"numbers\n"
    finally:
        client(b).delete(client(b).get(sb.id))


def test_operations_through_both_replicas_take_turns(
    replicas: tuple[Server, Server], recorder_a: Recorder,
) -> None:  # fmt: skip
    a, b = replicas
    sb = client(a).create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        for action in ("stop", "start", "stop", "start"):
            urls = [f"{srv.api_url}/sandbox/{sb.id}/{action}" for srv in (a, b, a, b)]
            with ThreadPoolExecutor(len(urls)) as pool:
                replies = list(pool.map(lambda url: httpx.post(url, headers=headers,
                                                               timeout=120), urls))  # fmt: skip
            assert all(r.status_code < 300 for r in replies), [r.text for r in replies]
        # four rounds of four calls each: one transition each round, never overlapping
        until(lambda: len(recorder_a.of(sb.id)) >= 8)
        assert recorder_a.of(sb.id)[-8:] == [("started", "stopping"), ("stopping", "stopped"),
                                             ("stopped", "starting"), ("starting", "started")] * 2
        assert client(b).get(sb.id).process.exec("true").exit_code == 0
    finally:
        client(a).delete(client(a).get(sb.id))


def test_a_key_name_is_taken_once_across_replicas(replicas: tuple[Server, Server]) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    name = f"raced-{time.monotonic_ns()}"
    urls = [f"{srv.api_url}/api-keys" for srv in replicas * 4]
    with ThreadPoolExecutor(len(urls)) as pool:
        replies = list(pool.map(lambda url: httpx.post(
            url, headers=headers, json={"name": name, "permissions": []}, timeout=60), urls))
    try:
        codes = sorted(r.status_code for r in replies)
        assert codes == [201] + [409] * (len(urls) - 1), [r.text for r in replies]
    finally:
        httpx.delete(f"{replicas[0].api_url}/api-keys/{name}", headers=headers, timeout=60)


def test_an_auto_stop_fires_once_across_replicas(
    replicas: tuple[Server, Server], backing: tuple[str, str], recorder_a: Recorder,
) -> None:  # fmt: skip
    """Each timer stops its sandbox exactly once, counted by both replicas' metrics
    together, and all by one replica, the jobs' lease holder: the timers of several
    sandboxes fall due together, so a replica ticking without the lease would find
    some still due while the other works through them."""
    a, b = replicas
    holder = jobs_holder(backing[0])
    before = stops(a), stops(b)
    made: list[str] = []
    try:
        for _ in range(TIMED):
            made.append(client(b).create(CreateSandboxFromSnapshotParams(auto_stop_interval=0)).id)
        time.sleep(MINUTE)  # each idle a lifecycle minute: an auto-stop of 1 is due when set
        with ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(lambda sid: client(b).get(sid).set_autostop_interval(1), made))
        for sandbox_id in made:
            until(lambda sid=sandbox_id: ("stopping", "stopped") in recorder_a.of(sid))
        # Let both replicas' timers tick a few lifecycle minutes more: nothing fires again.
        time.sleep(3 * MINUTE)
        for sandbox_id in made:
            assert recorder_a.of(sandbox_id) == [CREATED, *STOPPED]
        done = stops(a) - before[0], stops(b) - before[1]
        assert sum(done) == len(made), done  # once each, by whichever replica
        if holder is not None and jobs_holder(backing[0]) == holder:  # the lease stayed put
            assert sorted(done) == [0, len(made)], done  # all by one replica, its holder
    finally:
        for sandbox_id in made:
            client(a).delete(client(a).get(sandbox_id))


def test_a_killed_replica_leaves_the_other_serving_and_its_jobs(
    replicas: tuple[Server, Server], backing: tuple[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    a, b = replicas
    db = backing[0]
    leader = jobs_holder(db)
    assert leader is not None
    kept = client(b).create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    a.kill9()  # the first replica, the jobs' leader
    try:
        recorder = Recorder(b)
        try:
            sb = client(b).create(CreateSandboxFromSnapshotParams(auto_stop_interval=1))
            assert sb.process.exec("echo still").result.strip() == "still"
            assert kept.process.exec("true").exit_code == 0
            # B took the timers over: the auto-stop fires, once
            until(lambda: ("stopping", "stopped") in recorder.of(sb.id))
            assert recorder.of(sb.id) == [CREATED, *STOPPED]
            holder = jobs_holder(db)
            assert holder is not None and holder != leader
            client(b).delete(sb)
        finally:
            recorder.close()
    finally:
        client(b).delete(client(b).get(kept.id))
        a.start()


def test_a_replica_with_secrets_of_its_own_is_refused(
    replicas: tuple[Server, Server], backing: tuple[str, str], runner: RunnerProcess,
    tmp_path: Path,
) -> None:  # fmt: skip
    """It could open nothing the others sealed, nor check what they signed."""
    (tmp_path / "c").mkdir()
    stranger = Server(tmp_path / "c", api_key=KEY, env=_env(backing, runner))
    with pytest.raises(RuntimeError, match="differs from the other API replicas"):
        stranger.start()
