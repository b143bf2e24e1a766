"""The API and the runner as two processes with their own data dirs: ``cove serve``
with COVE_RUNNER_URL runs every sandbox on a ``cove runner`` reached over mutual TLS,
and the official SDK sees no difference (lifecycle, exec, files, previews)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daytona import Daytona, DaytonaConfig
from websockets.sync.client import connect

from cove.runner.oci.runtime import OciRuntime
from cove.testing_remote import RunnerProcess, make_pki
from tests.e2e.conftest import KEY, Server, running_server
from tests.e2e.test_preview import PORT, serve_app
from tests.leaks import stop_runner_clean
from tests.nettools import FakeDns, sandbox_pool

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, e2e_dns: FakeDns) -> Iterator[RunnerProcess]:
    """A ``cove runner`` with its own data dir; afterwards nothing of it is left."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    proc = RunnerProcess(tmp_path_factory.mktemp("cove-runner"), pki,
                         {"COVE_NETWORK_POOL": sandbox_pool(11),
                          "COVE_DNS_UPSTREAM": e2e_dns.upstream},
                         host="0.0.0.0")  # every address: the sandboxes' gateway too  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        stop_runner_clean(proc)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, runner: RunnerProcess) -> Iterator[Server]:
    env = runner.pki.api_env(runner.url)
    with running_server(tmp_path_factory.mktemp("cove-api"), 12, env) as srv:
        yield srv


def test_the_sdk_uses_sandboxes_on_a_remote_runner(api: Server, runner: RunnerProcess,
                                                   tmp_path: Path) -> None:  # fmt: skip
    daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=api.api_url))
    sb = daytona.create()
    try:
        assert OciRuntime(runner.settings).list_ids() == {sb.id}  # on the runner's host
        assert OciRuntime(api.settings).list_ids() == set()  # not the API's
        result = sb.process.exec("echo hello from $(hostname)")
        assert result.exit_code == 0 and result.result.startswith("hello from")
        data = bytes(range(256)) * 4096  # 1 MiB, every byte value
        sb.fs.upload_file(data, "/tmp/blob.bin")
        digest = sb.process.exec("sha256sum /tmp/blob.bin").result.split()[0]
        assert digest == hashlib.sha256(data).hexdigest()
        assert sb.fs.download_file("/tmp/blob.bin") == data

        serve_app(sb)
        link = sb.get_preview_link(PORT)
        headers = {"X-Daytona-Preview-Token": link.token}
        for _ in range(3):  # over one kept-alive stream of the runner, each time
            assert httpx.get(f"{link.url}/a?x=1", headers=headers).text == "path=/a?x=1"
        assert httpx.get(f"{link.url}/a").status_code == 401
        with connect(link.url.replace("http://", "ws://") + "/ws",
                     additional_headers=headers) as ws:  # fmt: skip
            ws.send("hi")
            assert ws.recv(timeout=10) == "echo:hi"

        sb.stop()
        assert sb.state.value == "stopped"
        sb.start()
        assert sb.fs.download_file("/tmp/blob.bin") == data  # its files kept
        assert sb.process.exec("true").exit_code == 0
    finally:
        sb.delete()
    assert OciRuntime(runner.settings).list_ids() == set()


# From inside: the sandbox's gateway (the runner's host) and a TCP connection to a port.
REACH = """
import socket, struct, sys
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        gw = socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
for port in map(int, sys.argv[1:]):
    try:
        socket.create_connection((gw, port), timeout=3).close()
        print(gw, port, "open")
    except OSError as exc:
        print(gw, port, "closed", type(exc).__name__)
"""


def test_a_sandbox_cannot_reach_its_runner(api: Server, runner: RunnerProcess) -> None:
    """The runner listens on every address of its host; a sandbox on it reaches
    neither of its ports (the host's own addresses are closed to sandboxes, and the
    runner would want a client certificate besides)."""
    daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=api.api_url))
    sb = daytona.create()
    try:
        sb.fs.upload_file(REACH.encode(), "/tmp/reach.py")
        out = sb.process.exec(f"python3 /tmp/reach.py {runner.port} {runner.port + 1}")
        lines = out.result.strip().splitlines()
        assert len(lines) == 2 and all(" closed " in line for line in lines), out.result
    finally:
        sb.delete()
