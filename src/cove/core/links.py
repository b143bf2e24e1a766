"""Linked sandboxes (``linkedSandbox`` at create), as Daytona defines them.

A sandbox created with ``linkedSandbox`` (id or name of a sandbox of the same
organization, its *owner*) must be ephemeral (``autoDeleteInterval`` 0), and the
owner must not itself be linked. The new sandbox reports ``linkedSandboxId``; it
may open connections to its owner, whose name resolves to the owner's address in
its DNS, and to no other sandbox (see ``runner/host/firewall.py``: the owner's
replies flow back, the owner cannot dial in, nothing else of either is reachable).
Deleting the owner deletes the sandboxes linked to it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cove.core.ports import SandboxStore
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import BadRequest, CoveError

if TYPE_CHECKING:
    from cove.core.lifecycle import LifecycleService

S = SandboxState
GONE = frozenset({S.DESTROYING, S.DESTROYED, S.BUILD_FAILED})
log = logging.getLogger(__name__)


def owner_of(store: SandboxStore, organization_id: str, linked: str | None,
             auto_delete_interval: int) -> Sandbox | None:  # fmt: skip
    """The sandbox a new one links to (None: no link asked for).

    Raises:
        NotFound: no such sandbox in the organization.
        BadRequest: the new sandbox is not ephemeral, or the owner is itself linked or
            being deleted.
    """
    if linked is None:
        return None
    if auto_delete_interval != 0:
        raise BadRequest("linkedSandbox: a linked sandbox must be ephemeral "
                         "(autoDeleteInterval=0)")  # fmt: skip
    owner = store.get(organization_id, linked)
    if owner.linked_sandbox_id is not None:
        raise BadRequest(f"linkedSandbox: sandbox {owner.id} is itself linked to another "
                         "sandbox; linked sandboxes cannot be linked to")  # fmt: skip
    if owner.state in GONE:
        raise BadRequest(f"linkedSandbox: sandbox {owner.id} is {owner.state}")
    return owner


def followers(store: SandboxStore, owner: Sandbox) -> list[Sandbox]:
    """The sandboxes linked to ``owner``."""
    found, cursor = [], None
    while True:
        page, cursor = store.list(owner.organization_id, cursor=cursor, limit=200)
        found += [sb for sb in page if sb.linked_sandbox_id == owner.id]
        if cursor is None:
            return found


async def delete_followers(lifecycle: LifecycleService, owner: Sandbox) -> None:
    """Delete the sandboxes linked to a sandbox that was deleted (best effort: one
    that cannot be deleted now is logged and left for its own auto-delete)."""
    for follower in followers(lifecycle.store, owner):
        try:
            await lifecycle.destroy(follower.organization_id, follower.id)
        except CoveError as exc:
            log.warning("linked sandbox %s of %s not deleted: %s", follower.id, owner.id,
                        exc.message)  # fmt: skip
