"""``cove runner`` and RemoteRunner over mutual TLS, against a real ``cove runner``
process on the fake runtime: who may call it, whom the API trusts, and that calls,
answers and errors cross the wire unchanged."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from cove.core.ports import (
    ContainerSpec,
    ContainerStatus,
    ImageConfig,
    NetworkPolicy,
    PulledImage,
    RegistryAuth,
    Resources,
    VolumeBind,
)
from cove.errors import BadRequest, RuntimeBackendError, Unavailable
from cove.runner import daemon, tls, wire
from cove.runner import remote as remote_module
from cove.runner.fake import FakeRuntime
from cove.runner.local import LocalRunner
from cove.runner.remote import RemoteRunner
from cove.testing_remote import Pki, RunnerProcess, make_pki
from tests.unit.core.test_images import StallingRuntime


def _runner(tmp: Path, pki: Pki, *, check: bool = True) -> RunnerProcess:
    snapshots = tmp / "snapshots"
    snapshots.mkdir(exist_ok=True)
    proc = RunnerProcess(tmp / f"data-{pki.runner[0].stem}-{id(pki)}", pki,
                         {"COVE_RUNTIME": "fake", "COVE_SNAPSHOT_DIR": str(snapshots)})  # fmt: skip
    proc.data_dir.mkdir()
    proc.start(30, check=check)
    return proc


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("remote")


@pytest.fixture(scope="module")
def pki(tmp: Path) -> Pki:
    return make_pki(tmp / "pki")


@pytest.fixture(scope="module")
def rogue(tmp: Path) -> Path:
    """Another CA (self-signed, like any CA), with an API's and a runner's certificate."""
    tls.init_ca(tmp / "rogue")
    tls.issue(tmp / "rogue", "api", server=False)
    tls.issue(tmp / "rogue", "runner", server=True, hosts=("127.0.0.1",))
    return tmp / "rogue"


@pytest.fixture(scope="module")
def proc(tmp: Path, pki: Pki) -> Iterator[RunnerProcess]:
    runner = _runner(tmp, pki)
    yield runner
    runner.stop()


@pytest.fixture
async def remote(proc: RunnerProcess, pki: Pki) -> AsyncIterator[RemoteRunner]:
    runner = RemoteRunner.connect(proc.url, pki.ca, *pki.api)
    yield runner
    await runner.close()


def _client(pki: Pki, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


async def _stream_answer(port: int, ctx: ssl.SSLContext) -> bytes:
    """What the stream port answers a request line (b"" when it hung up)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        writer.write(b'{"sandbox": "nope", "port": null}\n')
        line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        return line
    except (OSError, ssl.SSLError):
        return b""


@pytest.mark.parametrize("caller", ["none", "self-signed", "other CA", "a runner's cert"])
async def test_the_runner_refuses_a_caller_without_a_client_certificate_of_its_ca(
    proc: RunnerProcess, pki: Pki, rogue: Path, caller: str
) -> None:
    cert = {"none": None, "self-signed": (rogue / "ca.pem", rogue / "ca.key"),
            "other CA": (rogue / "api.pem", rogue / "api.key"),
            "a runner's cert": pki.runner}[caller]  # fmt: skip
    ctx = _client(pki, cert)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{proc.url}/v1/info", verify=ctx, timeout=10)
    assert await _stream_answer(proc.port + 1, ctx) == b""
    # the API's certificate, on the same connections, is let in
    ok = _client(pki, pki.api)
    assert httpx.get(f"{proc.url}/v1/info", verify=ok, timeout=10).status_code == 200
    assert b'"type": "Unavailable"' in await _stream_answer(proc.port + 1, ok)


