"""The seams between the domain and the outside world.

``core`` talks to the machines sandboxes run on only through :class:`Runner`
and to storage only through :class:`SandboxStore`. Implementations live in
``cove.runner`` (the local runner over crun or runsc; ``cove.runner.fake``
is an in-memory host for fast unit tests of ``core`` and ``api`` only) and
``cove.store``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cove.core.keys import ApiKey, Organization
from cove.core.sandbox import Resources as Resources  # the domain's value types,
from cove.core.sandbox import Sandbox, SandboxState
from cove.core.sandbox import VolumeBind as VolumeBind  # part of every port's language


@dataclass(frozen=True)
class NetworkPolicy:
    """A sandbox's outbound firewall (Daytona's networkBlockAll / *AllowList).

    With neither allow-list nor ``block_all``, everything outside is reachable.
    With allow-lists, only their CIDRs and the addresses their names resolve to.
    """

    block_all: bool = False
    allow_cidrs: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    # Linked sandboxes it may open connections to, by (name, sandbox id): its owner.
    peers: tuple[tuple[str, str], ...] = ()

    @property
    def restricted(self) -> bool:
        return self.block_all or bool(self.allow_cidrs or self.allow_domains)


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the runtime needs to bring one sandbox's container up."""

    sandbox_id: str
    hostname: str
    snapshot: str
    resources: Resources
    env: Mapping[str, str] = field(default_factory=dict)
    user: str = "daytona"
    volumes: Sequence[VolumeBind] = ()
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    # The isolation tier: "crun" (namespaces on the host kernel) or "gvisor" (runsc).
    # Fixed at create: the runtime keeps the tier it created a sandbox with.
    isolation: str = "crun"


ISOLATIONS = ("crun", "gvisor")


class ContainerStatus(enum.StrEnum):
    """What is really on the host for one sandbox."""

    RUNNING = "running"  # the container's init process is alive
    PAUSED = "paused"  # alive but frozen
    STOPPED = "stopped"  # its writable layer exists, no process runs
    ARCHIVED = "archived"  # only its archive exists
    ABSENT = "absent"  # nothing of it is on the host


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry (the password never appears in a repr)."""

    registry: str  # host[:port], as in the image reference
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ImageConfig:
    """What an image's config says about running it (Docker's Env, WorkingDir, User,
    Entrypoint, Cmd)."""

    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PulledImage:
    """A snapshot made from an image: its size, manifest digest and config."""

    size: int
    digest: str
    config: ImageConfig = field(default_factory=ImageConfig)


@dataclass(frozen=True)
class ContainerStats:
    cpu_usage_ns: int
    memory_bytes: int
    pids: int
    cache_bytes: int = 0  # page cache charged to the sandbox (not in memory_bytes' count)
    disk_used: int = 0  # bytes of its disk in use, and its size (0: unknown)
    disk_total: int = 0


@dataclass(frozen=True)
class Capacity:
    """What a runner's host has (totals) and has left (free), and its sandboxes."""

    cpu: int  # cores
    memory: int  # bytes
    memory_free: int  # bytes available (MemAvailable)
    disk: int  # bytes of the file system holding its sandboxes
    disk_free: int
    sandboxes: int  # sandboxes with anything on it
    max_sandboxes: int = 0  # 0: no set limit


