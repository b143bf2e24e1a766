"""A thin client of gVisor's ``runsc`` command line (the ``gvisor`` isolation tier).

Every call passes the same global flags (runsc keeps them with the container
and misbehaves when they change between calls) and its own state root, so
Cove's sandboxes never mix with other runsc users of the host:

- ``--network=sandbox``: gVisor's own network stack, fed by the sandbox's
  network namespace (its veth; only loopback with ``COVE_NETWORK=none``);
- ``--overlay2=none``: writes go to the sandbox's own overlay (its disk image),
  not to a memory-backed layer runsc would add;
- ``--host-uds=create``: the toolbox agent may bind its socket in the
  directory the host gave it (``chan/``), the only host path it is granted.

``run`` goes through ``cove-init --exec --reap --mask-net-sysctl``:

- runsc 20240729 takes a network namespace for the host's when
  ``/proc/sys/net/core/rmem_default`` exists, which on Linux 6.x it does in
  every namespace, so runsc runs in a private mount namespace with an empty
  ``/proc/sys/net`` and no sandbox mounts but those of the sandbox's view
  (``runner/oci/gvisor_view.py``), which its long-lived processes may pin;
- the sentry and gofer ``run --detach`` leaves behind are children of a small
  reaper of their own (a session of its own, so it outlives the server), not
  of the host's init: ``runsc delete`` waits until they are reaped, which
  then takes no time, whatever the host's init does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from cove.errors import RuntimeBackendError
from cove.runner.host.proc import call, describe_failure, run
from cove.runner.oci.crun import _tail

RUNSC = "runsc"
STATE_ROOT = Path("/run/cove-runsc")
FLAGS = ("--network=sandbox", "--overlay2=none", "--host-uds=create")
CALL_TIMEOUT = 60.0


def available() -> bool:
    """Whether runsc is installed on this host."""
    return shutil.which(RUNSC) is not None


class Runsc:
    """Runs runsc commands for the gVisor sandboxes of one runtime."""

    def __init__(self, helper: Path, root: Path = STATE_ROOT) -> None:
        """Args:
        helper: The compiled cove-init (the wrapper of ``run``).
        root: runsc's state directory.
        """
        self._helper = helper
        self._root = root

    def argv(self, *args: str) -> list[str]:
        """The full command line of a runsc call."""
        return [RUNSC, "--root", str(self._root), *FLAGS, *args]

    def known(self, container_id: str) -> bool:
        """Whether runsc has state about the container (no exec needed)."""
        return (self._root / f"{container_id}_sandbox:{container_id}.state").exists()

    def state(self, container_id: str) -> dict[str, Any] | None:
        """runsc's state of a container, or None when runsc does not know it."""
        if not self.known(container_id):
            return None
        done = run(self.argv("state", container_id), check=False, timeout=CALL_TIMEOUT)
        if done.returncode != 0:
            return None
        try:
            return json.loads(done.stdout)
        except ValueError as exc:
            raise RuntimeBackendError(f"runsc state {container_id}: bad output") from exc

    def list(self) -> list[dict[str, Any]]:
        """Every container of this state root (id, pid, status, bundle)."""
        if not self._root.is_dir():
            return []
        done = run(self.argv("list", "--format", "json"), timeout=CALL_TIMEOUT)
        try:
            return json.loads(done.stdout or b"[]") or []
        except ValueError as exc:
            raise RuntimeBackendError("runsc list: bad output") from exc

    def run_detached(self, container_id: str, bundle: Path, log: Path, *, view: Path) -> None:
        """Start a container whose stdio is /dev/null and the file ``log``; the only
        sandbox mounts runsc keeps are those under ``view``.

        Raises:
            RuntimeBackendError: runsc failed; its last message is in the error.
        """
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [str(self._helper), "--exec", "--reap", "--mask-net-sysctl", "--keep", str(view),
                *self.argv("run", "--detach", "--bundle", str(bundle), container_id)]  # fmt: skip
        try:
            with open(log, "ab") as out:  # (runsc wants the log opened for appending)
                start = out.tell()
                code = call(argv, timeout=CALL_TIMEOUT, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=out, close_fds=True)  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeBackendError(f"runsc run {container_id}: {exc}") from exc
        if code != 0:
            raise RuntimeBackendError(describe_failure(["runsc", "run"], code, _tail(log, start)))

    def kill(self, container_id: str, signal: str) -> None:
        """Send ``signal`` to the container's init; errors ignored."""
        run(self.argv("kill", container_id, signal), check=False, timeout=CALL_TIMEOUT)

    def delete(self, container_id: str) -> None:
        """Kill and forget the container; no error when runsc does not know it."""
        if not self.known(container_id):
            return
        done = run(self.argv("delete", "--force", container_id), check=False,
                   timeout=CALL_TIMEOUT)  # fmt: skip
        if done.returncode != 0 and self.known(container_id):
            raise RuntimeBackendError(describe_failure(["runsc", "delete"], 1, done.stderr))

    def pause(self, container_id: str) -> None:
        """Stop every task of the sandbox in the sentry.

        Raises:
            RuntimeBackendError: runsc refused.
        """
        run(self.argv("pause", container_id), timeout=CALL_TIMEOUT)

    def resume(self, container_id: str) -> None:
        """Let a paused sandbox run again; errors ignored."""
        run(self.argv("resume", container_id), check=False, timeout=CALL_TIMEOUT)

