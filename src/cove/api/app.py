"""The ASGI application: FastAPI for REST, Socket.IO for events, one lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import socketio
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cove.api import dashboard, errors, logredact, logs, metrics, openapi
from cove.api.bodylimit import BodyLimit
from cove.api.events import SocketEvents
from cove.api.fastpath import FastExecute
from cove.api.hangup import UntilClientLeaves
from cove.api.keybound import KeyBound
from cove.api.observe import Observe
from cove.api.params import single_query_values
from cove.api.preview import PreviewProxy
from cove.api.routes import (
    api_keys,
    config,
    docker_registry,
    health,
    object_storage,
    organizations,
    previews,
    sandbox_extras,
    sandbox_network,
    sandboxes,
    secrets,
    signed_files,
    snapshots,
    ssh_access,
    toolbox_a11y,
    toolbox_computeruse,
    toolbox_entrypoint,
    toolbox_files,
    toolbox_git,
    toolbox_interpreter,
    toolbox_lsp,
    toolbox_process,
    toolbox_pty,
    toolbox_recordings,
    toolbox_sessions,
    toolbox_system,
    usage,
    volumes,
    warm_pools,
)
from cove.api.ssh import SshGateway
from cove.api.wsauth import SubprotocolBearer
from cove.core.config import Settings
from cove.core.coordination import alone
from cove.core.reconcile import reconcile, restore_networks, watch
from cove.core.timers import run_timers
from cove.schemas.limits import MAX_BODY
from cove.server import Services, build_services, load_ssh_host_key

if TYPE_CHECKING:
    from cove.runner.hostruntime import HostRuntime

log = logging.getLogger("cove")


def create_app(settings: Settings, *, runtime: HostRuntime | None = None) -> ASGIApp:
    """Build the whole server. ``runtime`` overrides the configured one (tests)."""
    logredact.install()
    logs.install()
    holder: dict[str, Services] = {}
    telemetry = metrics.Telemetry(lambda: holder.get("services"))
    events = SocketEvents(settings.toolbox_proxy_url, lambda: holder["services"].auth,
                          settings.events_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, events, runtime)
        holder["services"] = app.state.services = toolbox.state.services = services
        services.lifecycle.ops.recorder = telemetry
        coordination = services.coordination
        # What another replica's operations are using is no one's leftover; and they
        # may hold sandboxes long (the watch of the jobs' replica sees those later).
        first = alone(coordination)
        if services.fleet is not None:  # several runners: their state before reconciling
            await services.fleet.beat()
        await services.meter.recover(services.lifecycle.runner, services.lifecycle.store.all())
        await reconcile(services.lifecycle, remove_orphans=first, wait=first)
        await services.snapshot_builds.fail_orphaned(coordination.alive())
        await restore_networks(services.lifecycle)
        gateway = SshGateway(services)
        if settings.ssh_port:
            key = load_ssh_host_key(settings.data_dir)
            await gateway.start(settings.host, settings.ssh_port, key)
        background = [
            asyncio.create_task(coordination.run()),
            asyncio.create_task(watch(services.lifecycle, interval=settings.watch_seconds)),
            asyncio.create_task(services.snapshot_builds.watch(coordination,
                                                               settings.watch_seconds)),
            asyncio.create_task(run_timers(services.lifecycle, settings.minute_seconds)),
            asyncio.create_task(services.metrics.run()),
            asyncio.create_task(services.lifecycle.keep_pools()),
            asyncio.create_task(services.lifecycle.ops.activity.run()),
            asyncio.create_task(services.meter.run()),
            asyncio.create_task(services.auth.usage.run()),
            asyncio.create_task(events.watch()),
            asyncio.create_task(services.contexts.run()),
            *([asyncio.create_task(services.fleet.run())] if services.fleet else []),
        ]
        _settle_heap()
        yield
        for task in background:
            task.cancel()
        await gateway.close()
        await services.lifecycle.drain()
        services.lifecycle.ops.activity.flush()
        services.auth.usage.flush()
        services.meter.flush()
        await coordination.close()
        await services.toolbox.links.close()

    api = _fastapi(telemetry, lifespan=lifespan, docs_url=None, redoc_url=None)
    toolbox = _fastapi(telemetry, openapi_url=None, docs_url=None, redoc_url=None)
    openapi.install(api)
    metrics.install(api, telemetry, settings.metrics_token)
    api.include_router(health.router, prefix="/api")
    api.include_router(config.router, prefix="/api")
    api.include_router(secrets.router, prefix="/api")
    api.include_router(api_keys.router, prefix="/api")
    api.include_router(organizations.router, prefix="/api")
    api.include_router(sandbox_extras.router, prefix="/api")
    api.include_router(signed_files.router, prefix="/api")  # before /{id}/{kind}/{minutes}
    api.include_router(ssh_access.router, prefix="/api")  # before /{id}
    api.include_router(sandboxes.router, prefix="/api")
    api.include_router(volumes.router, prefix="/api")
    api.include_router(snapshots.router, prefix="/api")
    api.include_router(warm_pools.router, prefix="/api")
    api.include_router(usage.router, prefix="/api")
    api.include_router(usage.analytics, prefix="/api")
    api.include_router(docker_registry.router, prefix="/api")
    api.include_router(sandbox_network.router, prefix="/api")
    api.include_router(previews.router, prefix="/api")
    api.include_router(object_storage.router, prefix="/api")
    for app_ in (api, toolbox):  # (the API's document lists the toolbox's routes too)
        app_.include_router(signed_files.toolbox_router, prefix="/toolbox/{sandbox_id}")
        for module in (toolbox_process, toolbox_files, toolbox_git, toolbox_entrypoint,
                       toolbox_sessions, toolbox_pty, toolbox_interpreter, toolbox_system,
                       toolbox_lsp, toolbox_computeruse, toolbox_recordings, toolbox_a11y):
            app_.include_router(module.router, prefix="/toolbox/{sandbox_id}")
    dashboard.install(api)
    keyed = KeyBound(_Toolbox(api, toolbox), lambda: holder["services"].auth)
    bounded = BodyLimit(SubprotocolBearer(keyed), MAX_BODY, _is_upload)
    app = socketio.ASGIApp(events.server, other_asgi_app=_NoStore(bounded),
                           socketio_path="/api/socket.io")  # fmt: skip
    return _CollapseSlashes(Observe(PreviewProxy(app, lambda: holder["services"]), telemetry))


def _fastapi(telemetry: metrics.Telemetry, **options: Any) -> FastAPI:
    app = FastAPI(title="Cove", version="0.1.0", dependencies=[Depends(single_query_values)],
                  **options)  # fmt: skip
    app.state.telemetry = telemetry
    errors.install(app)
    return app


class _Toolbox:
    """Toolbox calls go to an app of the toolbox's routes alone: FastAPI tries a
    request's path on each route in turn, and the API's couple of hundred routes
    cost a toolbox call ~0.1 ms before its own were reached. ``app`` serves the rest
    (and holds every route, for the API's document). A command's call takes a
    shorter way still (:mod:`cove.api.fastpath`). A toolbox call whose client hangs
    up before its answer ends (see :mod:`cove.api.hangup`)."""

    def __init__(self, app: FastAPI, toolbox: FastAPI) -> None:
        self.app = app
        self.toolbox = UntilClientLeaves(toolbox, _is_upload)
        self.execute = UntilClientLeaves(FastExecute(toolbox), _is_upload)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if FastExecute.serves(scope):
            await self.execute(scope, receive, send)
        elif scope["type"] != "lifespan" and scope.get("path", "").startswith("/toolbox/"):
            await self.toolbox(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _is_upload(path: str) -> bool:
    """File uploads stream to the sandbox: no bound on their size."""
    if path.startswith("/api/object-storage/s3/"):  # bounded by COVE_MAX_CONTEXT_MB
        return True
    return path.startswith("/toolbox/") and path.endswith(("/files/bulk-upload",
                                                           "/files/upload-v2"))


class _NoStore:
    """The answers of the API and the toolbox are never kept in a browser's cache: a
    sandbox's page at ``/preview/...`` shares the dashboard's origin, and there
    ``fetch(url, {cache: "force-cache"})`` would read what the dashboard fetched with
    its key (the organization's sandboxes, keys, files) from the cache, with none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "http" or not scope["path"].startswith(("/api/", "/toolbox/")):
            return await self.app(scope, receive, send)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        return await self.app(scope, receive, sending)


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


def _settle_heap() -> None:
    """Once the server is up: what its start built (modules, routes, schemas, the
    store's metadata, the records it loaded) lives as long as the server, so it is
    kept out of every later pass of the cyclic garbage collector (``gc.freeze``).
    The collections that requests' garbage sets off then walk that garbage only: a
    full collection over everything took ~110 ms here, a pause for every request in
    flight. Nothing unfreezes it: in a process that runs app after app (the unit
    tests), an unfreeze at each stop made every next start's collection walk the
    whole process again, and the unit suite took 4.4 times as long."""
    gc.collect()
    gc.freeze()
