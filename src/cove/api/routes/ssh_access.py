"""SSH access to sandboxes (``/api/sandbox/{id}/ssh-access``); the gateway itself is
``cove.api.ssh``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cove.api.deps import PrincipalDep, ServicesDep
from cove.api.dto import iso, sandbox_public
from cove.core.ssh_access import MAX_MINUTES, TOKEN_LENGTH, ssh_command
from cove.schemas.sandbox import SandboxPublic
from cove.schemas.ssh import SshAccessPublic, SshAccessValidation

router = APIRouter(prefix="/sandbox", tags=["sandbox"])
Token = Annotated[str, Query(min_length=1, max_length=256)]


@router.get("/ssh-access/validate")
async def validate_ssh_access(token: Token, who: PrincipalDep,
                              services: ServicesDep) -> SshAccessValidation:  # fmt: skip
    """Whether ``token`` opens a sandbox of the caller's organization now."""
    sandbox_id = services.ssh.validate(who.organization_id, token)
    return SshAccessValidation(valid=sandbox_id is not None, sandbox_id=sandbox_id or "")


@router.post("/{id_or_name}/ssh-access")
async def create_ssh_access(
    id_or_name: str, who: PrincipalDep, services: ServicesDep,
    expires_in_minutes: Annotated[float | None, Query(
        alias="expiresInMinutes", gt=0, le=MAX_MINUTES,
        description="Minutes the token is valid (default 60)")] = None,
) -> SshAccessPublic:  # fmt: skip
    """A token for ``ssh <token>@host``; the sandbox's earlier tokens are revoked."""
    settings = services.settings
    access, token = services.ssh.create(who.organization_id, id_or_name, expires_in_minutes,
                                        who.key_id)
    return SshAccessPublic(
        id=access.id, sandbox_id=access.sandbox_id, token=token,
        expires_at=iso(access.expires_at), created_at=iso(access.created_at),
        updated_at=iso(access.updated_at),
        ssh_command=ssh_command(token, settings.ssh_host, settings.ssh_port))  # fmt: skip


@router.delete("/{id_or_name}/ssh-access")
async def revoke_ssh_access(
    id_or_name: str, who: PrincipalDep, services: ServicesDep,
    token: Annotated[str | None, Query(max_length=TOKEN_LENGTH * 8)] = None,
) -> SandboxPublic:  # fmt: skip
    """Revoke one token of the sandbox, or (without ``token``) all of them."""
    sandbox = services.ssh.revoke(who.organization_id, id_or_name, token)
    return sandbox_public(sandbox, services.settings.toolbox_proxy_url)
