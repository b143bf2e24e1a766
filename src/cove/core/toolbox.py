"""The server's gateway to the toolbox agents inside sandboxes.

A toolbox call is allowed only on a started sandbox of the caller's
organization; anything else fails at once with a clear error instead of
hanging. Every call counts as activity (it resets the auto-stop timer).

The server keeps one connection to each sandbox's agent (:class:`AgentLinks`)
and runs every request as a stream of it (``cove.agent.mux``): no process is
started and no namespace joined per call, and a slow or stuck request holds
back only itself.

A call finds its sandbox in memory when it can (:class:`RecordCache`): the
record read last time is used again while the store has not changed it since,
for at most ``RECORD_SECONDS`` (a change made by another process, such as another
API replica); a sandbox is never refused as not started on a record from the cache.

The agent lives inside the sandbox, so everything it says is untrusted: it
must accept a request within ``AGENT_ACCEPT_SECONDS``, frames are size-bounded
and flow-controlled (``cove.agent.protocol``), and a reply the server cannot
use (missing or mistyped fields) is the agent's failure, a 502, never an error
of the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cove.agent.mux import Channel, Stream, Tally
from cove.agent.protocol import AgentError, ProtocolError
from cove.core import relay
from cove.core.agent_call import AgentCall
from cove.core.agent_client import AgentClient
from cove.core.agent_types import ProcessEvent
from cove.core.env_update import updated_env
from cove.core.output import DEFAULT_LIMIT
from cove.core.ports import Runner, SandboxStore
from cove.core.relay import RelayConnection, RelaySlot
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import CoveError, InvalidState, ToolboxError, TooManyRequests

if TYPE_CHECKING:
    from cove.core.ops import SandboxOps

AGENT_ACCEPT_SECONDS = 30.0  # covers an agent that is still starting (or restarting)
RECORD_SECONDS = 1.0
WARM_SECONDS = 5.0  # how long a warm-up ping waits for the agent (then it is let be)
RECORD_ENTRIES = 10_000


class ToolboxService:
    """The caller's started sandboxes' agents."""

    def __init__(self, ops: SandboxOps, output_limit: int = DEFAULT_LIMIT,
                 max_requests: int = 0, max_organization_requests: int = 0,
                 relays: bool = True) -> None:  # fmt: skip
        self.ops = ops
        self.runner = ops.runner
        self.links = AgentLinks(ops.runner, max_requests, max_organization_requests, relays)
        self.records = RecordCache(ops.store)
        self.output_limit = output_limit
        # More env vars of a sandbox's processes (its mounted secrets' placeholders).
        self.extra_env: Callable[[Sandbox], dict[str, str]] = lambda _sandbox: {}

    def env(self, sandbox: Sandbox) -> dict[str, str]:
        """The environment the sandbox's new processes get: its env (as ``POST /env``
        changed it while it runs), then its secrets."""
        return {**sandbox.process_env, **self.extra_env(sandbox)}

    def sandbox(self, organization_id: str, sandbox_id: str) -> Sandbox:
        """The caller's started sandbox; records the activity.

        Raises:
            NotFound: no such sandbox in the caller's organization.
            InvalidState: it exists but is not started.
        """
        sandbox = self.records.get(organization_id, sandbox_id)
        if sandbox.state is not SandboxState.STARTED:  # never refused on a cached record:
            sandbox = self.records.get(organization_id, sandbox_id, fresh=True)  # another
        if sandbox.state is not SandboxState.STARTED:  # replica may have started it
            raise InvalidState(
                f"Sandbox {sandbox.id} is {sandbox.state}; start it to use the toolbox"
            )
        self.ops.touch(sandbox)
        return sandbox

    def agent(self, sandbox: Sandbox) -> AgentClient:
        """The typed client of the sandbox's agent, as its user with its environment."""
        return agent_client(self.runner, sandbox.id, sandbox.user, self.env(sandbox),
                            self.links, self.output_limit, sandbox.organization_id)  # fmt: skip

    async def warm(self, sandbox: Sandbox) -> None:
        """Ping the agent of a sandbox just created, once its create was answered: the
        client is busy with the answer meanwhile (the SDK takes ~2 ms over it), and its
        first command then finds the connection made, a spare process ready and the
        agent's own code and data back in the CPU's caches after its wait in a warm
        pool. (Interleaved on this 2-core host, 25-30 pooled creates each way, three
        runs: the first command 0.17-0.50 ms faster, the create itself unchanged within
        the noise.) Whatever goes wrong is the first command's to report."""
        try:
            await asyncio.wait_for(self.agent(sandbox).ping(spare=True), WARM_SECONDS)
        except (CoveError, TimeoutError):
            pass

    async def update_env(self, sandbox: Sandbox, set_: dict[str, str] | None,
                         unset: list[str] | None, unset_value_prefix: str | None,
                         ) -> Sandbox:  # fmt: skip
        """Change the environment the started sandbox's new processes get (see
        :mod:`cove.core.env_update`); the sandbox as it is now.

        Raises:
            BadRequest: the environment would grow beyond its limits.
            InvalidState: the sandbox stopped meanwhile.
        """

        async def apply() -> Sandbox:
            current = self.ops.store.get_by_id(sandbox.id)
            if current.state is not SandboxState.STARTED:
                raise InvalidState(f"Sandbox {sandbox.id} is {current.state}; start it first")
            current.runtime_env = updated_env(current.process_env, set_, unset,
                                              unset_value_prefix)  # fmt: skip
            self.ops.store.save(current)
            return current

        return await self.ops.run(sandbox.id, apply)


