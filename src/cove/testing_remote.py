"""Run a real ``cove runner`` in a child process, with a test PKI (for tests and
benchmarks of the API/runner split)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from cove.core.config import Settings
from cove.runner import tls
from cove.testing import SHARED_SNAPSHOTS


@dataclass(frozen=True)
class Pki:
    """A CA, a runner's certificate (for 127.0.0.1) and an API's, in ``dir``."""

    dir: Path
    ca: Path
    runner: tuple[Path, Path]
    api: tuple[Path, Path]

    def runner_env(self) -> dict[str, str]:
        cert, key = self.runner
        return {"COVE_RUNNER_CA": str(self.ca), "COVE_RUNNER_CERT": str(cert),
                "COVE_RUNNER_KEY": str(key)}  # fmt: skip

    def api_env(self, url: str) -> dict[str, str]:
        cert, key = self.api
        return {"COVE_RUNNER_URL": url, "COVE_RUNNER_CA": str(self.ca),
                "COVE_RUNNER_CERT": str(cert), "COVE_RUNNER_KEY": str(key)}  # fmt: skip


def make_pki(directory: Path) -> Pki:
    ca = tls.init_ca(directory)
    runner = tls.issue(directory, "runner", server=True, hosts=("127.0.0.1", "localhost"))
    return Pki(directory, ca, runner, tls.issue(directory, "api", server=False))


def free_port_pair() -> int:
    """A port whose next one is free too (calls and streams)."""
    for _ in range(100):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free pair of ports")


class NetnsHost:
    """A network namespace acting as a separate host: a veth pair to this host's
    namespace, ``<prefix>.1`` on this side and ``<prefix>.2`` (the address its
    runner listens on) inside, loopback up, a default route back here (so it reaches
    this host's services, e.g. an S3 server on ``<prefix>.1``). Its own nftables
    ruleset comes with the namespace.

    Args:
        name: The namespace's name (``ip netns``), at most 11 characters.
        prefix: Three octets of a /30 of its own, e.g. ``10.249.7``.
    """

    def __init__(self, name: str, prefix: str) -> None:
        self.name, self.prefix = name, prefix
        self.outside, self.address = f"{prefix}.1", f"{prefix}.2"
        self.veth = f"{name}h"

    def create(self) -> NetnsHost:
        self.delete()
        run = functools.partial(subprocess.run, check=True, capture_output=True)
        run(["ip", "netns", "add", self.name])
        try:
            run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
                 "netns", self.name])  # fmt: skip
            run(["ip", "addr", "add", f"{self.outside}/30", "dev", self.veth])
            run(["ip", "link", "set", self.veth, "up"])
            inside = (f"link set lo up\naddr add {self.address}/30 dev eth0\n"
                      f"link set eth0 up\nroute add default via {self.outside}\n")  # fmt: skip
            run(["ip", "-n", self.name, "-batch", "-"], input=inside.encode())
        except BaseException:
            self.delete()
            raise
        return self

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run in the namespace's network (this host's mounts and /sys)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", *argv]

    def delete(self) -> None:
        """Remove it (its veth pair and every rule in it go too); idempotent."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)


class RunnerProcess:
    """One ``cove runner`` process group on loopback with its own data dir and
    cgroup parent (the default snapshot cache is the host's shared one); with
    ``netns``, in that namespace at its address (and a certificate for it)."""

    def __init__(self, data_dir: Path, pki: Pki, env: dict[str, str] | None = None,
                 host: str = "127.0.0.1", netns: NetnsHost | None = None) -> None:  # fmt: skip
        self.data_dir, self.pki, self.netns = data_dir, pki, netns
        self.address = "127.0.0.1" if netns is None else netns.address
        self.host = host if netns is None else netns.address
        self.port = free_port_pair()
        self.url = f"https://{self.address}:{self.port}"
        if netns is not None:
            cert, key = tls.issue(pki.dir, f"runner-{netns.name}", server=True,
                                  hosts=(netns.address,))  # fmt: skip
            env = {"COVE_RUNNER_CERT": str(cert), "COVE_RUNNER_KEY": str(key), **(env or {})}
        self.cgroup_parent = "cove-rt-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
        self.env = {**pki.runner_env(), "COVE_SNAPSHOT_DIR": str(SHARED_SNAPSHOTS),
                    "COVE_CGROUP_PARENT": self.cgroup_parent, **(env or {})}  # fmt: skip
        given = {k.removeprefix("COVE_").lower(): v for k, v in self.env.items()
                 if not k.startswith("COVE_RUNNER_")}  # fmt: skip
        self.settings = Settings(**{**given, "data_dir": data_dir})  # type: ignore[arg-type]
        self.log = data_dir / "runner.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120, *, check: bool = True) -> None:
        """Start it and wait until it answers (``check``: to the API's certificate;
        else until its port accepts connections)."""
        cmd = [sys.executable, "-m", "cove.cli.main", "runner", "--host", self.host,
               "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--log-level", "warning"]  # fmt: skip
        if self.netns is not None:
            cmd = self.netns.command(cmd)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env={**os.environ, **self.env}, stdout=log,
                                         stderr=log, start_new_session=True)  # fmt: skip
        try:
            self._wait_ready(timeout) if check else self._wait_listening(timeout)
        except BaseException:
            self.kill9()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        cert, key = self.pki.api
        context = tls.client_context(self.pki.ca, cert, key)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cove runner exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/info", verify=context, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"cove runner did not come up: {self.log.read_text()[-3000:]}")

    def _wait_listening(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cove runner exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"cove runner did not come up: {self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
