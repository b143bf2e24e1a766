"""Dockerfile builds behind a load balancer of two ``cove serve`` replicas (one
PostgreSQL, one Redis, one S3 store, one ``cove runner``): the official SDK's
requests go to one replica, then the other, so its context upload, its create and
its following of the build's log each land on a different replica than the one
before. The contexts are shared through the S3 store, the logs through the
database. A replica killed mid-build leaves its builds ``build_failed`` with the
reason (at the end of their logs too), not ``building`` forever, and nothing on the
runner.

The SDK's uploader (obstore) speaks only HTTPS; it is allowed HTTP on loopback here.
The SDK observes states by polling: the balancer passes no WebSockets.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    Daytona,
    DaytonaConfig,
    Image,
)
from daytona._sync import object_storage as sdk_storage
from obstore.store import S3Store
from sqlalchemy import create_engine
from sqlalchemy import text as text_sql

from cove.core.buildlog import CAP
from cove.runner.oci.runtime import OciRuntime
from cove.server import REPLICA_KEY_FILES
from cove.testing_remote import RunnerProcess
from tests.balancer import Balancer, balancing
from tests.e2e.conftest import KEY, Server, run_ok, running_server
from tests.e2e.test_replicas import _env, backing, runner, until  # noqa: F401 - fixtures
from tests.s3server import CREDENTIALS, client, moto_server

pytestmark = pytest.mark.e2e
BUCKET = "cove-shared"
HEADERS = {"Authorization": f"Bearer {KEY}"}
CREATES = {("POST", "/api/snapshots"), ("POST", "/api/sandbox")}


@pytest.fixture(autouse=True)
def _http_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def store(*args: object, client_options: dict | None = None, **kw: object) -> S3Store:
        return S3Store(*args, client_options={**(client_options or {}), "allow_http": True},
                       **kw)  # type: ignore[arg-type]  # fmt: skip

    monkeypatch.setattr(sdk_storage, "S3Store", store)


def _worst_case(balancer: Balancer, method: str, path: str) -> int | None:
    """A build's log from the replica that did not take the create (else: in turn)."""
    if method == "GET" and path.endswith("/build-logs"):
        creates = [i for m, p, i in balancer.served if (m, p) in CREATES]
        return 1 - creates[-1]
    return None


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_server() as endpoint:
        client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory, backing: tuple[str, str],  # noqa: F811
             runner: RunnerProcess, s3: str,  # noqa: F811
             ) -> Iterator[tuple[Balancer, Server, Server]]:  # fmt: skip
    """Replicas A (the jobs' leader: started first) and B behind the balancer, whose
    URL is their public one (push access and build-log links name it)."""
    balancer = Balancer([], pick=_worst_case)
    env = {**_env(backing, runner), **CREDENTIALS, "COVE_PUBLIC_URL": balancer.url,
           "COVE_ARCHIVE_S3_BUCKET": BUCKET, "COVE_ARCHIVE_S3_ENDPOINT": s3}  # fmt: skip
    with running_server(tmp_path_factory.mktemp("cove-a"), 14, env) as a:
        b_dir = tmp_path_factory.mktemp("cove-b")
        for name in REPLICA_KEY_FILES:
            shutil.copy2(a.data_dir / name, b_dir / name)
        with running_server(b_dir, 15, env) as b:
            balancer.upstreams[:] = [a.url, b.url]
            with balancing(balancer):
                yield balancer, a, b


@pytest.fixture
def sdk(balanced: tuple[Balancer, Server, Server]) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=f"{balanced[0].url}/api",
                                 use_deprecated_polling=True))  # fmt: skip


@pytest.fixture
def context_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(f"alpha {uuid.uuid4().hex}\n")  # never uploaded before
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40000)  # 10 MB: multipart
    return root


