"""Organization quotas: what one organization's sandboxes, snapshots and volumes may
hold together, checked at create, start, resize, snapshot and volume creation.

As on Daytona, a sandbox's CPU and memory count while it runs (or is on its way to
running); its disk counts until it is archived or deleted; a warm pool's unclaimed
sandbox counts against no one until a create claims it. A quota of 0 is no limit.

Checks and the state change they admit are serialized per organization: the check
reads the stored usage plus what other admitted operations of the organization are
about to take (``pending``), so two concurrent creates never both pass a quota that
fits one. Several replicas on one database (PostgreSQL) also hold the organization's
lock of the :class:`~cove.core.coordination.Coordination` (``organization``: sandbox
admissions, ``organization-snapshots``: new snapshots, ``organization-volumes``: new
volumes) from the check until the admitted state (the snapshot's or volume's record)
is stored, where every replica's next check reads it; one server alone needs no more
than its in-process lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from cove.core.config import Settings
from cove.core.coordination import Coordination, LocalCoordination
from cove.core.ports import Resources
from cove.core.sandbox import SandboxState
from cove.errors import CoveError, OrganizationQuotaExceeded, QuotaExceeded

S = SandboxState
# Daytona's SANDBOX_STATES_CONSUMING_COMPUTE, with Cove's pausing and resuming (a
# sandbox still or already running).
COMPUTE = frozenset({
    S.CREATING, S.RESTORING, S.STARTED, S.STARTING, S.STOPPING, S.PENDING_BUILD,
    S.BUILDING_SNAPSHOT, S.PULLING_SNAPSHOT, S.PAUSING, S.RESUMING,
})  # fmt: skip
# Whatever the state was before (a started or a stopped sandbox being resized or captured).
CONDITIONAL = frozenset({S.RESIZING, S.SNAPSHOTTING})
# Daytona's SANDBOX_STATES_CONSUMING_DISK: a paused sandbox keeps only its disk.
DISK = COMPUTE | CONDITIONAL | {S.STOPPED, S.PAUSED, S.ARCHIVING}
GIB = 1024**3
HINT = "Ask the operator of this Cove server to raise the organization's quota"


@dataclass(frozen=True)
class Charge:
    """What a sandbox holds against its organization: vCPUs, GiB of memory and disk."""

    cpu: int = 0
    memory: int = 0
    disk: int = 0

    def __add__(self, other: Charge) -> Charge:
        return Charge(self.cpu + other.cpu, self.memory + other.memory, self.disk + other.disk)


NOTHING = Charge()


def charge(state: SandboxState, resources: Resources, *, before: Charge | None = None) -> Charge:
    """What a sandbox in ``state`` holds. In a conditional state (resizing,
    snapshotting): ``before`` (what it held), or, not known, as much as a running one."""
    if state in CONDITIONAL and before is not None:
        return before
    if state in COMPUTE or state in CONDITIONAL:
        return Charge(resources.cpu, resources.memory, resources.disk)
    if state in DISK:
        return Charge(disk=resources.disk)
    return NOTHING


@dataclass(frozen=True)
class Quota:
    """An organization's limits (0: none). The per-sandbox maxima are None when the
    server's own (COVE_MAX_CPU, ...) apply."""

    cpu: int = 0
    memory: int = 0  # GiB
    disk: int = 0  # GiB
    sandboxes: int = 0
    snapshots: int = 0
    snapshot_storage: int = 0  # GiB
    volumes: int = 0
    max_cpu_per_sandbox: int | None = None
    max_memory_per_sandbox: int | None = None
    max_disk_per_sandbox: int | None = None


QUOTA_FIELDS = tuple(f.name for f in dataclasses.fields(Quota))


def default_quota(settings: Settings) -> Quota:
    return Quota(
        cpu=settings.quota_cpu, memory=settings.quota_memory, disk=settings.quota_disk,
        sandboxes=settings.quota_sandboxes, snapshots=settings.quota_snapshots,
        snapshot_storage=settings.quota_snapshot_storage, volumes=settings.quota_volumes,
    )  # fmt: skip


@dataclass(frozen=True)
class Holding:
    """One of the organization's sandboxes as the quota sees it."""

    sandbox_id: str
    state: SandboxState
    resources: Resources


@dataclass(frozen=True)
class Usage:
    """What an organization holds now."""

    compute: Charge = NOTHING  # cpu and memory of running sandboxes, disk of unarchived ones
    sandboxes: int = 0
    snapshots: int = 0
    snapshot_bytes: int = 0
    volumes: int = 0


