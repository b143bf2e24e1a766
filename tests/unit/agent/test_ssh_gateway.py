"""The SSH gateway in process: tokens from the API, sessions through the real agent
(as the test's user on the host), an asyncssh client. The real OpenSSH client and
real sandboxes are in tests/e2e/test_ssh_access.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import getpass
import logging
import os
import socket
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from asyncssh.constants import MSG_CHANNEL_OPEN, MSG_KEXINIT
from asyncssh.packet import SSHPacket, String, UInt32
from click.testing import CliRunner
from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.api.logredact import RedactSecrets
from cove.api.ssh import MAX_STARTUPS_PER_CLIENT
from cove.cli.main import main
from cove.core.config import Settings
from cove.runner.fake import FakeRuntime
from cove.testing import free_port
from tests.unit.agent.conftest import AUTH

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ssh_port() -> int:
    return free_port()


@pytest.fixture
def client(tmp_path: Path, agent_path: str, ssh_port: int) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", runtime="fake", api_key="test-key",
                        ssh_port=ssh_port, minute_seconds=0.2)  # fmt: skip
    with TestClient(create_app(settings, runtime=FakeRuntime(agent_path=agent_path))) as c:
        yield c


def _sandbox(client: TestClient) -> str:
    body = {"user": getpass.getuser(), "env": {"SANDBOX_VAR": "yes"}, "volumes": []}
    r = client.post("/api/sandbox", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _token(client: TestClient, sandbox_id: str, **query: object) -> str:
    r = client.post(f"/api/sandbox/{sandbox_id}/ssh-access", params=query, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def _connect(port: int, token: str, source: str = "127.0.0.1") -> asyncssh.connect:
    return asyncssh.connect("127.0.0.1", port, username=token, known_hosts=None,
                            client_keys=None, agent_path=None, password=None,
                            preferred_auth="none,password,publickey,keyboard-interactive",
                            encoding=None, local_addr=(source, 0))


def test_access_dto_and_validation(client: TestClient, ssh_port: int) -> None:
    sandbox_id = _sandbox(client)
    r = client.post(f"/api/sandbox/{sandbox_id}/ssh-access?expiresInMinutes=5", headers=AUTH)
    body = r.json()
    assert set(body) == {"id", "sandboxId", "token", "expiresAt", "createdAt", "updatedAt",
                         "sshCommand"}
    assert body["sandboxId"] == sandbox_id and len(body["token"]) == 32
    assert body["sshCommand"] == f"ssh -p {ssh_port} {body['token']}@127.0.0.1"
    ok = client.get("/api/sandbox/ssh-access/validate", params={"token": body["token"]},
                    headers=AUTH).json()
    assert ok == {"valid": True, "sandboxId": sandbox_id}
    bad = client.get("/api/sandbox/ssh-access/validate", params={"token": "x" * 32},
                     headers=AUTH).json()
    assert bad == {"valid": False, "sandboxId": ""}


@pytest.mark.parametrize("minutes", ["0", "-1", "abc", "1e9"])
def test_bad_expiry_is_a_400(client: TestClient, minutes: str) -> None:
    sandbox_id = _sandbox(client)
    r = client.post(f"/api/sandbox/{sandbox_id}/ssh-access?expiresInMinutes={minutes}",
                    headers=AUTH)
    assert r.status_code == 400, r.text


def test_exec_with_stdin_stderr_and_exit_status(client: TestClient, ssh_port: int) -> None:
    token = _token(client, _sandbox(client))

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            done = await conn.run("echo out; echo err >&2; echo $SANDBOX_VAR; exit 3")
            assert (done.stdout, done.stderr, done.exit_status) == (b"out\nyes\n", b"err\n", 3)
            piped = await conn.run("tr a-z A-Z", input=b"hello\n")
            assert (piped.stdout, piped.exit_status) == (b"HELLO\n", 0)

    asyncio.run(run())


def test_terminal_session_and_resize(client: TestClient, ssh_port: int) -> None:
    token = _token(client, _sandbox(client))

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            proc = await conn.create_process(term_type="xterm", term_size=(100, 30),
                                             encoding=None)  # fmt: skip
            proc.stdin.write(b"stty size; echo $TERM; tty\n")
            seen = await _read_until(proc.stdout, b"/dev/")
            assert b"30 100" in seen and b"xterm" in seen
            proc.change_terminal_size(120, 40)
            proc.stdin.write(b"stty size\n")
            await _read_until(proc.stdout, b"40 120")
            proc.stdin.write(b"exit 7\n")
            assert (await proc.wait()).exit_status == 7

    asyncio.run(run())


async def _read_until(stream: asyncssh.SSHReader, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        chunk = await stream.read(4096)
        assert chunk, f"ended before {needle!r}: {seen!r}"
        seen += chunk
    return seen


def test_refused_logins(client: TestClient, ssh_port: int) -> None:
    """Forged, revoked, expired and other sandboxes' tokens open nothing."""
    first, second = _sandbox(client), _sandbox(client)
    revoked = _token(client, first)
    assert client.delete(f"/api/sandbox/{first}/ssh-access", params={"token": revoked},
                         headers=AUTH).status_code == 200
    expired = _token(client, second, expiresInMinutes=0.0001)

    async def refused(token: str) -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            async with _connect(ssh_port, token):
                pass

    async def run() -> None:
        await asyncio.sleep(0.01)
        for token in (revoked, expired, "A" * 32, "", "x" * 300):
            await refused(token)

    asyncio.run(run())


