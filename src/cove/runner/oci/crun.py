"""A thin client of the ``crun`` command line.

On a hybrid cgroup host every call that manages cgroups goes through ``cove-init
--exec --hybrid``, which runs crun in a private mount namespace without the
cgroup2 mount, so crun 1.8 (which refuses hybrid mode) manages the v1
hierarchies; ``state`` and ``list`` read crun's state only and run it directly.
``run`` always goes through the wrapper: it places the descriptors handed to the
container. The wrapper's namespace is a copy of the host's, other sandboxes'
mounts included (detaching them would make every call slower as sandboxes
accumulate); it lives as long as the crun call, and a stop waits until none
holds the sandbox's disk (``rootfs.unmount_all``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cove.errors import RuntimeBackendError
from cove.runner.host import cgroups, freezer
from cove.runner.host.proc import call, describe_failure, run

CRUN = "crun"
STATE_ROOT = Path("/run/crun")  # crun's default --root when run as root
LIST_TRIES = 5  # see Crun.list
CALL_TIMEOUT = 60.0  # no crun call should take long; a hung one must not hang us
READ_ONLY = frozenset({"state", "list"})  # crun commands that touch no cgroup


class Crun:
    """Runs crun commands for the containers of one runtime."""

    def __init__(self, helper: Path) -> None:
        """Args:
        helper: The compiled cove-init, used as the hybrid-host wrapper.
        """
        self._helper = helper
        self._hybrid = cgroups.mode() is cgroups.CgroupMode.HYBRID

    def argv(self, *args: str, fds: int = 0, cgroup2: str | None = None) -> list[str]:
        """The full command line of a crun call.

        Args:
            args: crun's arguments.
            fds: How many descriptors the caller passes (as 3, 4, ...); the
                caller puts them at the end of the argument list's ``--fds``.
            cgroup2: A cgroup of the hybrid host's cgroup2 mount to join first.
        """
        hybrid = self._hybrid and args[0] not in READ_ONLY
        if not hybrid and not fds:
            return [CRUN, *args]
        wrap = [str(self._helper), "--exec"]
        if hybrid:
            wrap += ["--hybrid", *(["--cgroup2", cgroup2] if cgroup2 else [])]
        return [*wrap, CRUN, *args]

    def state(self, container_id: str) -> dict[str, Any] | None:
        """crun's state of a container (``status``, ``pid``, ``bundle``), or None when
        crun does not know it.

        Read as ``crun state`` does, from crun's status file, the process's start time
        and the freezer, without running crun: the reconciler asks for every sandbox
        every few seconds. ``crun state`` itself when the file cannot be read whole.
        """
        directory = STATE_ROOT / container_id
        if not directory.exists():
            return None  # crun keeps a directory per container; skip the exec
        found = _read_state(directory, container_id)
        if found is not None:
            return found
        done = run(self.argv("state", container_id), check=False, timeout=CALL_TIMEOUT)
        if done.returncode != 0:
            return None
        try:
            return json.loads(done.stdout)
        except ValueError as exc:
            raise RuntimeBackendError(f"crun state {container_id}: bad output") from exc

    def _list(self) -> list[dict[str, Any]]:
        done = run(self.argv("list", "--format", "json"), timeout=CALL_TIMEOUT)
        try:
            return json.loads(done.stdout or b"[]") or []
        except ValueError as exc:
            raise RuntimeBackendError("crun list: bad output") from exc

    def list(self) -> list[dict[str, Any]]:
        """Every container crun knows of (id, pid, status, bundle).

        ``crun list`` fails when a container is deleted while it reads the state dir
        (its ``status`` file vanishes, by another server sharing ``/run/crun`` too):
        such a failure is tried again, a few times.
        """
        for _ in range(LIST_TRIES - 1):
            try:
                return self._list()
            except RuntimeBackendError as exc:
                if "No such file" not in str(exc):
                    raise
                time.sleep(0.01)
        return self._list()

    def run_detached(
        self, container_id: str, bundle: Path, log: Path, *, fds: Sequence[int] = (),
        cgroup2: str | None = None,
    ) -> int:  # fmt: skip
        """Start a container whose stdio is /dev/null and the file ``log``; returns the
        host pid of its init.

        Nothing of this process is inherited by the container (it keeps running
        when the server dies) but ``fds``, which its init gets as 3, 4, ...

        Raises:
            RuntimeBackendError: crun failed; its last message is in the error.
        """
        pid_file = bundle / "init.pid"
        argv = self.argv(
            "run", "--detach", "--preserve-fds", str(len(fds)), "--pid-file", str(pid_file),
            "--bundle", str(bundle), container_id, fds=len(fds), cgroup2=cgroup2,
        )  # fmt: skip
        if fds:
            argv[2:2] = ["--fds", ",".join(map(str, fds))]
        try:
            with open(log, "ab") as out:
                start = out.tell()
                code = call(argv, timeout=CALL_TIMEOUT, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=out, close_fds=True, pass_fds=tuple(fds))  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeBackendError(f"crun run {container_id}: {exc}") from exc
        if code != 0:
            raise RuntimeBackendError(describe_failure(argv[-5:], code, _tail(log, start)))
        try:
            return int(pid_file.read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeBackendError(f"crun run {container_id}: no pid file") from exc

    def kill(self, container_id: str, signal: str, *, all_processes: bool = False) -> None:
        """Send ``signal`` to the container's init (or every process); errors ignored."""
        extra = ["--all"] if all_processes else []
        run(self.argv("kill", *extra, container_id, signal), check=False, timeout=CALL_TIMEOUT)

    def delete(self, container_id: str) -> None:
        """Kill and forget the container; no error when crun does not know it."""
        done = run(self.argv("delete", "--force", container_id), check=False, timeout=CALL_TIMEOUT)
        if done.returncode != 0 and self.state(container_id) is not None:
            raise RuntimeBackendError(describe_failure(["crun", "delete"], 1, done.stderr))

    def resume(self, container_id: str) -> None:
        """Thaw a paused container; errors ignored."""
        run(self.argv("resume", container_id), check=False, timeout=CALL_TIMEOUT)

    def update(self, container_id: str, resources: dict[str, Any], scratch: Path) -> None:
        """Apply OCI ``linux.resources`` to a running container.

        Raises:
            RuntimeBackendError: crun refused (e.g. memory below current usage).
        """
        try:
            scratch.write_text(json.dumps(resources))
            run(
                self.argv("update", "--resources", str(scratch), container_id), timeout=CALL_TIMEOUT
            )
        except OSError as exc:
            raise RuntimeBackendError(f"crun update {container_id}: {exc}") from exc
        finally:
            scratch.unlink(missing_ok=True)


