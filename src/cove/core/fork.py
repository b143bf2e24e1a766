"""Forking: a new sandbox that starts from a copy of another one's files.

The new sandbox gets a new id and the source's organization, snapshot,
resources, env, labels, settings (its TTL's time too), volume mounts and
secrets. The source's writable layer is copied while the source's lock is held
(a running source is frozen for the copy and carries on afterwards; a paused or
stopped one stays so), then the new sandbox boots like a created one and is returned ``started``.
Only memory is not carried over: processes of the source do not run in it.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING

from cove.core.ops import container_spec
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.errors import CoveError, InvalidState

if TYPE_CHECKING:
    from cove.core.lifecycle import LifecycleService

S = SandboxState
FORKABLE = frozenset({S.STARTED, S.PAUSED, S.STOPPED})


async def fork(
    service: LifecycleService, organization_id: str, id_or_name: str, *, name: str | None
) -> Sandbox:
    """Fork a started, paused or stopped sandbox; returns the new one (``started``).

    Raises:
        NotFound: no such sandbox in the organization (or the new one was deleted
            before its copy began: nothing is copied).
        InvalidState: the source is in another state.
        Conflict: ``name`` is taken.
        RuntimeBackendError: the copy failed (no new sandbox is left).
    """
    source = service.get(organization_id, id_or_name)
    _check(source)
    child = _clone(source, name)
    async with service.admit(child, S.CREATING, new=True):
        service.store.add(child)
    secrets = service.creator.secrets
    if secrets is not None:
        secrets.mount(child.id, {env: s.id for env, s in secrets.store.mounts(source.id).items()})

    async def copy() -> None:
        current = service.store.get_by_id(source.id)
        _check(current)
        await service.runner.fork(source.id, container_spec(child))

    ops = service.ops

    async def copy_and_start() -> Sandbox:
        # Under the new sandbox's lock from the copy to its start: it is listed (and can
        # be deleted) from now on, and a delete must not come while its files are made,
        # nor a start after its record is gone (a container no record names).
        service.store.get_by_id(child.id)  # deleted before this took the lock: NotFound
        try:
            await ops.run(source.id, copy)
        except CoveError:
            service.store.remove(child.id)
            raise
        await service.events.sandbox_created(child)
        return await ops.start_created(child, "fork")

    return await ops.run(child.id, copy_and_start)


def _check(source: Sandbox) -> None:
    if source.state not in FORKABLE:
        raise InvalidState(f"Sandbox {source.id} is {source.state}; cannot fork it")


def _clone(source: Sandbox, name: str | None) -> Sandbox:
    new_id = str(uuid.uuid4())
    now = utcnow()
    return dataclasses.replace(
        source,
        id=new_id,
        name=name or new_id,
        state=S.CREATING,
        error_reason=None,
        recoverable=False,
        env=dict(source.env),
        labels=dict(source.labels),
        volumes=list(source.volumes),
        created_at=now,
        updated_at=now,
        last_activity_at=now,
        state_changed_at=now,
    )