def test_one_address_has_its_share_of_connections_not_yet_logged_in(
        client: TestClient, ssh_port: int) -> None:
    """Connections held without a login (up to the login timeout) from one address
    (127.0.0.2, the attacker's) are capped, as OpenSSH's ``PerSourceMaxStartups``: one
    past its share is told why and closed, others still log in, and the share comes
    back as its connections close or log in. Before, every one was held, and a few
    hundred used up the server's open files (tests/e2e/test_ssh_flood.py)."""
    token = _token(client, _sandbox(client))

    def opened(source: str) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", ssh_port), timeout=5,
                                        source_address=(source, 0))  # fmt: skip
        assert conn.recv(64).startswith(b"SSH-2.0-Cove")  # and never a login
        return conn

    async def run() -> None:
        held = [opened("127.0.0.2") for _ in range(MAX_STARTUPS_PER_CLIENT)]
        try:
            with pytest.raises(asyncssh.DisconnectError) as refused:
                async with _connect(ssh_port, token, "127.0.0.2"):
                    pass
            assert refused.value.code == asyncssh.DISC_TOO_MANY_CONNECTIONS
            assert "not yet logged in" in refused.value.reason
            async with _connect(ssh_port, token) as conn:  # another address: served
                assert (await conn.run("echo in")).stdout == b"in\n"
            held.pop().close()
            for _ in range(50):  # (until the server saw it close)
                with contextlib.suppress(asyncssh.DisconnectError):
                    async with _connect(ssh_port, token, "127.0.0.2") as conn:
                        # logged in: no longer counted, its address may start another
                        held.append(opened("127.0.0.2"))
                        assert (await conn.run("echo in")).stdout == b"in\n"
                        return
                await asyncio.sleep(0.1)
            raise AssertionError("the address's share did not come back")
        finally:
            for conn in held:
                conn.close()

    asyncio.run(run())


def test_forwarding_is_refused(client: TestClient, ssh_port: int) -> None:
    token = _token(client, _sandbox(client))

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", ssh_port)
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.start_sftp_client()
            assert (await conn.run("echo still-fine")).stdout == b"still-fine\n"

    asyncio.run(run())


