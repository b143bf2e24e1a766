"""The sandbox entity and its lifecycle state machine.

Only :class:`cove.core.lifecycle.LifecycleService` changes a sandbox's state,
and only through :func:`transition`, which refuses anything not in
:data:`ALLOWED`::

    creating ──► started ◄──────── starting ◄──┐
        │          │  ▲                          │
        │          │  ├─ resizing                │
        │          │  └─ resuming ◄─ paused ◄─ pausing ◄─ started
        │          ▼                             │
        │       stopping ──► stopped ────────────┤
        │                      │                 │
        │                      ▼                 │
        │                  archiving ──► archived ──► restoring ──► started
        ▼
      error ──► starting (recover) / destroying ──► destroyed

    pending_build ──► building_snapshot ──► starting ──► started
          └──────────────────┴──► build_failed ──► destroying
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cove.errors import InvalidState


@dataclass(frozen=True)
class Resources:
    """Per-sandbox limits, in Daytona's units: vCPUs and GiB."""

    cpu: int
    memory: int
    disk: int


@dataclass(frozen=True)
class VolumeBind:
    """A volume (or a subdirectory of it) mounted read-write in a sandbox."""

    volume_id: str
    mount_path: str
    subpath: str = ""


class SandboxState(enum.StrEnum):
    CREATING = "creating"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RESIZING = "resizing"
    ARCHIVING = "archiving"
    ARCHIVED = "archived"
    RESTORING = "restoring"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    ERROR = "error"
    PAUSING = "pausing"
    PAUSED = "paused"
    RESUMING = "resuming"
    SNAPSHOTTING = "snapshotting"
    PENDING_BUILD = "pending_build"
    PULLING_SNAPSHOT = "pulling_snapshot"
    BUILDING_SNAPSHOT = "building_snapshot"
    BUILD_FAILED = "build_failed"


S = SandboxState

# Every transition the lifecycle may make. Anything else raises InvalidState.
ALLOWED: dict[SandboxState, frozenset[SandboxState]] = {
    S.CREATING: frozenset({S.STARTED, S.ERROR, S.DESTROYING}),
    S.STARTING: frozenset({S.STARTED, S.STOPPED, S.ERROR}),
    S.STARTED: frozenset(
        {
            S.STOPPING,
            S.RESIZING,
            S.DESTROYING,
            S.STOPPED,
            S.ERROR,
            S.PAUSING,
            S.PAUSED,
            S.SNAPSHOTTING,
        }
    ),  # fmt: skip
    # Taking a snapshot returns to where it started (started or stopped).
    S.SNAPSHOTTING: frozenset({S.STARTED, S.STOPPED, S.ERROR}),
    # A failed freeze leaves it running; reconcile may find it stopped meanwhile.
    S.PAUSING: frozenset({S.PAUSED, S.STARTED, S.STOPPED, S.ERROR}),
    # Stop and delete thaw it first; reconcile may find it running or gone.
    S.PAUSED: frozenset({S.RESUMING, S.STOPPING, S.DESTROYING, S.STARTED, S.STOPPED, S.ERROR}),
    S.RESUMING: frozenset({S.STARTED, S.PAUSED, S.STOPPED, S.ERROR}),
    S.RESIZING: frozenset({S.STARTED, S.STOPPED, S.ARCHIVED, S.ERROR}),
    S.STOPPING: frozenset({S.STOPPED, S.ERROR}),
    S.STOPPED: frozenset(
        {S.STARTING, S.RESIZING, S.ARCHIVING, S.DESTROYING, S.ERROR, S.SNAPSHOTTING}
    ),
    S.ARCHIVING: frozenset({S.ARCHIVED, S.STOPPED, S.ERROR}),
    S.ARCHIVED: frozenset({S.RESTORING, S.RESIZING, S.DESTROYING, S.ERROR}),
    S.RESTORING: frozenset({S.STARTED, S.STOPPED, S.ARCHIVED, S.ERROR}),
    # A runner's return gives its sandboxes back what it has (cove.core.fleet).
    S.ERROR: frozenset({S.STARTING, S.RESTORING, S.STOPPED, S.DESTROYING, S.ERROR, S.STARTED,
                        S.PAUSED, S.ARCHIVED}),
    S.DESTROYING: frozenset({S.DESTROYED, S.ERROR}),
    S.DESTROYED: frozenset(),
    # Created from a Dockerfile or a registry image: the image is pulled (core.images)
    # and the snapshot built (core.builds) first.
    S.PENDING_BUILD: frozenset({S.PULLING_SNAPSHOT, S.BUILDING_SNAPSHOT, S.BUILD_FAILED}),
    S.PULLING_SNAPSHOT: frozenset({S.BUILDING_SNAPSHOT, S.STARTING, S.BUILD_FAILED}),
    S.BUILDING_SNAPSHOT: frozenset({S.STARTING, S.BUILD_FAILED}),
    S.BUILD_FAILED: frozenset({S.DESTROYING}),
}