def test_the_api_refuses_a_runner_it_cannot_verify(tmp: Path, pki: Pki, rogue: Path) -> None:
    """A runner with another CA's certificate, or with ours for another address."""
    tls.issue(pki.dir, "elsewhere", server=True, hosts=("192.0.2.9", "runner.example"))
    for cert in [(rogue / "runner.pem", rogue / "runner.key"),
                 (pki.dir / "elsewhere.pem", pki.dir / "elsewhere.key")]:  # fmt: skip
        impostor = _runner(tmp, Pki(pki.dir, pki.ca, cert, pki.api), check=False)
        try:
            with pytest.raises(RuntimeBackendError, match="unreachable"):
                RemoteRunner.connect(impostor.url, pki.ca, *pki.api)
        finally:
            impostor.stop()


def test_certificates_are_never_overwritten(tmp: Path, pki: Pki) -> None:
    with pytest.raises(FileExistsError):
        tls.init_ca(pki.dir)
    with pytest.raises(FileExistsError):
        tls.issue(pki.dir, "api", server=False)
    with pytest.raises(ValueError, match="--host"):
        tls.issue(pki.dir, "nohost", server=True)
    assert (pki.dir / "ca.key").stat().st_mode & 0o077 == 0
    assert pki.api[1].stat().st_mode & 0o077 == 0


async def test_calls_answers_and_errors_cross_the_wire_as_they_are(
    remote: RemoteRunner,
) -> None:
    spec = ContainerSpec(
        sandbox_id="wire-1", hostname="w", snapshot="cove-default",
        resources=Resources(cpu=1, memory=1, disk=3), env={"A": "1"},
        volumes=(VolumeBind("vol", "/data", "sub"),),
        network=NetworkPolicy(allow_cidrs=("192.0.2.0/24",), peers=(("db", "x"),)),
    )  # fmt: skip
    assert wire.decode(ContainerSpec, wire.encode(ContainerSpec, spec)) == spec
    local = LocalRunner(FakeRuntime())
    assert remote.has_snapshot("cove-default") and not remote.has_snapshot("nope")
    assert remote.has_isolation("crun") and not remote.has_isolation("nope")
    assert await remote.status("wire-1") is ContainerStatus.ABSENT
    for runner in (local, remote):  # the same failure, the same class
        with pytest.raises(RuntimeBackendError) as raised:
            await runner.pause("wire-1")
        with pytest.raises(Unavailable):
            await runner.open_agent("wire-1")
    await remote.create(spec)
    await remote.start(spec)
    assert await remote.status("wire-1") is ContainerStatus.RUNNING
    assert "wire-1" in await remote.list_ids()
    assert (await remote.stats("wire-1")).pids >= 0
    assert (await remote.capacity()).sandboxes == 1  # a real host's is in range
    await remote.destroy("wire-1")
    assert "wire-1" not in await remote.list_ids()
    assert raised.value.message
    lines: list[str] = []
    with pytest.raises(RuntimeBackendError, match="not found in its registry"):
        await remote.pull_image("ref-1", "example.org/x:1", None, lines.append)


@pytest.mark.parametrize("name", ["../etc", ".hidden", "a/b", ""])
async def test_names_that_would_leave_the_runners_directories_are_refused(
    remote: RemoteRunner, name: str
) -> None:
    with pytest.raises(BadRequest):
        await remote.destroy(name)
    with pytest.raises(BadRequest):
        await remote.remove_snapshot(name)
    with pytest.raises(BadRequest):
        await remote.delete_volume(name)
    spec = ContainerSpec(sandbox_id="wire-2", hostname="w", snapshot="cove-default",
                         resources=Resources(cpu=1, memory=1, disk=3),
                         volumes=(VolumeBind(name, "/data"),))  # fmt: skip
    with pytest.raises(BadRequest):
        await remote.create(spec)


async def test_volume_data_is_deleted_on_the_runner(remote: RemoteRunner,
                                                    proc: RunnerProcess) -> None:  # fmt: skip
    assert remote.volume_store() is None  # its own volumes dir: no COVE_VOLUMES_DIR
    data = proc.data_dir / "volumes" / "vol-1"
    (data / "sub").mkdir(parents=True)
    await remote.delete_volume("vol-1")
    assert not data.exists()
    await remote.delete_volume("vol-1")  # none: nothing to do