def test_a_dockerfile_snapshot_behind_the_balancer(
    balanced: tuple[Balancer, Server, Server], sdk: Daytona, context_dir: Path,
) -> None:  # fmt: skip
    balancer = balanced[0]
    token = uuid.uuid4().hex
    image = (Image.base("cove-default").add_local_dir(str(context_dir), "/ctx")
             .env({"TOKEN": token})
             .run_commands("for i in 1 2 3; do echo line-$i-$TOKEN; done",
                           "cp /ctx/a.txt /opt/a.txt",
                           "md5sum /ctx/sub/b.bin > /opt/b.md5"))  # fmt: skip
    name = f"lb-{token[:12]}"
    logs: list[str] = []
    start = len(balancer.served)
    try:
        snap = sdk.snapshot.create(CreateSnapshotParams(name=name, image=image),
                                   on_logs=logs.append, timeout=600)  # fmt: skip
        assert snap.state == "active", logs
        text = "\n".join(logs)
        assert f"line-3-{token}" in text, text  # the log followed through the other replica
        served = balancer.served[start:]
        uploads = {i for m, p, i in served if p.startswith("/api/object-storage/s3/")
                   and m in ("PUT", "POST")}  # fmt: skip
        assert uploads == {0, 1}  # the multipart upload's parts went to both replicas
        builder = [i for m, p, i in served if (m, p) == ("POST", "/api/snapshots")]
        followed = [i for m, p, i in served if p.endswith("/build-logs")]
        assert followed and set(followed) == {1 - builder[0]}

        sb = sdk.create(CreateSandboxFromSnapshotParams(snapshot=name), timeout=120)
        try:
            out = run_ok(sb, "cat /opt/a.txt; cat /opt/b.md5")
            assert out.startswith((context_dir / "a.txt").read_text())
            assert out.endswith("  /ctx/sub/b.bin\n")
        finally:
            sdk.delete(sb)
    finally:
        httpx.delete(f"{balancer.url}/api/snapshots/{name}", headers=HEADERS, timeout=120)


def test_a_sandbox_from_a_declarative_image_behind_the_balancer(
    balanced: tuple[Balancer, Server, Server], sdk: Daytona, context_dir: Path,
) -> None:  # fmt: skip
    balancer = balanced[0]
    token = uuid.uuid4().hex
    image = (Image.base("cove-default").add_local_file(str(context_dir / "a.txt"), "/opt/a.txt")
             .run_commands(f"echo built-{token}; sleep 2; echo after-{token}"))  # fmt: skip
    chunks: list[str] = []
    start = len(balancer.served)
    sb = sdk.create(CreateSandboxFromImageParams(image=image),
                    on_snapshot_create_logs=chunks.append, timeout=600)  # fmt: skip
    try:
        text = "\n".join(chunks)
        assert f"after-{token}" in text, text
        served = balancer.served[start:]
        builder = [i for m, p, i in served if (m, p) == ("POST", "/api/sandbox")]
        assert {i for m, p, i in served if p.endswith("/build-logs")} == {1 - builder[0]}
        assert run_ok(sb, "cat /opt/a.txt") == (context_dir / "a.txt").read_text()
        # the log stays readable through either replica, and goes with the sandbox
        for srv in balanced[1:]:
            log = httpx.get(f"{srv.api_url}/sandbox/{sb.id}/build-logs", headers=HEADERS)
            assert f"after-{token}" in log.text
    finally:
        sdk.delete(sb)
    for srv in balanced[1:]:
        assert httpx.get(f"{srv.api_url}/sandbox/{sb.id}/build-logs",
                         headers=HEADERS).status_code == 404  # fmt: skip


def _follow(url: str, into: list[str]) -> threading.Thread:
    def run() -> None:
        with httpx.stream("GET", url, params={"follow": "true"}, headers=HEADERS,
                          timeout=httpx.Timeout(10.0, read=None)) as r:  # fmt: skip
            for text in r.iter_text():
                into.append(text)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _build_sandboxes(proc: RunnerProcess) -> list[str]:
    return [i for i in OciRuntime(proc.settings).list_ids() if i.startswith("build-")]