def test_revoking_closes_open_connections(client: TestClient, ssh_port: int) -> None:
    sandbox_id = _sandbox(client)
    token = _token(client, sandbox_id)

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            assert (await conn.run("true")).exit_status == 0
            await asyncio.to_thread(client.delete, f"/api/sandbox/{sandbox_id}/ssh-access",
                                    headers=AUTH)  # fmt: skip
            await asyncio.wait_for(conn.wait_closed(), 10)

    asyncio.run(run())


def test_another_organization_cannot_make_or_check_access(client: TestClient,
                                                          tmp_path: Path) -> None:  # fmt: skip
    sandbox_id = _sandbox(client)
    token = _token(client, sandbox_id)
    done = CliRunner().invoke(main, ["keys", "create", "--org", "other", "--data-dir",
                                     str(tmp_path / "data")])  # fmt: skip
    other = {"Authorization": f"Bearer {done.output.strip()}"}
    r = client.post(f"/api/sandbox/{sandbox_id}/ssh-access", headers=other)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    r = client.delete(f"/api/sandbox/{sandbox_id}/ssh-access", headers=other)
    assert r.status_code == 404
    r = client.get("/api/sandbox/ssh-access/validate", params={"token": token}, headers=other)
    assert r.json() == {"valid": False, "sandboxId": ""}
    r = client.get("/api/sandbox/ssh-access/validate", params={"token": token}, headers=AUTH)
    assert r.json() == {"valid": True, "sandboxId": sandbox_id}  # still valid: nothing revoked


def test_a_new_token_replaces_the_old_and_tokens_survive_a_restart(
    tmp_path: Path, agent_path: str, ssh_port: int
) -> None:
    settings = Settings(data_dir=tmp_path / "data", runtime="fake", api_key="test-key",
                        ssh_port=ssh_port)  # fmt: skip
    runtime = FakeRuntime(agent_path=agent_path)
    with TestClient(create_app(settings, runtime=runtime)) as client:
        sandbox_id = _sandbox(client)
        old = _token(client, sandbox_id)
        new = _token(client, sandbox_id)
        assert not _valid(client, old) and _valid(client, new)
    db = (tmp_path / "data" / "cove.db").read_bytes()
    assert new.encode() not in db and old.encode() not in db  # only hashes are kept
    assert oct((tmp_path / "data" / "ssh_host_ed25519_key").stat().st_mode & 0o777) == "0o600"
    key = (tmp_path / "data" / "ssh_host_ed25519_key").read_bytes()
    with TestClient(create_app(settings, runtime=runtime)) as client:
        assert _valid(client, new)
        assert (tmp_path / "data" / "ssh_host_ed25519_key").read_bytes() == key

        async def run() -> None:
            async with _connect(ssh_port, new) as conn:
                assert (await conn.run("echo again")).stdout == b"again\n"

        asyncio.run(run())


def test_off_when_the_port_is_zero(tmp_path: Path, agent_path: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", runtime="fake", api_key="test-key",
                        ssh_port=0)  # fmt: skip
    with TestClient(create_app(settings, runtime=FakeRuntime(agent_path=agent_path))) as client:
        r = client.post(f"/api/sandbox/{_sandbox(client)}/ssh-access", headers=AUTH)
        assert r.status_code == 400 and "COVE_SSH_PORT=0" in r.json()["message"]
    assert not (tmp_path / "data" / "ssh_host_ed25519_key").exists()


def _valid(client: TestClient, token: str) -> bool:
    r = client.get("/api/sandbox/ssh-access/validate", params={"token": token}, headers=AUTH)
    return bool(r.json()["valid"])


def test_a_stopped_sandbox_is_not_started_by_a_login(client: TestClient, ssh_port: int) -> None:
    """As Daytona's gateway: the session fails, naming the state; nothing starts it."""
    sandbox_id = _sandbox(client)
    token = _token(client, sandbox_id)
    assert client.post(f"/api/sandbox/{sandbox_id}/stop", headers=AUTH).status_code == 200

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            done = await conn.run("echo hi")
            assert done.exit_status == 1 and done.stdout == b""
            assert b"is stopped; start it" in done.stderr

    asyncio.run(run())
    assert client.get(f"/api/sandbox/{sandbox_id}", headers=AUTH).json()["state"] == "stopped"