class Runner(Protocol):
    """Runs sandboxes as isolated containers, on this host or another one.

    Asynchronous, and nothing in it names a host path, a socket or a process:
    a runner on another machine satisfies it as well as
    :class:`cove.runner.local.LocalRunner` (crun or runsc per sandbox,
    on this host) does. Every call raises :class:`cove.errors.RuntimeBackendError`
    (:class:`cove.errors.Unavailable` / :class:`cove.errors.Busy` for the agent)
    when the runner fails.

    All methods are idempotent where that makes sense (stop on a stopped
    sandbox, destroy on an absent one), so that reconciliation after a crash
    can simply call them again.
    """

    def has_snapshot(self, name: str) -> bool:
        """Whether a read-only root filesystem called ``name`` is available (from
        the runner's inventory, without a round trip)."""

    def has_isolation(self, name: str) -> bool:
        """Whether sandboxes of isolation tier ``name`` (see ISOLATIONS) can run."""

    def has_local_image(self, image: str) -> bool:
        """Whether ``image`` names an image the runner has without a registry (a local
        OCI layout), which ``import_image`` makes a snapshot of."""

    async def admits(self, snapshot: str, volumes: Sequence[str] = ()) -> None:
        """Check, before a sandbox of ``snapshot`` is recorded, that some runner taking
        new sandboxes has it or can fetch it, and holds the data of ``volumes`` (ids)
        if they have any yet (several runners; one admits all).

        Raises:
            Unavailable: none does.
        """

    async def create(self, spec: ContainerSpec) -> None:
        """Prepare the sandbox's writable layer (capped at ``disk`` GiB); start nothing."""

    async def start(self, spec: ContainerSpec) -> None:
        """Mount the root filesystem and run the container's init and agent."""

    async def stop(self, sandbox_id: str, *, force: bool = False) -> None:
        """Kill every process of the sandbox; keep its files."""

    async def destroy(self, sandbox_id: str) -> None:
        """Remove everything the sandbox owns: processes, mounts, cgroups, files, archive."""

    async def archive(self, sandbox_id: str) -> int:
        """Pack the (stopped) sandbox's writable layer into the archive store and free
        the live copy. Returns the archive's size in bytes."""

    async def restore(self, spec: ContainerSpec) -> None:
        """Recreate the writable layer of an archived sandbox from its archive."""

    async def pause(self, sandbox_id: str) -> None:
        """Freeze every process of the running sandbox (memory is kept)."""

    async def resume(self, sandbox_id: str) -> None:
        """Thaw a paused sandbox; its processes carry on where they were."""

    async def fork(self, source_id: str, spec: ContainerSpec) -> None:
        """Create ``spec``'s writable layer as a copy of ``source_id``'s."""

    async def capture(self, sandbox_id: str, ref: str, config: ImageConfig | None = None) -> int:
        """Make snapshot ``ref`` from the sandbox's whole file system; its size. Its image
        config is ``config``, else that of the sandbox's snapshot."""

    async def clone_snapshot(self, source: str, ref: str, config: ImageConfig) -> int:
        """Make snapshot ``ref`` a copy of snapshot ``source`` with image config ``config``
        (built from the same Dockerfile); its size."""

    async def import_image(self, ref: str, image: str) -> PulledImage:
        """Make snapshot ``ref`` from an image the runner resolves without a registry
        (a local OCI layout); its size and config (``digest`` empty)."""

    async def pull_image(
        self, ref: str, image: str, auth: RegistryAuth | None,
        progress: Callable[[str], None] | None = None,
    ) -> PulledImage:  # fmt: skip
        """Make snapshot ``ref`` from ``image`` (a normalized reference) pulled from its
        registry (with ``auth``, else the operator's credentials for it); layers already
        pulled are not fetched again. ``progress`` gets each line of progress, on the
        caller's event loop.

        Raises:
            RuntimeBackendError: the pull or the unpack failed (the message says why);
                nothing named ``ref`` is left.
        """

    async def remove_snapshot(self, ref: str) -> None:
        """Delete snapshot ``ref`` (sandboxes created from it keep working)."""

    async def delete_volume(self, volume_id: str) -> None:
        """Delete the volume's data wherever the runner keeps it (nothing there: done).
        A volume's data is made when a sandbox spec first mounts it."""

    async def archive_volume(self, volume_id: str) -> int:
        """Move the volume's data off the runner into the shared archive store (the
        runner where a sandbox mounts it next brings it back); the archive's size.

        Raises:
            InvalidState: the runner has no shared archive store, or keeps volumes in a
                shared volumes dir (nothing to move).
        """

    async def resize(self, sandbox_id: str, resources: Resources, *, live: bool) -> None:
        """Apply new limits (``live``: CPU and memory of a running sandbox)."""

    async def status(self, sandbox_id: str) -> ContainerStatus:
        """What is really there for this sandbox."""

    async def list_ids(self) -> set[str]:
        """Ids of every sandbox that has anything on the runner."""

    async def tidy(self, sandbox_id: str) -> None:
        """Remove what an interrupted archive, restore or capture of the sandbox left
        (a server killed mid-way): half-written archives, a half-restored layer, a
        capture's mounts, an archive beside a complete layer. Call it only while no
        operation on the sandbox runs."""

    async def remove_stale_work(self) -> None:
        """Remove the work that snapshot captures, imports and removals of dead servers
        left (never another live server's)."""

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> None:
        """Apply ``policy`` to the running sandbox at once (a no-op when it does not run)."""

    async def adopt(self, spec: ContainerSpec) -> None:
        """Give the running sandbox (started for a warm pool) ``spec``'s hostname, user and
        env, as a cold start of ``spec`` would have (its firewall: ``set_network``)."""

    async def stats(self, sandbox_id: str) -> ContainerStats:
        """Current usage of a running sandbox."""

    async def open_agent(self, sandbox_id: str) -> AgentConnection:
        """A new byte stream to the toolbox agent of a running sandbox.

        Raises:
            Unavailable: the sandbox's agent cannot be reached (it does not run).
            Busy: it does not take connections now.
        """

    async def preview_upstream(self, sandbox_id: str, port: int) -> str | None:
        """The base URL (``http://host:port``) at which the server reaches ``port``
        of the running sandbox directly, or None when it cannot (the sandbox has no
        network, or runs on another host: then :meth:`open_port` reaches it)."""

    async def open_port(self, sandbox_id: str, port: int) -> AgentConnection:
        """A new byte stream to ``port`` of the running sandbox.

        Raises:
            Unavailable: the sandbox does not run, or nothing accepts on ``port``.
        """


