"""Changing a sandbox's timers: auto-stop, auto-pause and the TTL (Daytona's
``/autostop``, ``/autopause`` and ``/ttl`` routes).

At most one of auto-stop and auto-pause is non-zero: setting one of them to a
non-zero interval turns the other off. The TTL is wall-clock: ``set_ttl`` anchors
it at the current time (0 removes it), and the sandbox is deleted when it is
reached, whatever its state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cove.core.sandbox import Sandbox, utcnow
from cove.errors import BadRequest

if TYPE_CHECKING:
    from cove.core.lifecycle import LifecycleService


def expiry(ttl_minutes: int, minute_seconds: float, now: datetime | None = None) -> datetime | None:
    """When a TTL of ``ttl_minutes`` set at ``now`` ends (None: 0, no TTL)."""
    if ttl_minutes <= 0:
        return None
    return (now or utcnow()) + timedelta(seconds=ttl_minutes * minute_seconds)


async def set_auto_stop(
    lifecycle: LifecycleService, organization_id: str, id_or_name: str, minutes: int
) -> Sandbox:
    """Stop after ``minutes`` without activity (0: never); a non-zero one ends auto-pause."""
    fields: dict[str, object] = {"auto_stop_interval": minutes}
    if minutes > 0:
        fields["auto_pause_interval"] = 0
    return await lifecycle.update(organization_id, id_or_name, **fields)


async def set_auto_pause(
    lifecycle: LifecycleService, organization_id: str, id_or_name: str, minutes: int
) -> Sandbox:
    """Pause after ``minutes`` without activity (0: never); a non-zero one ends auto-stop.

    Raises:
        BadRequest: a non-zero interval on an ephemeral sandbox (``autoDeleteInterval`` 0).
    """
    if minutes < 0:
        raise BadRequest("autopause interval must be at least 0")
    fields: dict[str, object] = {"auto_pause_interval": minutes}
    if minutes > 0:
        if lifecycle.get(organization_id, id_or_name).auto_delete_interval == 0:
            raise BadRequest("autoPauseInterval is not allowed for ephemeral sandboxes")
        fields["auto_stop_interval"] = 0
    return await lifecycle.update(organization_id, id_or_name, **fields)


async def set_ttl(
    lifecycle: LifecycleService, organization_id: str, id_or_name: str, minutes: int
) -> Sandbox:
    """Delete the sandbox ``minutes`` from now whatever its state (0: no TTL)."""
    if minutes < 0:
        raise BadRequest("ttl must be at least 0")
    at = expiry(minutes, lifecycle.settings.minute_seconds)
    return await lifecycle.update(organization_id, id_or_name, auto_destroy_at=at)
