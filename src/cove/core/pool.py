"""Warm pools: started sandboxes waiting for a create, which takes one over in
milliseconds instead of booting one.

A pool keeps ``size`` sandboxes of one snapshot, resource class (cpu, memory, disk)
and isolation tier started, as rows of ``sandboxes`` with no organization: no
organization lists, gets, meters or is told of them, and no timer runs on them.
Nothing of a tenant ever runs in them (a claimed sandbox never returns to a
pool); they wait with the default firewall, which most creates keep. The
operator's pool (``COVE_POOL_SIZE`` sandboxes of the default snapshot at the
default resources) serves every organization; an organization's own pools
(``/api/warm-pools``) serve only it.

A create that a pool can serve (see :meth:`PoolKeeper.claim`) *takes* one of its
sandboxes in one conditional UPDATE (two creates never take the same one), then
gives it everything the create asked for (hostname, user, env, its firewall
unless the default; name, labels, intervals and organization with the record,
written last). Anything that
fails on the way destroys the taken sandbox and the create boots one cold: a
create never answers a sandbox with settings other than those it asked for.

The keeper refills pools in the background, one sandbox at a time (user creates
are never starved), and removes what no pool wants: members of a pool made
smaller or deleted, members whose container died (the reconciler reports them
stopped or in error like any sandbox), claims a crash interrupted.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Collection
from datetime import datetime
from functools import partial
from typing import Protocol

from cove.agent import protocol
from cove.core.config import Settings
from cove.core.ops import SandboxOps, container_spec
from cove.core.pool_demand import Demand
from cove.core.ports import EventSink, NetworkPolicy, Resources
from cove.core.sandbox import MAX_ARCHIVE_MINUTES, Sandbox, SandboxState, utcnow
from cove.core.toolbox import AgentLinks, agent_client
from cove.errors import Conflict, CoveError, InvalidState, NotFound

S = SandboxState
OPERATOR_POOL = "cove-operator-pool"  # the id of the operator's pool (COVE_POOL_SIZE)
REFILL_SECONDS = 2.0  # how often pools are checked when nothing wakes the keeper
RETRY_SECONDS = 30.0  # how long a pool whose sandbox failed to boot waits to try again
PING_SECONDS = 5.0  # a waiting sandbox's agent answers a keep-warm ping within this
# How long a claim trusts the pools it read last (the changes of this server forget them
# at once; another replica's within this). A pool's kind never changes, only its size,
# and a pool deleted meanwhile still holds sandboxes of that kind until they are
# discarded (a claim and a discard never take the same one): a claim on an old list
# still gets the kind of sandbox it asked for.
POOLS_SECONDS = 1.0
# Claims at once: the rest wait their turn. A claim is mostly the event loop's own work
# (no boot to wait for), so more at once serve no more per second; they only make
# every other request (a health check, a toolbox call) queue behind theirs.
CLAIMS_AT_ONCE = 8
CLAIM_WAKE_SECONDS = 0.2  # claims within this wake the keeper once (a burst: one scan)
# Keep-warm pings come at least this often: each readies a spare process for the first
# command (an agent lets an unused one go after ``SPARE_SECONDS``).
SPARE_PING = protocol.SPARE_SECONDS / 2
log = logging.getLogger(__name__)


@dataclasses.dataclass
class WarmPool:
    """How many started sandboxes of a kind to keep ready."""

    id: str
    organization_id: str  # "": the operator's, serving every organization
    snapshot: str  # the runtime ref
    target: str
    size: int
    resources: Resources
    isolation: str
    user: str
    error_reason: str | None = None
    created_at: datetime = dataclasses.field(default_factory=utcnow)
    updated_at: datetime = dataclasses.field(default_factory=utcnow)

    def serves(self, sandbox: Sandbox) -> bool:
        """Whether a sandbox of this pool can become ``sandbox`` (before its claim)."""
        return (
            self.organization_id in ("", sandbox.organization_id)
            and (self.snapshot, self.resources, self.isolation, self.target)
            == (sandbox.snapshot, sandbox.resources, sandbox.isolation, sandbox.target)
        )


class PoolStore(Protocol):
    """Where pools and the claims on their sandboxes are kept."""

    def list(self, organization_id: str | None = None) -> builtins.list[WarmPool]: ...

    def save(self, pool: WarmPool) -> None: ...

    def unowned(self) -> builtins.list[Sandbox]:
        """Every sandbox of no organization."""

    def take(self, token: str, *, pool_id: str, sandbox_id: str | None = None,
             started: bool = True, runners: Collection[str] | None = None
             ) -> str | None:  # fmt: skip
        """Atomically mark a waiting sandbox of ``pool_id`` as taken by ``token`` (one on
        a runner of ``runners``, when given)."""

    def adopt(self, sandbox: Sandbox, token: str) -> None:
        """Write the claimed record over the row ``token`` took (Conflict on its name)."""


class OwnedOnly:
    """An EventSink that says nothing of sandboxes no organization owns (pooled)."""

    def __init__(self, inner: EventSink) -> None:
        self.inner = inner

    async def sandbox_created(self, sandbox: Sandbox) -> None:
        if sandbox.organization_id:
            await self.inner.sandbox_created(sandbox)

    async def sandbox_state_updated(self, sandbox: Sandbox, old_state: SandboxState) -> None:
        if sandbox.organization_id:
            await self.inner.sandbox_state_updated(sandbox, old_state)


class PoolKeeper:
    """Fills warm pools, hands their sandboxes to creates, removes what none wants.

    Args:
        settings: the operator's pool (``pool_size``) and defaults.
        ops: sandbox operations (locks, boot, removal).
        store: the organizations' pools and the claims.
        default_ref: the runtime ref of the default snapshot (None: not on this host).
    """

    def __init__(self, *, settings: Settings, ops: SandboxOps, store: PoolStore,
                 default_ref: Callable[[], str | None]) -> None:  # fmt: skip
        self.settings = settings
        self.ops = ops
        self.store = store
        self._default_ref = default_ref
        self._claims: set[str] = set()  # tokens of claims and discards under way
        self._wake = asyncio.Event()
        self._wake_soon: asyncio.TimerHandle | None = None
        self._claiming = asyncio.Semaphore(CLAIMS_AT_ONCE)
        self._retry_at: dict[str, float] = {}  # pool id -> when a failed pool tries again
        self._warmed: dict[str, float] = {}  # sandbox id -> when its agent was last pinged
        self.operator_error: str | None = None
        self.claims: dict[str, int] = {}  # pool id -> creates it served (this server run)
        self._known: tuple[float, list[WarmPool]] | None = None  # (read at, pools): claims
        self.cold_fallbacks = 0  # creates that found no pooled sandbox and booted one
        # Several runners: the ids of those a claim may take a sandbox on (None: any).
        self.runners: Callable[[], Collection[str]] | None = None
        # The toolbox's connections to the agents: keep-warm pings go over them, so a
        # claimed sandbox's first call finds its connection made.
        self.links: AgentLinks | None = None
        self.claimed: Callable[[Sandbox], None] = lambda _sandbox: None  # the toolbox's
        # The operator's pool grows to recent demand (its creates, served or cold).
        self.demand = Demand()

    def operator_pool(self) -> WarmPool | None:
        """The operator's pool (None: ``COVE_POOL_SIZE`` is 0 or no default snapshot), at
        the size recent demand asks for (see :mod:`cove.core.pool_demand`)."""
        s = self.settings
        ref = self._default_ref() if s.pool_size > 0 else None
        if ref is None:
            return None
        return WarmPool(
            id=OPERATOR_POOL, organization_id="", snapshot=ref, target="local",
            size=self.demand.target(s.pool_size, s.pool_adaptive_max),
            isolation=s.default_isolation, user="daytona",
            resources=Resources(cpu=s.default_cpu, memory=s.default_memory, disk=s.default_disk),
            error_reason=self.operator_error,
        )  # fmt: skip

    def pools(self) -> list[WarmPool]:
        """Every pool, as stored now."""
        operator = self.operator_pool()
        found = [*self.store.list(), *([operator] if operator else [])]
        self._known = (time.monotonic(), found)
        return found

    def _recent_pools(self) -> list[WarmPool]:
        """The pools as read within ``POOLS_SECONDS`` (a claim's: one read less)."""
        known = self._known
        if known is None or time.monotonic() - known[0] > POOLS_SECONDS:
            return self.pools()
        return known[1]

    def changed(self) -> None:
        """A pool was made, resized or deleted: forget the pools read, check them now."""
        self._known = None
        self.wake()

    def members(self) -> dict[str, list[Sandbox]]:
        """Each pool id's waiting (or booting) sandboxes."""
        out: dict[str, list[Sandbox]] = {}
        for sb in self.store.unowned():
            if sb.warm_pool_id is not None and sb.state in (S.STARTED, S.CREATING):
                out.setdefault(sb.warm_pool_id, []).append(sb)
        return out

    def wake(self) -> None:
        """Check the pools now (a pool changed)."""
        self._wake.set()

    def _woken_soon(self) -> None:
        """Check the pools in a moment (a claim took a sandbox; more may follow)."""
        if self._wake_soon is None:
            self._wake_soon = asyncio.get_running_loop().call_later(
                CLAIM_WAKE_SECONDS, self._woken)

    def _woken(self) -> None:
        self._wake_soon = None
        self.wake()

    # ---- keeping ------------------------------------------------------------

    async def run(self) -> None:
        """Keep every pool at its size until cancelled."""
        while True:
            self._wake.clear()
            try:
                if self.ops.coordination.leader:  # one replica keeps the pools
                    await self.keep()
            except Exception:  # noqa: BLE001 - the keeper must outlive any one failure
                log.exception("keeping the warm pools failed")
            try:
                await asyncio.wait_for(self._wake.wait(), REFILL_SECONDS)
            except TimeoutError:
                pass

    async def keep(self) -> None:
        """One round: remove what no pool wants, then fill each pool to its size
        (one sandbox at a time; a pool whose boot fails waits for the next round)."""
        pools = {p.id: p for p in self.pools()}
        kept: dict[str, list[Sandbox]] = {}
        alive = self.ops.coordination.alive()
        for sb in self.store.unowned():
            if sb.warm_pool_id in self._claims or _holder(sb.warm_pool_id) in alive:
                continue  # a claim or discard of this server run (or a live replica) is on it
            pool = pools.get(sb.warm_pool_id or "")
            if pool is None or sb.state not in (S.STARTED, S.CREATING):
                await self._discard(sb)
                continue
            kept.setdefault(pool.id, []).append(sb)
        now = asyncio.get_running_loop().time()
        await self._keep_warm([sb for group in kept.values() for sb in group], now)
        for pool in pools.values():
            members = kept.get(pool.id, [])
            for extra in members[pool.size:]:
                await self._discard(extra)
            if self._retry_at.get(pool.id, 0.0) > now:
                continue
            for _ in range(pool.size - len(members)):
                if not await self._fill(pool):
                    self._retry_at[pool.id] = now + RETRY_SECONDS
                    break

    async def _keep_warm(self, members: list[Sandbox], now: float) -> None:
        """Ping the agents of waiting sandboxes well within ``COVE_AGENT_IDLE_SECONDS``
        and ``SPARE_PING``, so that an idle agent never exits there and a claim's first
        call finds it up, with a spare process ready for its first command."""
        idle = self.settings.agent_idle_seconds
        every = min(idle / 3, SPARE_PING) if idle > 0 else SPARE_PING
        started = {sb.id for sb in members if sb.state is S.STARTED}
        self._warmed = {k: v for k, v in self._warmed.items() if k in started}
        for sandbox_id in started:
            if now - self._warmed.get(sandbox_id, float("-inf")) < every:
                continue
            try:
                agent = agent_client(self.ops.runner, sandbox_id, None, {}, self.links)
                await asyncio.wait_for(agent.ping(spare=True), PING_SECONDS)
            except (CoveError, TimeoutError) as exc:
                log.warning("pooled sandbox %s did not answer a ping: %s", sandbox_id, exc)
            self._warmed[sandbox_id] = now

    async def _fill(self, pool: WarmPool) -> bool:
        """Boot one sandbox into ``pool``; False (and the pool's error set) on failure."""
        if pool.isolation != "crun":
            return self._note(pool, "warm pools keep sandboxes of the crun tier only")
        sandbox_id = str(uuid.uuid4())
        sandbox = Sandbox(
            id=sandbox_id, organization_id="", name=sandbox_id, snapshot=pool.snapshot,
            user=pool.user, resources=pool.resources, isolation=pool.isolation,
            target=pool.target, auto_stop_interval=0,
            auto_archive_interval=MAX_ARCHIVE_MINUTES, auto_delete_interval=-1,
            warm_pool_id=pool.id,
        )  # fmt: skip
        self.ops.store.add(sandbox)
        booted = await self.ops.run(sandbox_id, lambda: self.ops.boot(sandbox))
        if booted.state is not S.STARTED:
            return self._note(pool, booted.error_reason or "the sandbox did not start")
        self._note(pool, None)
        return True

    def _note(self, pool: WarmPool, error: str | None) -> bool:
        """Record why ``pool`` cannot be filled (None: it can); returns False."""
        if pool.error_reason != error:
            pool.error_reason, pool.updated_at = error, utcnow()
            if pool.id == OPERATOR_POOL:
                self.operator_error = error
            else:
                try:
                    self.store.save(pool)
                except NotFound:
                    pass  # deleted meanwhile
        return False

    async def _discard(self, sandbox: Sandbox) -> None:
        """Destroy a pooled sandbox, once taken from under any claim."""
        token = self._token("discard")
        self._claims.add(token)
        try:
            taken = self.store.take(token, pool_id=sandbox.warm_pool_id or "",
                                    sandbox_id=sandbox.id, started=False)  # fmt: skip
            if taken is not None:
                await self.ops.run(taken, lambda: self._remove(taken))
        except CoveError as exc:
            log.error("removing pooled sandbox %s failed: %s", sandbox.id, exc.message)
        finally:
            self._claims.discard(token)

    async def _remove(self, sandbox_id: str) -> None:
        try:
            await self.ops.remove(self.ops.store.get_by_id(sandbox_id))
        except NotFound:
            return
        except InvalidState:  # in a state nothing may destroy from: remove it anyway
            await self.ops.clean_up(sandbox_id)
            self.ops.store.remove(sandbox_id)
            self.ops.forget(sandbox_id)

    # ---- claiming -----------------------------------------------------------

    async def claim(self, wanted: Sandbox) -> Sandbox | None:
        """Turn a waiting sandbox into ``wanted`` (the record a cold create would
        store, not stored): the claimed sandbox, ``started``; None when no pool serves
        it or the claim failed (the create then boots one cold).

        Raises:
            Conflict: the organization has a sandbox of that name.
        """
        async with self._claiming:
            claimed = await self._claim(wanted)
        if claimed is None:
            self.cold_fallbacks += 1
        return claimed

    async def _claim(self, wanted: Sandbox) -> Sandbox | None:
        if wanted.volumes or wanted.linked_sandbox_id or self._name_taken(wanted):
            return None
        pools = sorted((p for p in self._recent_pools() if p.serves(wanted)),
                       key=lambda p: p.organization_id == "")  # its own first  # fmt: skip
        for pool in pools:
            token = self._token("claim")
            self._claims.add(token)
            try:
                on = self.runners() if self.runners is not None else None
                taken = self.store.take(token, pool_id=pool.id, runners=on)
                if taken is None:
                    continue
                self._woken_soon()
                if pool.id == OPERATOR_POOL:
                    self.demand.note()
                claimed = await self.ops.run(taken, partial(self._adopt, taken, token, wanted))
                if claimed is not None:
                    self.claims[pool.id] = self.claims.get(pool.id, 0) + 1
                return claimed
            finally:
                self._claims.discard(token)
        if pools and pools[-1].id == OPERATOR_POOL:  # the operator's pool ran dry: it
            self.demand.note()  # would have served this create; it may grow for the next
            self._woken_soon()
        return None

    def _name_taken(self, wanted: Sandbox) -> bool:
        """Whether the create will fail on its name (it goes cold, to fail the same way,
        without spending a pooled sandbox). A name left to the server is the taken
        sandbox's new id: not looked up."""
        if wanted.name == wanted.id:
            return False
        try:
            found = self.ops.store.get(wanted.organization_id, wanted.name)
        except NotFound:
            return False
        return found.name == wanted.name

    async def _adopt(self, sandbox_id: str, token: str, wanted: Sandbox) -> Sandbox | None:
        now = utcnow()
        name = sandbox_id if wanted.name == wanted.id else wanted.name
        sandbox = dataclasses.replace(
            wanted, id=sandbox_id, name=name, state=S.STARTED, created_at=now, updated_at=now,
            last_activity_at=now, state_changed_at=now, warm_pool_id=None,
            # The agent's own environment (which its processes start from) still names the
            # pooled sandbox's HOSTNAME: processes get the new one with their env, until
            # the sandbox restarts with it (as a cold start sets it; ``env`` may override).
            runtime_env={"HOSTNAME": name, **wanted.env},
        )  # fmt: skip
        try:
            spec = container_spec(sandbox)
            await self.ops.runner.adopt(spec)
            if spec.network != NetworkPolicy():  # it waited with the default firewall
                await self.ops.runner.set_network(sandbox_id, spec.network)
            self.store.adopt(sandbox, token)
        except Conflict:
            await self._remove(sandbox_id)
            raise
        except CoveError as exc:
            log.warning("claiming pooled sandbox %s failed: %s", sandbox_id, exc.message)
            await self._remove(sandbox_id)
            return None
        self.claimed(sandbox)
        await self.ops.events.sandbox_created(sandbox)
        return sandbox


    def _token(self, kind: str) -> str:
        """A new claim's token, naming the replica whose claim it is."""
        return f"{kind}:{self.ops.coordination.replica_id}:{uuid.uuid4().hex}"


def _holder(warm_pool_id: str | None) -> str | None:
    """The replica whose claim or discard token ``warm_pool_id`` is (None: a pool's id)."""
    kind, _, rest = (warm_pool_id or "").partition(":")
    return rest.partition(":")[0] if kind in ("claim", "discard") else None
