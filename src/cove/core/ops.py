"""Sandbox operations: the one place where a sandbox changes state.

Every operation on a sandbox (lifecycle calls, fork, snapshot capture, builds,
timers, reconciliation) runs through :class:`SandboxOps`:

- under the sandbox's own lock, so two operations on one sandbox never overlap;
- as a task the service owns, shielded from its caller, so a client that hangs
  up mid-request never leaves a sandbox half-way: the operation finishes and the
  state says how it ended;
- with every change of state checked against the state machine, recorded and
  announced (``set_state``); a failure leaves the sandbox ``error`` (or
  ``build_failed``) with the reason, never silently ``started``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, TypeVar

from cove.core import validation
from cove.core.activity import ActivityLog
from cove.core.coordination import Coordination, LocalCoordination, LockBusy
from cove.core.ports import ContainerSpec, EventSink, NetworkPolicy, Runner, SandboxStore
from cove.core.sandbox import Sandbox, SandboxState, transition
from cove.core.telemetry import NoRecorder, Recorder
from cove.errors import CoveError

S = SandboxState
# A sandbox that reaches ``started`` from these has just booted (its processes are new).
FRESH_START = frozenset({S.CREATING, S.STARTING, S.RESTORING})
TOUCH_PER_MINUTE = 12  # activity is written every 1/12 of a timer minute (5 s)
T = TypeVar("T")
log = logging.getLogger(__name__)


def container_spec(sandbox: Sandbox) -> ContainerSpec:
    """What the runtime needs to run ``sandbox``."""
    return ContainerSpec(
        sandbox_id=sandbox.id,
        hostname=sandbox.name,
        snapshot=sandbox.snapshot,
        resources=sandbox.resources,
        env=dict(sandbox.env),
        user=sandbox.user,
        network=network_policy(sandbox),
        volumes=tuple(sandbox.volumes),
        isolation=sandbox.isolation,
    )


def network_policy(sandbox: Sandbox, policy: NetworkPolicy | None = None) -> NetworkPolicy:
    """The sandbox's firewall: ``policy`` (default: its network settings) and the link
    to its owner, if it is a linked sandbox."""
    if policy is None:
        policy = validation.network_policy(
            sandbox.network_block_all, sandbox.network_allow_list, sandbox.domain_allow_list
        )
    if sandbox.linked_sandbox_id and sandbox.linked_sandbox_name:
        peer = (sandbox.linked_sandbox_name, sandbox.linked_sandbox_id)
        policy = dataclasses.replace(policy, peers=(peer,))
    return policy


class SandboxOps:
    """Locks, owned tasks and recorded state changes of sandboxes.

    Args:
        store: where sandbox records live.
        runner: where sandboxes run.
        events: where state changes are announced.
        minute_seconds: the length of a timer minute (shorter in tests).
    """

    def __init__(
        self, *, store: SandboxStore, runner: Runner, events: EventSink, minute_seconds: float = 60
    ) -> None:
        self.store = store
        self.runner = runner
        self.events = events
        self.activity = ActivityLog(store, minute_seconds / TOUCH_PER_MINUTE)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        # Awaited after each fresh start, under the sandbox's lock, before ``started`` is
        # stored (the entrypoint).
        self.started_hooks: list[Callable[[Sandbox], Awaitable[None]]] = []
        # Awaited after a sandbox's record is gone (its keys, its linked sandboxes).
        self.removed_hooks: list[Callable[[Sandbox], Awaitable[None]]] = []
        self.recorder: Recorder = NoRecorder()  # lifecycle operations' durations
        # The sandbox's lock across API replicas (one host: the in-process lock alone).
        self.coordination: Coordination = LocalCoordination()

    # ---- serialization -------------------------------------------------

    async def run(self, sandbox_id: str, op: Callable[[], Awaitable[T]], *,
                  wait: bool = True) -> T:  # fmt: skip
        """Run ``op`` under the sandbox's lock in a task the caller cannot cancel.

        Raises:
            LockBusy: ``wait`` is False and an operation holds the lock (here or on
                another replica).
        """
        return await asyncio.shield(self.spawn(sandbox_id, op, wait=wait))

    def spawn(self, sandbox_id: str, op: Callable[[], Awaitable[T]], *,
              wait: bool = True) -> asyncio.Future[T]:  # fmt: skip
        """Start ``op`` under the sandbox's lock (in-process, then across replicas)
        in a task the service owns."""

        async def locked() -> T:
            lock = self._locks.setdefault(sandbox_id, asyncio.Lock())
            if not wait and lock.locked():
                raise LockBusy(f"sandbox {sandbox_id} is busy")
            async with lock, self.coordination.sandbox_lock(sandbox_id, wait=wait):
                return await op()

        task = asyncio.ensure_future(locked())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def forget(self, sandbox_id: str) -> None:
        """Drop the lock of a sandbox that is gone."""
        self._locks.pop(sandbox_id, None)

    async def drain(self) -> None:
        """Wait for every operation under way (server shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- state changes -------------------------------------------------

    async def set_state(self, sandbox: Sandbox, new: SandboxState) -> Sandbox:
        """Move ``sandbox`` to ``new`` (checked), record and announce it."""
        old = sandbox.state
        transition(sandbox, new)
        if new is S.STARTED and old is not S.RESIZING:
            sandbox.last_activity_at = sandbox.updated_at  # a fresh start is activity
        if new is S.STARTED and old in FRESH_START:
            # Before the state is stored: whoever sees ``started`` sees the entrypoint.
            for hook in self.started_hooks:
                await hook(sandbox)
        self.store.save(sandbox)
        await self.events.sandbox_state_updated(sandbox, old)
        return sandbox

    async def fail(self, sandbox: Sandbox, reason: str, *, recoverable: bool) -> Sandbox:
        """Put ``sandbox`` in ``error`` with ``reason``."""
        log.warning("sandbox %s failed: %s", sandbox.id, reason)
        sandbox.recoverable = recoverable
        return await self._end(sandbox, S.ERROR, reason)

    async def build_failed(self, sandbox: Sandbox, reason: str) -> Sandbox:
        """Put ``sandbox`` in ``build_failed`` with ``reason``."""
        log.warning("build of sandbox %s failed: %s", sandbox.id, reason)
        return await self._end(sandbox, S.BUILD_FAILED, reason)

    async def _end(self, sandbox: Sandbox, state: SandboxState, reason: str) -> Sandbox:
        old = sandbox.state
        transition(sandbox, state, reason=reason)
        self.store.save(sandbox)
        await self.events.sandbox_state_updated(sandbox, old)
        return sandbox

    async def through(
        self, sandbox: Sandbox, via: SandboxState, to: SandboxState, what: str,
        *steps: Callable[[], Awaitable[object]],
        admitted: AbstractAsyncContextManager[object] | None = None,
    ) -> Sandbox:  # fmt: skip
        """Go to ``via`` (within ``admitted``: the organization's quota admits what
        ``via`` holds until it is stored), run the runner's ``steps`` in order, then
        to ``to``; a failing step leaves the sandbox in ``error`` (recoverable)."""
        async with admitted or nullcontext():
            await self.set_state(sandbox, via)
        try:
            for step in steps:
                await step()
        except CoveError as exc:
            return await self.fail(sandbox, f"{what} failed: {exc.message}", recoverable=True)
        return await self.set_state(sandbox, to)

    async def boot(self, sandbox: Sandbox) -> Sandbox:
        """Create the sandbox's files and start it: ``started``, or ``error`` with nothing
        of it left on the host.

        Raises:
            NotFound: the sandbox was deleted before this took its lock (a create stores
                its record first): nothing is booted, or it would run with no record.
        """
        self.store.get_by_id(sandbox.id)
        spec = container_spec(sandbox)
        try:
            await self.runner.create(spec)
            await self.runner.start(spec)
        except CoveError as exc:
            await self.clean_up(sandbox.id)
            return await self.fail(sandbox, f"create failed: {exc.message}", recoverable=True)
        return await self.set_state(sandbox, S.STARTED)

    async def start_created(self, sandbox: Sandbox, what: str) -> Sandbox:
        """Start a sandbox whose files exist (a fork): ``started``, or ``error``."""
        try:
            await self.runner.start(container_spec(sandbox))
        except CoveError as exc:
            await self.clean_up(sandbox.id, destroy=False)
            return await self.fail(sandbox, f"{what} failed: {exc.message}", recoverable=True)
        return await self.set_state(sandbox, S.STARTED)

    async def remove(self, sandbox: Sandbox) -> Sandbox:
        """Destroy everything of the sandbox on the host and drop its record
        (``destroyed``; ``error`` when the host refused)."""
        if sandbox.state is not S.DESTROYING:
            await self.set_state(sandbox, S.DESTROYING)
        try:
            await self.runner.destroy(sandbox.id)
        except CoveError as exc:
            return await self.fail(sandbox, f"delete failed: {exc.message}", recoverable=False)
        old = sandbox.state
        transition(sandbox, S.DESTROYED)
        self.store.remove(sandbox.id)
        self.forget(sandbox.id)
        await self.events.sandbox_state_updated(sandbox, old)
        for hook in self.removed_hooks:
            await hook(sandbox)
        return sandbox

    async def clean_up(self, sandbox_id: str, *, destroy: bool = True) -> None:
        """Best-effort removal of runtime leftovers after a failure."""
        op = self.runner.destroy if destroy else self.runner.stop
        try:
            await op(sandbox_id)
        except CoveError as exc:
            log.error("cleanup of sandbox %s failed: %s", sandbox_id, exc.message)

    def touch(self, sandbox: Sandbox) -> None:
        """Record user activity (resets the auto-stop timer): noted in memory, written
        in batches (see :mod:`cove.core.activity`)."""
        self.activity.record(sandbox)
