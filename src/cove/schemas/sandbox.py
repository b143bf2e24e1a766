"""The sandbox schema family: what clients send and what they get back."""

from __future__ import annotations

from pydantic import Field, field_validator

from cove.schemas.base import WireModel


class BuildInfoCreate(WireModel):
    """A create-from-image request: the SDK sends the image as a Dockerfile."""

    dockerfile_content: str
    context_hashes: list[str] | None = None


class VolumeMount(WireModel):
    volume_id: str
    mount_path: str
    subpath: str | None = None


class SandboxCreate(WireModel):
    """Body of ``POST /sandbox`` (from snapshot or from image)."""

    name: str | None = Field(default=None, min_length=1, max_length=63)
    snapshot: str | None = None
    build_info: BuildInfoCreate | None = None
    user: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    public: bool = False
    target: str | None = None
    network_block_all: bool = False
    network_allow_list: str | None = None
    domain_allow_list: str | None = None
    cpu: int | None = None
    gpu: int | None = None
    memory: int | None = None
    disk: int | None = None
    auto_stop_interval: int | None = None
    auto_archive_interval: int | None = None
    auto_delete_interval: int | None = None
    volumes: list[VolumeMount] = Field(default_factory=list)

    @field_validator("auto_stop_interval", "auto_archive_interval")
    @classmethod
    def _non_negative(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("must be 0 or more minutes")
        return v

    @field_validator("auto_delete_interval")
    @classmethod
    def _delete_interval(cls, v: int | None) -> int | None:
        if v is not None and v < -1:
            raise ValueError("must be -1 (disabled), 0 (on stop) or more minutes")
        return v

    @field_validator("name")
    @classmethod
    def _name_chars(cls, v: str | None) -> str | None:
        if v is not None and not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("may only contain letters, digits, '-', '_' and '.'")
        return v


class SandboxResize(WireModel):
    """Body of ``POST /sandbox/{id}/resize``: only the fields that change."""

    cpu: int | None = Field(default=None, ge=1)
    memory: int | None = Field(default=None, ge=1)
    disk: int | None = Field(default=None, ge=1)
    gpu: int | None = None


class SandboxLabels(WireModel):
    """Body and response of ``PUT /sandbox/{id}/labels``."""

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
    auto_archive_interval: int
    auto_delete_interval: int
    volumes: list[SandboxVolume] = Field(default_factory=list)
    created_at: str
    updated_at: str
    last_activity_at: str
    backup_state: str = "None"
    sandbox_class: str = "container"
    daemon_version: str | None = None
    runner_id: str = "local"


class SandboxesPublic(WireModel):
    """Response of ``GET /sandbox``: one page and the cursor of the next."""

    items: list[SandboxPublic]
    next_cursor: str | None = None


class SandboxFork(WireModel):
    """Body of ``POST /sandbox/{id}/fork``."""

    name: str | None = Field(default=None, min_length=1, max_length=63)

    @field_validator("name")
    @classmethod
    def _name_chars(cls, v: str | None) -> str | None:
        return SandboxCreate._name_chars(v)


class ToolboxProxyUrl(WireModel):
    url: str


class Url(WireModel):
    url: str
