"""SSH access end to end: tokens from the official SDKs (Python sync and async,
TypeScript), sessions opened by the real OpenSSH client (``ssh``, ``sftp``) and by
asyncssh into real sandboxes, and what must be refused."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import asyncssh
import httpx
import pytest
from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from daytona_api_client.exceptions import NotFoundException

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e
TS = Path(__file__).resolve().parents[1] / "ts"
OPTIONS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o",
           "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
           "-o", "ConnectTimeout=30"]  # fmt: skip


@pytest.fixture(scope="module")
def ssh_client() -> str:
    found = shutil.which("ssh")
    if found is None:
        pytest.fail("the OpenSSH client is needed: run scripts/install (openssh-client)")
    return found


def ssh(server: Server, token: str, *args: str, stdin: bytes = b"",
        timeout: float = 60) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """``ssh -p PORT <token>@127.0.0.1 ARGS`` with the real OpenSSH client."""
    return subprocess.run(["ssh", "-p", str(server.ssh_port), *OPTIONS, *args[:-1],
                           f"{token}@127.0.0.1", *args[-1:]],
                          input=stdin, capture_output=True, timeout=timeout)  # fmt: skip


def test_sdk_access_and_openssh_sessions(server: Server, daytona: Daytona, sandboxes: list,
                                        ssh_client: str) -> None:  # fmt: skip
    sb = daytona.create(CreateSandboxFromSnapshotParams(env_vars={"FROM_SANDBOX": "yes"}))
    sandboxes.append(sb)
    access = sb.create_ssh_access(expires_in_minutes=30)
    token = access.token
    assert access.sandbox_id == sb.id and len(token) == 32 and token.isalnum()
    assert access.ssh_command == f"ssh -p {server.ssh_port} {token}@127.0.0.1"
    assert 29 * 60 < (access.expires_at - access.created_at).total_seconds() <= 30 * 60
    valid = sb.validate_ssh_access(token)
    assert valid.valid is True and valid.sandbox_id == sb.id
    # a command: its output, its exit status, stdin, stderr apart
    done = ssh(server, token, "id")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"uid=1000(daytona)")
    done = ssh(server, token, "tr a-z A-Z; echo oops >&2; echo $FROM_SANDBOX; exit 5",
               stdin=b"piped\n")  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (5, b"PIPED\nyes\n", b"oops\n")
    # an interactive shell on a terminal (-tt: stdin is no terminal here)
    shell = ssh(server, token, "-tt", "", stdin=b"tty; echo $((6*7)); hostname; exit 3\n")
    assert shell.returncode == 3, shell.stderr
    assert b"/dev/pts/" in shell.stdout and b"42\r\n" in shell.stdout
    assert sb.name.encode() in shell.stdout
    # the token never enters the sandbox
    seen = ssh(server, token, "env; ps -eo args; cat /proc/self/environ; ls -a ~")
    assert seen.returncode == 0 and b"FROM_SANDBOX=yes" in seen.stdout
    assert token.encode() not in seen.stdout + seen.stderr
    assert b"SSH_" not in seen.stdout  # nothing of the client's connection either


def test_forwarding_and_sftp_are_refused(server: Server, daytona: Daytona, sandboxes: list,
                                        ssh_client: str) -> None:  # fmt: skip
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(sb)
    token = sb.create_ssh_access().token
    # -W: a TCP connection through the gateway (direct-tcpip), here to the API itself
    done = ssh(server, token, "-W", f"127.0.0.1:{server.port}", "")
    assert done.returncode == 255 and b"stdio forwarding failed" in done.stderr
    # -R: a listener on the gateway's side
    done = ssh(server, token, "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9", "true")
    assert done.returncode == 255 and b"forwarding failed" in done.stderr
    sftp = subprocess.run(["sftp", "-P", str(server.ssh_port), *OPTIONS, f"{token}@127.0.0.1"],
                          input=b"ls\n", capture_output=True, timeout=60)  # fmt: skip
    assert sftp.returncode != 0 and b"subsystem request failed" in sftp.stderr

    async def local_forward() -> None:
        async with _connect(server, token) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", server.port)
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_unix_connection("/run/cove-does-not-matter.sock")
            assert (await conn.run("echo fine")).stdout == b"fine\n"

    asyncio.run(local_forward())


def _connect(server: Server, token: str) -> asyncssh.connect:
    return asyncssh.connect("127.0.0.1", server.ssh_port, username=token, known_hosts=None,
                            client_keys=None, agent_path=None, encoding=None,
                            preferred_auth="none")  # fmt: skip


def test_a_token_opens_a_bounded_number_of_connections_and_sessions(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    from cove.api.ssh import MAX_CONNECTIONS, MAX_SESSIONS

    sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(sb)
    token = sb.create_ssh_access().token

    async def flood() -> None:
        conns = [await _connect(server, token) for _ in range(MAX_CONNECTIONS)]
        try:
            with pytest.raises(asyncssh.PermissionDenied):
                await _connect(server, token)
            first = conns.pop()
            procs = [await first.create_process("sleep 60") for _ in range(MAX_SESSIONS)]
            with pytest.raises(asyncssh.ChannelOpenError):
                await first.create_process("true")
            procs.pop().close()
            for _ in range(100):  # the gateway sees the channel go
                await asyncio.sleep(0.05)
                try:
                    assert (await first.run("echo again")).stdout == b"again\n"
                    break
                except asyncssh.ChannelOpenError:
                    continue
            else:
                pytest.fail("a closed session's place was not freed")
            first.close()
            await first.wait_closed()
            for _ in range(100):  # and the connection's
                try:
                    again = await _connect(server, token)
                    break
                except asyncssh.PermissionDenied:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("a closed connection's place was not freed")
            conns.append(again)
            assert (await again.run("echo ok")).stdout == b"ok\n"
        finally:
            for conn in conns:
                conn.close()

    asyncio.run(flood())


def test_an_expired_tokens_connection_is_closed(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    """A token's connections last no longer than the token: at its expiry the gateway
    closes them (an open shell included)."""
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(sb)
    token = sb.create_ssh_access(expires_in_minutes=0.1).token  # 6 s

    async def run() -> None:
        async with _connect(server, token) as conn:
            assert (await conn.run("echo before")).stdout == b"before\n"
            shell = await conn.create_process("sleep 600")
            await asyncio.wait_for(conn.wait_closed(), 60)
            await asyncio.wait_for(shell.wait_closed(), 10)
        with pytest.raises(asyncssh.PermissionDenied):
            await _connect(server, token)

    asyncio.run(run())


def test_a_terminal_follows_the_window_and_ends_with_the_client(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(sb)
    token = sb.create_ssh_access().token

    async def run() -> None:
        async with _connect(server, token) as conn:
            proc = await conn.create_process(term_type="xterm-256color", term_size=(90, 20))
            proc.stdin.write(b"stty size; echo $TERM; sleep 1000 & echo bg\"\"-$!\n")
            seen = await _read_until(proc.stdout, b"bg-")
            assert b"20 90" in seen and b"xterm-256color" in seen
            proc.change_terminal_size(132, 43)
            proc.stdin.write(b"stty size\n")
            await _read_until(proc.stdout, b"43 132")

    async def piped() -> None:  # a command without a terminal, left running
        async with _connect(server, token) as conn:
            proc = await conn.create_process("sleep 1001 & echo started; wait")
            assert await proc.stdout.readline() == b"started\n"

    asyncio.run(run())
    asyncio.run(piped())
    # the clients left: the shell, the command and what they started are gone
    deadline = time.monotonic() + 30
    while "sleep 100" in sb.process.exec("ps -eo args").result:
        assert time.monotonic() < deadline, "the session's processes outlived the client"
        time.sleep(0.2)


async def _read_until(stream: asyncssh.SSHReader, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        chunk = await stream.read(4096)
        assert chunk, f"ended before {needle!r}: {seen!r}"
        seen += chunk
    return seen


def test_refused_tokens(server: Server, daytona: Daytona, sandboxes: list,
                        ssh_client: str) -> None:  # fmt: skip
    """Expired, revoked, forged and deleted sandboxes' tokens open nothing; another
    sandbox's token opens that sandbox only."""
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    other = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes += [sb, other]
    expired = sb.create_ssh_access(expires_in_minutes=0.01).token  # 0.6 s
    replaced = other.create_ssh_access().token
    others = other.create_ssh_access().token  # a new token revokes the earlier ones
    revoked = sb.create_ssh_access().token
    sb.revoke_ssh_access(revoked)
    time.sleep(1)
    forged = "A" * 32
    for token in (expired, replaced, revoked, forged, others.lower(), "root", "daytona"):
        done = ssh(server, token, "id")
        assert done.returncode == 255 and b"Permission denied" in done.stderr, token
        assert sb.validate_ssh_access(token).valid is False
    assert ssh(server, others, "hostname").stdout.strip() == other.name.encode()
    # deleting the sandbox ends its tokens
    other.delete()
    done = ssh(server, others, "id")
    assert done.returncode == 255 and b"Permission denied" in done.stderr