class QuotaStore(Protocol):
    """Where quotas and what they are checked against are read."""

    def holdings(self, organization_id: str) -> list[Holding]:
        """Every sandbox of the organization (none of a warm pool's unclaimed ones)."""

    def snapshot_usage(self, organization_id: str) -> tuple[int, int]:
        """The organization's own snapshots: how many, and their bytes."""

    def volume_count(self, organization_id: str) -> int: ...

    def quota_overrides(self, organization_id: str) -> dict[str, int | None]:
        """The operator's settings for the organization (absent: the server's defaults)."""

    def set_quota_overrides(self, organization_id: str, fields: dict[str, int | None]) -> None:
        """Store ``fields`` (None: back to the default) for the organization."""


def total(holdings: Iterable[Holding], *, exclude: str | None = None,
          pending: dict[str, Charge] | None = None) -> Charge:  # fmt: skip
    """What ``holdings`` hold together (``exclude``: not that sandbox), each sandbox at
    least at its ``pending`` charge (an admitted operation not stored yet)."""
    pending = dict(pending or {})
    out = NOTHING
    for h in holdings:
        if h.sandbox_id == exclude:
            continue
        held = charge(h.state, h.resources)
        extra = pending.pop(h.sandbox_id, NOTHING)
        out += Charge(max(held.cpu, extra.cpu), max(held.memory, extra.memory),
                      max(held.disk, extra.disk))  # fmt: skip
    for sandbox_id, extra in pending.items():
        if sandbox_id != exclude:
            out += extra
    return out


def check_per_sandbox(quota: Quota, resources: Resources) -> None:
    """Raise OrganizationQuotaExceeded when one sandbox asks for more than the
    organization's per-sandbox maxima (Daytona's messages)."""
    limits = (
        (resources.cpu, quota.max_cpu_per_sandbox, "CPU request {v} exceeds maximum allowed "
         "per sandbox ({m})."),
        (resources.memory, quota.max_memory_per_sandbox, "Memory request {v}GB exceeds "
         "maximum allowed per sandbox ({m}GB)."),
        (resources.disk, quota.max_disk_per_sandbox, "Disk request {v}GB exceeds maximum "
         "allowed per sandbox ({m}GB)."),
    )  # fmt: skip
    for value, maximum, message in limits:
        if maximum is not None and value > maximum:
            raise OrganizationQuotaExceeded(message.format(v=value, m=maximum))


def check_totals(quota: Quota, held: Charge, wanted: Charge) -> None:
    """Raise OrganizationQuotaExceeded when ``held`` plus ``wanted`` goes over a total
    quota that ``wanted`` adds to (Daytona's messages)."""
    limits = (
        (held.cpu, wanted.cpu, quota.cpu, "Total CPU limit exceeded. Maximum allowed: {q}."),
        (held.memory, wanted.memory, quota.memory,
         "Total memory limit exceeded. Maximum allowed: {q}GiB."),
        (held.disk, wanted.disk, quota.disk, "Total disk limit exceeded. Maximum allowed: {q}GiB."
         "\nConsider archiving your unused sandboxes to free up available storage."),
    )  # fmt: skip
    for have, want, limit, message in limits:
        if limit and want and have + want > limit:
            raise OrganizationQuotaExceeded(f"{message.format(q=limit)}\n{HINT}.")


def check_count(what: str, have: int, limit: int,
                error: type[CoveError] = OrganizationQuotaExceeded) -> None:  # fmt: skip
    """Raise ``error`` when one more ``what`` goes over ``limit`` (Daytona answers its
    volume and snapshot quotas with a 400, its sandbox quotas with a 403)."""
    if limit and have + 1 > limit:
        raise error(f"{what} quota exceeded. Maximum allowed: {limit}\n{HINT}.")


