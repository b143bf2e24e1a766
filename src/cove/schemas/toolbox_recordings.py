"""Wire models of screen recordings (``/computeruse/recordings...``), as the SDK's
toolbox client defines them (``Recording``, ``StartRecordingRequest``...)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel

RecordingId = Field(min_length=1, max_length=64)


class StartRecordingRequest(WireModel):
    label: str | None = Field(default=None, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$",
                              description="letters, digits, '.', '_', '-' (in the file name)")


class StopRecordingRequest(WireModel):
    id: str = RecordingId


class Recording(WireModel):
    """One recording: ``recording`` (being made), ``completed`` or ``failed``."""

    duration_seconds: float | None = None
    end_time: str | None = None
    file_name: str
    file_path: str
    id: str
    size_bytes: int | None = None
    start_time: str
    status: str


class ListRecordingsResponse(WireModel):
    recordings: list[Recording]
