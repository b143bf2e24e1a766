"""Sandbox lifecycle endpoints (``/api/sandbox``)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from cove.api.deps import LifecycleDep, PrincipalDep, ServicesDep
from cove.api.dto import sandbox_public
from cove.api.streaming import BUILD_LOG, build_log_response
from cove.core import fork, intervals
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import BadRequest
from cove.schemas.limits import MAX_INTERVAL, MAX_LABELS
from cove.schemas.sandbox import (
    SandboxCreate,
    SandboxesPublic,
    SandboxFork,
    SandboxLabels,
    SandboxLabelsPublic,
    SandboxPublic,
    SandboxResize,
    StateFilter,
    ToolboxProxyUrl,
    Url,
)
from cove.schemas.snapshot import SandboxSnapshotCreate

router = APIRouter(prefix="/sandbox", tags=["sandbox"])


def _public(services: ServicesDep, sandbox: Sandbox) -> SandboxPublic:
    return sandbox_public(sandbox, services.settings.toolbox_proxy_url)


@router.post("")
async def create_sandbox(
    body: SandboxCreate, who: PrincipalDep, services: ServicesDep, after: BackgroundTasks
) -> SandboxPublic:
    """Create a sandbox and start it."""
    sandbox = await services.lifecycle.create(organization_id=who.organization_id, request=body)
    if sandbox.state is SandboxState.STARTED:  # (once the answer is sent)
        after.add_task(services.toolbox.warm, sandbox)
    return _public(services, sandbox)


@router.get("")
async def list_sandboxes(
    who: PrincipalDep,
    services: ServicesDep,
    labels: Annotated[str | None, Query(max_length=MAX_LABELS_QUERY)] = None,
    states: Annotated[list[StateFilter] | None, Query(max_length=22)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> SandboxesPublic:
    """List sandboxes of the caller's organization."""
    items, next_cursor = services.lifecycle.list(
        who.organization_id, labels=_labels(labels), states=states, cursor=cursor, limit=limit
    )
    return SandboxesPublic(
        items=[_public(services, sb) for sb in items], next_cursor=next_cursor
    )


MAX_LABELS_QUERY = 8192


def _labels(raw: str | None) -> dict[str, str] | None:
    """The ``labels`` filter: a flat JSON object of strings (nesting is refused, however deep)."""
    if not raw:
        return None
    try:
        labels = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest("labels must be a JSON object of strings") from exc
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadRequest("labels must be a JSON object of strings")
    if len(labels) > MAX_LABELS or any("\0" in k + v for k, v in labels.items()):
        raise BadRequest(f"labels: at most {MAX_LABELS} labels, without NUL characters")
    return labels


@router.get("/{id_or_name}")
async def get_sandbox(id_or_name: str, who: PrincipalDep, services: ServicesDep) -> SandboxPublic:
    """Get a sandbox by id or name."""
    return _public(services, services.lifecycle.get(who.organization_id, id_or_name))


@router.delete("/{id_or_name}")
async def delete_sandbox(
    id_or_name: str, who: PrincipalDep, services: ServicesDep
) -> SandboxPublic:
    """Delete a sandbox and everything it owns."""
    sandbox = await services.lifecycle.destroy(who.organization_id, id_or_name)
    return _public(services, sandbox)


@router.post("/{id_or_name}/start")
async def start_sandbox(id_or_name: str, who: PrincipalDep, services: ServicesDep) -> SandboxPublic:
    """Start a stopped or archived sandbox."""
    return _public(services, await services.lifecycle.start(who.organization_id, id_or_name))


@router.post("/{id_or_name}/stop")
async def stop_sandbox(
    id_or_name: str, who: PrincipalDep, services: ServicesDep, force: bool = False
) -> SandboxPublic:
    """Stop a sandbox: every process dies, its files stay."""
    sandbox = await services.lifecycle.stop(who.organization_id, id_or_name, force=force)
    return _public(services, sandbox)


@router.post("/{id_or_name}/pause")
async def pause_sandbox(id_or_name: str, who: PrincipalDep, services: ServicesDep) -> SandboxPublic:
    """Pause a started sandbox (its processes are frozen; start resumes them)."""
    return _public(services, await services.lifecycle.pause(who.organization_id, id_or_name))


@router.post("/{id_or_name}/fork")
async def fork_sandbox(
    id_or_name: str, who: PrincipalDep, services: ServicesDep, body: SandboxFork | None = None
) -> SandboxPublic:
    """Create a new sandbox from a copy of this one's files, and start it."""
    name = body.name if body else None
    sandbox = await fork.fork(services.lifecycle, who.organization_id, id_or_name, name=name)
    return _public(services, sandbox)


@router.post("/{id_or_name}/snapshot")
async def snapshot_sandbox(
    id_or_name: str, body: SandboxSnapshotCreate, who: PrincipalDep, services: ServicesDep
) -> SandboxPublic:
    """Make a snapshot of this sandbox's file system."""
    org = who.organization_id
    snap = services.snapshots
    await snap.create_from_sandbox(services.lifecycle.ops, org, id_or_name, body.name)
    return _public(services, services.lifecycle.get(org, id_or_name))


@router.post("/{id_or_name}/archive")
async def archive_sandbox(
    id_or_name: str, who: PrincipalDep, services: ServicesDep
) -> SandboxPublic:
    """Archive a sandbox (a started one is stopped first)."""
    return _public(services, await services.lifecycle.archive(who.organization_id, id_or_name))


