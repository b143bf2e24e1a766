"""Several runners behind one API, on one machine: three ``cove runner`` processes,
each in a network namespace of its own acting as a separate host (its own data dir,
address and nftables ruleset), registered with ``cove runner add``; the API host
runs no sandbox (``cove runner remove local``). Through the official SDK: creates
land on different runners (placement), a runner killed with SIGKILL puts its
sandboxes in ``error`` while the others keep serving and gives them back when it
returns, a drained runner's sandboxes come back on another runner with their files
(archives in a shared S3 store), and runners or APIs without the CA's certificates
are refused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daytona import (
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    Sandbox,
)

from cove.runner import tls
from cove.testing_remote import make_pki
from tests.e2e.conftest import KEY
from tests.netns_runners import (
    NAMES,
    Fleet,
    kill_runner,
    runner_cli,
    runners_listed,
    s3_fleet,
    settled,
    wait_for,
)

pytestmark = pytest.mark.e2e
BUCKET = "cove-multi"
TAG = f"mr{os.getpid() % 1000}"  # namespaces of this run (several runs may share a host)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with s3_fleet(tmp_path_factory, TAG, "10.249", 21, BUCKET) as fleet:
        yield fleet


def _sdk(fleet: Fleet) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=fleet.api.api_url))


def _spread(fleet: Fleet, daytona: Daytona) -> dict[str, Sandbox]:
    """One sandbox per runner, by placement alone: {runner name: sandbox}."""
    placed: dict[str, Sandbox] = {}
    for _ in NAMES:
        sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        name = fleet.runner_of(sb.id)
        assert name is not None and name not in placed, f"{sb.id} placed on {name} again"
        placed[name] = sb
    return placed


PROBE = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print("open")
    except OSError:
        print("closed")
"""


def test_creates_land_on_different_runners(fleet: Fleet) -> None:
    daytona = _sdk(fleet)
    placed = _spread(fleet, daytona)
    try:
        assert set(placed) == set(NAMES)
        for name, sb in placed.items():
            assert fleet.on_host(name) == {sb.id}  # on that runner's host, on no other
            result = sb.process.exec("echo hello from $(hostname)")
            assert result.exit_code == 0 and result.result.startswith("hello from")
        # From inside: no runner's ports, neither its own host's nor another's.
        sb = placed["r1"]
        targets = [(fleet.runners[n].address, fleet.runners[n].port + k)
                   for n in NAMES for k in (0, 1)]  # fmt: skip
        sb.fs.upload_file(PROBE.encode(), "/tmp/probe.py")
        out = sb.process.exec("python3 /tmp/probe.py " + " ".join(f"{a}:{p}" for a, p in targets))
        assert out.result.split() == ["closed"] * len(targets), out.result
        listed = runners_listed(fleet.cli)
        found = {r["name"]: (r["state"], r["sandboxes"]) for r in listed}
        assert found == dict.fromkeys(NAMES, ("ready", 1))
    finally:
        for sb in placed.values():
            sb.delete()


def test_a_killed_runner_s_sandboxes_fail_and_come_back(fleet: Fleet) -> None:
    daytona = _sdk(fleet)
    placed = _spread(fleet, daytona)
    victim_name = "r2"
    victim, runner = placed[victim_name], fleet.runners[victim_name]
    try:
        victim.fs.upload_file(b"kept across the loss", "/home/daytona/kept.txt")
        kill_runner(runner, victim, victim_name)
        with pytest.raises(DaytonaError):  # fails at once, does not hang
            victim.process.exec("true")
        for name, sb in placed.items():  # the others keep serving
            if name != victim_name:
                assert sb.process.exec("echo ok").result.strip() == "ok"
        fresh = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        try:
            assert fleet.runner_of(fresh.id) != victim_name
        finally:
            fresh.delete()
        listed = {r["name"]: r["state"] for r in runners_listed(fleet.cli)}
        assert listed[victim_name] == "unreachable"

        runner.start()  # it comes back: the sandbox is what the runner has

        def back() -> bool:
            victim.refresh_data()
            return victim.state.value != "error"

        wait_for("the sandbox is back", back)
        assert victim.state.value == "started"
        assert victim.fs.download_file("/home/daytona/kept.txt") == b"kept across the loss"
        assert victim.process.exec("echo back").result.strip() == "back"
    finally:
        if runner.proc is None or runner.proc.poll() is not None:
            runner.start()
        for sb in placed.values():
            wait_for("ready to delete", lambda sb=sb: settled(sb))
            sb.delete()


def test_a_drained_runner_s_sandboxes_come_back_elsewhere_with_their_files(
        fleet: Fleet) -> None:  # fmt: skip
    daytona = _sdk(fleet)
    sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    others: list[Sandbox] = []
    drained = fleet.runner_of(sb.id)
    assert drained is not None
    try:
        data = os.urandom(256 * 1024)
        sb.fs.upload_file(data, "/home/daytona/data.bin")
        assert sb.process.exec("stat -c %s /home/daytona/data.bin").result.strip() == str(
            len(data))  # fmt: skip
        done = fleet.cli("drain", drained)
        assert done.returncode == 0, done.stderr

        def archived() -> bool:
            sb.refresh_data()
            return sb.state.value == "archived" and fleet.runner_of(sb.id) is None

        wait_for("the drained runner's sandbox is archived off it", archived)
        assert fleet.on_host(drained) == set()
        for _ in NAMES:  # a draining runner takes no new sandbox
            others.append(daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0)))
            assert fleet.runner_of(others[-1].id) != drained

        sb.start()  # restored from the shared archive store on another runner
        now_on = fleet.runner_of(sb.id)
        assert now_on is not None and now_on != drained
        assert fleet.on_host(now_on) >= {sb.id}
        assert sb.fs.download_file("/home/daytona/data.bin") == data
    finally:
        fleet.cli("uncordon", drained)
        sb.delete()
        for other in others:
            other.delete()


def test_callers_and_runners_without_the_ca_s_certificates_are_refused(
        fleet: Fleet, tmp_path: Path) -> None:  # fmt: skip
    runner = fleet.runners["r1"]
    rogue = make_pki(tmp_path / "rogue")  # another CA
    data = fleet.api.data_dir
    cert, key = rogue.api
    context = tls.client_context(fleet.pki.ca, cert, key)  # trusts the runner, not trusted
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{runner.url}/v1/info", verify=context, timeout=10)
    with pytest.raises(httpx.TransportError):  # no client certificate at all
        httpx.get(f"{runner.url}/v1/info", verify=str(fleet.pki.ca), timeout=10)
    # The API will not register it with the rogue CA's certificate, nor trust a
    # runner the rogue CA vouches for.
    env = {"COVE_RUNNER_CA": str(fleet.pki.ca), "COVE_RUNNER_CERT": str(cert),
           "COVE_RUNNER_KEY": str(key)}  # fmt: skip
    done = runner_cli(data, {**fleet.api.extra_env, **env}, "add", "rogue", runner.url)
    assert done.returncode != 0 and "rogue" not in fleet.cli("list").stdout
    env["COVE_RUNNER_CA"] = str(rogue.ca)
    env["COVE_RUNNER_CERT"], env["COVE_RUNNER_KEY"] = map(str, fleet.pki.api)
    done = runner_cli(data, {**fleet.api.extra_env, **env}, "add", "rogue", runner.url)
    assert done.returncode != 0 and "rogue" not in fleet.cli("list").stdout