class QuotaService:
    """Reads quotas and admits what would add to an organization's usage.

    Args:
        settings: the default quota (COVE_QUOTA_*).
        store: quotas and usage.
    """

    def __init__(self, *, settings: Settings, store: QuotaStore) -> None:
        self.defaults = default_quota(settings)
        self.store = store
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, dict[str, Charge]] = {}
        self._pending_snapshots: dict[str, int] = {}
        # Several replicas: their locks (the server sets it with the sandboxes' ones).
        self.coordination: Coordination = LocalCoordination()

    def quota(self, organization_id: str) -> Quota:
        """The organization's quota: the operator's settings over the defaults."""
        overrides = self.store.quota_overrides(organization_id)
        found = {k: v for k, v in overrides.items() if v is not None and k in QUOTA_FIELDS}
        return dataclasses.replace(self.defaults, **found)

    def set_quota(self, organization_id: str, **fields: int | None) -> Quota:
        """Change the organization's quota (None: back to the default).

        Raises:
            ValueError: an unknown field or a negative value.
        """
        for name, value in fields.items():
            if name not in QUOTA_FIELDS:
                raise ValueError(f"unknown quota {name!r}")
            if value is not None and value < 0:
                raise ValueError(f"{name} must be at least 0")
        self.store.set_quota_overrides(organization_id, fields)
        return self.quota(organization_id)

    def usage(self, organization_id: str) -> Usage:
        """What the organization holds now (and what admitted operations will take)."""
        holdings = self.store.holdings(organization_id)
        snapshots, snapshot_bytes = self.store.snapshot_usage(organization_id)
        return Usage(
            compute=total(holdings, pending=self._pending.get(organization_id)),
            sandboxes=len({h.sandbox_id for h in holdings}
                          | set(self._pending.get(organization_id, {}))),
            snapshots=snapshots, snapshot_bytes=snapshot_bytes,
            volumes=self.store.volume_count(organization_id),
        )  # fmt: skip

    @asynccontextmanager
    async def admit(self, organization_id: str, sandbox_id: str, wanted: Charge,
                    resources: Resources, *, new: bool = False) -> AsyncIterator[None]:  # fmt: skip
        """Hold ``wanted`` for the sandbox while the caller stores the state that takes
        it (``new``: a sandbox that is not stored yet, counted as one more sandbox).

        With several replicas, the organization's lock is held until the block ends:
        keep it to storing the state (see :meth:`cove.core.ops.SandboxOps.through`).

        Raises:
            OrganizationQuotaExceeded: it does not fit (nothing is held).
        """
        async with self.coordination.lock("organization", organization_id):
            async with self._admitted(organization_id, sandbox_id, wanted, resources, new=new):
                yield

    @asynccontextmanager
    async def _admitted(self, organization_id: str, sandbox_id: str, wanted: Charge,
                        resources: Resources, *, new: bool) -> AsyncIterator[None]:  # fmt: skip
        async with self._locks.setdefault(organization_id, asyncio.Lock()):
            quota = self.quota(organization_id)
            check_per_sandbox(quota, resources)
            pending = self._pending.setdefault(organization_id, {})
            if quota.cpu or quota.memory or quota.disk or quota.sandboxes:  # else none to
                self._check_totals(organization_id, sandbox_id, wanted, quota, new=new)  # read
            pending[sandbox_id] = wanted
        try:
            yield
        finally:
            pending.pop(sandbox_id, None)

    def _check_totals(self, organization_id: str, sandbox_id: str, wanted: Charge,
                      quota: Quota, *, new: bool) -> None:  # fmt: skip
        """Raise OrganizationQuotaExceeded when the organization's holdings, what is
        admitted and not yet stored, and ``wanted`` for the sandbox go over ``quota``."""
        holdings = self.store.holdings(organization_id)
        pending = self._pending[organization_id]
        if new:
            check_count("Sandbox", len(holdings) + len(pending), quota.sandboxes)
        mine = next((h for h in holdings if h.sandbox_id == sandbox_id), None)
        now = charge(mine.state, mine.resources) if mine else NOTHING
        growth = Charge(max(0, wanted.cpu - now.cpu), max(0, wanted.memory - now.memory),
                        max(0, wanted.disk - now.disk))  # fmt: skip
        check_totals(quota, total(holdings, exclude=sandbox_id, pending=pending) + now, growth)

    @asynccontextmanager
    async def admit_snapshot(self, organization_id: str) -> AsyncIterator[None]:
        """Hold one more snapshot of the organization while the caller makes and
        stores its record (other snapshots of the organization are checked with it
        counted meanwhile; with several replicas they wait for it to be stored).

        Raises:
            QuotaExceeded: (400) the organization may make no more snapshots.
        """
        async with self.coordination.lock("organization-snapshots", organization_id):
            async with self._locks.setdefault(organization_id, asyncio.Lock()):
                quota = self.quota(organization_id)
                count, size = self.store.snapshot_usage(organization_id)
                pending = self._pending_snapshots.get(organization_id, 0)
                check_count("Snapshot", count + pending, quota.snapshots, QuotaExceeded)
                if quota.snapshot_storage and size >= quota.snapshot_storage * GIB:
                    raise QuotaExceeded(
                        "Snapshot storage quota exceeded. Maximum allowed: "
                        f"{quota.snapshot_storage}GiB\n{HINT}.")  # fmt: skip
                self._pending_snapshots[organization_id] = pending + 1
            try:
                yield
            finally:
                left = self._pending_snapshots[organization_id] - 1
                if left:
                    self._pending_snapshots[organization_id] = left
                else:
                    del self._pending_snapshots[organization_id]

    @asynccontextmanager
    async def admit_volume(self, organization_id: str) -> AsyncIterator[None]:
        """Admit one more volume of the organization while the caller stores its record
        (with several replicas, their volume creates for the organization wait until it
        is stored, where their check reads it).

        Raises:
            QuotaExceeded: (400) the organization may make no more volumes.
        """
        async with self.coordination.lock("organization-volumes", organization_id):
            check_count("Volume", self.store.volume_count(organization_id),
                        self.quota(organization_id).volumes, QuotaExceeded)  # fmt: skip
            yield
