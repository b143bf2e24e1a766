"""The local runner: the domain's :class:`cove.core.ports.Runner` on this host.

It runs each blocking call of a :class:`cove.runner.hostruntime.HostRuntime` (crun
or runsc, chosen per sandbox by its isolation tier) in a worker thread, so
the event loop never waits on the host; and it is the only place that knows
the agent is a Unix socket and a preview an IP address of this host.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from cove.core.ports import (
    AgentConnection,
    Capacity,
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    ImageConfig,
    NetworkPolicy,
    PulledImage,
    RegistryAuth,
    Resources,
)
from cove.errors import Busy, InvalidState, Unavailable
from cove.runner.host.capacity import measure
from cove.runner.hostruntime import HostRuntime
from cove.runner.storage.volumes import VolumeDir, volumes_dir

P = ParamSpec("P")
T = TypeVar("T")
CONNECT_SECONDS = 10.0  # how long a full accept queue of an agent is waited for
# Host calls running at once; more wait in line (a burst of creates queues, it does
# not fail). Not the event loop's default pool (min(32, cores + 4) threads: 6 on
# two cores): a start spends much of its time waiting (on crun, `ip`, its agent),
# and other host calls (stop, delete, stats) should not queue behind a burst.
HOST_WORKERS = max(16, 4 * (os.cpu_count() or 1))
# Image pulls running at once, in threads of their own: a pull lasts as long as its
# registry (a tenant's) likes, up to COVE_PULL_TIMEOUT_SECONDS, and pulls in the host
# calls' pool would leave every organization's start, stop and delete waiting behind
# them. More wait in line; each organization has at most COVE_MAX_PULLS at once.
PULL_WORKERS = max(16, 4 * (os.cpu_count() or 1))


class LocalRunner:
    """Implements :class:`cove.core.ports.Runner` over a host runtime.

    Args:
        host: the host runtime.
        data_dir: the data dir, whose disk its capacity reports.
        volumes: where its volumes' data is (default: ``<data_dir>/volumes``; none
            without a data dir: then it deletes no volume data).
    """

    def __init__(self, host: HostRuntime, data_dir: Path | None = None,
                 volumes: VolumeDir | None = None) -> None:  # fmt: skip
        self.host = host
        self.data_dir = data_dir or Path("/")
        if volumes is None and data_dir is not None:
            volumes = VolumeDir(volumes_dir(data_dir))
        self.volumes = volumes
        self._pool = ThreadPoolExecutor(max_workers=HOST_WORKERS, thread_name_prefix="cove-host")
        self._pulls = ThreadPoolExecutor(max_workers=PULL_WORKERS, thread_name_prefix="cove-pull")

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def has_snapshot(self, name: str) -> bool:
        return self.host.has_snapshot(name)

    def has_local_image(self, image: str) -> bool:
        return self.host.has_local_image(image)

    def has_isolation(self, name: str) -> bool:
        return self.host.has_isolation(name)

    def fetches_snapshots(self) -> bool:
        return self.host.fetches_snapshots()

    async def admits(self, snapshot: str, volumes: Sequence[str] = ()) -> None:
        """Every snapshot: the create says when it is missing."""

    async def create(self, spec: ContainerSpec) -> None:
        await self._run(self.host.create, spec)

    async def start(self, spec: ContainerSpec) -> None:
        await self._run(self.host.start, spec)

    async def stop(self, sandbox_id: str, *, force: bool = False) -> None:
        await self._run(self.host.stop, sandbox_id, force=force)

    async def destroy(self, sandbox_id: str) -> None:
        await self._run(self.host.destroy, sandbox_id)

    async def archive(self, sandbox_id: str) -> int:
        return await self._run(self.host.archive, sandbox_id)

    async def restore(self, spec: ContainerSpec) -> None:
        await self._run(self.host.restore, spec)

    async def pause(self, sandbox_id: str) -> None:
        await self._run(self.host.pause, sandbox_id)

    async def resume(self, sandbox_id: str) -> None:
        await self._run(self.host.resume, sandbox_id)

    async def fork(self, source_id: str, spec: ContainerSpec) -> None:
        await self._run(self.host.fork, source_id, spec)

    async def capture(self, sandbox_id: str, ref: str, config: ImageConfig | None = None) -> int:
        return await self._run(self.host.capture, sandbox_id, ref, config)

    async def clone_snapshot(self, source: str, ref: str, config: ImageConfig) -> int:
        return await self._run(self.host.clone_snapshot, source, ref, config)

    async def import_image(self, ref: str, image: str) -> PulledImage:
        return await self._run(self.host.import_image, ref, image)

    async def pull_image(
        self, ref: str, image: str, auth: RegistryAuth | None,
        progress: Callable[[str], None] | None = None,
    ) -> PulledImage:  # fmt: skip
        """Pull in a thread of the pulls' pool; each progress line is handed to
        ``progress`` on this event loop. Cancelled, the pull is stopped (its download
        killed), and this returns once it has ended, leaving nothing."""
        loop = asyncio.get_running_loop()
        say = None
        if progress is not None:
            report = progress

            def say(line: str) -> None:
                loop.call_soon_threadsafe(report, line)

        cancel = threading.Event()
        started = self._pulls.submit(self.host.pull_image, ref, image, auth, say, cancel)
        pulling = asyncio.wrap_future(started)
        try:
            return await asyncio.shield(pulling)
        except asyncio.CancelledError:
            cancel.set()
            if started.cancel():  # it waited in line: it never runs
                raise
            await asyncio.wait({pulling})
            if pulling.exception() is None:  # complete just before: its files go
                await self.remove_snapshot(ref)
            raise

    async def remove_snapshot(self, ref: str) -> None:
        await self._run(self.host.remove_snapshot, ref)

    async def resize(self, sandbox_id: str, resources: Resources, *, live: bool) -> None:
        await self._run(self.host.resize, sandbox_id, resources, live=live)

    async def status(self, sandbox_id: str) -> ContainerStatus:
        return await self._run(self.host.status, sandbox_id)

    async def release(self, sandbox_id: str) -> None:
        """Drop this host's remains of an archived sandbox; its archive stays."""
        await self._run(self.host.release, sandbox_id)

    def volume_store(self) -> str | None:
        """The id of the shared volumes dir it uses (None: its own)."""
        return None if self.volumes is None else self.volumes.shared_id

    async def delete_volume(self, volume_id: str) -> None:
        if self.volumes is not None:
            await self._run(self.volumes.delete, volume_id)

    async def archive_volume(self, volume_id: str) -> int:
        if self.volumes is None:
            raise InvalidState("this runner keeps no volumes")
        return await self._run(self.volumes.pack, volume_id)

    async def capacity(self) -> Capacity:
        """This host's capacity and the number of its sandboxes (placement)."""
        count = len(await self.list_ids())
        return await self._run(measure, self.data_dir, count)

    async def list_ids(self) -> set[str]:
        return await self._run(self.host.list_ids)

    async def tidy(self, sandbox_id: str) -> None:
        await self._run(self.host.tidy, sandbox_id)

    async def remove_stale_work(self) -> None:
        await self._run(self.host.remove_stale_work)

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> None:
        await self._run(self.host.set_network, sandbox_id, policy)

    async def adopt(self, spec: ContainerSpec) -> None:
        await self._run(self.host.adopt, spec)

    async def stats(self, sandbox_id: str) -> ContainerStats:
        return await self._run(self.host.stats, sandbox_id)

    async def open_agent(self, sandbox_id: str) -> AgentConnection:
        """Connect to the agent's socket; a full accept queue is waited out (up to
        CONNECT_SECONDS, then Busy), without blocking the event loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_SECONDS
        while True:
            try:
                sock = self.host.agent_socket(sandbox_id)
                break
            except Busy:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.01)
        return await asyncio.open_unix_connection(sock=sock)

    async def preview_upstream(self, sandbox_id: str, port: int) -> str | None:
        address = self.host.address(sandbox_id)
        return None if address is None else f"http://{address}:{port}"

    async def open_port(self, sandbox_id: str, port: int) -> AgentConnection:
        """A TCP connection to ``port`` of the running sandbox (at its veth address)."""
        address = self.host.address(sandbox_id)
        if address is None:
            raise Unavailable(f"sandbox {sandbox_id} is not running")
        try:
            return await asyncio.open_connection(address, port)
        except OSError as exc:
            raise Unavailable(f"port {port} of sandbox {sandbox_id}: {exc.strerror}") from None
