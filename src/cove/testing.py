"""Run a real ``cove serve`` in a child process (for end-to-end tests and benchmarks)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from cove.core.config import Settings
from cove.runner.host import mounts
from cove.runner.host.nsstock import STOCK_DIR

# The host's shared snapshot dir, as a server without COVE_SNAPSHOT_DIR uses it.
SHARED_SNAPSHOTS = Path(os.environ.get("COVE_SNAPSHOT_DIR") or "/var/lib/cove/snapshots")
# Snapshots the test servers of this process recorded: they live in the shared dir,
# beyond the servers' own data dirs (see ``sweep_snapshots``).
_RECORDED: set[str] = set()
TRASH_SECONDS = 120.0  # the longest a sweep waits for a removal's files to be deleted


def recorded_snapshots(data_dir: Path, database_url: str | None = None) -> list[str]:
    """The snapshots a server recorded (of every organization) in its store: its SQLite
    file in ``data_dir``, or the database at ``database_url`` (PostgreSQL)."""
    if database_url:
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(database_url)
            try:
                with engine.connect() as conn:
                    rows = conn.execute(sqlalchemy.text("SELECT id FROM snapshots"))
                    return [str(ref) for (ref,) in rows]
            finally:
                engine.dispose()
        except (sqlalchemy.exc.SQLAlchemyError, OSError):  # gone meanwhile, never migrated
            return []
    if not (data_dir / "cove.db").exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(data_dir / "cove.db")) as db:
            return [ref for (ref,) in db.execute("SELECT id FROM snapshots")]
    except sqlite3.Error:  # a store never migrated, or gone meanwhile
        return []


def sweep_snapshots(default: str = "cove-default") -> list[str]:
    """Remove from the shared snapshot dir every snapshot a test server of this process
    recorded (all of them are stopped): the dir outlives the servers' data dirs, and
    what tests leave there slows every later server's start. Returns what it removed."""
    from cove.runner.storage import capture

    removed = []
    for ref in sorted(_RECORDED - {default}):
        if (SHARED_SNAPSHOTS / ref).is_dir():
            with contextlib.suppress(OSError, RuntimeError):
                capture.remove(SHARED_SNAPSHOTS, ref)
                removed.append(ref)
    _RECORDED.clear()
    for thread in threading.enumerate():  # capture.remove empties its trash in a thread
        if thread.name.startswith("rm "):  # (these removals' and the tests' own)
            thread.join(TRASH_SECONDS)
    return removed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One ``cove serve`` process group on loopback, with its own data dir.

    The default snapshot cache is shared with the system data dir, so a test
    server does not rebuild it.
    """

    def __init__(self, data_dir: Path, *, api_key: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.ssh_port = free_port()
        self.data_dir = data_dir
        self.api_key = api_key
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        # a cgroup parent of its own: its leftovers cannot be confused with another server's
        self.cgroup_parent = "cove-test-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
        self.settings = Settings(data_dir=data_dir, snapshot_dir=SHARED_SNAPSHOTS, port=self.port,
                                 ssh_port=self.ssh_port,
                                 cgroup_parent=self.cgroup_parent)  # fmt: skip
        self.log = data_dir / "server.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.snapshots: list[str] = []  # what its store held when it last stopped
        self.org_keys: list[str] = []  # the keys ``org_key`` made

    def start(self, timeout: float = 60) -> None:
        env = {**os.environ, "COVE_API_KEY": self.api_key,
               "COVE_SNAPSHOT_DIR": str(SHARED_SNAPSHOTS),
               "COVE_CGROUP_PARENT": self.cgroup_parent, "COVE_SSH_PORT": str(self.ssh_port),
               "COVE_POOL_SIZE": "0",  # no warm pool unless a test asks for one
               **self.extra_env}
        cmd = [sys.executable, "-m", "cove.cli.main", "serve", "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--log-level", "warning"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log,
                                         start_new_session=True)
        try:
            self._wait_healthy(timeout)
        except BaseException:  # not healthy, or the run interrupted (^C): never left running
            self.kill9()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cove serve exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"cove serve did not become healthy: {self.log.read_text()[-3000:]}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole server process group, as a crash would."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):  # already gone, all of it
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._record_snapshots()

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._release_stock()
        self._record_snapshots()

    def _release_stock(self) -> None:
        """Unmount what its namespace stock was making when it stopped (a server stopped
        by a signal leaves a set half made, mounted in its scratch: its next start sweeps
        it, but a harness that removes the data dir now would leave those mounts on the
        host). Its sandboxes' mounts are theirs: they outlive the server."""
        mounts.unmount_under(self.data_dir / STOCK_DIR)

    def _record_snapshots(self) -> None:
        """Read, once stopped, the snapshots its store holds (``snapshots``), for
        ``sweep_snapshots``: they live in the shared snapshot dir."""
        self.snapshots = recorded_snapshots(self.data_dir,
                                            self.extra_env.get("COVE_DATABASE_URL"))  # fmt: skip
        _RECORDED.update(self.snapshots)

    def org_key(self, organization: str) -> str:
        """A new API key of ``organization`` (made by ``cove keys create``)."""
        key = subprocess.run(
            [sys.executable, "-m", "cove.cli.main", "keys", "create", "--org", organization,
             "--data-dir", str(self.data_dir)], capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        self.org_keys.append(key)
        return key

    def delete_all_sandboxes(self) -> None:
        """Delete the sandboxes of every organization it has a key of: the admin key's
        and each one ``org_key`` made (a key revoked since is passed over)."""
        for key in [self.api_key, *self.org_keys]:
            headers = {"Authorization": f"Bearer {key}"}
            listed = httpx.get(f"{self.api_url}/sandbox", headers=headers, timeout=30)
            if listed.status_code != 200:
                continue
            for item in listed.json()["items"]:
                httpx.delete(f"{self.api_url}/sandbox/{item['id']}", headers=headers, timeout=120)


class RssWatch:
    """The peak VmRSS of a process while a ``with`` block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = self.rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base
