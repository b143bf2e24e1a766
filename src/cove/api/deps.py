"""Annotated dependencies shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from cove.core.auth import AuthService, Principal
from cove.core.config import Settings
from cove.core.lifecycle import LifecycleService


@dataclass
class Services:
    """What the routers may call; built once by the app's lifespan."""

    settings: Settings
    auth: AuthService
    lifecycle: LifecycleService


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_principal(request: Request, services: ServicesDep) -> Principal:
    return services.auth.authenticate(request.headers.get("authorization"))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_lifecycle(services: ServicesDep) -> LifecycleService:
    return services.lifecycle


LifecycleDep = Annotated[LifecycleService, Depends(get_lifecycle)]
