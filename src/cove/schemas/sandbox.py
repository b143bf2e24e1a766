"""The sandbox schema family: what clients send and what they get back."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from cove.schemas.base import WireModel
from cove.schemas.limits import (
    MAX_INTERVAL,
    MAX_NAME,
    MAX_PATH,
    NO_NUL,
    PLAIN_NAME,
    USER_NAME,
    EnvMap,
    Labels,
    Minutes,
    Text,
)
from cove.schemas.secret import SecretMounts

SandboxName = Annotated[str, Field(min_length=1, max_length=63, pattern=PLAIN_NAME)]


# A state to filter a listing by: Daytona's ``SandboxState`` values (``unknown`` and
# ``forking`` are states Cove never records; filtering by them finds nothing).
StateFilter = Literal[
    "creating", "restoring", "destroyed", "destroying", "started", "stopped", "starting",
    "stopping", "error", "build_failed", "pending_build", "building_snapshot", "unknown",
    "pulling_snapshot", "archived", "archiving", "resizing", "snapshotting", "forking",
    "pausing", "paused", "resuming",
]


class BuildInfoCreate(WireModel):
    """A create-from-image request: the SDK sends the image as a Dockerfile."""

    dockerfile_content: Text
    context_hashes: list[Text] | None = Field(default=None, max_length=1000)


class VolumeMount(WireModel):
    """A volume to mount: ``mountPath`` absolute, not ``/`` nor a system directory."""

    volume_id: str = Field(min_length=1, max_length=MAX_NAME, pattern=NO_NUL)
    mount_path: str = Field(min_length=1, max_length=MAX_PATH, pattern=r"^/[^\x00]*$")
    subpath: str | None = Field(default=None, max_length=MAX_PATH, pattern=NO_NUL)


class SandboxCreate(WireModel):
    """Body of ``POST /sandbox`` (from snapshot or from image)."""

    name: SandboxName | None = None
    snapshot: str | None = Field(default=None, max_length=MAX_NAME, pattern=NO_NUL)
    build_info: BuildInfoCreate | None = None
    user: str | None = Field(default=None, pattern=USER_NAME)
    env: EnvMap = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    public: bool = False
    target: str | None = Field(default=None, max_length=MAX_NAME, pattern=NO_NUL)
    network_block_all: bool = False
    network_allow_list: Text | None = Field(default=None, max_length=4096)
    domain_allow_list: Text | None = Field(default=None, max_length=32768)
    cpu: int | None = None
    gpu: int | None = None
    memory: int | None = None
    disk: int | None = None
    auto_stop_interval: Minutes | None = None
    # 0: never; at most one of autoStopInterval and autoPauseInterval is non-zero
    auto_pause_interval: Minutes | None = None
    auto_archive_interval: Minutes | None = None
    # destroyed this many minutes after create, whatever its state (0: no TTL)
    ttl_minutes: Minutes | None = None
    # -1: never; 0: as soon as it stops
    auto_delete_interval: int | None = Field(default=None, ge=-1, le=MAX_INTERVAL)
    volumes: list[VolumeMount] = Field(default_factory=list, max_length=32)
    # id or name of a sandbox of the organization this one links to (it must be ephemeral)
    linked_sandbox: str | None = Field(default=None, min_length=1, max_length=MAX_NAME,
                                       pattern=NO_NUL)  # fmt: skip
    # [{ENV_VAR: secret name}]: the env var holds the secret's placeholder
    secrets: SecretMounts | None = None


class SandboxResize(WireModel):
    """Body of ``POST /sandbox/{id}/resize``: only the fields that change."""

    cpu: int | None = Field(default=None, ge=1)
    memory: int | None = Field(default=None, ge=1)
    disk: int | None = Field(default=None, ge=1)
    gpu: int | None = None


class SandboxLabels(WireModel):
    """Body of ``PUT /sandbox/{id}/labels``."""

    labels: Labels


class SandboxLabelsPublic(WireModel):
    """Response of ``PUT /sandbox/{id}/labels`` (with the labels the server keeps itself)."""

    labels: dict[str, str]


class SandboxVolume(WireModel):
    volume_id: str
    mount_path: str
    subpath: str | None = None


class SandboxPublic(WireModel):
    """The Sandbox DTO. Every field up to ``toolbox_proxy_url`` is required by the SDK."""

    id: str
    organization_id: str
    name: str
    user: str
    target: str
    env: dict[str, str]
    labels: dict[str, str]
    public: bool
    network_block_all: bool
    kvm: bool = False
    cpu: int
    gpu: int = 0
    memory: int
    disk: int
    toolbox_proxy_url: str
    snapshot: str | None = None
    state: str
    desired_state: str
    error_reason: str | None = None
    recoverable: bool = False
    network_allow_list: str | None = None
    domain_allow_list: str | None = None
    auto_stop_interval: int
    auto_pause_interval: int = 0
    auto_archive_interval: int
    auto_delete_interval: int
    auto_destroy_at: str | None = None
    volumes: list[SandboxVolume] = Field(default_factory=list)
    created_at: str
    updated_at: str
    last_activity_at: str
    backup_state: str = "None"
    sandbox_class: str = "container"
    daemon_version: str | None = None
    runner_id: str = "local"
    linked_sandbox_id: str | None = None


class SandboxesPublic(WireModel):
    """Response of ``GET /sandbox``: one page and the cursor of the next."""

    items: list[SandboxPublic]
    next_cursor: str | None = None


class SandboxFork(WireModel):
    """Body of ``POST /sandbox/{id}/fork``."""

    name: SandboxName | None = None


class ToolboxProxyUrl(WireModel):
    url: str


class Url(WireModel):
    url: str
