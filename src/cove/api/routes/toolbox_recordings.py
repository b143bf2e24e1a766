"""Toolbox: screen recordings of the sandbox's desktop
(``/toolbox/{id}/computeruse/recordings...``).

The agent (``cove.agent.computer_record``) runs ffmpeg inside the sandbox, as the
desktop's user; files stay in the sandbox (``~/.daytona/recordings``) and a download
streams one through, never held whole by the server.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import StreamingResponse

from cove.api.deps import AgentDep
from cove.api.streaming import file_response
from cove.schemas.toolbox_recordings import (
    ListRecordingsResponse,
    Recording,
    StartRecordingRequest,
    StopRecordingRequest,
)

router = APIRouter(tags=["toolbox"], prefix="/computeruse/recordings")
RecordingId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("/start", status_code=201)
async def start_recording(agent: AgentDep,
                          body: StartRecordingRequest | None = None) -> Recording:  # fmt: skip
    """Start recording the screen (30 frames a second, H.264 MP4; at most 30 minutes
    and 1 GiB, two at once)."""
    return await agent.recording_start(body.label if body else None)


@router.post("/stop")
async def stop_recording(body: StopRecordingRequest, agent: AgentDep) -> Recording:
    """Stop a recording: it is then ``completed``, with its duration and size."""
    return await agent.recording_stop(body.id)


@router.get("")
async def list_recordings(agent: AgentDep) -> ListRecordingsResponse:
    """The recordings being made, then those in the sandbox's recordings directory."""
    return await agent.recording_list()


@router.get("/{recording_id}")
async def get_recording(recording_id: RecordingId, agent: AgentDep) -> Recording:
    return await agent.recording_get(recording_id)


@router.delete("/{recording_id}", status_code=204, response_class=Response)
async def delete_recording(recording_id: RecordingId, agent: AgentDep) -> Response:
    """Delete a finished recording (an active one is a 400)."""
    await agent.recording_delete(recording_id)
    return Response(status_code=204)


@router.get("/{recording_id}/download", response_class=StreamingResponse, responses={200: {
    "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}}})
async def download_recording(recording_id: RecordingId, agent: AgentDep) -> StreamingResponse:
    """A finished recording's MP4 file."""
    recording = await agent.recording_get(recording_id)
    return await file_response(agent.recording_read(recording_id), recording.file_name,
                               "video/mp4")