async def test_a_pull_streams_its_progress_and_carries_the_credentials(tmp: Path) -> None:
    """In process (the daemon's app without TLS): progress lines arrive as they are
    made, the registry password reaches the runner, the image config comes back."""
    host = FakeRuntime()
    config = ImageConfig(env={"A": "1"}, workdir="/w", entrypoint=("/bin/app",))
    host.registry["example.org/x:1"] = ("sha256:abc", config, "s3cret")
    local = LocalRunner(host)
    app = daemon.create_app(local, daemon.Inventory(local, None, None, "cove-default"), 1)
    remote = RemoteRunner("https://runner.test:1", ssl.create_default_context())
    remote._client = httpx.AsyncClient(transport=httpx.ASGITransport(app),  # noqa: SLF001
                                       base_url="https://runner.test:1")  # fmt: skip
    lines: list[str] = []
    with pytest.raises(RuntimeBackendError, match="authentication required"):
        await remote.pull_image("ref-1", "example.org/x:1", None, lines.append)
    auth = RegistryAuth("example.org", "me", "s3cret")
    pulled = await remote.pull_image("ref-1", "example.org/x:1", auth, lines.append)
    assert pulled == PulledImage(size=1, digest="sha256:abc", config=config)
    assert lines == ["Pulled example.org/x:1"] and host.pulls[-1] == ("example.org/x:1", auth)
    assert remote.has_snapshot("cove-default") and remote.stream_port == 1
    await remote.close()


async def test_a_pull_whose_api_hangs_up_is_cancelled_on_the_runner() -> None:
    """The API cancels a pull (its snapshot was deleted) by leaving the call: the
    runner's pull ends with it (its download stopped), not at its registry's pace."""
    host = StallingRuntime()
    host.registry["example.org/x:1"] = ("sha256:abc", ImageConfig(), None)
    local = LocalRunner(host)
    app = daemon.create_app(local, daemon.Inventory(local, None, None, "cove-default"), 1)
    remote = RemoteRunner("https://runner.test:1", ssl.create_default_context())
    remote._client = httpx.AsyncClient(transport=httpx.ASGITransport(app),  # noqa: SLF001
                                       base_url="https://runner.test:1")  # fmt: skip
    try:
        pull = asyncio.create_task(remote.pull_image("ref-1", "example.org/x:1", None))
        while host.running == 0:
            await asyncio.sleep(0.01)
        pull.cancel()
        await asyncio.wait({pull})
        for _ in range(200):
            if host.running == 0:
                break
            await asyncio.sleep(0.01)
        assert host.running == 0 and host.cancelled == 1
    finally:
        host.done.set()
        await remote.close()


CAPACITY = (
    b'{"result": {"cpu": 2, "memory": 1, "memory_free": 1, "disk": 1, "disk_free": 1, '
    b'"sandboxes": 0, "max_sandboxes": 0}}'
)
INVENTORY = (
    b'"stream_port": 1, "snapshots": ["cove-default"], "local_images": [], "isolations": ["crun"]'
)


class LyingRunner:
    """A runner host taken over (its certificate is good): a request for a path of
    ``answers`` gets that body back (None: no answer ever), the others a small
    inventory."""

    def __init__(self, pki: Pki, answers: Mapping[str, bytes | None]) -> None:
        self.context = tls.server_context(pki.ca, *pki.runner)
        self.answers = {path.encode(): body for path, body in answers.items()}

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0,
                                                 ssl=self.context)  # fmt: skip
        return f"https://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            await reader.readexactly(length)
            body = self.answers.get(head.split()[1], b"{" + INVENTORY + b"}")
            if body is None:
                await reader.read()  # until the API hangs up
                return
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body))  # fmt: skip
            for start in range(0, len(body), 2**20):
                writer.write(body[start : start + 2**20])
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("call", ["connect", "status", "pull"])
async def test_a_runner_cannot_make_the_api_buffer_an_endless_answer(pki: Pki, call: str) -> None:
    """An answer (a pull's line) past MAX_REPLY is refused unread, however well formed
    (a taken-over runner host would otherwise grow the API, every tenant's, at will)."""
    pad = b" " * remote_module.MAX_REPLY
    if call == "pull":
        path = "/v1/call/pull_image"
        body = (b'{"progress": "' + b"x" * remote_module.MAX_REPLY + b'"}\n'
                b'{"result": {"size": 1, "digest": "sha256:abc"}}\n')  # fmt: skip
    else:
        path = "/v1/info" if call == "connect" else "/v1/call/status"
        body = b'{"result": "running", ' + INVENTORY + pad + b"}"
    async with LyingRunner(pki, {path: body}) as url:
        remote = RemoteRunner(url, tls.client_context(pki.ca, *pki.api))
        try:
            with pytest.raises(RuntimeBackendError, match="too large"):
                if call == "connect":
                    await asyncio.to_thread(RemoteRunner.connect, url, pki.ca, *pki.api)
                elif call == "status":
                    await remote.status("sb-1")
                else:
                    await remote.pull_image("ref-1", "example.org/x:1", None)
        finally:
            await remote.close()


