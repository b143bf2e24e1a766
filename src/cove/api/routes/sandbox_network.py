"""A sandbox's firewall (``/api/sandbox/{id}/network-settings``)."""

from __future__ import annotations

from fastapi import APIRouter

from cove.api.deps import PrincipalDep, ServicesDep
from cove.api.dto import sandbox_public
from cove.schemas.network import NetworkSettingsUpdate
from cove.schemas.sandbox import SandboxPublic

router = APIRouter(prefix="/sandbox", tags=["sandbox"])


@router.post("/{id_or_name}/network-settings")
async def update_network_settings(
    id_or_name: str, body: NetworkSettingsUpdate, who: PrincipalDep, services: ServicesDep
) -> SandboxPublic:
    """Change a sandbox's outbound firewall; a running sandbox gets it at once."""
    sandbox = await services.lifecycle.update_network(
        who.organization_id, id_or_name, block_all=body.network_block_all,
        allow_list=body.network_allow_list, domain_list=body.domain_allow_list,
    )  # fmt: skip
    return sandbox_public(sandbox, services.settings.toolbox_proxy_url)
