"""Annotated dependencies shared by the routers.

They are ``async`` (run on the event loop): FastAPI runs a plain ``def``
dependency in its thread pool, a hop of ~0.1 ms each that a toolbox call would
pay several times over. The toolbox's (:data:`StartedSandboxDep`, :data:`AgentDep`)
take the connection itself rather than other dependencies: FastAPI solves each
dependency of a request by a walk of its own parameters, and the chain of four a
toolbox call made cost it ~0.2 ms of a round trip that aims at a few.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from cove.api import scopes
from cove.core.agent_client import AgentClient
from cove.core.auth import Principal
from cove.core.images import ImageService
from cove.core.lifecycle import LifecycleService
from cove.core.registries import RegistryService
from cove.core.sandbox import Sandbox
from cove.core.secrets import SecretService
from cove.core.snapshots import SnapshotService
from cove.core.toolbox import ToolboxService
from cove.core.volumes import VolumeService
from cove.server import Services


async def get_services(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(conn: HTTPConnection, services: ServicesDep) -> Principal:
    """The caller, checked: a valid unexpired key holding what the route needs."""
    return _principal(conn, services)


def _principal(conn: HTTPConnection, services: Services) -> Principal:
    who = services.auth.authenticate(conn.headers.get("authorization"))
    scopes.check(who, conn.scope)
    return who


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_lifecycle(services: ServicesDep) -> LifecycleService:
    return services.lifecycle


LifecycleDep = Annotated[LifecycleService, Depends(get_lifecycle)]


async def get_toolbox(services: ServicesDep) -> ToolboxService:
    return services.toolbox


ToolboxDep = Annotated[ToolboxService, Depends(get_toolbox)]


async def get_volumes(services: ServicesDep) -> VolumeService:
    return services.volumes


VolumesDep = Annotated[VolumeService, Depends(get_volumes)]


async def get_snapshots(services: ServicesDep) -> SnapshotService:
    return services.snapshots


SnapshotsDep = Annotated[SnapshotService, Depends(get_snapshots)]


async def get_registries(services: ServicesDep) -> RegistryService:
    return services.registries


RegistriesDep = Annotated[RegistryService, Depends(get_registries)]


async def get_secrets(services: ServicesDep) -> SecretService:
    return services.secrets


SecretsDep = Annotated[SecretService, Depends(get_secrets)]


async def get_images(services: ServicesDep) -> ImageService:
    return services.images


ImagesDep = Annotated[ImageService, Depends(get_images)]


async def get_started_sandbox(sandbox_id: str, conn: HTTPConnection) -> Sandbox:
    """The started sandbox of the caller's organization named in the toolbox path
    (the caller checked as by :func:`get_principal`)."""
    services: Services = conn.app.state.services
    who = _principal(conn, services)
    return services.toolbox.sandbox(who.organization_id, sandbox_id)


StartedSandboxDep = Annotated[Sandbox, Depends(get_started_sandbox)]


async def get_agent(sandbox: StartedSandboxDep, conn: HTTPConnection) -> AgentClient:
    """The typed client of the started sandbox's agent named in the toolbox path."""
    toolbox: ToolboxService = conn.app.state.services.toolbox
    return toolbox.agent(sandbox)


AgentDep = Annotated[AgentClient, Depends(get_agent)]