def test_a_stopped_sandbox_is_not_started(server: Server, daytona: Daytona, sandboxes: list,
                                         ssh_client: str) -> None:  # fmt: skip
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(sb)
    token = sb.create_ssh_access().token
    sb.stop()
    done = ssh(server, token, "id")
    assert done.returncode == 1 and b"is stopped; start it" in done.stderr
    sb.refresh_data()
    assert sb.state == "stopped"
    sb.start()
    assert ssh(server, token, "echo back").stdout == b"back\n"


def test_another_organization_cannot_grant_access(server: Server, daytona: Daytona,
                                                  sandboxes: list) -> None:  # fmt: skip
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(sb)
    token = sb.create_ssh_access().token
    key = server.org_key("ssh-other")
    stranger = Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))
    mine = stranger.create(CreateSandboxFromSnapshotParams())
    try:
        headers = {"Authorization": f"Bearer {key}"}
        for method in ("POST", "DELETE"):
            r = httpx.request(method, f"{server.api_url}/sandbox/{sb.id}/ssh-access",
                              headers=headers)  # fmt: skip
            assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
        assert mine.validate_ssh_access(token).valid is False
        with pytest.raises(NotFoundException):  # the SDK's own client, by id, as a stranger
            stranger._sandbox_api.create_ssh_access(sb.id)  # noqa: SLF001
        assert sb.validate_ssh_access(token).valid is True
    finally:
        mine.delete()