# States in which an operation is under way; a crash leaves these to reconcile.
TRANSITIONAL: frozenset[SandboxState] = frozenset(
    {
        S.CREATING,
        S.STARTING,
        S.STOPPING,
        S.RESIZING,
        S.ARCHIVING,
        S.RESTORING,
        S.DESTROYING,
        S.PAUSING,
        S.RESUMING,
        S.SNAPSHOTTING,
        S.PENDING_BUILD,
        S.PULLING_SNAPSHOT,
        S.BUILDING_SNAPSHOT,
    }  # fmt: skip
)

# The states a TTL deletes a sandbox from (no operation is under way on them).
TTL_STATES: frozenset[SandboxState] = frozenset(
    {S.STARTED, S.PAUSED, S.STOPPED, S.ARCHIVED, S.ERROR, S.BUILD_FAILED}
)

# What the state is heading for, as Daytona's `desiredState` reports it.
DESIRED: dict[SandboxState, str] = {
    S.CREATING: "started",
    S.STARTING: "started",
    S.STARTED: "started",
    S.RESIZING: "resized",
    S.STOPPING: "stopped",
    S.STOPPED: "stopped",
    S.ARCHIVING: "archived",
    S.ARCHIVED: "archived",
    S.RESTORING: "started",
    S.DESTROYING: "destroyed",
    S.DESTROYED: "destroyed",
    S.ERROR: "started",
    S.PAUSING: "paused",
    S.PAUSED: "paused",
    S.RESUMING: "started",
    S.SNAPSHOTTING: "started",
    S.PENDING_BUILD: "started",
    S.PULLING_SNAPSHOT: "started",
    S.BUILDING_SNAPSHOT: "started",
    S.BUILD_FAILED: "started",
}


# States after which the sandbox's agent is a new one: what ``POST /env`` changed is gone.
AGENT_RESTARTS: frozenset[SandboxState] = frozenset(
    {S.STOPPED, S.STARTING, S.RESTORING, S.ARCHIVED, S.ERROR, S.DESTROYED}
)


# What ``autoArchiveInterval=0`` means: archive after 30 days (Daytona's maximum, 43200).
MAX_ARCHIVE_MINUTES = 30 * 24 * 60


def archive_minutes(minutes: int) -> int:
    """An ``autoArchiveInterval`` as kept and shown: 0 means Daytona's maximum."""
    return minutes or MAX_ARCHIVE_MINUTES


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Sandbox:
    """One sandbox as the domain sees it (no runtime internals)."""

    id: str
    organization_id: str
    name: str
    snapshot: str
    user: str
    resources: Resources
    state: SandboxState = S.CREATING
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    public: bool = False
    target: str = "local"
    isolation: str = "crun"  # the isolation tier, fixed at create
    network_block_all: bool = False
    network_allow_list: str | None = None
    domain_allow_list: str | None = None
    auto_stop_interval: int = 15
    auto_archive_interval: int = 7 * 24 * 60
    auto_delete_interval: int = -1
    error_reason: str | None = None
    recoverable: bool = False
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    last_activity_at: datetime = field(default_factory=utcnow)
    state_changed_at: datetime = field(default_factory=utcnow)
    volumes: list[VolumeBind] = field(default_factory=list)
    # A linked sandbox: the sandbox it was linked to at create (its owner), and that
    # one's name, which resolves to the owner inside this sandbox.
    linked_sandbox_id: str | None = None
    linked_sandbox_name: str | None = None
    # The environment of the running sandbox once ``POST /toolbox/{id}/env`` changed it
    # (None: ``env``). Like the environment of Daytona's daemon, it lasts until the
    # sandbox stops.
    runtime_env: dict[str, str] | None = None
    # Pause after this many minutes without activity (0: never; auto-stop is then 0).
    auto_pause_interval: int = 0
    # The TTL: destroyed at this time whatever its state (None: no TTL).
    auto_destroy_at: datetime | None = None
    # An unclaimed warm-pool sandbox (``organization_id`` is then ``""``): its pool.
    warm_pool_id: str | None = None

    @property
    def desired_state(self) -> str:
        return DESIRED[self.state]

    @property
    def process_env(self) -> dict[str, str]:
        """The environment new processes of the running sandbox start with."""
        return dict(self.env if self.runtime_env is None else self.runtime_env)


def can_transition(current: SandboxState, new: SandboxState) -> bool:
    return new in ALLOWED[current]


def transition(sandbox: Sandbox, new: SandboxState, *, reason: str | None = None) -> None:
    """Move ``sandbox`` to ``new`` or raise InvalidState.

    Args:
        sandbox: the entity to change in place.
        new: the target state.
        reason: why it failed; only for ``error`` and ``build_failed``.

    Raises:
        InvalidState: ``new`` is not reachable from the current state.
    """
    if not can_transition(sandbox.state, new):
        raise InvalidState(f"Sandbox {sandbox.id} cannot go from '{sandbox.state}' to '{new}'")
    now = utcnow()
    sandbox.state = new
    sandbox.updated_at = now
    sandbox.state_changed_at = now
    if new in AGENT_RESTARTS:
        sandbox.runtime_env = None
    if new in (S.ERROR, S.BUILD_FAILED):
        sandbox.error_reason = reason or "unknown error"
    else:
        sandbox.error_reason = None
        sandbox.recoverable = False
