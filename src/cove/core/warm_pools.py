"""An organization's warm pools (``/api/warm-pools``), kept by :class:`PoolKeeper`.

A pool keeps ``size`` started sandboxes of one snapshot at the default resources
and isolation tier; only the organization's creates of that snapshot (and
target) with those resources take them. Together an organization's pools keep at
most ``COVE_POOL_MAX`` sandboxes. Snapshots with an entrypoint cannot be pooled
(it would run before the create's env and user are known).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Protocol

from cove.core.config import Settings
from cove.core.entrypoint import command_line
from cove.core.pool import PoolKeeper, WarmPool
from cove.core.ports import Resources
from cove.core.sandbox import utcnow
from cove.core.snapshots import SnapshotService
from cove.errors import BadRequest, NotFound

# The runtime ref of a snapshot an organization may create from (None: none such).
RefFor = Callable[[str, str], "str | None"]


class WarmPoolStore(Protocol):
    def add(self, pool: WarmPool) -> None: ...

    def get(self, organization_id: str, pool_id: str) -> WarmPool: ...

    def save(self, pool: WarmPool) -> None: ...

    def remove(self, pool_id: str) -> None: ...

    def list(self, organization_id: str | None = None) -> list[WarmPool]: ...


class WarmPoolService:
    """List, create, resize and delete an organization's warm pools.

    Args:
        settings: defaults (resources, tier) and ``pool_max``.
        keeper: fills and drains the pools.
        store: where pools are kept.
        ref_for: resolves a snapshot name or id for an organization.
        snapshots: the snapshots' image configs (their entrypoints).
    """

    def __init__(self, *, settings: Settings, keeper: PoolKeeper, store: WarmPoolStore,
                 ref_for: RefFor, snapshots: SnapshotService | None) -> None:  # fmt: skip
        self.settings = settings
        self.keeper = keeper
        self.store = store
        self.ref_for = ref_for
        self.snapshots = snapshots

    def list(self, organization_id: str) -> list[tuple[WarmPool, int]]:
        """The organization's pools, each with its number of ready sandboxes."""
        ready = self._ready()
        return [(p, ready.get(p.id, 0)) for p in self.store.list(organization_id)]

    def get(self, organization_id: str, pool_id: str) -> tuple[WarmPool, int]:
        """Raises NotFound (also for another organization's pool)."""
        return self.store.get(organization_id, pool_id), self._ready().get(pool_id, 0)

    def create(self, organization_id: str, snapshot: str, size: int,
               target: str | None) -> tuple[WarmPool, int]:  # fmt: skip
        """A new pool, filled in the background.

        Raises:
            BadRequest: an unknown snapshot, one with an entrypoint, a size under 1 or
                over what the organization may keep.
            Conflict: the organization has a pool of that snapshot and target.
        """
        if size < 1:
            raise BadRequest("pool must be at least 1")
        ref = self.ref_for(organization_id, snapshot)
        if ref is None:
            raise BadRequest(f"Snapshot '{snapshot}' not found")
        config = self._image_config(organization_id, ref)
        if command_line(config) is not None:
            raise BadRequest(f"Snapshot '{snapshot}' has an entrypoint: it cannot be pooled")
        self._check_total(organization_id, size, None)
        s = self.settings
        pool = WarmPool(
            id=str(uuid.uuid4()), organization_id=organization_id, snapshot=ref,
            target=target or "local", size=size, isolation=s.default_isolation,
            user=_config_user(config) or "daytona",
            resources=Resources(cpu=s.default_cpu, memory=s.default_memory, disk=s.default_disk),
        )  # fmt: skip
        self.store.add(pool)
        self.keeper.changed()
        return pool, 0

    def update(self, organization_id: str, pool_id: str, size: int) -> tuple[WarmPool, int]:
        """Set a pool's size (0 drains it).

        Raises:
            NotFound: no such pool of the organization. BadRequest: a bad size.
        """
        pool = self.store.get(organization_id, pool_id)
        if size < 0:
            raise BadRequest("pool must not be negative")
        self._check_total(organization_id, size, pool_id)
        pool.size, pool.updated_at = size, utcnow()
        self.store.save(pool)
        self.keeper.changed()
        return pool, self._ready().get(pool.id, 0)

    def delete(self, organization_id: str, pool_id: str) -> None:
        """Delete a pool; its waiting sandboxes are destroyed in the background.

        Raises:
            NotFound: no such pool of the organization.
        """
        self.store.get(organization_id, pool_id)
        self.store.remove(pool_id)
        self.keeper.changed()

    def _ready(self) -> dict[str, int]:
        return {pool_id: sum(1 for sb in members if sb.state.value == "started")
                for pool_id, members in self.keeper.members().items()}  # fmt: skip

    def _check_total(self, organization_id: str, size: int, replacing: str | None) -> None:
        others = sum(p.size for p in self.store.list(organization_id) if p.id != replacing)
        limit = self.settings.pool_max
        if others + size > limit:
            raise BadRequest(
                f"pool {size}: the organization's warm pools may keep at most {limit} "
                f"sandboxes together ({others} in its other pools)"
            )

    def _image_config(self, organization_id: str, ref: str) -> dict[str, object] | None:
        if self.snapshots is None:
            return None
        try:
            config = self.snapshots.get(organization_id, ref).image_config
        except NotFound:
            return None
        return dict(config) if config else None


def _config_user(config: dict[str, object] | None) -> str | None:
    """The image's user (as a create without ``user`` gets it), else None."""
    if not config:
        return None
    return str(config.get("user") or "").partition(":")[0] or None
