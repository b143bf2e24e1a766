"""Several ``cove runner`` processes on one machine, each in a network namespace of
its own acting as a separate host (its own data dir, address and nftables ruleset),
registered with ``cove runner add``: the fleet of test_multi_runner,
test_snapshot_transfer, test_fleet_volumes and test_fleet_replicas."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daytona import Sandbox

from cove.core.config import Settings
from cove.runner.layout import sandboxes_dir
from cove.store.runners import SqlRunnerStore
from cove.store.sql import make_engine
from cove.testing import SHARED_SNAPSHOTS
from cove.testing_remote import NetnsHost, Pki, RunnerProcess, make_pki
from tests.e2e.conftest import Server, running_server
from tests.leaks import stop_runner_clean
from tests.nettools import sandbox_pool
from tests.s3server import CREDENTIALS, client, moto_server

NAMES = ("r1", "r2", "r3")


def runner_cli(data_dir: Path, env: dict[str, str], *args: str
               ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``cove runner ARGS`` on the API's database (that of ``data_dir``, or
    ``COVE_DATABASE_URL`` in ``env``)."""
    return subprocess.run([sys.executable, "-m", "cove.cli.main", "runner", *args,
                           "--data-dir", str(data_dir)], env={**os.environ, **env}, text=True,
                          capture_output=True, timeout=120)  # fmt: skip


def runners_listed(cli: Callable[..., subprocess.CompletedProcess[str]]) -> list[dict[str, Any]]:
    """The runners ``cove runner list --json`` shows (through ``cli``, a fleet's)."""
    done = cli("list", "--json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def wait_for(what: str, check: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


@contextlib.contextmanager
def netns_hosts(tag: str, net: str) -> Iterator[list[NetnsHost]]:
    """One namespace per name of NAMES, ``<tag><i>`` with the /30s ``<net>.<k+i>.0``
    (``k`` from this process's id: several runs may share a machine); deleted after."""
    base = (os.getpid() % 60) * 4
    hosts = [NetnsHost(f"{tag}{i}", f"{net}.{base + i}") for i in range(len(NAMES))]
    with contextlib.ExitStack() as stack:
        for host in hosts:
            stack.callback(host.delete)
            host.create()
        yield hosts


@contextlib.contextmanager
def netns_runners(tmp_path_factory: pytest.TempPathFactory, pki: Pki, hosts: list[NetnsHost],
                  pool: int, env: dict[str, str] | None = None, *, own_snapshots: bool = False,
                  env_of: dict[str, dict[str, str]] | None = None,
                  ) -> Iterator[dict[str, RunnerProcess]]:  # fmt: skip
    """A started runner per host, named after NAMES (sandbox pools ``pool``, ``pool+1``,
    ...; ``env``, and ``env_of[name]`` for that one); afterwards each is stopped and
    must have left nothing on the machine.

    With ``own_snapshots`` each runner has a snapshot dir and an OCI layout dir of its
    own (as separate hosts have; the default snapshot is the host's shared build),
    else they share the host's snapshot dir."""
    runners: dict[str, RunnerProcess] = {}
    with contextlib.ExitStack() as stack:
        for i, (name, host) in enumerate(zip(NAMES, hosts, strict=True)):
            own = _own_dirs(tmp_path_factory, name) if own_snapshots else {}
            proc = RunnerProcess(tmp_path_factory.mktemp(f"runner-{name}"), pki,
                                 {"COVE_NETWORK_POOL": sandbox_pool(pool + i), **own,
                                  **(env or {}), **(env_of or {}).get(name, {})},
                                 netns=host)  # fmt: skip
            runners[name] = proc
            stack.callback(stop_runner_clean, proc)
            proc.start()
        yield runners


def _own_dirs(tmp_path_factory: pytest.TempPathFactory, name: str) -> dict[str, str]:
    """A snapshot dir holding only the default snapshot (a link to the host's build) and
    an empty OCI layout dir, for runner ``name``."""
    snapshots = tmp_path_factory.mktemp(f"snapshots-{name}")
    default = Settings().default_snapshot
    (snapshots / default).symlink_to(SHARED_SNAPSHOTS / default)
    layouts = tmp_path_factory.mktemp(f"layouts-{name}")
    return {"COVE_SNAPSHOT_DIR": str(snapshots), "COVE_OCI_LAYOUT_DIR": str(layouts)}


def register(data_dir: Path, env: dict[str, str], runners: dict[str, RunnerProcess]) -> None:
    """``cove runner add`` each runner, and ``cove runner remove local``: the API's
    host runs no sandbox."""
    for name, proc in runners.items():
        done = runner_cli(data_dir, env, "add", name, proc.url)
        assert done.returncode == 0, done.stderr
    done = runner_cli(data_dir, env, "remove", "local")
    assert done.returncode == 0, done.stderr


def start_stopped(runners: dict[str, RunnerProcess]) -> None:
    """Start again every runner a test killed (so that every delete works)."""
    for proc in runners.values():
        if proc.proc is None or proc.proc.poll() is not None:
            proc.start()


def runner_of(database_url: str, sandbox_id: str) -> str | None:
    """The name of the runner the API placed the sandbox on (None: on none)."""
    engine = make_engine(database_url)
    try:
        store = SqlRunnerStore(engine)
        runner_id = store.runner_of(sandbox_id)
        return None if runner_id is None else store.get(runner_id).name
    finally:
        engine.dispose()


def on_host(runner: RunnerProcess) -> set[str]:
    """The sandboxes whose files are on the runner's host."""
    found = sandboxes_dir(runner.data_dir)
    return {p.name for p in found.iterdir()} if found.is_dir() else set()


def settled(sb: Sandbox) -> bool:
    """Not in a recoverable ``error`` (a lost runner's) any more."""
    sb.refresh_data()
    return sb.state.value != "error" or not sb.recoverable


def kill_runner(runner: RunnerProcess, victim: Sandbox, name: str) -> None:
    """``kill -9`` the runner alone (its sandboxes run on) and wait until ``victim``, a
    sandbox on it, is ``error`` for it, recoverably."""
    assert runner.proc is not None
    os.kill(runner.proc.pid, signal.SIGKILL)
    runner.proc.wait()

    def failed() -> bool:
        victim.refresh_data()
        return victim.state.value == "error"

    wait_for(f"the sandbox of the lost runner {name} is error", failed)
    assert victim.error_reason == f"runner {name} unreachable" and victim.recoverable


@dataclass
class Fleet:
    """Three runners in namespaces sharing an S3 archive store, behind one API."""

    runners: dict[str, RunnerProcess]
    api: Server
    pki: Pki
    s3: object  # a boto3 client of the shared store
    bucket: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return runner_cli(self.api.data_dir, self.api.extra_env, *args)

    def runner_of(self, sandbox_id: str) -> str | None:
        """The name of the runner the API placed the sandbox on (None: on none)."""
        return runner_of(f"sqlite:///{self.api.data_dir / 'cove.db'}", sandbox_id)

    def on_host(self, name: str) -> set[str]:
        """The sandboxes whose files are on runner ``name``'s host (archives are in the
        shared store, no runner's)."""
        return on_host(self.runners[name])

    def objects(self, prefix: str = "") -> list[str]:
        """The names of the objects in the shared store."""
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)  # type: ignore[attr-defined]
        return [o["Key"] for o in listed.get("Contents", [])]