async def test_async_sdk(server: Server, async_daytona: AsyncDaytona, ssh_client: str) -> None:
    sb = await async_daytona.create(CreateSandboxFromSnapshotParams())
    try:
        access = await sb.create_ssh_access(expires_in_minutes=5)
        assert (await sb.validate_ssh_access(access.token)).sandbox_id == sb.id
        done = await asyncio.to_thread(ssh, server, access.token, "whoami")
        assert done.stdout == b"daytona\n", done.stderr
        await sb.revoke_ssh_access(access.token)
        assert (await sb.validate_ssh_access(access.token)).valid is False
    finally:
        await sb.delete()


def test_typescript_sdk(server: Server, ssh_client: str) -> None:
    node = shutil.which("node")
    if node is None or not (TS / "node_modules" / "@daytonaio" / "sdk").is_dir():
        pytest.fail("Node.js and tests/ts/node_modules are needed: run scripts/install")
    done = subprocess.run([node, "ssh_check.js", server.api_url, KEY], cwd=TS,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["command"] == f"ssh -p {server.ssh_port} {out['token']}@127.0.0.1"
    assert out["valid"] == {"valid": True, "sandboxId": out["sandboxId"]}
    assert out["ran"] == "hello-over-ssh\n"
    assert out["afterRevoke"] == {"valid": False, "sandboxId": ""}
    assert out["deleted"] is True
