"""Several ``cove runner`` processes on one machine, each in a network namespace of
its own acting as a separate host (its own data dir, address and nftables ruleset),
registered with ``cove runner add``: the fleet of test_multi_runner and
test_fleet_replicas."""

from __future__ import annotations

import contextlib
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

from cove.runner.layout import sandboxes_dir
from cove.store.runners import SqlRunnerStore
from cove.store.sql import make_engine
from cove.testing_remote import NetnsHost, Pki, RunnerProcess
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
def shared_archive_store(host: NetnsHost, bucket: str) -> Iterator[tuple[dict[str, str], Any]]:
    """A shared S3 archive store (moto) on this machine's side of ``host``'s link, with
    ``bucket``: yields the runners' settings for it and a client of it (the test
    process's AWS_* variables set meanwhile); afterwards no archive may be left."""
    saved = {k: os.environ.get(k) for k in CREDENTIALS}  # the test's own view of S3
    os.environ.update(CREDENTIALS)
    try:
        with moto_server(host.outside) as endpoint:
            s3 = client(endpoint)
            s3.create_bucket(Bucket=bucket)
            yield {**CREDENTIALS, "COVE_ARCHIVE_S3_BUCKET": bucket,
                   "COVE_ARCHIVE_S3_ENDPOINT": endpoint}, s3  # fmt: skip
            assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0, "archives left"
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def netns_runners(tmp_path_factory: pytest.TempPathFactory, pki: Pki, hosts: list[NetnsHost],
                  pool: int, env: dict[str, str] | None = None, *,
                  env_of: dict[str, dict[str, str]] | None = None,
                  ) -> Iterator[dict[str, RunnerProcess]]:  # fmt: skip
    """A started runner per host, named after NAMES (sandbox pools ``pool``, ``pool+1``,
    ...; ``env``, and ``env_of[name]`` for that one); afterwards each is stopped and
    must have left nothing on the machine."""
    runners: dict[str, RunnerProcess] = {}
    with contextlib.ExitStack() as stack:
        for i, (name, host) in enumerate(zip(NAMES, hosts, strict=True)):
            proc = RunnerProcess(tmp_path_factory.mktemp(f"runner-{name}"), pki,
                                 {"COVE_NETWORK_POOL": sandbox_pool(pool + i), **(env or {}),
                                  **(env_of or {}).get(name, {})},
                                 netns=host)  # fmt: skip
            runners[name] = proc
            stack.callback(stop_runner_clean, proc)
            proc.start()
        yield runners


def register(data_dir: Path, env: dict[str, str], runners: dict[str, RunnerProcess]) -> None:
    """``cove runner add`` each runner, and ``cove runner remove local``: the API's
    host runs no sandbox."""
    for name, proc in runners.items():
        done = runner_cli(data_dir, env, "add", name, proc.url)
        assert done.returncode == 0, done.stderr
    done = runner_cli(data_dir, env, "remove", "local")
    assert done.returncode == 0, done.stderr


@dataclass
class Fleet:
    """Runners registered with one API (on SQLite) whose own host runs no sandbox."""

    runners: dict[str, RunnerProcess]
    api: Server
    pki: Pki

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return runner_cli(self.api.data_dir, self.api.extra_env, *args)

    def runner_of(self, sandbox_id: str) -> str | None:
        """The name of the runner the API placed the sandbox on (None: on none)."""
        return runner_of(f"sqlite:///{self.api.data_dir / 'cove.db'}", sandbox_id)

    def on_host(self, name: str) -> set[str]:
        """The sandboxes whose files are on runner ``name``'s host (archives are in the
        shared store, no runner's)."""
        return on_host(self.runners[name])


@contextlib.contextmanager
def fleet_api(tmp_path_factory: pytest.TempPathFactory, pki: Pki,
              runners: dict[str, RunnerProcess], pool: int,
              env: dict[str, str] | None = None) -> Iterator[Fleet]:  # fmt: skip
    """A ``cove serve`` (sandbox pool ``pool``) with ``runners`` registered and its own
    embedded runner removed; quick heartbeats (a runner silent 3 s is lost), no warm
    pool. Every runner a test killed is started again before the API's clean-up."""
    cert, key = pki.api
    env = {"COVE_RUNNER_CA": str(pki.ca), "COVE_RUNNER_CERT": str(cert),
           "COVE_RUNNER_KEY": str(key), "COVE_RUNNER_HEARTBEAT_SECONDS": "0.5",
           "COVE_RUNNER_LOST_SECONDS": "3", "COVE_POOL_SIZE": "0", **(env or {})}  # fmt: skip
    api_dir = tmp_path_factory.mktemp("cove-api")
    register(api_dir, env, runners)
    with running_server(api_dir, pool, env) as api:
        yield Fleet(runners, api, pki)
        start_stopped(runners)


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
