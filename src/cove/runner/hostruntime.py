"""The host side of the runner: what runs sandboxes on this machine.

:class:`HostRuntime` is synchronous and may block (it runs processes and
touches the filesystem); :class:`cove.runner.local.LocalRunner` turns it
into the domain's asynchronous :class:`cove.core.ports.Runner`, calling it
from worker threads. Every method raises
:class:`cove.errors.RuntimeBackendError` (never ``CalledProcessError`` or
``OSError``) when the host fails. Implementations:
:class:`cove.runner.oci.runtime.OciRuntime` (the real one) and
:class:`cove.runner.fake.FakeRuntime` (unit tests only).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from cove.core.ports import (
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    ImageConfig,
    NetworkPolicy,
    PulledImage,
    RegistryAuth,
    Resources,
)


class HostRuntime(Protocol):
    """Runs sandboxes as isolated containers on this host (crun or runsc per sandbox).

    All methods are idempotent where that makes sense (stop on a stopped
    sandbox, destroy on an absent one) so that reconciliation after a crash
    can simply call them again.
    """

    def has_snapshot(self, name: str) -> bool:
        """Whether a read-only root filesystem called ``name`` is available."""

    def has_local_image(self, image: str) -> bool:
        """Whether ``image`` names a local OCI layout (see ``import_image``)."""

    def has_isolation(self, name: str) -> bool:
        """Whether sandboxes of isolation tier ``name`` (see ISOLATIONS) can run here."""

    def fetches_snapshots(self) -> bool:
        """Whether a snapshot this host lacks is fetched, when a sandbox of it is
        created or restored, from a store the runners share."""

    def create(self, spec: ContainerSpec) -> None:
        """Prepare the sandbox's writable layer (capped at ``disk`` GiB); start nothing.

        Raises:
            RuntimeBackendError: the layer could not be made; nothing is left behind.
        """

    def start(self, spec: ContainerSpec) -> None:
        """Mount the root filesystem and run the container's init process.

        Raises:
            RuntimeBackendError: it did not start; no process or mount is left behind.
        """

    def stop(self, sandbox_id: str, *, force: bool = False) -> None:
        """Kill every process of the sandbox and unmount its rootfs; keep its files.

        Without ``force`` processes get SIGTERM and a grace period first.
        """

    def destroy(self, sandbox_id: str) -> None:
        """Remove everything the sandbox owns: processes, mounts, cgroups, files, archive."""

    def archive(self, sandbox_id: str) -> int:
        """Pack the (stopped) sandbox's writable layer into the archive store and free
        the live copy. Returns the archive's size in bytes."""

    def release(self, sandbox_id: str) -> None:
        """Remove what the host keeps of an archived sandbox, its archive kept."""

    def restore(self, spec: ContainerSpec) -> None:
        """Recreate the writable layer of an archived sandbox from its archive.

        The archive is verified before anything is replaced; a broken archive
        raises RuntimeBackendError and is kept.
        """

    def pause(self, sandbox_id: str) -> None:
        """Freeze every process of the running sandbox (memory is kept)."""

    def resume(self, sandbox_id: str) -> None:
        """Thaw a paused sandbox; its processes carry on where they were."""

    def fork(self, source_id: str, spec: ContainerSpec) -> None:
        """Create ``spec``'s writable layer as a copy of ``source_id``'s (which may be
        running, paused or stopped, and is left as it was); start nothing.

        Raises:
            RuntimeBackendError: the copy failed; nothing of the new sandbox is left.
        """

    def capture(self, sandbox_id: str, ref: str, config: ImageConfig | None = None) -> int:
        """Make snapshot ``ref`` from the sandbox's whole file system (lower and
        writable layer merged; a running sandbox is frozen meanwhile). Returns its size.

        Raises:
            RuntimeBackendError: it failed; nothing named ``ref`` is left.
        """

    def import_image(self, ref: str, image: str) -> PulledImage:
        """Make snapshot ``ref`` from an image the host can resolve without a registry;
        its size and config.

        Raises:
            RuntimeBackendError: unknown image or failed unpack; nothing is left.
        """

    def pull_image(
        self, ref: str, image: str, auth: RegistryAuth | None,
        progress: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
    ) -> PulledImage:  # fmt: skip
        """Make snapshot ``ref`` from ``image`` pulled from its registry (layers are
        cached and shared between snapshots). ``progress`` gets each line of progress;
        once ``cancel`` is set, the download is stopped (within a second).

        Raises:
            RuntimeBackendError: the pull or the unpack failed, or it was cancelled;
                nothing is left.
        """

    def clone_snapshot(self, source: str, ref: str, config: ImageConfig) -> int:
        """Make snapshot ``ref`` a copy of snapshot ``source`` with image config ``config``;
        returns its size.

        Raises:
            RuntimeBackendError: the copy failed; nothing named ``ref`` is left.
        """

    def remove_snapshot(self, ref: str) -> None:
        """Delete snapshot ``ref`` (sandboxes created from it keep working)."""

    def resize(self, sandbox_id: str, resources: Resources, *, live: bool) -> None:
        """Apply new limits. ``live``: CPU and memory of a running container, no
        restart. Otherwise the sandbox is stopped and the disk may change too."""

    def status(self, sandbox_id: str) -> ContainerStatus:
        """What is really on the host for this sandbox."""

    def list_ids(self) -> set[str]:
        """Ids of every sandbox that has anything on the host."""

    def tidy(self, sandbox_id: str) -> None:
        """See :meth:`cove.core.ports.Runner.tidy`."""

    def remove_stale_work(self) -> None:
        """See :meth:`cove.core.ports.Runner.remove_stale_work`."""

    def exec(
        self,
        sandbox_id: str,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``argv`` inside the running sandbox and wait for it."""

    def stats(self, sandbox_id: str) -> ContainerStats:
        """Current usage of a running sandbox."""

    def agent_socket(self, sandbox_id: str) -> socket.socket:
        """A new stream socket connected to the toolbox agent of a running sandbox.

        Raises:
            RuntimeBackendError: the sandbox does not run, or its agent does not answer.
        """

    def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> None:
        """Apply ``policy`` to the running sandbox at once (and re-attach what a server
        restart lost, such as its DNS forwarder); a no-op when it does not run.

        Raises:
            RuntimeBackendError: the rules could not be installed.
        """

    def adopt(self, spec: ContainerSpec) -> None:
        """The running sandbox (a warm pool's) takes on ``spec``'s hostname, user and env
        (its firewall: ``set_network``).

        Raises:
            RuntimeBackendError: it does not run, or a setting could not be applied.
        """

    def address(self, sandbox_id: str) -> str | None:
        """The running sandbox's IP address as seen from the host (None: no network)."""