def test_tokens_stay_out_of_the_logs(client: TestClient, ssh_port: int,
                                     caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    sandbox_id = _sandbox(client)
    token = _token(client, sandbox_id)
    assert _valid(client, token)

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            await conn.run("true")
        with pytest.raises(asyncssh.PermissionDenied):
            async with _connect(ssh_port, token[::-1]):
                pass

    asyncio.run(run())
    server_side = "\n".join(r.getMessage() for r in caplog.records
                            if not r.name.startswith("httpx"))  # the test's own client
    assert "SSH login refused" in server_side
    assert token not in server_side and token[::-1] not in server_side
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s "%s %s"',
                               ("1.2.3.4", "GET", f"/api/x?a=1&token={token}&b=2"), None)
    RedactSecrets().filter(record)
    assert record.getMessage() == '1.2.3.4 "GET /api/x?a=1&token=***&b=2"'


def test_an_open_session_keeps_the_sandbox_from_auto_stopping(client: TestClient,
                                                              ssh_port: int) -> None:  # fmt: skip
    """A lifecycle minute lasts 0.2 s here: a quiet 3 s session spans 15 of them."""
    body = {"user": getpass.getuser(), "env": {}, "volumes": [], "autoStopInterval": 1}
    sandbox_id = client.post("/api/sandbox", json=body, headers=AUTH).json()["id"]
    token = _token(client, sandbox_id)

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            done = await conn.run("sleep 3; echo slept")
            assert (done.stdout, done.exit_status) == (b"slept\n", 0)

    asyncio.run(run())
    assert client.get(f"/api/sandbox/{sandbox_id}", headers=AUTH).json()["state"] == "started"
    deadline = time.monotonic() + 30  # and without a session the timer runs out
    while client.get(f"/api/sandbox/{sandbox_id}", headers=AUTH).json()["state"] != "stopped":
        assert time.monotonic() < deadline, "the auto-stop timer never ran out"
        time.sleep(0.1)


