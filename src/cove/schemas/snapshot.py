"""The snapshot schema family (``/snapshots``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from cove.schemas.base import WireModel
from cove.schemas.limits import MAX_NAME, MAX_PATH, NO_NUL
from cove.schemas.sandbox import BuildInfoCreate

SnapshotName = Annotated[
    str, Field(min_length=1, max_length=MAX_NAME, pattern=r"^[A-Za-z0-9_.:-]+$")
]


class SnapshotCreate(WireModel):
    """Body of ``POST /snapshots``: an image to pull (``imageName``) or a Dockerfile
    to build (``buildInfo``)."""

    name: SnapshotName
    image_name: str | None = Field(default=None, max_length=MAX_NAME, pattern=NO_NUL)
    build_info: BuildInfoCreate | None = None
    # replaces the image's ENTRYPOINT (and, as ``docker run --entrypoint``, its CMD)
    entrypoint: list[Annotated[str, Field(max_length=MAX_PATH, pattern=NO_NUL)]] | None = (
        Field(default=None, max_length=256))


class SandboxSnapshotCreate(WireModel):
    """Body of ``POST /sandbox/{id}/snapshot``."""

    name: SnapshotName
    include_memory: bool | None = None


class SnapshotPublic(WireModel):
    """Daytona's SnapshotDto."""

    id: str
    organization_id: str | None = None
    general: bool
    name: str
    image_name: str | None = None
    state: str
    size: float | None = None  # GiB
    entrypoint: list[str] | None = None
    cpu: int
    gpu: int = 0
    mem: int
    disk: int
    error_reason: str | None = None
    created_at: str
    updated_at: str
    last_used_at: str | None = None
    source_sandbox_id: str | None = None


class SnapshotsPublic(WireModel):
    """A page of ``GET /snapshots``."""

    items: list[SnapshotPublic]
    total: int
    page: int
    total_pages: int