def _read_state(directory: Path, container_id: str) -> dict[str, Any] | None:
    """What ``crun state`` reports, from crun's files (None: they could not be read)."""
    try:
        info = json.loads((directory / "status").read_text())
        pid, started = int(info["pid"]), int(info["process-start-time"])
        cgroup = str(info.get("cgroup-path") or "")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # gone meanwhile, or being written: ask crun
    if _start_time(pid) != started:
        status = "stopped"
    elif (directory / "exec.fifo").exists():
        status = "created"
    elif cgroup and freezer.is_frozen(cgroup.strip("/")):
        status = "paused"
    else:
        status = "running"
    return {"id": container_id, "pid": pid, "status": status, "bundle": info.get("bundle")}


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, as crun records it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # (field 22: the 20th after the name)
    except (OSError, IndexError, ValueError):
        return None


def _tail(log: Path, start: int, limit: int = 4096) -> bytes:
    try:
        with open(log, "rb") as f:
            f.seek(max(start, os.path.getsize(log) - limit))
            return f.read()
    except OSError:
        return b""


def container_ids(entries: Sequence[dict[str, Any]], bundle_root: Path) -> set[str]:
    """Ids of the containers whose bundle lies under ``bundle_root``."""
    root = str(bundle_root).rstrip("/") + "/"
    return {e["id"] for e in entries if str(e.get("bundle", "")).startswith(root)}