def test_a_busy_port_stops_the_server_with_a_clear_error(tmp_path: Path, agent_path: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = Settings(data_dir=tmp_path / "data", runtime="fake", api_key="test-key",
                            ssh_port=port)  # fmt: skip
        with pytest.raises(OSError, match=f"127.0.0.1:{port}.*COVE_SSH_PORT"):
            with TestClient(create_app(settings, runtime=FakeRuntime(agent_path=agent_path))):
                pass


def test_binary_data_flows_both_ways_unchanged(client: TestClient, ssh_port: int) -> None:
    token = _token(client, _sandbox(client))
    data = os.urandom(6 * 1024 * 1024)  # more than every window and queue on the way

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            done = await conn.run("cat; cat /dev/null >&2", input=data)
            assert done.exit_status == 0 and done.stdout == data

    asyncio.run(run())


def test_env_requests_are_refused(client: TestClient, ssh_port: int) -> None:
    """asyncssh would keep every variable a client sends, with no bound on their number
    (a client looping on them grew the server's memory); a session's environment is the
    sandbox's, so they are refused, and the session goes on."""
    token = _token(client, _sandbox(client))

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            proc = await conn.create_process("read line; echo got-$line-${V0:-unset}")
            for i in range(100):
                reply = await proc.channel._make_request(  # noqa: SLF001
                    b"env", String(f"V{i}"), String(bytes(100_000)))  # fmt: skip
                assert reply is False
            proc.stdin.write(b"it\n")
            done = await proc.wait()
            assert (done.stdout, done.exit_status) == (b"got-it-unset\n", 0)

    asyncio.run(run())


def _server_kexinit(port: int) -> SSHPacket:
    """The gateway's first key exchange packet (SSH_MSG_KEXINIT), as a client reads it
    after sending its version."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"SSH-2.0-test\r\n")
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(4096) or pytest.fail("closed before its version")
        data = data.partition(b"\r\n")[2]
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            data += sock.recv(65536) or pytest.fail("closed before its KEXINIT")
    size, padding = int.from_bytes(data[:4], "big"), data[4]
    packet = SSHPacket(data[5:4 + size - padding])
    assert packet.get_byte() == MSG_KEXINIT
    packet.get_bytes(16)  # its cookie
    return packet


def test_compression_is_refused(client: TestClient, ssh_port: int) -> None:
    """A compressed packet is inflated whole on the server's event loop: 256 KiB of
    zlib (an ignored SSH_MSG_IGNORE) would be 256 MB there. None is offered (as on
    Daytona); clients that offer it too connect without it."""
    token = _token(client, _sandbox(client))
    packet = _server_kexinit(ssh_port)
    lists = [packet.get_namelist() for _ in range(8)]  # kex, host key, 2 ciphers, 2 MACs,
    assert lists[6:] == [[b"none"], [b"none"]]  # then compression each way

    async def run() -> None:
        # A client offering zlib alone is refused. Both ends see that the key exchange
        # fails, and each sends its disconnect: asyncssh's client reports either, or
        # the connection's loss when the server's arrives while it reports its own.
        with pytest.raises((asyncssh.KeyExchangeFailed, asyncssh.ConnectionLost)):
            await asyncssh.connect("127.0.0.1", ssh_port, username=token, known_hosts=None,
                                   client_keys=None, agent_path=None, preferred_auth="none",
                                   compression_algs=["zlib@openssh.com"])  # fmt: skip
        async with asyncssh.connect("127.0.0.1", ssh_port, username=token, known_hosts=None,
                                    client_keys=None, agent_path=None, preferred_auth="none",
                                    compression_algs=["zlib@openssh.com", "none"]) as conn:
            assert conn.get_extra_info("recv_compression") in (None, "none")
            assert (await conn.run("echo plain")).stdout == "plain\n"

    asyncio.run(run())


def test_input_a_command_does_not_read_is_bounded(client: TestClient, ssh_port: int) -> None:
    """The gateway stops taking a client's input the sandbox does not read after a
    bounded amount (the channel's window, the session's queue, the agent's window),
    also when the client's packets are far bigger than the gateway announced (asyncssh
    takes up to 256 KiB each: a queue counted in chunks held 16 MiB of them)."""
    token = _token(client, _sandbox(client))
    sent = 40 * 1024 * 1024

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            proc = await conn.create_process("sleep 600")
            proc.channel._send_pktsize = 250_000  # noqa: SLF001 (the announced one: 32 KiB)
            proc.stdin.write(bytes(sent))
            left, still = -1, 0
            while still < 5:  # until the gateway took nothing more for a second
                await asyncio.sleep(0.2)
                now = proc.channel.get_write_buffer_size()
                left, still = now, (still + 1 if now == left else 0)
            assert sent - left < 10 * 1024 * 1024  # (16 MiB and more before)
            proc.close()

    asyncio.run(run())


def _ssh_memory() -> int:
    """Bytes traced in what asyncssh's and Cove's code allocated. Not the whole
    process: the server's database caches (SQLAlchemy's) grow on their own meanwhile,
    by some 15 KB a second, for longer on a busy host (+510 KB once in a full run)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/asyncssh/*"), tracemalloc.Filter(True, "*/cove/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_tiny_packets_held_while_the_sandbox_reads_nothing_cost_their_bytes(
    client: TestClient, ssh_port: int
) -> None:
    """Once a session takes no input (the command reads none), what its window still
    lets in is held; asyncssh held each packet apart (some 100 bytes for one byte of
    data), so a client's one-byte packets cost the server 100 times their window."""
    token = _token(client, _sandbox(client))
    tiny = 10_000

    async def settled(proc: asyncssh.SSHClientProcess[bytes]) -> None:
        left, still = -1, 0
        while still < 5:  # until the gateway took nothing more for a second
            await asyncio.sleep(0.2)
            now = proc.channel.get_write_buffer_size()
            left, still = now, (still + 1 if now == left else 0)

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            proc = await conn.create_process("sleep 600")
            proc.stdin.write(bytes(1_600_000))  # past the agent's window and the queue
            await settled(proc)
            held = _ssh_memory()
            proc.channel._send_pktsize = 1  # noqa: SLF001 (one byte a packet)
            proc.stdin.write(bytes(tiny))
            await settled(proc)
            assert proc.channel.get_write_buffer_size() == 0  # all taken, and held
            grown = _ssh_memory() - held
            assert grown < 20 * tiny, grown
            proc.close()

    tracemalloc.start()
    try:
        asyncio.run(run())
    finally:
        tracemalloc.stop()


