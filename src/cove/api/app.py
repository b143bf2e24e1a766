"""The ASGI application: FastAPI for REST, Socket.IO for events, one lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import socketio
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from cove.api import errors
from cove.api.deps import Services
from cove.api.events import SocketEvents
from cove.api.preview import PreviewProxy, load_tokens
from cove.api.routes import (
    health,
    previews,
    sandbox_network,
    sandboxes,
    snapshots,
    toolbox_files,
    toolbox_git,
    toolbox_interpreter,
    toolbox_process,
    toolbox_pty,
    toolbox_sessions,
    volumes,
)
from cove.core.auth import AuthService
from cove.core.config import Settings
from cove.core.lifecycle import LifecycleService
from cove.core.ports import Runner
from cove.core.reconcile import reconcile, restore_networks, watch
from cove.core.snapshots import SnapshotService
from cove.core.timers import run_timers
from cove.core.toolbox import ToolboxService
from cove.core.volumes import VolumeService
from cove.hostfiles import prepare_host_dirs
from cove.runtime import build_runtime
from cove.runtime.host import HostRuntime
from cove.runtime.runner import LocalRunner
from cove.runtime.volumes import LocalVolumeFiles
from cove.store.keys import SqlKeyStore
from cove.store.migrate import upgrade
from cove.store.snapshots import SqlSnapshotStore
from cove.store.sql import SqlSandboxStore, make_engine
from cove.store.volumes import SqlVolumeStore

log = logging.getLogger("cove")


def create_app(settings: Settings, *, runtime: HostRuntime | None = None) -> ASGIApp:
    """Build the whole server. ``runtime`` overrides the configured one (tests)."""
    holder: dict[str, Services] = {}
    events = SocketEvents(settings.toolbox_proxy_url, lambda: holder["services"].auth)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = LocalRunner(runtime or build_runtime(settings))
        services = _start_services(settings, runner, events)
        holder["services"] = app.state.services = services
        await reconcile(services.lifecycle)
        await restore_networks(services.lifecycle)
        background = [
            asyncio.create_task(watch(services.lifecycle, interval=settings.watch_seconds)),
            asyncio.create_task(run_timers(services.lifecycle, settings.minute_seconds)),
        ]
        yield
        for task in background:
            task.cancel()
        await services.lifecycle.drain()
        await services.toolbox.links.close()

    api = FastAPI(title="Cove", version="0.1.0", lifespan=lifespan)
    errors.install(api)
    api.include_router(health.router, prefix="/api")
    api.include_router(sandboxes.router, prefix="/api")
    api.include_router(volumes.router, prefix="/api")
    api.include_router(snapshots.router, prefix="/api")
    api.include_router(sandbox_network.router, prefix="/api")
    api.include_router(previews.router, prefix="/api")
    for module in (toolbox_process, toolbox_files, toolbox_git, toolbox_sessions, toolbox_pty,
                   toolbox_interpreter):
        api.include_router(module.router, prefix="/toolbox/{sandbox_id}")
    app = socketio.ASGIApp(events.server, other_asgi_app=api, socketio_path="/api/socket.io")
    return _CollapseSlashes(PreviewProxy(app, lambda: holder["services"]))


def _start_services(settings: Settings, runner: Runner, events: SocketEvents) -> Services:
    prepare_host_dirs(settings)
    engine = make_engine(settings.database_url or "")
    upgrade(engine)
    auth = AuthService(settings, SqlKeyStore(engine))
    key = auth.bootstrap()
    if key:
        print(f"Cove created an admin API key (shown only once): {key}", flush=True)  # noqa: T201
    store = SqlSandboxStore(engine)
    volumes = VolumeService(
        store=SqlVolumeStore(engine), files=LocalVolumeFiles(settings.data_dir), sandboxes=store
    )
    snapshots = SnapshotService(
        store=SqlSnapshotStore(engine), runner=runner, sandboxes=store,
        default_name=settings.default_snapshot, public=settings.public_snapshots,
    )  # fmt: skip
    lifecycle = LifecycleService(
        settings=settings, store=store, runner=runner, events=events, volumes=volumes,
        snapshots=snapshots,
    )  # fmt: skip
    return Services(
        settings=settings, auth=auth, lifecycle=lifecycle, toolbox=ToolboxService(lifecycle.ops),
        volumes=volumes, snapshots=snapshots, previews=load_tokens(settings.data_dir),
    )  # fmt: skip


class _CollapseSlashes:
    """``api_url`` ending in ``/`` makes the SDK send ``//``: treat it as ``/``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        path = scope.get("path")
        if path and "//" in path:
            scope = dict(scope)
            while "//" in path:
                path = path.replace("//", "/")
            scope["path"] = path
        await self.app(scope, receive, send)