AgentConnection = tuple["asyncio.StreamReader", "asyncio.StreamWriter"]
SPLICE_CHUNK = 64 * 1024


async def splice(a: AgentConnection, b: AgentConnection) -> None:
    """Copy bytes both ways between two streams (at most a chunk held at a time) until
    either side ends; then close both."""

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(SPLICE_CHUNK):
            dst.write(data)
            await dst.drain()

    tasks = [asyncio.create_task(pump(a[0], b[1])), asyncio.create_task(pump(b[0], a[1]))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for _, writer in (a, b):
            with contextlib.suppress(Exception):
                writer.close()
        await asyncio.gather(*tasks, return_exceptions=True)


class SandboxStore(Protocol):
    """Persistence of sandbox records (and nothing else)."""

    def add(self, sandbox: Sandbox) -> None:
        """Insert a new record. Raises Conflict if the name is taken in its organization."""

    def get(self, organization_id: str, id_or_name: str) -> Sandbox:
        """Raises NotFound."""

    def get_by_id(self, sandbox_id: str) -> Sandbox:
        """Raises NotFound."""

    def save(self, sandbox: Sandbox) -> None:
        """Write back every field of an existing record."""

    def remove(self, sandbox_id: str) -> None: ...

    def touch(self, stamps: Mapping[str, datetime]) -> None:
        """Move each sandbox's ``last_activity_at`` forward to its stamp (never back;
        unknown ids are skipped)."""

    def changes(self) -> int:
        """This store's change counter: it grows before and after every add, save and
        remove (for caches of records read through it)."""

    def version(self, sandbox_id: str) -> int:
        """The change counter when this store last changed the record (0: never)."""

    def list(
        self,
        organization_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        states: Sequence[SandboxState] | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[builtins.list[Sandbox], str | None]:
        """A page of sandboxes, oldest first, and the cursor of the next page."""

    def all(self) -> builtins.list[Sandbox]:
        """Every sandbox of every organization (for reconciliation)."""

    def timers_due(self, now: datetime, minute: float) -> builtins.list[Sandbox]:
        """The sandboxes whose lifecycle timer (see :func:`cove.core.timers.due`) is due
        at ``now`` when a timer minute lasts ``minute`` seconds; no other row is read."""


class EventSink(Protocol):
    """Where lifecycle events go (Socket.IO in the server, a list in tests)."""

    async def sandbox_created(self, sandbox: Sandbox) -> None: ...

    async def sandbox_state_updated(self, sandbox: Sandbox, old_state: SandboxState) -> None: ...


class KeyStore(Protocol):
    """Organizations and their API keys (hashes, never values)."""

    def ensure_organization(self, name: str) -> str:
        """The id of the organization called ``name``, created if missing."""

    def organization(self, organization_id: str) -> Organization | None: ...

    def organizations(self) -> builtins.list[Organization]: ...

    def add_key(self, key: ApiKey, key_hash: str) -> None: ...

    def key_for(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, or None for a key nobody issued (or revoked)."""

    def key(self, key_id: str) -> ApiKey | None:
        """The key with this id, or None (revoked, or never issued)."""

    def list_keys(self, organization_id: str | None = None) -> builtins.list[ApiKey]:
        """The keys (of one organization), oldest first."""

    def delete_key(self, key_id: str) -> bool:
        """Forget a key: it no longer authenticates. False when there was none."""

    def touch_keys(self, stamps: Mapping[str, datetime]) -> None:
        """Record when keys were last used (never moving a stamp back)."""

    def count_keys(self) -> int: ...


class Sealer(Protocol):
    """Encryption at rest of secrets the server must read back (registry passwords)."""

    def seal(self, secret: str, context: str) -> str:
        """``secret`` encrypted and authenticated, bound to ``context`` (say, the id of
        the record that keeps it): a sealed value copied to another record won't open."""

    def open(self, stored: str, context: str) -> str:
        """The secret in ``stored``; a value stored before sealing existed is returned
        as it is.

        Raises:
            ValueError: ``stored`` is sealed but does not open (another key, another
                context, or tampered with).
        """

    def is_sealed(self, stored: str) -> bool: ...