def test_output_to_a_client_that_stops_reading_is_bounded(client: TestClient,
                                                          ssh_port: int) -> None:  # fmt: skip
    """A client's channel window is its own say (here 2 GiB), so only its socket tells
    whether it reads: the gateway stops passing output on once the socket's buffer is
    full (asyncssh ignores that, and buffered all the sandbox wrote)."""
    token = _token(client, _sandbox(client))
    size = 100_000_000

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            await conn.create_process(f"head -c {size} /dev/zero", window=2**31 - 1)
            conn._transport.pause_reading()  # type: ignore[union-attr]  # noqa: SLF001
            start = tracemalloc.get_traced_memory()[0]
            grown, still = 0, 0
            while still < 5:  # until the server took nothing more for a second
                await asyncio.sleep(0.2)
                now = tracemalloc.get_traced_memory()[0] - start
                grown, still = now, (still + 1 if now - grown < 100_000 else 0)
            assert grown < 20_000_000, grown
            conn.abort()

    tracemalloc.start()
    try:
        asyncio.run(run())
    finally:
        tracemalloc.stop()


def test_a_client_that_reads_nothing_is_not_read_either(client: TestClient,
                                                        ssh_port: int) -> None:  # fmt: skip
    """Replies to a client's packets (here refused channels) wait in the server until
    it reads them: once they pile up, the gateway stops reading its packets (a client
    that never read grew them without end)."""
    token = _token(client, _sandbox(client))

    def gateway() -> asyncssh.SSHServerConnection:
        found = [c for c in gc.get_objects() if isinstance(c, asyncssh.SSHServerConnection)]
        assert len(found) == 1
        return found[0]

    async def run() -> None:
        async with _connect(ssh_port, token) as conn:
            conn._transport.pause_reading()  # type: ignore[union-attr]  # noqa: SLF001
            for i in range(120_000):  # each refused at once: ~50 bytes of reply
                conn.send_packet(MSG_CHANNEL_OPEN, String(b"x11"), UInt32(i), UInt32(1000),
                                 UInt32(1000), String(b""), UInt32(0))  # fmt: skip
                if i % 1000 == 0:
                    await asyncio.sleep(0)
            server = gateway()
            read, still = -1, 0
            while still < 5 and server._recv_seq != conn._send_seq:  # noqa: SLF001
                await asyncio.sleep(0.2)  # until it read them all, or stopped reading
                now = server._recv_seq  # noqa: SLF001
                read, still = now, (still + 1 if now == read else 0)
            assert server._transport is not None  # noqa: SLF001
            held = server._transport.get_write_buffer_size()  # noqa: SLF001
            assert held < 1_000_000, held  # (8 MB before, and growing with the client's)
            conn.abort()

    asyncio.run(run())