class RecordCache:
    """Sandbox records as the toolbox last read them, used again while the store
    reports no change to them (``version``) and for at most ``RECORD_SECONDS``.
    The records are shared: callers read them (activity stamps aside)."""

    def __init__(self, store: SandboxStore, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._records: dict[tuple[str, str], tuple[Sandbox, int, float]] = {}

    def get(self, organization_id: str, id_or_name: str, *, fresh: bool = False) -> Sandbox:
        """The organization's sandbox ``id_or_name`` (``fresh``: read from the store).

        Raises:
            NotFound: there is no such sandbox in the organization.
        """
        key = (organization_id, id_or_name)
        now = self._clock()
        known = None if fresh else self._records.get(key)
        if known is not None:
            sandbox, seen, until = known
            if now < until and self._store.version(sandbox.id) <= seen:
                return sandbox
        seen = self._store.changes()  # before reading: a write under way shows as newer
        sandbox = self._store.get(organization_id, id_or_name)
        if len(self._records) >= RECORD_ENTRIES:
            self._records.clear()
        self._records[key] = (sandbox, seen, now + RECORD_SECONDS)
        return sandbox

    def put(self, sandbox: Sandbox) -> None:
        """Remember ``sandbox`` as just stored (a warm pool's claim: its first toolbox
        call reads nothing)."""
        if len(self._records) >= RECORD_ENTRIES:
            self._records.clear()
        self._records[(sandbox.organization_id, sandbox.id)] = (
            sandbox, self._store.changes(), self._clock() + RECORD_SECONDS)


class AgentLinks:
    """The server's one connection to each sandbox's agent, made on first use and
    again when it broke (the agent restarted, the server did, the sandbox stopped).

    Each request to an agent is a stream of its connection, for which the server holds
    up to a stream window of the agent's data when its client reads slowly: at most
    ``max_streams`` of them on one sandbox, and ``max_owner_streams`` on all the
    sandboxes of one organization (0: no limit), bound what one tenant's requests
    hold of the server."""

    def __init__(self, runner: Runner, max_streams: int = 0, max_owner_streams: int = 0,
                 relays: bool = True) -> None:  # fmt: skip
        self._runner = runner
        self.relays = relays  # plain commands by relays (see ``relayed``)
        self._max_streams = max_streams  # on one connection at once (0: no limit)
        self._max_owner_streams = max_owner_streams  # on one owner's connections at once
        self._channels: dict[str, Channel] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._tallies: dict[str, Tally] = {}  # organization id -> its streams open
        self._relays: dict[str, RelaySlot] = {}  # sandbox id -> its relay in waiting

    async def stream(self, sandbox_id: str, owner: str | None = None) -> Stream:
        """A new stream to the sandbox's agent, on behalf of the organization ``owner``
        (None: the server's own, as a warm pool's pings).

        Raises:
            Unavailable, Busy: see :func:`open_channel`.
            TooManyRequests: the sandbox has ``max_streams`` requests under way, or
                its organization ``max_owner_streams``.
        """
        channel = self._channels.get(sandbox_id)
        if channel is None or not channel.alive:
            async with self._connecting.setdefault(sandbox_id, asyncio.Lock()):
                channel = self._channels.get(sandbox_id)
                if channel is None or not channel.alive:
                    channel = await open_channel(self._runner, sandbox_id)
                    self._channels[sandbox_id] = channel
        tally = self._tally(owner)
        refusal = self._over_caps(sandbox_id, tally)
        if refusal is not None:
            raise TooManyRequests(refusal)
        return channel.open(tally)

    def _open(self, sandbox_id: str) -> int:
        """The sandbox's requests under way: streams and relays' commands."""
        channel = self._channels.get(sandbox_id)
        slot = self._relays.get(sandbox_id)
        return (channel.streams if channel is not None else 0) + (slot.busy if slot else 0)

    def _over_caps(self, sandbox_id: str, tally: Tally | None) -> str | None:
        """Why one more request of the sandbox (and of ``tally``'s organization) must
        wait, or None."""
        if self._max_streams and self._open(sandbox_id) >= self._max_streams:
            return (f"the sandbox has {self._max_streams} toolbox requests under way "
                    "(COVE_MAX_SANDBOX_REQUESTS); let some finish first")  # fmt: skip
        if tally is not None and self._max_owner_streams and tally.open >= self._max_owner_streams:
            return (f"the organization has {self._max_owner_streams} toolbox requests "
                    "under way on its sandboxes (COVE_MAX_ORGANIZATION_REQUESTS); let "
                    "some finish first")  # fmt: skip
        return None

    def _tally(self, owner: str | None) -> Tally | None:
        if owner is None:
            return None
        tally = self._tallies.get(owner)  # (a tally per organization that made a request: kept)
        if tally is None:
            tally = self._tallies[owner] = Tally()
        return tally

    async def relayed(self, sandbox_id: str, owner: str | None, user: str | None,
                      order: bytes, limit: int | None,
                      ) -> AsyncGenerator[ProcessEvent, None] | None:  # fmt: skip
        """A plain command (``relay.order``) run by the sandbox's relay in waiting: its
        events, counted as a request of the sandbox and of ``owner`` until they end; or
        None (no relay was ready, it did not take the command, or the sandbox or the
        organization has its most requests under way): then it goes to the agent,
        which runs it or refuses it with the error of its kind.

        Raises:
            ToolboxError: the relay failed (as :func:`agent_call`'s errors).
        """
        slot = self._slot(sandbox_id)
        taken = slot.take(user)
        if taken is None:
            return None
        tally = self._tally(owner)
        if self._over_caps(sandbox_id, tally) is not None:  # (the agent says why)
            slot.give_back(taken)
            return None
        _count(slot, tally, 1)
        try:
            events = await relay.run(taken, order, limit)
        except AGENT_FAILURES as exc:
            _count(slot, tally, -1)
            slot.refill(user)
            raise agent_failure(exc) from exc
        except BaseException:
            _count(slot, tally, -1)
            raise
        if events is None:  # (a new relay is made after the agent ran the command)
            _count(slot, tally, -1)
            return None
        return _counted(events, slot, tally, taken)

    def prepare_relay(self, sandbox_id: str, user: str | None) -> None:
        """Have a relay made for the sandbox's next command as ``user`` (unless one is
        ready or being made, or one was refused lately)."""
        self._slot(sandbox_id).refill(user)

    def _slot(self, sandbox_id: str) -> RelaySlot:
        slot = self._relays.get(sandbox_id)
        if slot is None:
            runner = self._runner
            slot = self._relays[sandbox_id] = RelaySlot(lambda: runner.open_agent(sandbox_id))
        return slot

    async def forget(self, sandbox_id: str) -> None:
        """Close the connection to a sandbox that is gone."""
        self._connecting.pop(sandbox_id, None)
        slot = self._relays.pop(sandbox_id, None)
        if slot is not None:
            slot.close()
        channel = self._channels.pop(sandbox_id, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        """Close every connection (server shutdown)."""
        for slot in self._relays.values():
            slot.close()
        self._relays.clear()
        for channel in list(self._channels.values()):
            await channel.close()
        self._channels.clear()


def _count(slot: RelaySlot, tally: Tally | None, change: int) -> None:
    slot.busy += change
    if tally is not None:
        tally.open += change


async def _counted(events: AsyncGenerator[ProcessEvent, None], slot: RelaySlot,
                   tally: Tally | None, relay: RelayConnection,
                   ) -> AsyncGenerator[ProcessEvent, None]:  # fmt: skip
    """``events``, counted (see ``AgentLinks.relayed``), failures as the API's errors;
    at their end the relay is ready for the next command (or, when it broke off, a
    new one is made: its making starts on the loop's next turn, after the answer was
    written, not beside the command on a host with few CPUs)."""
    try:
        async for event in events:
            yield event
    except AGENT_FAILURES as exc:
        raise agent_failure(exc) from exc
    finally:
        _count(slot, tally, -1)
        await events.aclose()
        slot.give_back(relay)


async def open_channel(runner: Runner, sandbox_id: str) -> Channel:
    """A new connection to the sandbox's agent.

    Raises:
        Unavailable: the sandbox's agent cannot be reached (it does not run).
        Busy: it does not take connections now.
    """
    return Channel(*await runner.open_agent(sandbox_id))


@asynccontextmanager
async def agent_call(
    runner: Runner, sandbox_id: str, message: dict[str, Any], links: AgentLinks | None = None,
    owner: str | None = None,
) -> AsyncIterator[AgentCall]:
    """Open a request to a sandbox's agent and send ``message``; the agent must accept it.

    It goes over ``links``' connection to the sandbox, or (without ``links``) over
    a connection of its own, closed afterwards.

    Agent errors become :class:`ToolboxError` (source DAYTONA_DAEMON); an agent
    that breaks the protocol or answers nonsense is a 502, one that does not
    accept the request in time a 504.
    """
    own = None if links is not None else await open_channel(runner, sandbox_id)
    try:
        agent = await _accepted(own, links, sandbox_id, message, owner)
        async with agent:
            yield agent
    except AGENT_FAILURES as exc:
        raise agent_failure(exc) from exc
    finally:
        if own is not None:
            await own.close()


async def _accepted(
    own: Channel | None, links: AgentLinks | None, sandbox_id: str, message: dict[str, Any],
    owner: str | None,
) -> AgentCall:
    """Send ``message`` on a new stream until the agent accepts it. A connection that
    turns out dead (the agent restarted since it was made) is made again once: the
    agent accepts before it starts any work, so nothing runs twice."""
    for attempt in (1, 2):
        stream = own.open() if own is not None else await links.stream(sandbox_id, owner)  # type: ignore[union-attr]
        agent = AgentCall(stream)
        try:
            await agent.send(message)
            async with asyncio.timeout(AGENT_ACCEPT_SECONDS):  # (no task, as wait_for makes)
                await agent.accepted()
            return agent
        except (ConnectionError, EOFError):
            agent.close()
            if own is not None or attempt == 2 or stream.channel.alive:
                raise
    raise AssertionError("unreachable")


# What a request to an agent may end in besides success (all the agent's doing).
AGENT_FAILURES = (AgentError, TimeoutError, ProtocolError, ConnectionError, EOFError, KeyError,
                  TypeError, ValueError, ValidationError)  # fmt: skip


def agent_failure(exc: BaseException) -> ToolboxError:
    """The one translation of an agent's failure into the API's error."""
    if isinstance(exc, AgentError):
        return ToolboxError(exc.status, exc.code, exc.message)
    if isinstance(exc, TimeoutError):
        return ToolboxError(504, "AGENT_TIMEOUT", "the sandbox's toolbox agent did not answer "
                            f"within {AGENT_ACCEPT_SECONDS:.0f} s")  # fmt: skip
    if isinstance(exc, ProtocolError | ConnectionError | EOFError):
        return ToolboxError(502, "AGENT_ERROR", f"toolbox agent failed: {exc}")
    return ToolboxError(502, "AGENT_ERROR", "the sandbox's toolbox agent sent an invalid reply "
                        f"({type(exc).__name__})")  # fmt: skip


def agent_client(runner: Runner, sandbox_id: str, user: str | None, env: dict[str, str],
                 links: AgentLinks | None = None, output_limit: int = DEFAULT_LIMIT,
                 owner: str | None = None) -> AgentClient:  # fmt: skip
    """A typed client of a sandbox's agent (over ``links``, else a connection per
    request), whose requests count against the organization ``owner`` (see
    :class:`AgentLinks`)."""
    relays = SandboxRelays(links, sandbox_id, owner) if links is not None and links.relays else None
    return AgentClient(lambda message: agent_call(runner, sandbox_id, message, links, owner),
                       user, env, output_limit, relays)  # fmt: skip


@dataclass(frozen=True)
class SandboxRelays:
    """One sandbox's relays, for requests of the organization ``owner`` (see
    :class:`cove.core.agent_client.Relays`)."""

    links: AgentLinks
    sandbox_id: str
    owner: str | None

    def run(self, user: str | None, order: bytes, limit: int | None,
            ) -> Awaitable[AsyncGenerator[ProcessEvent, None] | None]:  # fmt: skip
        return self.links.relayed(self.sandbox_id, self.owner, user, order, limit)

    def prepare(self, user: str | None) -> None:
        self.links.prepare_relay(self.sandbox_id, user)


