"""Annotated dependencies shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from cove.core.auth import AuthService, Principal
from cove.core.config import Settings
from cove.core.lifecycle import LifecycleService
from cove.core.sandbox import Sandbox
from cove.core.toolbox import ToolboxService


@dataclass
class Services:
    """What the routers may call; built once by the app's lifespan."""

    settings: Settings
    auth: AuthService
    lifecycle: LifecycleService
    toolbox: ToolboxService


def get_services(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_principal(conn: HTTPConnection, services: ServicesDep) -> Principal:
    return services.auth.authenticate(conn.headers.get("authorization"))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_lifecycle(services: ServicesDep) -> LifecycleService:
    return services.lifecycle


LifecycleDep = Annotated[LifecycleService, Depends(get_lifecycle)]


def get_toolbox(services: ServicesDep) -> ToolboxService:
    return services.toolbox


ToolboxDep = Annotated[ToolboxService, Depends(get_toolbox)]


def get_started_sandbox(sandbox_id: str, who: PrincipalDep, toolbox: ToolboxDep) -> Sandbox:
    """The started sandbox of the caller's organization named in the toolbox path."""
    return toolbox.sandbox(who.organization_id, sandbox_id)


StartedSandboxDep = Annotated[Sandbox, Depends(get_started_sandbox)]