@router.post("/{id_or_name}/recover")
async def recover_sandbox(
    id_or_name: str, who: PrincipalDep, services: ServicesDep
) -> SandboxPublic:
    """Recover a sandbox from the error state."""
    return _public(services, await services.lifecycle.recover(who.organization_id, id_or_name))


@router.post("/{id_or_name}/resize")
async def resize_sandbox(
    id_or_name: str, body: SandboxResize, who: PrincipalDep, services: ServicesDep
) -> SandboxPublic:
    """Change a sandbox's CPU, memory or disk."""
    sandbox = await services.lifecycle.resize(who.organization_id, id_or_name, body)
    return _public(services, sandbox)


@router.put("/{id_or_name}/labels")
async def replace_labels(
    id_or_name: str, body: SandboxLabels, who: PrincipalDep, lifecycle: LifecycleDep
) -> SandboxLabelsPublic:
    """Replace all labels of a sandbox."""
    sandbox = await lifecycle.update(who.organization_id, id_or_name, labels=body.labels)
    return SandboxLabelsPublic(labels=sandbox.labels)


@router.post("/{id_or_name}/public/{is_public}")
async def set_public(
    id_or_name: str, is_public: bool, who: PrincipalDep, services: ServicesDep
) -> SandboxPublic:
    """Make a sandbox's previews public or private."""
    sandbox = await services.lifecycle.update(who.organization_id, id_or_name, public=is_public)
    return _public(services, sandbox)


# kind: (the sandbox's field, the least value), or the setter that keeps the rules
_INTERVALS = {
    "autoarchive": ("auto_archive_interval", 0),
    "autodelete": ("auto_delete_interval", -1),
}
_SETTERS = {"autostop": intervals.set_auto_stop, "autopause": intervals.set_auto_pause,
            "ttl": intervals.set_ttl}  # fmt: skip
_DOCS = {
    "autostop": "Stop after this many minutes without activity (0: never); a non-zero one "
                "turns auto-pause off.",
    "autopause": "Pause after this many minutes without activity (0: never); a non-zero one "
                 "turns auto-stop off (not for ephemeral sandboxes).",
    "autoarchive": "Archive after this many minutes stopped (0: the maximum, 30 days).",
    "autodelete": "Delete after this many minutes stopped (-1: never; 0: once stopped).",
    "ttl": "Delete this many minutes from now, whatever its state (0: no TTL).",
}  # fmt: skip


def _interval_route(kind: str) -> None:
    """``POST /{id_or_name}/{kind}/{minutes}`` (one literal path per kind, so that other
    methods on three-part paths are a 405, not this route's 400)."""

    async def set_interval(
        id_or_name: str, minutes: Annotated[int, Path(ge=-1, le=MAX_INTERVAL)],
        who: PrincipalDep, services: ServicesDep,
    ) -> SandboxPublic:  # fmt: skip
        minimum = _INTERVALS.get(kind, ("", 0))[1]
        if minutes < minimum:
            raise BadRequest(f"{kind} interval must be at least {minimum}")
        org = who.organization_id
        if kind in _SETTERS:
            sandbox = await _SETTERS[kind](services.lifecycle, org, id_or_name, minutes)
        else:
            field = _INTERVALS[kind][0]
            sandbox = await services.lifecycle.update(org, id_or_name, **{field: minutes})
        return _public(services, sandbox)

    router.add_api_route(f"/{{id_or_name}}/{kind}/{{minutes}}", set_interval, methods=["POST"],
                         name=f"set_{kind}", description=_DOCS[kind])  # fmt: skip


for _kind in ("autostop", "autopause", "autoarchive", "autodelete", "ttl"):
    _interval_route(_kind)


@router.post("/{id_or_name}/last-activity", status_code=201, response_class=Response)
async def update_last_activity(
    id_or_name: str, who: PrincipalDep, lifecycle: LifecycleDep
) -> Response:
    """Record activity on a sandbox (resets its auto-stop timer)."""
    lifecycle.touch(who.organization_id, id_or_name)
    return Response(status_code=201)


@router.get("/{id_or_name}/toolbox-proxy-url")
async def toolbox_proxy_url(
    id_or_name: str, who: PrincipalDep, services: ServicesDep
) -> ToolboxProxyUrl:
    """Where toolbox calls for this sandbox go."""
    services.lifecycle.get(who.organization_id, id_or_name)
    return ToolboxProxyUrl(url=services.settings.toolbox_proxy_url)


@router.get("/{id_or_name}/build-logs-url")
async def build_logs_url(
    id_or_name: str, request: Request, who: PrincipalDep, services: ServicesDep
) -> Url:
    """Where the build log of a sandbox created from a Dockerfile is streamed."""
    sandbox = services.lifecycle.get(who.organization_id, id_or_name)
    services.lifecycle.build_log(who.organization_id, sandbox.id)
    return Url(url=str(request.url_for("stream_build_logs", id_or_name=sandbox.id)))


@router.get("/{id_or_name}/build-logs", name="stream_build_logs",
            response_class=StreamingResponse,
            responses=BUILD_LOG)
async def stream_build_logs(
    id_or_name: str, who: PrincipalDep, services: ServicesDep, follow: bool = False
) -> StreamingResponse:
    """The build log as text; with ``follow``, streamed until the build ends."""
    log = services.lifecycle.build_log(who.organization_id, id_or_name)
    return build_log_response(log, follow)