@contextlib.contextmanager
def s3_fleet(tmp_path_factory: pytest.TempPathFactory, tag: str, net: str, pool: int,
             bucket: str, *, own_snapshots: bool = False,
             env_of: dict[str, dict[str, str]] | None = None) -> Iterator[Fleet]:  # fmt: skip
    """Three runners (namespaces ``<tag><i>`` on ``<net>``, sandbox pools from ``pool``;
    ``env_of[name]``: settings of one) sharing the S3 store ``bucket`` (moto, on this
    host's side of the first namespace's link), registered with an API (pool ``pool +
    3``) whose host runs no sandbox; the store must be empty afterwards."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    with contextlib.ExitStack() as stack:
        saved = {k: os.environ.get(k) for k in CREDENTIALS}  # the test's own view of S3
        stack.callback(_restore_env, saved)
        os.environ.update(CREDENTIALS)
        hosts = stack.enter_context(netns_hosts(tag, net))
        endpoint = stack.enter_context(moto_server(hosts[0].outside))
        s3 = client(endpoint)
        s3.create_bucket(Bucket=bucket)
        shared = {**CREDENTIALS, "COVE_ARCHIVE_S3_BUCKET": bucket,
                  "COVE_ARCHIVE_S3_ENDPOINT": endpoint}  # fmt: skip
        runners = stack.enter_context(netns_runners(tmp_path_factory, pki, hosts, pool, shared,
                                                    own_snapshots=own_snapshots,
                                                    env_of=env_of))  # fmt: skip
        api_dir = tmp_path_factory.mktemp("cove-api")
        cert, key = pki.api
        env = {"COVE_RUNNER_CA": str(pki.ca), "COVE_RUNNER_CERT": str(cert),
               "COVE_RUNNER_KEY": str(key), "COVE_RUNNER_HEARTBEAT_SECONDS": "0.5",
               "COVE_RUNNER_LOST_SECONDS": "3", "COVE_POOL_SIZE": "0"}  # fmt: skip
        register(api_dir, env, runners)
        with running_server(api_dir, pool + 3, env) as api:
            fleet = Fleet(runners, api, pki, s3, bucket)
            yield fleet
            start_stopped(runners)
        assert fleet.objects() == [], "objects left in the shared store"


def _restore_env(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