@pytest.mark.parametrize(
    ("call", "path", "body"),
    [
        ("status", "/v1/call/status", b'{"result": "sideways"}'),
        ("capacity", "/v1/call/capacity", b'{"result": {"cpu": "many"}}'),
        ("capacity", "/v1/call/capacity", CAPACITY.replace(b'"cpu": 2', b'"cpu": %d' % 2**64)),
        ("capacity", "/v1/call/capacity", CAPACITY.replace(b'"disk_free": 1', b'"disk_free": -1')),
        ("list_ids", "/v1/call/list_ids", b'{"answer": []}'),
        ("refresh", "/v1/info", b'{"stream_port": "x", "snapshots": 1}'),
        ("refresh", "/v1/info", b"{" + INVENTORY.replace(b": 1,", b": 70000,") + b"}"),
        ("pull", "/v1/call/pull_image", b'{"progress": "1/2"}\nnot json\n'),
        ("pull", "/v1/call/pull_image", b'{"result": {"size": "big", "digest": 1}}\n'),
    ],
)
async def test_a_runner_s_malformed_answer_is_its_failure(
    pki: Pki, call: str, path: str, body: bytes
) -> None:
    """As the Runner port says (RuntimeBackendError), not a crash of its caller: the
    fleet's keeper, the reconciler and the API's start wait for a CoveError, and one
    runner host taken over would otherwise stop them for every runner."""
    async with LyingRunner(pki, {path: body}) as url:
        remote = RemoteRunner(url, tls.client_context(pki.ca, *pki.api))
        before = remote.stream_port
        try:
            with pytest.raises(RuntimeBackendError, match="malformed"):
                if call == "status":
                    await remote.status("sb-1")
                elif call == "pull":
                    await remote.pull_image("ref-1", "example.org/x:1", None)
                else:
                    await getattr(remote, call)()
            if call == "refresh":
                assert remote.stream_port == before  # nothing of a bad inventory taken
        finally:
            await remote.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("call", ["status", "open_agent", "pull"])
async def test_a_lost_runners_error_names_no_address(
    pki: Pki, call: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The error of a call to a runner that does not answer reaches the tenant (a 503,
    a sandbox's errorReason): it names the runner as its operator did, never its
    address or ports (the server's log has them, for the operator)."""
    port, stream_port = _free_port(), _free_port()
    remote = RemoteRunner(f"https://127.0.0.1:{port}", tls.client_context(pki.ca, *pki.api),
                          name="runner-a")  # fmt: skip
    remote.stream_port = stream_port
    try:
        with pytest.raises(Unavailable) as caught:
            if call == "status":
                await remote.status("sb-1")
            elif call == "open_agent":
                await remote.open_agent("sb-1")
            else:
                await remote.pull_image("ref-1", "example.org/x:1", None)
    finally:
        await remote.close()
    assert caught.value.message == "runner runner-a unreachable"
    logged = stream_port if call == "open_agent" else port
    assert f"127.0.0.1:{logged}" in caplog.text or f"'127.0.0.1', {logged}" in caplog.text