def test_builds_of_a_killed_replica_fail_with_the_reason(
    balanced: tuple[Balancer, Server, Server], runner: RunnerProcess,  # noqa: F811
) -> None:  # fmt: skip
    """B (not the jobs' leader) dies mid-build; A ends its builds at once (B's lease
    expired: no minute's grace), reason in the state and in the logs A's readers
    follow, and removes B's build sandboxes from the runner."""
    _, a, b = balanced
    token = uuid.uuid4().hex
    dockerfile = f"FROM cove-default\nRUN echo started-{token} && sleep 600\n"
    name = f"dead-{token[:12]}"
    snap = httpx.post(f"{b.api_url}/snapshots", headers=HEADERS, timeout=60, json={
        "name": name, "buildInfo": {"dockerfileContent": dockerfile}})  # fmt: skip
    assert snap.status_code == 200, snap.text
    sbx = httpx.post(f"{b.api_url}/sandbox", headers=HEADERS, timeout=60, json={
        "buildInfo": {"dockerfileContent": dockerfile.replace("started", "sandbox")}})  # fmt: skip
    assert sbx.status_code == 200, sbx.text
    sandbox_id = sbx.json()["id"]
    snap_log, sbx_log = [], []
    try:
        readers = [_follow(f"{a.api_url}/snapshots/{name}/build-logs", snap_log),
                   _follow(f"{a.api_url}/sandbox/{sandbox_id}/build-logs", sbx_log)]  # fmt: skip
        until(lambda: f"started-{token}" in "".join(snap_log)
              and f"sandbox-{token}" in "".join(sbx_log))  # fmt: skip
        b.kill9()

        for reader in readers:  # A ends them: its readers' streams end too
            reader.join(120)
            assert not reader.is_alive()
        for text in ("".join(snap_log), "".join(sbx_log)):
            assert text.rstrip().endswith("the loss of the API replica running it; create it "
                                          "again"), text  # fmt: skip
        got = httpx.get(f"{a.api_url}/snapshots/{name}", headers=HEADERS).json()
        assert got["state"] == "build_failed" and "replica" in got["errorReason"]
        got = httpx.get(f"{a.api_url}/sandbox/{sandbox_id}", headers=HEADERS).json()
        assert got["state"] == "build_failed" and "replica" in got["errorReason"]
        until(lambda: not _build_sandboxes(runner), timeout=60)
    finally:
        if not b.running:
            b.start()
        httpx.delete(f"{a.api_url}/sandbox/{sandbox_id}", headers=HEADERS, timeout=120)
        httpx.delete(f"{a.api_url}/snapshots/{name}", headers=HEADERS, timeout=120)


def test_a_flooding_build_is_kept_to_the_cap_in_the_database(
    balanced: tuple[Balancer, Server, Server], backing: tuple[str, str],  # noqa: F811
) -> None:  # fmt: skip
    """A build printing 40 MB (hostile commands) through one replica: the database keeps
    16 MiB of it and the count of the rest, which the other replica streams."""
    _, a, b = balanced
    token = uuid.uuid4().hex
    dockerfile = f"FROM cove-default\nRUN echo {token}; yes flood | head -c 40000000\n"
    name = f"flood-{token[:12]}"
    made = httpx.post(f"{a.api_url}/snapshots", headers=HEADERS, timeout=60, json={
        "name": name, "buildInfo": {"dockerfileContent": dockerfile}})  # fmt: skip
    assert made.status_code == 200, made.text
    try:
        streamed: list[str] = []
        _follow(f"{b.api_url}/snapshots/{name}/build-logs", streamed).join(600)
        text = "".join(streamed)
        assert CAP - 100 < len("flood\n") * text.count("flood\n") <= CAP
        assert f"[... output beyond {CAP} bytes is left out ...]" in text
        assert "bytes of build output were left out ...]" in text
        engine = create_engine(backing[0])
        key = f"snapshot:{made.json()['id']}"
        try:
            with engine.connect() as conn:
                stored, largest = conn.execute(text_sql(
                    "SELECT sum(length(data)), max(length(data)) FROM build_log_chunks"
                    " WHERE log_id = :k"), {"k": key}).one()  # fmt: skip
        finally:
            engine.dispose()
        assert CAP < stored < CAP + 64 * 1024 and largest <= 64 * 1024
    finally:
        httpx.delete(f"{a.api_url}/snapshots/{name}", headers=HEADERS, timeout=120)
